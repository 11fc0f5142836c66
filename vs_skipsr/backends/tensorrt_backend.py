"""The TensorRT backend: cached engines run on torch's CUDA streams.

Engines come from :func:`vs_skipsr.export.prepare_engines` (exported and built once, then
loaded from the cache); this module only runs them. Per call it picks the optimization profile
that covers the call's shapes (K kept tokens, nW windows, L longest window), sets the input
shapes, binds torch CUDA tensors by address and enqueues on the current torch CUDA stream, so
the work orders with the pipeline's own kernels without a sync. Each stream gets its own
execution context (a context holds shapes and scratch memory, so two streams cannot share one).

Works against the documented Python API that NVIDIA's ``tensorrt`` (10.x) and TensorRT-RTX
share: ``Runtime.deserialize_cuda_engine``, ``ICudaEngine.get_tensor_profile_shape``,
``IExecutionContext.set_optimization_profile_async / set_input_shape / set_tensor_address /
execute_async_v3``. TensorRT-RTX additionally gets a runtime cache of its JIT-compiled kernels
(``<engine>.rtxcache`` next to the engine), written back by :meth:`TensorRTRunner.close`.

Contexts share one deserialized engine. TensorRT 8.x allowed each optimization profile to be
active in one context at a time ("Profile 0 has been chosen by another IExecutionContext");
this backend assumes TensorRT 10+ or TensorRT-RTX, where the v3 API it uses lives. If a
TensorRT still enforced that rule, two streams wanting the same profile would fail loudly at
``set_optimization_profile_async``, not compute wrong numbers.

What could be checked where this was written: both engines build with TensorRT-RTX on a
CPU-only machine in the test suite, and profile selection is tested as the pure functions
below. The running half has not been run: the development machine has no GPU, the lent GPUs
are Hopper (compute capability 9.0), which TensorRT-RTX does not run on, and NVIDIA's
``tensorrt`` wheels (gigabytes) cannot be carried to them. ``test_tensorrt_backend_matches_
torch_on_a_gpu`` runs wherever a supported GPU and module are present.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..export import (
    MASK_INPUTS,
    MASK_OUTPUTS,
    SR_INPUTS,
    SR_OUTPUTS,
    EngineCache,
    EngineRecord,
    Precision,
    ProfileSpec,
    atomic_write,
    is_rtx,
    prepare_engines,
    trt_available,
    trt_logger,
    trt_runs_on,
)
from ..models.mask import MaskNet
from ..models.sr import SRTransformer
from ..tokens import Partition
from .base import EulerFlow

__all__ = [
    "ProfileError",
    "TensorRTBackend",
    "TensorRTRunner",
    "pick_profile",
    "profile_bounds",
    "tensorrt_unavailable_reason",
]

log = logging.getLogger(__name__)

Bounds = dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # input -> (min shape, max shape)


# --- profile selection (pure: tested on the CPU) ---------------------------------------------


class ProfileError(ValueError):
    """No optimization profile covers a call's shapes (a window bigger than the engines)."""


def profile_bounds(profiles: Sequence[Mapping[str, tuple[Sequence[int], ...]]]) -> list[Bounds]:
    """(min, max) per input of each profile, from (min, opt, max) shape triples."""
    return [
        {name: (tuple(s[0]), tuple(s[-1])) for name, s in p.items()}  # type: ignore[misc]
        for p in profiles
    ]


def pick_profile(bounds: Sequence[Bounds], shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Index of the first profile whose [min, max] holds every given shape. Profiles are built
    smallest bucket first, so the first that fits is the tightest."""
    for i, profile in enumerate(bounds):
        fits = True
        for name, (lo, hi) in profile.items():
            shape = shapes.get(name)
            if shape is None:
                continue
            if len(shape) != len(lo) or any(
                not a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)
            ):
                fits = False
                break
        if fits:
            return i
    ranges = "; ".join(
        f"#{i}: " + ", ".join(f"{n} {lo}..{hi}" for n, (lo, hi) in p.items())
        for i, p in enumerate(bounds)
    )
    raise ProfileError(
        f"no engine profile covers shapes {dict(shapes)} (profiles: {ranges}); rebuild the "
        "engines for a larger size: python -m vs_skipsr export --max-size WxH --frames T"
    )


# --- can TensorRT run here? ------------------------------------------------------------------


def tensorrt_unavailable_reason(device_index: int = 0) -> str | None:
    """None when a TensorRT module is importable and can run on CUDA device ``device_index``;
    otherwise why not, in words (used by ``auto`` and ``info``)."""
    trt, why = trt_available()
    if trt is None:
        return why
    if not torch.cuda.is_available():
        return f"{trt.__name__} is installed but torch sees no CUDA device"
    if device_index >= torch.cuda.device_count():
        return f"no CUDA device {device_index} (torch sees {torch.cuda.device_count()})"
    cap = torch.cuda.get_device_capability(device_index)
    if not trt_runs_on(trt, cap):
        return (
            f"{trt.__name__} does not run on {torch.cuda.get_device_name(device_index)} "
            f"(compute capability {cap[0]}.{cap[1]})"
        )
    return None


# --- the backend value -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TensorRTBackend:
    """TensorRT on CUDA device ``device_index``.

    ``fp16``/``bf16`` pick the engine precision (neither: fp32). ``num_streams``: how many CUDA
    streams (hence execution contexts) the caller will run at once. The engines cover windows
    of up to ``frames`` frames at up to ``max_size`` (output width, height) at ``scale``, with
    one SR profile per fraction in ``profiles``; the filter sets these from the clip
    (:meth:`for_clip`). ``engine_dir``: the cache folder (default: see
    :func:`vs_skipsr.export.default_engine_dir`).
    """

    device_index: int = 0
    fp16: bool = True
    bf16: bool = False
    num_streams: int = 1
    engine_dir: str | None = None
    profiles: tuple[float, ...] = (0.25, 0.5, 1.0)
    frames: int = 5
    max_size: tuple[int, int] = (1920, 1080)
    scale: int = 2

    @property
    def precision(self) -> Precision:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    def for_clip(self, *, frames: int, width: int, height: int, scale: int) -> TensorRTBackend:
        """The same backend with engines sized for a clip's windows (output size)."""
        return dataclasses.replace(self, frames=frames, max_size=(width, height), scale=scale)

    def spec(self, sr: SRTransformer) -> ProfileSpec:
        width, height = self.max_size
        return ProfileSpec.for_config(
            sr.config,
            frames=self.frames,
            height=height,
            width=width,
            scale=self.scale,
            buckets=self.profiles,
        )

    def load(self, *, sr: SRTransformer, mask: MaskNet | None) -> TensorRTRunner:
        why = tensorrt_unavailable_reason(self.device_index)
        if why is not None:
            raise RuntimeError(f"tensorrt backend: {why}")
        log.info(
            "tensorrt backend: device=cuda:%d precision=%s streams=%d size=%dx%d frames=%d "
            "scale=%d profiles=%s",
            self.device_index,
            self.precision,
            self.num_streams,
            *self.max_size,
            self.frames,
            self.scale,
            self.profiles,
        )
        cache = EngineCache(self.engine_dir)
        records = prepare_engines(
            sr=sr,
            mask=mask,
            spec=self.spec(sr),
            precision=self.precision,
            cache=cache,
            device_index=self.device_index,
        )
        return TensorRTRunner(self, sr=sr, records=records, cache=cache)


# --- running ---------------------------------------------------------------------------------

_TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT64": torch.int64,
    "INT32": torch.int32,
    "BOOL": torch.bool,
}


class _Engine:
    """One deserialized engine, its profile bounds and one execution context per stream."""

    def __init__(self, trt: Any, runtime: Any, record: EngineRecord, cache: EngineCache) -> None:
        self.trt = trt
        self.record = record
        self.engine = runtime.deserialize_cuda_engine(record.data)
        if self.engine is None:
            cache.invalidate(name=record.name, key=record.key)
            raise RuntimeError(
                f"TensorRT could not deserialize {record.path} (see the log above); the cache "
                "entry was removed and will be rebuilt on the next load"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.bounds: list[Bounds] = [
            {
                n: tuple(tuple(d) for d in self.engine.get_tensor_profile_shape(n, p))[0::2]  # type: ignore[misc]
                for n in self.inputs
            }
            for p in range(self.engine.num_optimization_profiles)
        ]
        self.contexts: dict[int, Any] = {}
        self.lock = threading.Lock()
        self.runtime_config, self.runtime_cache = self._rtx_runtime_cache()

    def _rtx_runtime_cache(self) -> tuple[Any, Any]:
        """TensorRT-RTX only: a runtime cache of JIT kernels shared by this engine's contexts,
        seeded from ``<engine>.rtxcache`` (rejected by TensorRT-RTX if from another GPU)."""
        if not is_rtx(self.trt) or not hasattr(self.engine, "create_runtime_config"):
            return None, None
        config = self.engine.create_runtime_config()
        cache = config.create_runtime_cache()
        path = self.cache_path
        if path.is_file() and not cache.deserialize(path.read_bytes()):
            log.info("tensorrt: %s is from another GPU or version; starting afresh", path.name)
        config.set_runtime_cache(cache)
        return config, cache

    @property
    def cache_path(self) -> Path:
        return self.record.path.with_suffix(".rtxcache")

    def save_runtime_cache(self) -> None:
        if self.runtime_cache is not None:
            atomic_write(self.cache_path, bytes(memoryview(self.runtime_cache.serialize())))

    def context(self, stream: int) -> Any:
        ctx = self.contexts.get(stream)
        if ctx is None:
            with self.lock:
                ctx = self.contexts.get(stream)
                if ctx is None:
                    if self.runtime_config is not None:
                        ctx = self.engine.create_execution_context(self.runtime_config)
                    else:
                        ctx = self.engine.create_execution_context()
                    if ctx is None:
                        raise RuntimeError(
                            f"TensorRT could not create a context for {self.record.name}"
                        )
                    self.contexts[stream] = ctx
                    log.debug("tensorrt: context %d for %s", len(self.contexts), self.record.name)
        return ctx

    def run(
        self, feeds: Mapping[str, Tensor], *, device: torch.device, stream: int
    ) -> dict[str, Tensor]:
        """Enqueue on CUDA stream ``stream`` (a handle); outputs are new tensors on ``device``.
        Returns once enqueued: the outputs are ready in stream order, not yet on the host."""
        ctx = self.context(stream)
        index = pick_profile(self.bounds, {n: tuple(x.shape) for n, x in feeds.items()})
        switch = ctx.active_optimization_profile != index
        if switch and not ctx.set_optimization_profile_async(index, stream):
            raise RuntimeError(f"TensorRT refused profile {index} of {self.record.name}")
        for name in self.inputs:
            x = feeds[name]
            want = _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
            if x.dtype != want or not x.is_contiguous() or x.device != device:
                raise TypeError(f"{name}: need a contiguous {want} tensor on {device}")
            ctx.set_input_shape(name, tuple(x.shape))
            ctx.set_tensor_address(name, x.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            dtype = _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
            out = torch.empty(shape, dtype=dtype, device=device)
            ctx.set_tensor_address(name, out.data_ptr())
            outs[name] = out
        if not ctx.execute_async_v3(stream):
            raise RuntimeError(f"TensorRT failed to enqueue {self.record.name}")
        return outs


class TensorRTRunner(EulerFlow):
    """Implements :class:`~vs_skipsr.backends.base.Runner` on TensorRT engines."""

    def __init__(
        self,
        spec: TensorRTBackend,
        *,
        sr: SRTransformer,
        records: Mapping[str, EngineRecord],
        cache: EngineCache,
    ) -> None:
        trt, _ = trt_available()
        self.name = "tensorrt"
        self.device = torch.device("cuda", spec.device_index)
        self.sr_config = sr.config
        self.has_mask = "mask" in records
        self.wants_buckets = False
        self.base_dtype = torch.float32  # the engine's input (_f32)
        self._logger = trt_logger(trt)
        torch.cuda.init()  # TensorRT runs in torch's (primary) CUDA context
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)  # type: ignore[union-attr]
            self._engines = {k: _Engine(trt, self._runtime, r, cache) for k, r in records.items()}
        self._finalizer = weakref.finalize(self, _save_caches, list(self._engines.values()))

    def close(self) -> None:
        """Write TensorRT-RTX's runtime caches back (also done when the runner is collected)."""
        self._finalizer()

    def _run(self, net: str, feeds: dict[str, Tensor]) -> dict[str, Tensor]:
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device).cuda_stream
            return self._engines[net].run(feeds, device=self.device, stream=stream)

    def prepare(
        self, *, grid: tuple[int, int, int], dense: bool = False, steps: int | None = None
    ) -> None:
        """Nothing: the engine's optimization profile covers every token count."""

    def mask(self, lr: Tensor) -> Tensor:
        if "mask" not in self._engines:
            raise RuntimeError("this runner has no mask net")
        lr = lr.to(self.device, torch.float32).contiguous()
        return self._run("mask", {MASK_INPUTS[0]: lr})[MASK_OUTPUTS[0]]

    def sr(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        t: Tensor,
        partitions: tuple[Partition, Partition],
    ) -> Tensor:
        def _f32(x: Tensor) -> Tensor:
            return x.to(self.device, torch.float32).contiguous()

        def _i64(x: Tensor) -> Tensor:
            return x.to(self.device, torch.int64).contiguous()

        values = (
            _f32(base),
            _f32(state),
            _i64(coords),
            _f32(t.reshape(1)),
            _i64(partitions[0].part),
            _i64(partitions[1].part),
        )
        return self._run("sr", dict(zip(SR_INPUTS, values, strict=True)))[SR_OUTPUTS[0]]


def _save_caches(engines: list[_Engine]) -> None:
    for e in engines:
        try:
            e.save_runtime_cache()
        except (OSError, RuntimeError) as err:  # an unsaved cache costs JIT time, no more
            log.warning("tensorrt: could not save %s: %s", e.cache_path, err)
