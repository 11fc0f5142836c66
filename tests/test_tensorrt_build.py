"""TensorRT: the profile set covers every window the pipeline can make, a call picks the
tightest profile, and TensorRT-RTX builds both engines on a machine without a GPU.

Running engines needs a GPU that the installed TensorRT supports; on a machine without one
those tests skip and say so (``tensorrt_unavailable_reason``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time

import pytest
import torch

from vs_skipsr import export
from vs_skipsr.backends.select import autoselect, resolve_backend
from vs_skipsr.backends.tensorrt_backend import (
    ProfileError,
    TensorRTBackend,
    pick_profile,
    profile_bounds,
    tensorrt_unavailable_reason,
)
from vs_skipsr.backends.torch_backend import TorchBackend
from vs_skipsr.export import (
    SR_INPUTS,
    EngineCache,
    ProfileSpec,
    build_engine,
    export_mask_onnx,
    export_sr_onnx,
    prepare_engines,
)
from vs_skipsr.models.mask import MaskConfig, MaskNet
from vs_skipsr.models.sr import PRESETS, SRTransformer
from vs_skipsr.tokens import build_partition, token_coords

HAVE_RTX = importlib.util.find_spec("tensorrt_rtx_bindings") is not None
needs_rtx = pytest.mark.skipif(
    not HAVE_RTX, reason="tensorrt_rtx_bindings not installed (pip install .[trt])"
)


# --- profiles (pure) -------------------------------------------------------------------------


def test_buckets_cover_every_kept_count_with_opt_inside():
    spec = ProfileSpec.for_config(PRESETS["default"], frames=5, height=1080, width=1920, scale=2)
    assert spec.total_tokens == 5 * 68 * 120
    ranges = spec.k_ranges()
    assert len(ranges) == 3
    assert ranges[-1][2] == spec.total_tokens  # keep-all (dense) has a profile
    for lo, opt, hi in ranges:
        assert lo == 1 and lo <= opt <= hi
        assert hi % spec.multiple == 0 or hi == spec.total_tokens  # on the pipeline's buckets
    assert [r[2] for r in ranges] == sorted({r[2] for r in ranges})
    for p in spec.sr_profiles():
        for lo, opt, hi in p.values():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))


def test_each_call_takes_the_tightest_profile_that_covers_it():
    spec = ProfileSpec.for_config(PRESETS["default"], frames=5, height=1080, width=1920, scale=2)
    bounds = profile_bounds(spec.sr_profiles())
    k_max = [r[2] for r in spec.k_ranges()]
    d = spec.token_dim

    def shapes(k: int, n_w: int = 8, length: int = 40) -> dict[str, tuple[int, ...]]:
        return {
            "base": (k, spec.base_dim),
            "state": (k, d),
            "coords": (k, 3),
            "t": (1,),
            "part0": (n_w, length),
            "part1": (n_w, length),
        }

    assert pick_profile(bounds, shapes(1)) == 0
    assert pick_profile(bounds, shapes(k_max[0])) == 0
    assert pick_profile(bounds, shapes(k_max[0] + 1)) == 1
    assert pick_profile(bounds, shapes(k_max[1] + 1)) == 2
    assert pick_profile(bounds, shapes(spec.total_tokens)) == 2
    with pytest.raises(ProfileError, match="export --max-size"):
        pick_profile(bounds, shapes(spec.total_tokens + 1))  # a window bigger than the engines
    with pytest.raises(ProfileError):
        pick_profile(bounds, shapes(10, length=spec.window_tokens + 1))


@pytest.mark.parametrize("fraction", [0.02, 0.2, 0.45, 0.8, 1.0])
def test_real_partitions_fit_the_profile_their_k_selects(fraction):
    """Partitions built as the pipeline builds them, on a full 1080p window, fit."""
    cfg = PRESETS["default"]
    spec = ProfileSpec.for_config(cfg, frames=5, height=1080, width=1920, scale=2)
    bounds = profile_bounds(spec.sr_profiles())
    g = torch.Generator().manual_seed(int(fraction * 100))
    keep = torch.rand(spec.grid, generator=g) < fraction
    index = torch.nonzero(keep.reshape(-1)).squeeze(1)
    coords = token_coords(index, grid=spec.grid)
    parts = [
        build_partition(coords, grid=spec.grid, window=cfg.window, shift=s).part
        for s in ((0, 0, 0), cfg.shift)
    ]
    shapes = {
        "base": (index.numel(), spec.base_dim),
        "coords": (index.numel(), 3),
        "part0": tuple(parts[0].shape),
        "part1": tuple(parts[1].shape),
    }
    chosen = pick_profile(bounds, shapes)
    assert index.numel() <= spec.k_ranges()[chosen][2]
    assert chosen == 0 or index.numel() > spec.k_ranges()[chosen - 1][2]


def test_small_windows_get_exact_bucket_edges():
    spec = ProfileSpec.for_config(PRESETS["tiny"], frames=2, height=128, width=128, scale=2)
    assert [r[2] for r in spec.k_ranges()] == [32, 64, 128]
    with pytest.raises(ValueError):
        dataclasses.replace(spec, buckets=(0.5, 0.25))


# --- choosing TensorRT -----------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_auto_says_why_it_did_not_pick_tensorrt(caplog):
    reason = tensorrt_unavailable_reason(0)
    assert reason is not None and ("CUDA" in reason or "TensorRT" in reason)
    with pytest.raises(ValueError, match="backend 'trt'"):
        resolve_backend("trt")
    with caplog.at_level("INFO", logger="vs_skipsr.backends.select"):
        chosen = autoselect()
    assert chosen == TorchBackend(device="cpu", dtype="fp32")
    assert "backend auto ->" in caplog.text


def test_rtx_runs_on_its_compute_capabilities_only():
    if not HAVE_RTX:
        pytest.skip("tensorrt_rtx_bindings not installed")
    import tensorrt_rtx_bindings as trt

    assert export.is_rtx(trt)
    assert export.trt_runs_on(trt, (8, 6)) and export.trt_runs_on(trt, (12, 0))
    assert not export.trt_runs_on(trt, (9, 0))  # Hopper: refused by TensorRT-RTX
    assert not export.trt_runs_on(trt, (7, 5))  # Turing: only with an explicit target


def test_backend_value_names_its_precision_and_sizes_for_a_clip():
    b = TensorRTBackend(fp16=True)
    assert b.precision == "fp16" and dataclasses.replace(b, bf16=True).precision == "bf16"
    clip = b.for_clip(frames=3, width=1280, height=720, scale=4)
    spec = clip.spec(SRTransformer(PRESETS["tiny"]))
    assert (spec.frames, spec.width, spec.height, spec.scale) == (3, 1280, 720, 4)


# --- TensorRT-RTX builds on the CPU ----------------------------------------------------------


@pytest.fixture()
def rtx(monkeypatch):
    if not HAVE_RTX:
        pytest.skip("tensorrt_rtx_bindings not installed (pip install .[trt])")
    monkeypatch.setenv("SKIPSR_TRT_MODULE", "tensorrt_rtx_bindings")
    export.trt_module.cache_clear()
    yield export.trt_module()
    export.trt_module.cache_clear()


def _nets() -> tuple[SRTransformer, MaskNet]:
    g = torch.Generator().manual_seed(0)
    sr, mask = SRTransformer(PRESETS["tiny"]).eval(), MaskNet(MaskConfig(width=8, depth=3)).eval()
    with torch.no_grad():
        for p in [*sr.parameters(), *mask.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return sr, mask


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_rtx_builds_both_engines_with_three_profiles_without_a_gpu(rtx, tmp_path, precision):
    sr, mask = _nets()
    spec = ProfileSpec.for_config(sr.config, frames=2, height=256, width=256, scale=2)
    export_sr_onnx(sr, tmp_path / "sr.onnx", dtype=precision)
    export_mask_onnx(mask, tmp_path / "mask.onnx", dtype=precision)
    lines: list[str] = []

    t0 = time.perf_counter()
    built = build_engine(
        tmp_path / "sr.onnx",
        profiles=spec.sr_profiles(),
        precision=precision,
        progress=lines.append,
    )
    sr_seconds = time.perf_counter() - t0
    assert built.num_profiles == 3 and built.strongly_typed
    assert list(built.inputs) == ["base", "state", "coords", "t", "part0", "part1"]
    assert built.inputs["base"] == ((-1, sr.config.base_dim), "FLOAT")
    assert built.inputs["state"] == ((-1, sr.config.token_dim), "FLOAT")
    assert built.inputs["part1"] == ((-1, -1), "INT64")
    assert built.outputs["velocity"][1] == "FLOAT"
    assert len(built.data) > 100_000
    assert any("built" in line for line in lines)  # progress was reported

    m = build_engine(tmp_path / "mask.onnx", profiles=spec.mask_profiles(), precision=precision)
    assert m.num_profiles == 1 and m.inputs["lr"] == ((-1, 3, -1, -1), "FLOAT")
    print(
        f"TensorRT-RTX {rtx.__version__} {precision}: SR {sr_seconds:.1f}s "
        f"{len(built.data) / 2**20:.1f} MiB, mask {m.seconds:.1f}s {len(m.data) / 2**20:.2f} MiB"
    )


def test_rtx_rejects_a_profile_missing_a_dynamic_input(rtx, tmp_path):
    sr, _ = _nets()
    export_sr_onnx(sr, tmp_path / "sr.onnx")
    spec = ProfileSpec.for_config(sr.config, frames=2, height=128, width=128, scale=2)
    profiles = spec.sr_profiles()
    del profiles[0]["part1"]
    with pytest.raises(ValueError, match="part1"):
        build_engine(tmp_path / "sr.onnx", profiles=profiles)


def test_rtx_engines_are_cached_and_a_truncated_one_is_rebuilt(rtx, tmp_path, caplog):
    sr, mask = _nets()
    spec = ProfileSpec.for_config(sr.config, frames=2, height=128, width=128, scale=2)
    cache = EngineCache(tmp_path)
    calls: list[str] = []

    def counting_build(onnx_path, **kw):
        calls.append(onnx_path.name)
        return build_engine(onnx_path, **kw)

    kw = {"sr": sr, "mask": mask, "spec": spec, "precision": "fp16", "cache": cache}
    kw["builder"] = counting_build
    first = prepare_engines(**kw, device_index=None)
    assert len(calls) == 2
    assert first["sr"].key != first["mask"].key
    prepare_engines(**kw, device_index=None)
    assert len(calls) == 2
    engine = first["sr"].path
    engine.write_bytes(engine.read_bytes()[:1000])
    with caplog.at_level("WARNING"):
        again = prepare_engines(**kw, device_index=None)
    assert len(calls) == 3 and "truncated" in caplog.text
    assert len(again["sr"].data) == len(first["sr"].data)


@pytest.mark.skipif(
    tensorrt_unavailable_reason(0) is not None,
    reason=f"cannot run TensorRT engines here: {tensorrt_unavailable_reason(0)}",
)
def test_tensorrt_backend_matches_torch_on_a_gpu():
    from vs_skipsr.pipeline import upscale_window

    sr, mask = _nets()
    lr = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(0)).cuda()
    kwargs = {"scale": 2, "scorer": "learned", "skip_ratio": 0.5, "steps": 1, "seed": 3}
    trt_runner = (
        TensorRTBackend(fp16=False)
        .for_clip(frames=2, width=112, height=80, scale=2)
        .load(sr=sr, mask=mask)
    )
    ref_runner = TorchBackend(device="cuda", dtype="fp32", attention="padded").load(
        sr=sr, mask=mask
    )
    out = upscale_window(lr, runner=trt_runner, **kwargs)
    ref = upscale_window(lr, runner=ref_runner, **kwargs)
    assert torch.equal(out.keep, ref.keep)
    assert float((out.frames - ref.frames).abs().max()) < 1e-3


# --- the running half, against a stand-in TensorRT (no GPU needed) ---------------------------


class _FakeDType:
    def __init__(self, name: str) -> None:
        self.name = name


class _FakeContext:
    """Records the calls; 'executes' by copying input base into output velocity through the
    bound addresses, which checks that the addresses and shapes were bound correctly."""

    def __init__(self) -> None:
        self.active_optimization_profile = 0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.switches: list[tuple[int, int]] = []
        self.executed: list[int] = []

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        self.switches.append((index, stream))
        self.active_optimization_profile = index
        return True

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = address
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes["base"]

    def execute_async_v3(self, stream: int) -> bool:
        import ctypes

        k, d = self.shapes["base"]
        ctypes.memmove(self.addresses["velocity"], self.addresses["base"], k * d * 4)
        self.executed.append(stream)
        return True


class _FakeEngine:
    def __init__(self, profiles) -> None:
        self.names = [*SR_INPUTS, "velocity"]
        self.profiles = profiles
        self.num_io_tensors = len(self.names)
        self.num_optimization_profiles = len(profiles)
        self.contexts: list[_FakeContext] = []

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> str:
        return "OUTPUT" if name == "velocity" else "INPUT"

    def get_tensor_dtype(self, name: str) -> _FakeDType:
        return _FakeDType("INT64" if name in ("coords", "part0", "part1") else "FLOAT")

    def get_tensor_profile_shape(self, name: str, index: int):
        if name == "t":
            return [(1,), (1,), (1,)]
        return list(self.profiles[index][name])

    def create_execution_context(self, *args) -> _FakeContext:
        self.contexts.append(_FakeContext())
        return self.contexts[-1]


def test_engine_runner_picks_profiles_and_binds_per_stream(tmp_path):
    import types

    from vs_skipsr.backends.tensorrt_backend import _Engine
    from vs_skipsr.export import EngineRecord

    spec = ProfileSpec.for_config(PRESETS["tiny"], frames=2, height=128, width=128, scale=2)
    profiles = spec.sr_profiles()
    engine = _FakeEngine(profiles)
    fake_trt = types.SimpleNamespace(
        __name__="fake_tensorrt", TensorIOMode=types.SimpleNamespace(INPUT="INPUT")
    )
    runtime = types.SimpleNamespace(deserialize_cuda_engine=lambda data: engine)
    record = EngineRecord(
        name="sr-fp32",
        key="0" * 64,
        path=tmp_path / "sr.engine",
        onnx=tmp_path / "sr.onnx",
        data=b"",
        profiles=profiles,
    )
    runner = _Engine(fake_trt, runtime, record, EngineCache(tmp_path))
    assert runner.inputs == list(SR_INPUTS) and runner.outputs == ["velocity"]

    def feeds(k: int) -> dict[str, torch.Tensor]:
        d = spec.token_dim
        return {
            "base": torch.rand(k, spec.base_dim),
            "state": torch.rand(k, d),
            "coords": torch.zeros(k, 3, dtype=torch.long),
            "t": torch.ones(1),
            "part0": torch.zeros(2, 8, dtype=torch.long),
            "part1": torch.zeros(3, 8, dtype=torch.long),
        }

    cpu = torch.device("cpu")
    small, big = feeds(20), feeds(100)
    out = runner.run(small, device=cpu, stream=11)["velocity"]
    assert torch.equal(out, small["base"])  # bound where the inputs and output live
    ctx = engine.contexts[0]
    assert ctx.switches == []  # 20 tokens: profile 0, already active
    out = runner.run(big, device=cpu, stream=11)["velocity"]
    assert torch.equal(out, big["base"])
    assert ctx.switches == [(2, 11)] and ctx.shapes["part1"] == (3, 8)
    runner.run(feeds(5), device=cpu, stream=22)  # another stream: its own context
    assert len(engine.contexts) == 2 and engine.contexts[1].executed == [22]
    assert ctx.executed == [11, 11]
    bad = feeds(5)
    bad["coords"] = bad["coords"].int()
    with pytest.raises(TypeError, match="coords"):
        runner.run(bad, device=cpu, stream=11)
