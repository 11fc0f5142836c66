"""upscale_window(): SkipSR's data flow for one window of T frames, free of VapourSynth.

    LR [T,3,h,w] -> base = bicubic upsample [T,3,H,W], padded to the token grid
    LR -> scorer (mask net or gradient heuristic) -> token scores [T,Hp,Wp] -> keep set
    kept tokens of base (+ their t,y,x) -> SR net, 1..N flow steps, one keep set
    residuals added to the kept tokens of base in place; skipped tokens = base exactly

This module is where tokens are dropped (``select_tokens``) and brought back
(``add_to_tokens``); windows of frames are cut in ``windows.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .backends.base import Runner
from .models.mask import (
    dilate_keep,
    gradient_energy,
    keep_by_ratio,
    keep_by_threshold,
    token_scores,
)
from .optional import optional_module
from .tokens import (
    add_to_tokens,
    bucket_size,
    gather_patches,
    kept_bucket,
    pad_to_grid,
    padded_tokens,
    token_grid,
)

if TYPE_CHECKING:
    from .models.sr import SRConfig

__all__ = [
    "WindowOutput",
    "WindowStats",
    "flow_start",
    "padded_base",
    "select_tokens",
    "upsample",
    "upscale_window",
    "window_inputs",
]

Scorer = Literal["learned", "gradient"]

NOISE_ROWS = 8191  # prime: token rows of the noise table wrap with no short period


@dataclass
class WindowStats:
    """What a window cost and how much of it was skipped."""

    kept: int
    total: int
    bucket: int
    times: dict[str, float] = field(default_factory=dict)

    @property
    def kept_ratio(self) -> float:
        return self.kept / self.total if self.total else 0.0


@dataclass
class WindowOutput:
    frames: Tensor  # [T, 3, H, W] float32 in [0, 1]: a view of grid_frames
    keep: Tensor  # [T, Hp, Wp] bool
    stats: WindowStats
    # [T, 3, Hg, Wg], the frames on the whole token grid, contiguous: copied whole into a
    # graph's input (a plain memcpy) where a copy of the cropped view would be strided
    grid_frames: Tensor


class _Timer:
    """Per-stage wall times; synchronizes CUDA only when asked, since a sync stalls the queue."""

    def __init__(self, device: torch.device, enabled: bool) -> None:
        self.times: dict[str, float] = {}
        self.sync = enabled and device.type == "cuda"
        self.device = device

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.sync:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.sync:
            torch.cuda.synchronize(self.device)
        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


def upsample(lr: Tensor, *, scale: int) -> Tensor:
    """The cheap path every skipped token takes: bicubic x scale (Keys, a = -0.75, pixel
    centres aligned), clamped to [0, 1].

    On the CPU, OpenCV's INTER_CUBIC resize computes the same interpolation (within 4e-7 of
    torch's, borders included) about four times faster; torch's took ~14 ms of a 5-frame
    160x90 -> 640x360 window on two cores, the largest fixed cost of a CPU window
    (scripts/bench.py, stages). Elsewhere, or without OpenCV, torch's."""
    cv2 = optional_module("cv2") if lr.device.type == "cpu" and lr.dtype == torch.float32 else None
    if cv2 is None or lr.requires_grad:
        return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp_(
            0, 1
        )
    t, c, h, w = lr.shape
    out = torch.empty(t, c, h * scale, w * scale, dtype=torch.float32)
    src, dst = lr.detach().contiguous().numpy(), out.numpy()
    for i in range(t):
        for j in range(c):
            cv2.resize(
                src[i, j], (w * scale, h * scale), dst=dst[i, j], interpolation=cv2.INTER_CUBIC
            )
    return out.clamp_(0, 1)


def padded_base(lr: Tensor, *, scale: int, patch: int) -> Tensor:
    """The base every token starts from: lr's upsample, padded to the token grid
    [T, 3, Hg, Wg] by replicating its last row and column (:func:`~vs_skipsr.tokens.pad_to_grid`):
    what :func:`window_inputs` hands to :func:`upscale_window`."""
    return pad_to_grid(upsample(lr.float(), scale=scale), patch=patch)


@lru_cache(maxsize=8)
def _noise_table(dim: int, device: torch.device) -> Tensor:
    """A fixed [NOISE_ROWS, dim] standard-normal table; token i of a window with seed s draws
    row (i + 104729 s) mod NOISE_ROWS. The noise of a token then depends on its position and
    the seed only, never on which other tokens are kept, and costs a gather, not a dense draw."""
    g = torch.Generator(device="cpu").manual_seed(0x5EED)
    return torch.randn(NOISE_ROWS, dim, generator=g).to(device)


def token_noise(index: Tensor, *, dim: int, seed: int | Tensor) -> Tensor:
    """Unit normal noise [K, dim] for flat token indices [K]; ``seed`` an int or a [1] int64
    tensor on their device (the same rows: what a captured graph reads)."""
    table = _noise_table(dim, index.device)
    return table[(index + 104729 * seed) % NOISE_ROWS]


def flow_start(index: Tensor, *, config: SRConfig, seed: int | Tensor) -> Tensor:
    """The flow's state at t = 1 for the tokens of ``index`` [K] (padded rows too): their
    noise at the net's ``noise_std``, [K, 3p²]. One formula for the pipeline's eager path and
    a runner's captured feed (``seed`` a [1] tensor there), so both start from the same rows."""
    return token_noise(index, dim=config.token_dim, seed=seed) * config.noise_std


def select_tokens(
    lr: Tensor,
    *,
    runner: Runner,
    scale: int,
    grid: tuple[int, int, int],
    scorer: Scorer,
    threshold: float | None,
    skip_ratio: float | None,
    dilate: int,
) -> Tensor:
    """The keep set [T, Hp, Wp] bool: where SkipSR decides which tokens get the SR net."""
    patch = runner.sr_config.patch
    if scorer == "learned":
        score_map = runner.mask(lr)
    elif scorer == "gradient":
        score_map = gradient_energy(lr)
    else:
        raise ValueError(f"scorer must be 'learned' or 'gradient', not {scorer!r}")
    scores = token_scores(score_map, scale=scale, patch=patch, grid=grid[1:])
    if skip_ratio is not None:
        keep = keep_by_ratio(scores, skip_ratio=skip_ratio)
    elif threshold is not None:
        keep = keep_by_threshold(scores, threshold=threshold)
    else:
        raise ValueError("select_tokens needs threshold or skip_ratio")
    return dilate_keep(keep, radius=dilate)


def window_inputs(
    lr: Tensor,
    *,
    scale: int,
    runner: Runner,
    scorer: Scorer = "gradient",
    threshold: float | None = None,
    skip_ratio: float | None = None,
    dilate: int = 0,
) -> tuple[Tensor, ...]:
    """What :func:`upscale_window` computes before its one sync: the base upsample padded to
    the token grid [T, 3, Hg, Wg], and the keep set [T, Hp, Wp] unless nothing is skipped
    (then only the base). Fixed shapes for a window size, so a caller can replay it as a
    CUDA graph and hand both to upscale_window (``base=``, ``keep=``)."""
    patch = runner.sr_config.patch
    t_count, _, h, w = lr.shape
    base = padded_base(lr, scale=scale, patch=patch)
    if threshold is None and skip_ratio is None:
        return (base,)
    keep = select_tokens(
        lr.float(),
        runner=runner,
        scale=scale,
        grid=token_grid(t_count, h * scale, w * scale, patch=patch),
        scorer=scorer,
        threshold=threshold,
        skip_ratio=skip_ratio,
        dilate=dilate,
    )
    return base, keep


@torch.inference_mode()
def upscale_window(
    lr: Tensor,
    *,
    scale: int,
    runner: Runner,
    scorer: Scorer = "gradient",
    threshold: float | None = None,
    skip_ratio: float | None = None,
    keep: Tensor | None = None,
    base: Tensor | None = None,
    dilate: int = 0,
    steps: int = 1,
    seed: int = 0,
    buckets: tuple[int, ...] | bool | None = None,
    timing: bool = False,
) -> WindowOutput:
    """Super-resolve one window ``lr`` [T, 3, h, w] (float RGB in [0, 1], on the runner's
    device) by ``scale``; returns [T, 3, h*scale, w*scale].

    The keep set comes from ``keep`` ([T, Hp, Wp] bool) if given, else from the scorer with
    ``skip_ratio`` (fraction skipped) or ``threshold``; with none of the three every token is
    kept and the mask is not evaluated (the dense path). ``base``, if given, is
    :func:`padded_base` of lr, as :func:`window_inputs` makes it; it is written into, the
    output being a view of it (pass a copy to keep it), so no window-sized copy is made.
    ``steps`` Euler steps of the flow all reuse one keep set and one pair of partitions.
    ``buckets`` pads the kept count up to a bucket (True: see
    :func:`~vs_skipsr.tokens.kept_bucket`; None: where the runner wants it, i.e. torch on
    CUDA) so captured graphs and per-shape kernel plans are reused; padding never changes the
    result.

    On CUDA the window costs one device-to-host sync (the kept count), none when dense; a
    runner with ``static_window`` (CUDA graphs) takes the window from there in two graph
    replays and needs only that count.
    """
    device = lr.device
    cfg = runner.sr_config
    patch = cfg.patch
    timer = _Timer(device, timing)
    t_count, _, h, w = lr.shape
    out_h, out_w = h * scale, w * scale

    with timer.stage("upsample"):
        if base is None:
            base = padded_base(lr, scale=scale, patch=patch)  # [T, 3, Hg, Wg]
    grid = token_grid(t_count, out_h, out_w, patch=patch)  # base is padded to it
    total = grid[0] * grid[1] * grid[2]

    dense = keep is None and threshold is None and skip_ratio is None
    with timer.stage("mask"):
        if keep is None and (threshold is not None or skip_ratio is not None):
            keep = select_tokens(
                lr.float(),
                runner=runner,
                scale=scale,
                grid=grid,
                scorer=scorer,
                threshold=threshold,
                skip_ratio=skip_ratio,
                dilate=dilate,
            )
        elif keep is None:
            keep = torch.ones(grid, dtype=torch.bool, device=device)
        elif tuple(keep.shape) != grid:
            raise ValueError(f"keep has shape {tuple(keep.shape)}, the token grid is {grid}")

    if buckets is None:
        buckets = runner.wants_buckets
    with timer.stage("gather"):
        own = runner.static_window
        index = None
        if dense:
            n_keep = total  # nothing to wait for
        elif own is not None:  # it makes the tokens from the keep set: the count is enough
            n_keep = int(torch.count_nonzero(keep))  # the one sync
        else:
            index = torch.nonzero(keep.reshape(-1)).squeeze(1)  # [K]: the one sync
            n_keep = int(index.numel())
        n_bucket = n_keep
        if isinstance(buckets, tuple) and n_keep:
            n_bucket = min(bucket_size(n_keep, buckets=buckets), total)
        elif buckets:
            n_bucket = kept_bucket(n_keep, total=total)

    if own is not None and n_keep:  # tokens, noise, gather, flow and scatter: the runner's
        with timer.stage("sr"):
            own(keep, base, kept=n_keep, bucket=n_bucket, grid=grid, steps=steps, seed=seed)
    else:
        with timer.stage("gather"):
            if index is None:  # dense (no nonzero), or nothing kept
                index = torch.arange(n_keep, device=device)
            padded, coords, parts = padded_tokens(  # [Kb], [Kb, 3]
                index,
                bucket=n_bucket,
                grid=grid,
                window=cfg.window,
                shift=cfg.shift,
                static_len=device.type == "cuda",
            )
            base_tok = gather_patches(  # [Kb, 3(p+2h)²]
                base, coords, patch=patch, halo=cfg.halo, dtype=runner.base_dtype
            )
            state = flow_start(padded, config=cfg, seed=seed)

        with timer.stage("sr"):
            if n_keep:
                state = runner.flow(base_tok, state, coords, parts, steps=steps)  # [Kb, 3p²]
            residual = state[:n_keep]  # [K, 3p²]

        with timer.stage("scatter"):
            add_to_tokens(base, residual.float(), coords[:n_keep], patch=patch)
    out = base[..., :out_h, :out_w]

    stats = WindowStats(kept=n_keep, total=total, bucket=n_bucket, times=timer.times)
    return WindowOutput(frames=out, keep=keep, stats=stats, grid_frames=base)
