#!/usr/bin/env python3
"""The per-frame plumbing of skipsr() alone: frames/second through ``clip.get_frame`` with
the network (and, by default, the whole of upscale_window) replaced by stand-ins that cost
~nothing, so what is left is what the filter itself does per frame: source frames to numpy,
the copy to the device and back, the window cache, blending, writing the VapourSynth frame
and the resize back to the clip's format.

    python scripts/bench_plumbing.py                          # 480x270 YUV420P8 -> 1920x1080
    python scripts/bench_plumbing.py --filter /tmp/filter_orig.py   # another filter.py, same run
    python scripts/bench_plumbing.py --pipeline real          # real upscale_window, stub runner
    python scripts/bench_plumbing.py --device cuda            # on a GPU: pinned copies included
    python scripts/bench_plumbing.py --half-host              # float16 windows + RGBH on the CPU
    python scripts/bench_plumbing.py --device-color           # YUV planes made in torch, as on CUDA

``--pipeline stub`` (default) returns a fixed window (nearest upsample of the LR input, made
once per shape) from a stand-in upscale_window on the runner's device, so on a GPU the copy
back to the host is still real; ``--fresh`` makes it allocate a new output per window as the
real one does (on the CPU, that allocation's page faults then weigh on both versions). ``--pipeline real`` runs upscale_window with a runner whose
sr() returns zeros (the bicubic upsample, gather and scatter stay, and on the CPU dominate).
``--requests R`` keeps R frames in flight (get_frame_async), as ``vspipe -r R`` does.
Prints one line per configuration; writes nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
import vapoursynth as vs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vs_skipsr.backends.base import EulerFlow  # noqa: E402
from vs_skipsr.models.weights import DEFAULT_SR_WEIGHTS, load_sr  # noqa: E402
from vs_skipsr.pipeline import WindowOutput, WindowStats  # noqa: E402
from vs_skipsr.tokens import pad_to_grid, token_grid  # noqa: E402


def load_filter(path: str | None) -> ModuleType:
    """vs_skipsr.filter, or the given file imported as a module of the vs_skipsr package (so
    its relative imports resolve), to time an older version side by side."""
    if path is None:
        from vs_skipsr import filter as mod

        return mod
    name = "vs_skipsr._bench_" + Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class StubRunner(EulerFlow):
    """A runner whose networks cost nothing: mask scores zero, sr() a zero velocity."""

    name = "stub"
    has_mask = False
    wants_buckets = False
    base_dtype = torch.float32

    def __init__(self, device: torch.device, sr_config) -> None:
        self.device = device
        self.sr_config = sr_config

    def prepare(self, *, grid, dense=False, steps=None) -> None:
        pass

    def mask(self, lr: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(lr[:, :1])

    def sr(self, base, state, coords, t, partitions) -> torch.Tensor:
        return torch.zeros_like(state)


@dataclass(frozen=True)
class StubBackend:
    device: str

    def load(self, *, sr, mask) -> StubRunner:
        return StubRunner(torch.device(self.device), sr.config)


def stub_upscale_window(fresh: bool) -> Callable[..., WindowOutput]:
    """A stand-in for pipeline.upscale_window: a float32 window on lr's device (a nearest
    upsample of the first input seen for each shape), keep all ones. ``fresh``: each call
    returns a new copy, as the real upscale_window allocates its output (on the CPU that
    allocation's page faults are then in the timing); else the same tensor every call, as a
    GPU's caching allocator hands out device memory for free."""
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, int, int]] = {}

    def upscale(lr: torch.Tensor, *, scale: int, runner, **_: object) -> WindowOutput:
        key = (tuple(lr.shape), scale, lr.device)
        made = cache.get(key)
        if made is None:
            frames = F.interpolate(lr.float(), scale_factor=scale, mode="nearest")
            t, _, h, w = frames.shape
            patch = runner.sr_config.patch
            keep = torch.ones(token_grid(t, h, w, patch=patch), dtype=torch.bool, device=lr.device)
            made = cache[key] = (pad_to_grid(frames, patch=patch), keep, h, w)
        padded, keep, h, w = made
        if fresh:
            padded, keep = padded.clone(), keep.clone()
        return WindowOutput(
            frames=padded[..., :h, :w],
            keep=keep,
            stats=WindowStats(kept=1, total=1, bucket=1),
            grid_frames=padded,
        )

    return upscale


def source(fmt: int, width: int, height: int, frames: int) -> vs.VideoNode:
    """A cheap source with texture: one random RGB24 picture, shifted a pixel per frame."""
    core = vs.core
    rng = np.random.default_rng(0)
    picture = rng.integers(16, 236, (height, width + frames, 3), dtype=np.uint8)
    blank = core.std.BlankClip(format=vs.RGB24, width=width, height=height, length=frames)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), picture[:, n : n + width, p])
        return out

    clip = core.std.ModifyFrame(blank, blank, fill)
    if core.get_video_format(fmt).color_family == vs.RGB:
        return core.resize.Bicubic(clip, format=fmt)
    clip = core.resize.Bicubic(clip, format=fmt, matrix_s="709", range_s="limited")
    return core.std.SetFrameProps(clip, _Matrix=1, _Range=0, _ChromaLocation=0)


def time_frames(clip: vs.VideoNode, requests: int) -> tuple[float, float, float]:
    """Frames/second over the whole clip with ``requests`` frames in flight; the process's CPU
    time per frame in ms (all threads, user + system); and page faults per frame (each fresh
    page of a new allocation costs one: a steady count where a shared machine's wall clock
    is not)."""
    n = clip.num_frames
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    c0 = time.process_time()
    t0 = time.perf_counter()
    if requests <= 1:
        for i in range(n):
            clip.get_frame(i)
    else:
        pending: list[Future] = []
        for i in range(n):
            pending.append(clip.get_frame_async(i))
            if len(pending) >= requests:
                pending.pop(0).result()
        for f in pending:
            f.result()
    wall = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    return n / wall, (time.process_time() - c0) * 1000.0 / n, faults / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--filter",
        action="append",
        default=None,
        help="filter.py file(s) to time; default vs_skipsr.filter ('-' for it too)",
    )
    ap.add_argument("--format", default="YUV420P8", help="source/output format name")
    ap.add_argument("--size", default="480x270")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--window", type=int, default=5)
    ap.add_argument("--overlap", type=int, default=0)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--requests", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3, help="runs per config; the median is shown")
    ap.add_argument("--pipeline", choices=("stub", "real"), default="stub")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="the stub allocates a new output per window (see stub_upscale_window)",
    )
    ap.add_argument(
        "--half-host",
        action="store_true",
        help="keep windows as float16 and write RGBH frames on the CPU too "
        "(the path CUDA takes for <=10-bit and half formats)",
    )
    ap.add_argument(
        "--device-color",
        action="store_true",
        help="convert windows to the clip's YUV planes in torch on the CPU too and write them "
        "as they are (the path CUDA takes for YUV clips without overlap)",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num-streams", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="VapourSynth threads (0: leave)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch threads (0: leave)")
    args = ap.parse_args()  # fmt: skip

    if args.threads:
        vs.core.num_threads = args.threads
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    fmt = getattr(vs, args.format)
    w, h = map(int, args.size.split("x"))
    sr_cfg = load_sr(DEFAULT_SR_WEIGHTS).config
    print(
        f"plumbing: {w}x{h} {args.format} x{args.scale} -> {w * args.scale}x{h * args.scale}, "
        f"window {args.window} overlap {args.overlap}, {args.frames} frames, pipeline "
        f"{args.pipeline}{' fresh' if args.fresh else ''}{' half-host' if args.half_host else ''}{' device-color' if args.device_color else ''}, device {args.device}, vs threads {vs.core.num_threads}, torch "
        f"threads {torch.get_num_threads()}, patch {sr_cfg.patch}",
        flush=True,
    )
    mods = {}
    for path in args.filter or [None]:
        mod = load_filter(None if path in (None, "-") else path)
        if args.pipeline == "stub":
            mod.upscale_window = stub_upscale_window(args.fresh)  # the name filter.py calls
        if args.half_host and hasattr(mod, "_HALF_HOST_DEVICES"):
            mod._HALF_HOST_DEVICES = frozenset({"cpu", "cuda"})
        if args.device_color and hasattr(mod, "_DEVICE_COLOR_DEVICES"):
            mod._DEVICE_COLOR_DEVICES = frozenset({"cpu", "cuda"})
        mods[path or "vs_skipsr.filter"] = mod
    fps: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    flt: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits every config alike
        for name, mod in mods.items():
            for requests in args.requests:
                clip = source(fmt, w, h, args.frames)
                out = mod.skipsr(
                    clip,
                    scale=args.scale,
                    backend=StubBackend(args.device),
                    window=args.window,
                    overlap=args.overlap,
                    skip_ratio=0,
                    scorer="gradient",
                    num_streams=args.num_streams,
                    sr_weights=DEFAULT_SR_WEIGHTS,
                )
                out.get_frame(0)  # warm: first window, resize nodes built
                rate, cpu_ms, faults = time_frames(out, requests)
                flt.setdefault((name, requests), []).append(faults)
                fps.setdefault((name, requests), []).append(rate)
                cpu.setdefault((name, requests), []).append(cpu_ms)
    for (name, requests), runs in fps.items():
        print(
            f"  {name:<28} requests {requests}: {statistics.median(runs):6.1f} fps median, "
            f"{max(runs):6.1f} best, CPU {statistics.median(cpu[name, requests]):5.1f} ms/frame, "
            f"{statistics.median(flt[name, requests]):6.0f} page faults/frame "
            f"(fps runs: {', '.join(f'{x:.1f}' for x in runs)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
