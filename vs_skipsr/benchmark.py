"""Timing the SR net against the kept fraction: the measurement behind SkipSR's promise.

Used by ``python -m vs_skipsr bench`` and scripts/bench.py. Keep sets are clustered like real
masks (the top tokens of a smooth random field), not salt-and-pepper, so attention windows are
mostly full or mostly empty as they are on real video.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .backends.base import Runner
from .backends.cuda_graphs import SRCall
from .backends.torch_backend import TorchBackend
from .models.sr import SRConfig
from .tokens import Partition, kept_bucket, padded_tokens, token_grid

__all__ = [
    "FRACTIONS",
    "ScalingRow",
    "back_to_back_seconds",
    "captured",
    "clustered_keep",
    "format_table",
    "median_seconds",
    "mode_backend",
    "scaling_table",
    "sr_flops",
    "sr_inputs",
]

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class ScalingRow:
    fraction: float
    kept: int
    tokens: int
    ms: float
    tflops: float
    relative: float = 1.0  # time / dense time
    vs_linear: float = 0.0  # relative / fraction - 1
    # per call when calls are queued back to back with one sync at the end, as the filter
    # issues them: the host's launch work for one call overlaps the GPU's work on the last
    stream_ms: float = 0.0
    stream_vs_linear: float = 0.0


def clustered_keep(grid: tuple[int, int, int], frac: float, *, seed: int = 0) -> torch.Tensor:
    """The top ``frac`` of a smooth random field on the token grid: blobs, like textured regions."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = grid
    coarse = torch.rand(t, 1, max(2, h // 4), max(2, w // 4), generator=g)
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    field = field + 0.02 * torch.rand(field.shape, generator=g)
    n = field.numel()
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.topk(field.reshape(-1), max(1, round(frac * n))).indices] = True
    return keep.reshape(grid)


def captured[T](fn: Callable[[], T]) -> tuple[torch.cuda.CUDAGraph, T]:
    """``fn`` captured in a CUDA graph, after one run on a side stream (what a capture needs
    first: lazy initialisation, Triton's compiles, cuBLAS's workspaces, none of which may
    happen inside it). Returns the graph and the capture's outputs, which every replay
    rewrites in place."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def median_seconds(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median wall time of ``fn`` after one warm-up, synchronising CUDA around each call."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    once()
    return statistics.median(once() for _ in range(reps))


def back_to_back_seconds(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Wall time per call of ``calls`` calls queued with no sync between them (one warm-up)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / calls


def sr_flops(cfg: SRConfig, parts: Sequence[Partition], kept: int) -> float:
    """Floating-point operations of one SR call: per-token linears plus attention over the real
    window sizes (QK^T and PV, 4 n^2 C per window and block)."""
    c, d = cfg.dim, cfg.token_dim
    hidden = int(c * cfg.mlp_ratio)
    embed = 2 * (cfg.base_dim + d) * c
    per_token = embed + cfg.depth * 2 * (4 * c * c + 2 * c * hidden) + _head_flops(cfg)
    attn = 0.0
    for i in range(cfg.depth):
        cu = parts[i % len(parts)].cu_seqlens
        counts = (cu[1:] - cu[:-1]).double()
        attn += float(4 * c * (counts**2).sum())
    return per_token * kept + attn


def _head_flops(cfg: SRConfig) -> float:
    """Per-token flops of the output head (models/sr.py: FinalLayer or ConvHead)."""
    c, d = cfg.dim, cfg.token_dim
    if cfg.head != "conv":
        return 2 * c * d
    w, g = cfg.head_width, cfg.patch // cfg.head_cell
    pix = cfg.channels * cfg.head_cell**2
    flops = 2 * c * w * g * g  # to_grid
    side, cin = g + 2 * (cfg.halo // cfg.head_cell), pix
    while side > g:  # the stem's unpadded 3x3 convs
        side -= 2
        flops += 2 * 9 * cin * w * side * side
        cin = w
    flops += 2 * g * g * (9 * (w + cin) * w + 9 * w * w + w * pix)
    return flops


def mode_backend(mode: str, *, device: str, dtype: str) -> TorchBackend:
    """The torch backend a benchmark mode names, so every script reads modes alike: eager
    'padded', 'varlen' or 'triton' (that attention), 'graphs' (CUDA graphs with the runner's
    own choice of attention), 'compiled' (torch.compile, then graphs); 'graphs+varlen' and
    the like name the attention of a graphed mode."""
    base, _, attention = mode.partition("+")
    if base not in ("padded", "varlen", "triton", "graphs", "compiled"):
        raise ValueError(
            f"mode {mode!r}: expected padded, varlen, triton, graphs or compiled[+attention]"
        )
    graphs = base in ("graphs", "compiled")
    return TorchBackend(
        device=device,
        dtype=dtype,  # type: ignore[arg-type]
        attention=attention or ("auto" if graphs else base),  # type: ignore[arg-type]
        cuda_graphs=graphs,
        compile=base == "compiled",
    )


def sr_inputs(
    runner: Runner,
    *,
    grid: tuple[int, int, int],
    fraction: float,
    bucketed: bool,
    generator: torch.Generator,
) -> tuple[int, SRCall]:
    """One SR call's arguments for a clustered keep set of ``fraction`` of ``grid``, padded to
    its bucket when ``bucketed`` (as the pipeline pads it on CUDA), the base patches in the
    runner's ``base_dtype`` (as the pipeline gathers them); returns (kept, call)."""
    cfg, dev = runner.sr_config, runner.device
    total = grid[0] * grid[1] * grid[2]
    index = torch.nonzero(clustered_keep(grid, fraction).reshape(-1)).squeeze(1).to(dev)
    k = index.numel()
    kb = kept_bucket(k, total=total) if bucketed else k
    _, coords, parts = padded_tokens(
        index,
        bucket=kb,
        grid=grid,
        window=cfg.window,
        shift=cfg.shift,
        static_len=dev.type == "cuda",
    )
    base = torch.rand(kb, cfg.base_dim, generator=generator).to(dev, runner.base_dtype)
    state = (torch.randn(kb, cfg.token_dim, generator=generator) * cfg.noise_std).to(dev)
    return k, (base, state, coords, torch.ones(1, device=dev), parts)


def scaling_table(
    runner: Runner,
    *,
    size: tuple[int, int],
    frames: int,
    fractions: Sequence[float] = FRACTIONS,
    reps: int = 5,
    bucketed: bool = False,
    steps: int = 0,
) -> list[ScalingRow]:
    """One SR call (one flow step) per kept fraction on a window of ``frames`` x ``size``
    output pixels; the last fraction is the reference for ``relative``. ``steps`` N > 0:
    a window's whole N-step flow instead (``runner.flow``, what the filter runs: the base's
    features once, each step's modulation made once for the step count, not per call)."""
    cfg = runner.sr_config
    dev = runner.device
    w, h = size
    grid = token_grid(frames, h, w, patch=cfg.patch)
    total = grid[0] * grid[1] * grid[2]
    g = torch.Generator().manual_seed(1)
    if bucketed:  # as the filter does: every bucket ready (captured largest first) up front
        runner.prepare(grid=grid, steps=steps or None)

    def call(args: SRCall) -> object:
        if steps:
            base, state, coords, _, parts = args
            return runner.flow(base, state, coords, parts, steps=steps)
        return runner.sr(*args)

    rows = []
    for frac in fractions:
        k, args = sr_inputs(runner, grid=grid, fraction=frac, bucketed=bucketed, generator=g)
        sec = median_seconds(lambda a=args: call(a), dev, reps)
        flops = sr_flops(cfg, args[4], k) * max(steps, 1)
        row = ScalingRow(frac, k, total, sec * 1e3, flops / sec / 1e12)
        row.stream_ms = 1e3 * back_to_back_seconds(lambda a=args: call(a), dev, 2 * reps)
        rows.append(row)
    ref, stream_ref = rows[-1].ms, rows[-1].stream_ms
    for r in rows:
        r.relative = r.ms / ref
        r.vs_linear = r.relative / r.fraction - 1
        r.stream_vs_linear = r.stream_ms / stream_ref / r.fraction - 1
    return rows


def format_table(rows: Sequence[ScalingRow], *, peak_tflops: float | None = None) -> str:
    """'ms': one call, synchronised before and after (the host's work included); 'b2b ms':
    per call with calls queued back to back (host work hidden behind the GPU's)."""
    head = (
        f"{'kept':>5} {'K':>7} {'ms':>9} {'t/dense':>8} {'vs linear':>10} {'TFLOP/s':>8}"
        f" {'b2b ms':>8} {'b2b vs lin':>10}"
    )
    lines = [head + (f" {'% peak':>7}" if peak_tflops else "")]
    for r in rows:
        line = (
            f"{r.fraction:5.2f} {r.kept:7d} {r.ms:9.2f} {r.relative:8.3f} "
            f"{100 * r.vs_linear:+9.1f}% {r.tflops:8.2f} {r.stream_ms:8.2f} "
            f"{100 * r.stream_vs_linear:+9.1f}%"
        )
        if peak_tflops:
            line += f" {100 * r.tflops / peak_tflops:6.1f}%"
        lines.append(line)
    band = [r for r in rows if r.fraction >= 0.2]
    if band:
        worst = max(abs(r.vs_linear) for r in band)
        over = max(r.vs_linear for r in band)  # slower than linear is what a target bounds
        lines.append(
            f"over kept 0.2..1.0: at most {100 * over:+.1f}% above linear "
            f"(largest deviation either way {100 * worst:.1f}%); back to back at most "
            f"{100 * max(r.stream_vs_linear for r in band):+.1f}%"
        )
    return "\n".join(lines)
