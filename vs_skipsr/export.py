"""ONNX export of the two networks, TensorRT engine building, and the engine cache.

Building lives here; running lives in ``backends/tensorrt_backend.py``. The flow is

    torch net --export_*_onnx--> ONNX (fp32 I/O, weights in fp32/fp16/bf16, opset 18)
              --build_engine--> serialized engine, one optimization profile per token bucket
              --EngineCache--> engines/<name>-<key16>.engine + .json sidecar (key, sha256, parts)

ONNX graphs. The SR net is exported through ``SRTransformer.forward`` (padded windows
``part0``/``part1`` [nW, L], -1 = padding): Gather, MatMul/Softmax and ScatterND(add) only, so
TensorRT's ONNX parser takes it without plugins. K, nW and L are dynamic (``nW0``/``L0`` and
``nW1``/``L1`` are separate names: the two partitions differ). The TorchScript exporter
(``dynamo=False``) is used: it traces the data-dependent shapes into Shape ops, is
deterministic (same weights, same bytes, which the cache key relies on) and takes 0.3 s where
the dynamo exporter takes ~10 s for the same graph with the same numbers.

Precision. An fp16/bf16 export casts the weights and everything between the input cast and the
output cast; inputs and outputs stay fp32 (int64 for indices) so every backend binds the same
buffers. TensorRT builds it as a *strongly typed* network: the precision lives in the graph,
not in builder flags. That is the only mode TensorRT-RTX has, the recommended one in TensorRT
10.12+ and the only one in TensorRT 11.

The TensorRT module. NVIDIA's ``tensorrt`` and ``tensorrt_rtx`` (PyPI: ``tensorrt_rtx_bindings``)
share the Python API; each difference is handled in exactly one function below:

- which module: :func:`trt_module` (``$SKIPSR_TRT_MODULE`` forces one);
- precision: :func:`_network_flags` / :func:`_weak_precision` (STRONGLY_TYPED where it exists;
  BuilderFlag.FP16/BF16 only for a TensorRT without strong typing);
- timing cache: :func:`_attach_timing_cache` (TensorRT-RTX has none that matters: its timing
  cache calls are deprecated no-ops, and per its 1.1 notes a timing cache makes the
  ahead-of-time build query a GPU, defeating CPU-only builds. TensorRT-RTX's counterpart is
  the runtime cache of JIT kernels, handled by the backend);
- target GPUs: :func:`_set_targets` (TensorRT-RTX only: ``set_compute_capability``; without a
  GPU its default engine is portable to 8.0/8.6/8.9/12.x; NVIDIA's builds for the GPU present);
- which GPUs can run an engine: :func:`trt_runs_on` (TensorRT-RTX: the ``ComputeCapability``
  members other than SM75, so not Hopper 9.0; NVIDIA's: 7.5 and up).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import io
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Literal

import torch
from torch import Tensor, nn

from .models.mask import MaskNet
from .models.sr import SRConfig, SRTransformer
from .tokens import token_coords, window_partitions

__all__ = [
    "MASK_DYNAMIC_AXES",
    "MASK_INPUTS",
    "MASK_OUTPUTS",
    "OPSET",
    "SR_DYNAMIC_AXES",
    "SR_INPUTS",
    "SR_OUTPUTS",
    "BuiltEngine",
    "EngineCache",
    "EngineRecord",
    "KeyParts",
    "Precision",
    "ProfileSpec",
    "Shapes",
    "atomic_write",
    "build_engine",
    "default_engine_dir",
    "engine_cache_key",
    "export_mask_onnx",
    "export_sr_onnx",
    "gpu_identity",
    "is_rtx",
    "onnx_bytes",
    "onnx_digest",
    "prepare_engines",
    "trt_available",
    "trt_logger",
    "trt_module",
    "trt_runs_on",
    "trt_version",
]

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "bf16"]
Shape = tuple[int, ...]
Shapes = dict[str, tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max), one profile

OPSET = 18
KEY_VERSION = 1  # bump when the engine layout or the meaning of a key part changes
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

SR_INPUTS = ("base", "state", "coords", "t", "part0", "part1")
SR_OUTPUTS = ("velocity",)
SR_DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "base": {0: "K"},
    "state": {0: "K"},
    "coords": {0: "K"},
    "part0": {0: "nW0", 1: "L0"},
    "part1": {0: "nW1", 1: "L1"},
    "velocity": {0: "K"},
}
MASK_INPUTS = ("lr",)
MASK_OUTPUTS = ("scores",)
MASK_DYNAMIC_AXES: dict[str, dict[int, str]] = {
    "lr": {0: "T", 2: "h", 3: "w"},
    "scores": {0: "T", 2: "h", 3: "w"},
}


# --- ONNX export -----------------------------------------------------------------------------


def _check_precision(dtype: str) -> torch.dtype:
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"dtype must be one of {tuple(TORCH_DTYPES)}, not {dtype!r}")
    return TORCH_DTYPES[dtype]


def sr_example_inputs(config: SRConfig) -> tuple[Tensor, ...]:
    """A real window to trace with: 2x2 attention windows of tokens, every other one kept, so
    both partitions have several partly filled windows (no shape is special-cased)."""
    wt, wy, wx = config.window
    grid = (wt, 2 * wy, 2 * wx)
    index = torch.arange(0, grid[0] * grid[1] * grid[2], 2)  # [K]
    coords = token_coords(index, grid=grid)  # [K, 3]
    parts = [
        p.part
        for p in window_partitions(coords, grid=grid, window=config.window, shift=config.shift)
    ]
    g = torch.Generator().manual_seed(0)
    k = index.numel()
    base = torch.rand(k, config.base_dim, generator=g)  # [K, 3(p+2h)²]
    state = torch.randn(k, config.token_dim, generator=g) * config.noise_std  # [K, 3p²]
    t = torch.ones(1)
    return base, state, coords, t, parts[0], parts[1]


class _MaskIO(nn.Module):
    """The mask net with fp32 input and output around a net of any precision."""

    def __init__(self, net: MaskNet, dtype: torch.dtype) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype

    def forward(self, lr: Tensor) -> Tensor:  # [T, 3, h, w] -> [T, 1, h, w]
        return self.net(lr.to(self.dtype)).float()


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: str | Path | BinaryIO,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    axes: Mapping[str, Mapping[int, str]],
    opset: int,
) -> None:
    """TorchScript ONNX export, written atomically when ``path`` is a file name."""
    if opset < 17:
        raise ValueError(f"opset {opset}: need >= 17 (LayerNormalization, ScatterND add)")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation, tracer notes
        if isinstance(path, (str, Path)):
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            target: str | BinaryIO = str(tmp)
        else:
            target = path
        try:
            torch.onnx.export(
                module,
                args,
                target,
                dynamo=False,
                opset_version=opset,
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes={k: dict(v) for k, v in axes.items()},
                do_constant_folding=True,
            )
        except BaseException:
            if isinstance(path, Path):
                tmp.unlink(missing_ok=True)
            raise
    if isinstance(path, Path):
        os.replace(tmp, path)


def export_sr_onnx(
    model: SRTransformer,
    path: str | Path | BinaryIO,
    *,
    opset: int = OPSET,
    dtype: Precision = "fp32",
) -> None:
    """Write the SR net as ONNX: inputs base [K, 3(p+2 halo)²] and state [K, 3p²] f32, coords
    [K, 3] i64, t [1] f32, part0/part1 [nW, L] i64; output velocity [K, 3p²] f32. ``model`` is not modified."""
    net = copy.deepcopy(model).to("cpu", _check_precision(dtype)).eval()
    _export(
        net,
        sr_example_inputs(model.config),
        path,
        inputs=SR_INPUTS,
        outputs=SR_OUTPUTS,
        axes=SR_DYNAMIC_AXES,
        opset=opset,
    )


def export_mask_onnx(
    model: MaskNet,
    path: str | Path | BinaryIO,
    *,
    opset: int = OPSET,
    dtype: Precision = "fp32",
) -> None:
    """Write the mask net as ONNX: lr [T, 3, h, w] f32 -> scores [T, 1, h, w] f32, with T, h
    and w dynamic. ``model`` is not modified."""
    torch_dtype = _check_precision(dtype)
    net = _MaskIO(copy.deepcopy(model).to("cpu", torch_dtype).eval(), torch_dtype)
    lr = torch.rand(3, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    _export(
        net,
        (lr,),
        path,
        inputs=MASK_INPUTS,
        outputs=MASK_OUTPUTS,
        axes=MASK_DYNAMIC_AXES,
        opset=opset,
    )


def onnx_digest(path: str | Path) -> str:
    """sha256 of an ONNX file and of every external-data file it references (large models)."""
    import onnx

    path = Path(path)
    h = hashlib.sha256(path.read_bytes())
    model = onnx.load(str(path), load_external_data=False)
    locations = sorted(
        {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    )
    for loc in locations:
        h.update(loc.encode())
        h.update((path.parent / loc).read_bytes())
    return h.hexdigest()


def weights_digest(model: nn.Module, *, extra: Mapping[str, object]) -> str:
    """sha256 of a model's config, parameters and export settings: names the cached ONNX file,
    so a script that loads the same weights reuses the export instead of redoing it."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    meta = {"config": asdict(config) if config is not None else None, **extra}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# --- optimization profiles -------------------------------------------------------------------


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, kw_only=True)
class ProfileSpec:
    """Which shapes the engines must take: the largest window of ``frames`` frames at output
    size ``height`` x ``width``, and the kept-token buckets as fractions of its tokens.

    One SR optimization profile per bucket: a kept count K runs in the first (smallest) profile
    that covers it, so a window keeping 20% of its tokens runs kernels tuned for ~12%, not for
    all of them. Every profile starts at K = 1, so a smaller window (a smaller clip, a smaller
    bucket) always has a profile. Bucket edges round up to ``multiple`` like the pipeline's
    token buckets (where the window holds at least 8 of them), so a bucket-padded K stays in
    the profile its real K belongs to.
    """

    frames: int = 5
    height: int = 1080
    width: int = 1920
    scale: int = 2
    patch: int = 16
    window: tuple[int, int, int] = (5, 8, 8)
    token_dim: int = 768
    base_dim: int = 768  # token plus halo (SRConfig.base_dim)
    buckets: tuple[float, ...] = (0.25, 0.5, 1.0)
    multiple: int = 256

    def __post_init__(self) -> None:
        b = self.buckets
        if not b or any(not 0.0 < f <= 1.0 for f in b) or list(b) != sorted(set(b)):
            raise ValueError(f"buckets must be increasing fractions in (0, 1], not {b}")
        if min(self.frames, self.height, self.width, self.scale, self.patch) < 1:
            raise ValueError(f"profile sizes must be positive: {self}")

    @classmethod
    def for_config(
        cls,
        config: SRConfig,
        *,
        frames: int,
        height: int,
        width: int,
        scale: int,
        buckets: Sequence[float] = (0.25, 0.5, 1.0),
    ) -> ProfileSpec:
        return cls(
            frames=frames,
            height=height,
            width=width,
            scale=scale,
            patch=config.patch,
            window=tuple(config.window),  # type: ignore[arg-type]
            token_dim=config.token_dim,
            base_dim=config.base_dim,
            buckets=tuple(float(f) for f in buckets),
        )

    @property
    def grid(self) -> tuple[int, int, int]:
        """The token grid [T, Hp, Wp] of the largest window."""
        return (self.frames, _cdiv(self.height, self.patch), _cdiv(self.width, self.patch))

    @property
    def total_tokens(self) -> int:
        t, hp, wp = self.grid
        return t * hp * wp

    @property
    def window_tokens(self) -> int:
        wt, wy, wx = self.window
        return wt * wy * wx

    @property
    def max_windows(self) -> int:
        """Attention windows of the larger partition (the shifted one straddles the edges),
        plus room for bucket-padding segments, rounded up to 32 like the window buckets of
        tokens.pad_partition's callers, so statically padded partitions fit too."""
        shifted = tuple(w // 2 for w in self.window)
        n = 0
        for shift in ((0, 0, 0), shifted):
            c = 1
            for g, w, s in zip(self.grid, self.window, shift, strict=True):
                c *= _cdiv(g + s, w)
            n = max(n, c)
        return _cdiv(n + _cdiv(self.multiple, self.window_tokens), 32) * 32

    def k_ranges(self) -> list[tuple[int, int, int]]:
        """(min, opt, max) of K per profile; opt sits mid-bucket, where typical K falls."""
        n = self.total_tokens
        m = self.multiple if n >= 8 * self.multiple else 1  # a small window: exact edges
        out: list[tuple[int, int, int]] = []
        lo = 1
        for f in self.buckets:
            hi = min(n, _cdiv(max(1, math.ceil(f * n - 1e-9)), m) * m)
            if out and hi <= out[-1][2]:
                continue  # a bucket that rounds onto the previous one adds nothing
            out.append((1, max(1, (lo + hi) // 2), hi))
            lo = hi + 1
        return out

    def sr_profiles(self) -> list[Shapes]:
        """Per profile: input name -> (min, opt, max) shapes of the SR net's dynamic inputs.

        nW and L are bounded by the grid, not by K: a partition padded to static shapes
        (tokens.pad_partition) has all windows and full length whatever K is. opt takes the
        windows K can fill and full length, since kept tokens cluster (the mask keeps textured
        regions, dilated) and the longest window is what L measures.
        """
        d, n_w, length = self.token_dim, self.max_windows, self.window_tokens
        profiles = []
        for k_min, k_opt, k_max in self.k_ranges():
            nw_opt = min(n_w, k_opt)
            k_shapes = ((k_min,), (k_opt,), (k_max,))
            tok = tuple((k[0], d) for k in k_shapes)
            base = tuple((k[0], self.base_dim) for k in k_shapes)
            coords = tuple((k[0], 3) for k in k_shapes)
            part = ((1, 1), (nw_opt, length), (n_w, length))
            profiles.append(
                {
                    "base": base,
                    "state": tok,
                    "coords": coords,
                    "part0": part,
                    "part1": part,
                }
            )
        return profiles  # type: ignore[return-value]

    def mask_profiles(self) -> list[Shapes]:
        """One profile for the mask net: any T, h, w up to the largest LR window; opt at it."""
        big = (self.frames, 3, _cdiv(self.height, self.scale), _cdiv(self.width, self.scale))
        return [{"lr": ((1, 3, 1, 1), big, big)}]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def profiles_json(profiles: Sequence[Mapping[str, tuple[Shape, Shape, Shape]]]) -> str:
    """Canonical text of concrete profiles (what the builder receives): the key's profile part."""
    canon = [
        {name: [list(s) for s in shapes] for name, shapes in sorted(p.items())} for p in profiles
    ]
    return json.dumps(canon, sort_keys=True, separators=(",", ":"))


# --- the TensorRT module and the GPU ---------------------------------------------------------

TRT_MODULES = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")


@functools.cache
def trt_module() -> ModuleType:
    """NVIDIA's ``tensorrt`` if importable, else TensorRT-RTX (``tensorrt_rtx`` from NVIDIA's
    SDK or ``tensorrt_rtx_bindings`` from PyPI). ``$SKIPSR_TRT_MODULE`` picks one by name.
    Raises ImportError saying what was tried."""
    forced = os.environ.get("SKIPSR_TRT_MODULE")
    names = (forced,) if forced else TRT_MODULES
    errors = []
    for name in names:
        try:
            return importlib.import_module(name)
        except (ImportError, OSError) as e:  # OSError: a wheel whose CUDA libraries are absent
            errors.append(f"{name}: {e}")
    raise ImportError("no TensorRT Python module: " + "; ".join(errors))


def trt_available() -> tuple[ModuleType | None, str]:
    """(module, '') or (None, why not): for reports and backend selection, never raises."""
    try:
        return trt_module(), ""
    except ImportError as e:
        return None, str(e)


def is_rtx(trt: ModuleType) -> bool:
    return "rtx" in trt.__name__


def trt_version(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def rtx_compute_capabilities(trt: ModuleType) -> list[tuple[int, int]]:
    """Compute capabilities a default TensorRT-RTX engine runs on, read from the module's own
    ``ComputeCapability`` enum (SM75 needs an explicit target, so it is left out)."""
    caps = []
    for member in trt.ComputeCapability.__members__:
        if member.startswith("SM") and member[2:].isdigit() and member != "SM75":
            digits = member[2:]
            caps.append((int(digits[:-1]), int(digits[-1])))
    return sorted(caps)


def trt_runs_on(trt: ModuleType, capability: tuple[int, int]) -> bool:
    """Whether engines of this module run on a GPU of ``capability`` (major, minor)."""
    if is_rtx(trt):
        return capability in rtx_compute_capabilities(trt) or capability[0] >= 12
    return capability >= (7, 5)


def gpu_identity(device_index: int | None = 0) -> str:
    """'<name> sm_<major><minor>' of the CUDA device the engine is built on, or 'cpu-build'."""
    if device_index is None or not torch.cuda.is_available():
        return "cpu-build"
    if device_index >= torch.cuda.device_count():
        return "cpu-build"
    major, minor = torch.cuda.get_device_capability(device_index)
    return f"{torch.cuda.get_device_name(device_index)} sm_{major}{minor}"


_SEVERITY_LEVELS = {
    "INTERNAL_ERROR": logging.ERROR,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.DEBUG,  # TensorRT's INFO is a build transcript; keep it out of the way
    "VERBOSE": logging.DEBUG,
}


def trt_logger(trt: ModuleType) -> Any:
    """An ILogger routing TensorRT's messages into ``logging`` (stderr), never stdout."""

    class _Logger(trt.ILogger):  # type: ignore[name-defined, misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = _SEVERITY_LEVELS.get(getattr(severity, "name", ""), logging.INFO)
            logging.getLogger("vs_skipsr.tensorrt").log(level, "%s", msg)

    return _Logger()


def _progress_monitor(trt: ModuleType, progress: Callable[[str], None]) -> Any | None:
    """Reports the builder's top-level phases; None where the module has no IProgressMonitor."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Monitor(trt.IProgressMonitor):  # type: ignore[name-defined, misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.t0 = time.perf_counter()
            self.depth: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            depth = 0 if parent_phase is None else self.depth.get(parent_phase, 0) + 1
            self.depth[phase_name] = depth
            if depth <= 1:
                dt = time.perf_counter() - self.t0
                progress(f"  [{dt:6.1f}s] {'  ' * depth}{phase_name} ({num_steps} steps)")

        def phase_finish(self, phase_name: str) -> None:
            if self.depth.pop(phase_name, 0) == 0:
                dt = time.perf_counter() - self.t0
                progress(f"  [{dt:6.1f}s] {phase_name}: done")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True

    return _Monitor()


def _network_flags(trt: ModuleType) -> tuple[int, bool]:
    """(create_network flags, strongly typed?): STRONGLY_TYPED wherever the module has it."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        return 0, False
    return 1 << int(flag), True


def _weak_precision(trt: ModuleType, config: Any, precision: Precision) -> None:
    """Builder precision flags, for a TensorRT without strong typing (an fp32 ONNX then)."""
    if precision == "fp32":
        return
    flag = getattr(trt.BuilderFlag, precision.upper(), None)
    if flag is None:
        raise RuntimeError(
            f"{trt.__name__} {trt_version(trt)} has neither strongly typed networks nor "
            f"BuilderFlag.{precision.upper()}: cannot build {precision}"
        )
    config.set_flag(flag)


def _attach_timing_cache(trt: ModuleType, config: Any, path: Path | None) -> Any | None:
    """Load the timing cache (NVIDIA's TensorRT only; see the module docstring for RTX)."""
    if path is None or is_rtx(trt) or not hasattr(config, "create_timing_cache"):
        return None
    blob = b""
    if path.is_file():
        blob = path.read_bytes()
    cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(cache, False):  # a cache from another GPU is not used
        log.warning("timing cache %s does not fit this GPU; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config: Any, path: Path | None, cache: Any | None) -> None:
    if path is None or cache is None:
        return
    atomic_write(path, bytes(memoryview(config.get_timing_cache().serialize())))


def _set_targets(trt: ModuleType, config: Any, targets: Sequence[str] | None) -> None:
    """TensorRT-RTX target compute capabilities by ComputeCapability name ('CURRENT',
    'SM86', ...). None keeps the module's default; NVIDIA's TensorRT ignores this."""
    if not targets or not hasattr(config, "set_compute_capability"):
        return
    config.num_compute_capabilities = len(targets)
    for i, name in enumerate(targets):
        if not config.set_compute_capability(getattr(trt.ComputeCapability, name), i):
            raise RuntimeError(f"{trt.__name__} refused compute capability target {name}")


# --- building --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltEngine:
    """A serialized engine and what the builder saw, for logs, tests and ``info``."""

    data: bytes
    inputs: dict[str, tuple[tuple[int, ...], str]]  # name -> (shape with -1, dtype)
    outputs: dict[str, tuple[tuple[int, ...], str]]
    num_profiles: int
    seconds: float
    trt_module: str
    trt_version: str
    strongly_typed: bool


def build_engine(
    onnx_path: str | Path,
    *,
    profiles: Sequence[Mapping[str, tuple[Shape, Shape, Shape]]],
    precision: Precision = "fp32",
    timing_cache: str | Path | None = None,
    targets: Sequence[str] | None = None,
    workspace_bytes: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BuiltEngine:
    """Parse ``onnx_path`` and build a serialized engine with one optimization profile per
    entry of ``profiles`` (input name -> (min, opt, max)). Needs a GPU only for NVIDIA's
    TensorRT; TensorRT-RTX builds on a machine without one.

    ``precision`` must match the ONNX export's (the network is strongly typed where the module
    allows; it only sets builder flags on a TensorRT without strong typing). ``timing_cache``:
    a file that is read and updated (NVIDIA's TensorRT). ``targets``: TensorRT-RTX compute
    capabilities (names of ``trt.ComputeCapability``). Progress lines go to ``progress``
    (default: this module's logger, i.e. stderr).
    """
    trt = trt_module()
    say = progress or (lambda msg: log.info("%s", msg))
    onnx_path = Path(onnx_path)
    t0 = time.perf_counter()
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags, strongly_typed = _network_flags(trt)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    say(f"parsing {onnx_path.name} with {trt.__name__} {trt_version(trt)}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")

    def _io(tensors: list[Any]) -> dict[str, tuple[tuple[int, ...], str]]:
        return {x.name: (tuple(x.shape), str(x.dtype).rsplit(".", 1)[-1]) for x in tensors}

    inputs = _io([network.get_input(i) for i in range(network.num_inputs)])
    outputs = _io([network.get_output(i) for i in range(network.num_outputs)])

    config = builder.create_builder_config()
    if not strongly_typed:
        _weak_precision(trt, config, precision)
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    for i, shapes in enumerate(profiles):
        profile = builder.create_optimization_profile()
        for name, (shape, _dtype) in inputs.items():
            if name in shapes:
                lo, opt, hi = (tuple(int(v) for v in s) for s in shapes[name])
                profile.set_shape(name, lo, opt, hi)
            elif -1 in shape:
                raise ValueError(f"profile {i} gives no shapes for dynamic input {name!r}")
        unknown = set(shapes) - set(inputs)
        if unknown:
            raise ValueError(f"profile {i} names inputs the network lacks: {sorted(unknown)}")
        if config.add_optimization_profile(profile) < 0:
            raise ValueError(f"TensorRT rejected optimization profile {i}: {dict(shapes)}")
    cache_path = None if timing_cache is None else Path(timing_cache)
    cache = _attach_timing_cache(trt, config, cache_path)
    _set_targets(trt, config, targets)
    monitor = _progress_monitor(trt, say)
    if monitor is not None and hasattr(config, "progress_monitor"):
        config.progress_monitor = monitor

    say(f"building {onnx_path.name}: {len(profiles)} profile(s), {precision}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {onnx_path} (see the log above)")
    _save_timing_cache(config, cache_path, cache)
    data = bytes(memoryview(serialized))
    seconds = time.perf_counter() - t0
    say(f"built {onnx_path.name} in {seconds:.1f}s ({len(data) / 2**20:.1f} MiB)")
    return BuiltEngine(
        data=data,
        inputs=inputs,
        outputs=outputs,
        num_profiles=config.num_optimization_profiles,
        seconds=seconds,
        trt_module=trt.__name__,
        trt_version=trt_version(trt),
        strongly_typed=strongly_typed,
    )


# --- cache keys and the engine cache ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KeyParts:
    """Everything an engine depends on; the cache key is the sha256 of all of it."""

    onnx_sha256: str
    trt_module: str
    trt_version: str
    gpu: str  # gpu_identity(): name and compute capability, or 'cpu-build'
    profiles: str  # profiles_json() of the concrete profiles
    precision: str
    targets: str = ""  # TensorRT-RTX compute capability targets, if set

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def engine_cache_key(parts: KeyParts) -> str:
    """sha256 over the key version and every part: any change gives another engine."""
    blob = json.dumps({"v": KEY_VERSION, **parts.to_dict()}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def default_engine_dir() -> Path:
    """``$SKIPSR_ENGINE_DIR``, else ``engines/`` of a source checkout, else the user's cache
    folder (an installed package's directory may not be writable)."""
    env = os.environ.get("SKIPSR_ENGINE_DIR")
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parent.parent / "engines"
    if repo.is_dir():
        return repo
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "vs_skipsr" / "engines"


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and os.replace: readers see old or new bytes,
    never a half-written file, even with two processes building at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide a shared engine folder's files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class CacheEntry:
    engine: Path
    meta: dict[str, Any]


class EngineCache:
    """Engines on disk: ``<name>-<key[:16]>.engine`` plus a ``.json`` sidecar holding the full
    key, the engine's size and sha256, and the key parts (for ``info``).

    :meth:`load` returns bytes only when the sidecar's key is the requested one and the file's
    size and sha256 match; anything else (missing, truncated, corrupt, foreign) is logged and
    answered with None, so :meth:`get_or_build` rebuilds instead of handing TensorRT a bad file.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_engine_dir()

    def paths(self, *, name: str, key: str) -> tuple[Path, Path]:
        stem = f"{name}-{key[:16]}"
        return self.directory / f"{stem}.engine", self.directory / f"{stem}.json"

    def load(self, *, name: str, key: str) -> bytes | None:
        engine_path, meta_path = self.paths(name=name, key=key)
        if not engine_path.exists() and not meta_path.exists():
            return None
        problem = None
        meta: dict[str, Any] = {}
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            problem = f"unreadable sidecar {meta_path.name} ({e})"
        data = b""
        if problem is None:
            try:
                data = engine_path.read_bytes()
            except OSError as e:
                problem = f"unreadable engine ({e})"
        if problem is None and meta.get("key") != key:
            problem = f"foreign engine: its key is {str(meta.get('key'))[:16]}, wanted {key[:16]}"
        if problem is None and len(data) != meta.get("size"):
            problem = f"truncated engine: {len(data)} bytes, expected {meta.get('size')}"
        if problem is None and hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            problem = "corrupt engine: sha256 does not match its sidecar"
        if problem is not None:
            log.warning("skipsr: %s: %s; rebuilding", engine_path, problem)
            return None
        return data

    def store(self, *, name: str, key: str, data: bytes, info: Mapping[str, Any]) -> Path:
        engine_path, meta_path = self.paths(name=name, key=key)
        meta = {
            "name": name,
            "key": key,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **info,
        }
        # engine first, sidecar last: a crash in between leaves an engine with no (or a stale)
        # sidecar, which load() rejects
        atomic_write(engine_path, data)
        atomic_write(meta_path, json.dumps(meta, indent=1, sort_keys=True).encode())
        return engine_path

    def invalidate(self, *, name: str, key: str) -> None:
        """Forget an entry TensorRT refused to deserialize, so the next load rebuilds it."""
        for p in self.paths(name=name, key=key):
            p.unlink(missing_ok=True)

    def get_or_build(
        self,
        *,
        name: str,
        key: str,
        build: Callable[[], BuiltEngine | bytes],
        info: Mapping[str, Any] | None = None,
    ) -> bytes:
        data = self.load(name=name, key=key)
        if data is not None:
            log.info("skipsr: engine %s-%s from cache", name, key[:16])
            return data
        built = build()
        extra = dict(info or {})
        if isinstance(built, BuiltEngine):
            extra.update(
                build_seconds=round(built.seconds, 2),
                num_profiles=built.num_profiles,
                inputs={k: list(v[0]) for k, v in built.inputs.items()},
            )
            built = built.data
        self.store(name=name, key=key, data=built, info=extra)
        return built

    def entries(self) -> Iterator[CacheEntry]:
        """Every sidecar in the folder with its engine path (for ``info``)."""
        if not self.directory.is_dir():
            return
        for meta_path in sorted(self.directory.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                meta = {"error": "unreadable sidecar"}
            yield CacheEntry(engine=meta_path.with_suffix(".engine"), meta=meta)


# --- everything a script needs, in one call ---------------------------------------------------


@dataclass(frozen=True)
class EngineRecord:
    """One engine ready to load: its bytes, where it lives, and the profiles it was built with."""

    name: str
    key: str
    path: Path
    onnx: Path
    data: bytes = field(repr=False)
    profiles: list[Shapes] = field(repr=False)


def _cached_onnx(
    model: nn.Module,
    *,
    kind: Literal["sr", "mask"],
    precision: Precision,
    directory: Path,
    opset: int,
) -> Path:
    """The model's ONNX in ``directory``, exported once per (weights, precision, opset, torch)."""
    digest = weights_digest(
        model, extra={"kind": kind, "dtype": precision, "opset": opset, "torch": torch.__version__}
    )
    path = directory / f"{kind}-{precision}-{digest[:16]}.onnx"
    if not path.is_file():
        log.info("skipsr: exporting %s net to %s", kind, path)
        exporter = export_sr_onnx if kind == "sr" else export_mask_onnx
        exporter(model, path, opset=opset, dtype=precision)  # type: ignore[arg-type]
    return path


def prepare_engines(
    *,
    sr: SRTransformer,
    mask: MaskNet | None,
    spec: ProfileSpec,
    precision: Precision = "fp16",
    cache: EngineCache | None = None,
    device_index: int | None = 0,
    opset: int = OPSET,
    progress: Callable[[str], None] | None = None,
    builder: Callable[..., BuiltEngine] = build_engine,
) -> dict[str, EngineRecord]:
    """Export (once) and build (once) the engines a script needs; later calls load the cache.

    Keys cover the ONNX bytes, the TensorRT module and version, the GPU (``device_index``;
    None or no CUDA: 'cpu-build'), the concrete profiles and the precision. With TensorRT-RTX
    on a GPU the engine targets that GPU only (smaller, and keyed by it anyway).
    """
    cache = cache or EngineCache()
    trt = trt_module()
    gpu = gpu_identity(device_index)
    targets: tuple[str, ...] = ()
    if is_rtx(trt) and gpu != "cpu-build":
        cap = torch.cuda.get_device_capability(device_index)
        if trt_runs_on(trt, cap):
            targets = ("CURRENT",)
    timing_cache = cache.directory / f"timing-{trt.__name__}-{trt_version(trt)}.cache"
    records: dict[str, EngineRecord] = {}
    jobs: list[tuple[Literal["sr", "mask"], nn.Module, list[Shapes]]] = [
        ("sr", sr, spec.sr_profiles())
    ]
    if mask is not None:
        jobs.append(("mask", mask, spec.mask_profiles()))
    for kind, model, profiles in jobs:
        onnx_path = _cached_onnx(
            model, kind=kind, precision=precision, directory=cache.directory, opset=opset
        )
        parts = KeyParts(
            onnx_sha256=onnx_digest(onnx_path),
            trt_module=trt.__name__,
            trt_version=trt_version(trt),
            gpu=gpu,
            profiles=profiles_json(profiles),
            precision=precision,
            targets=",".join(targets),
        )
        key = engine_cache_key(parts)
        name = f"{kind}-{precision}"

        def _build(onnx_path: Path = onnx_path, profiles: list[Shapes] = profiles) -> BuiltEngine:
            return builder(
                onnx_path,
                profiles=profiles,
                precision=precision,
                timing_cache=timing_cache,
                targets=targets or None,
                progress=progress,
            )

        info = {"parts": parts.to_dict(), "onnx": onnx_path.name, "spec": spec.to_dict()}
        data = cache.get_or_build(name=name, key=key, build=_build, info=info)
        records[kind] = EngineRecord(
            name=name,
            key=key,
            path=cache.paths(name=name, key=key)[0],
            onnx=onnx_path,
            data=data,
            profiles=profiles,
        )
    return records


def onnx_bytes(
    model: SRTransformer | MaskNet, *, dtype: Precision = "fp32", opset: int = OPSET
) -> bytes:
    """The ONNX of either net in memory (onnxruntime sessions; models under 2 GB)."""
    buf = io.BytesIO()
    if isinstance(model, SRTransformer):
        export_sr_onnx(model, buf, opset=opset, dtype=dtype)
    else:
        export_mask_onnx(model, buf, opset=opset, dtype=dtype)
    return buf.getvalue()
