#!/usr/bin/env python3
"""How well simple LR features rank tokens for skipping, against the oracle: the bench for
issue #6's mask target before any training.

    .venv/bin/python scripts/rank_features.py                    # train and val photos
    .venv/bin/python scripts/rank_features.py --sets val --photos 4

Same protocol as scripts/eval_quality.py (photos /2, 512x512 centre crop, LR = PIL bicubic
/4, one-frame windows, the shipped SR net on the CPU, one step). Per feature, per set:

- skip: the mean over photos of the largest skip whose composite PSNR drop from dense (keep
  ? dense : base, token by token) stays within 0.05 dB, and its ratio to the oracle's (tokens
  ranked by their true gain), the issue's measure;
- AUC: among each photo's top 30% of tokens by Laplacian energy, how often a token the dense
  model improves outranks one it makes worse (0.5 = no better than chance). The oracle's lead
  comes from skipping those harmful tokens (reports/quality.md, section 3), so a feature that
  could beat the Laplacian prior would need a high AUC here.

Tune on train, confirm on val: the val photos are the report's. The shipped learned mask is
its Laplacian prior with a zero correction; it floors the energy at 1e-5, so its row differs
from the plain "laplacian" row only in how flat tokens tie.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import eval_quality as eq  # noqa: E402

from vs_skipsr.models import mask as M  # noqa: E402

log = logging.getLogger("rank_features")

TOP_SHARE = 0.3  # the AUC looks at this top share of tokens by Laplacian energy


def _clipped(lr: Tensor, margin: float) -> Tensor:
    y = M._luma(lr)
    return ((y < margin) | (y > 1 - margin)).float()


# LR [T, 3, h, w] in [0, 1] -> score map [T, 1, h, w]; pooled onto tokens like the pipeline
MAPS: dict[str, Callable[[Tensor], Tensor]] = {
    "laplacian": M.laplacian_energy,
    "gradient": M.gradient_energy,
    "laplacian, no 3x3 mean": lambda lr: M._laplacian(M._luma(lr)) ** 2,
    "laplacian, 3x3 max": lambda lr: F.max_pool2d(M.laplacian_energy(lr), 3, 1, 1),
    "sqrt laplacian": lambda lr: M.laplacian_energy(lr).sqrt(),
    "log laplacian": lambda lr: M.laplacian_energy(lr).clamp_min(1e-5).log10(),
    "laplacian at 1/2": lambda lr: F.interpolate(
        M._mean3x3(M._laplacian(F.avg_pool2d(M._luma(lr), 2)) ** 2),
        size=lr.shape[-2:],
        mode="nearest",
    ),
    "sqrt(laplacian x gradient)": lambda lr: (
        (M.laplacian_energy(lr) * M.gradient_energy(lr)).clamp_min(0).sqrt()
    ),
    "local variance": lambda lr: M._mean3x3(M._luma(lr) ** 2) - M._mean3x3(M._luma(lr)) ** 2,
    "laplacian x 10^-2 clipped": lambda lr: (
        M.laplacian_energy(lr) * 10 ** (-2 * _clipped(lr, 0.02))
    ),
    "laplacian x 10^-2 clipped (0.04)": lambda lr: (
        M.laplacian_energy(lr) * 10 ** (-2 * _clipped(lr, 0.04))
    ),
}


def _context(scores: np.ndarray, share: float) -> np.ndarray:
    """Token scores blended in log space with their 3x3 token neighbourhood's mean."""
    ls = np.log(np.maximum(scores, 1e-12))
    t = torch.from_numpy(ls)[:, None]
    nb = F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, 1)[:, 0].numpy()
    return np.exp((1 - share) * ls + share * nb)


# token scores [T, Hp, Wp] -> token scores, applied to the laplacian's
TOKEN_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "laplacian + 25% 3x3-token context": lambda s: _context(s, 0.25),
    "laplacian + 50% 3x3-token context": lambda s: _context(s, 0.5),
}


def auc_helpful_over_harmful(gain: np.ndarray, score: np.ndarray, top: np.ndarray) -> float:
    """P(score of a helpful token > score of a harmful one) among ``top``; NaN if either
    kind has fewer than 5 tokens there. Ties count one half."""
    g, s = gain[top], score[top]
    pos, neg = s[g >= 0], s[g < 0]
    if pos.size < 5 or neg.size < 5:
        return float("nan")
    # Mann-Whitney U from average ranks, so ties (a constant feature) give exactly 0.5
    _, inv, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    below = np.concatenate([[0], np.cumsum(counts)[:-1]])
    avg_rank = below[inv] + (counts[inv] - 1) / 2.0  # 0-based
    u = avg_rank[: pos.size].sum() - pos.size * (pos.size - 1) / 2
    return float(u / (pos.size * neg.size))


def photo_result(ctx: eq.Context, win: eq.Window) -> eq.WindowResult:
    """Dense run and per-token SSEs of one photo (no real SkipSR runs, no DAT)."""
    lr = eq.to_tensor(win.lr)
    gt_y = eq.rgb_to_y(win.gt)
    errs = eq.token_errors(ctx, lr, gt_y)
    r = eq.WindowResult(
        win.name, "photos", 0, lr, gt_y, eq.border_pixels(*gt_y.shape[1:], border=eq.BORDER),
        errs.sse_base, errs.sse_dense, {"oracle": errs.sse_base - errs.sse_dense},
    )  # fmt: skip
    r.methods["dense"], _ = eq.score_frames(errs.dense, gt_y, with_ssim=False)
    return r


def rank_set(ctx: eq.Context, wins: list[eq.Window]) -> dict[str, dict[str, float]]:
    """Per feature: mean largest skip, ratio to the oracle, mean AUC over photos."""
    skips: dict[str, list[float]] = {}
    aucs: dict[str, list[float]] = {}
    for win in wins:
        r = photo_result(ctx, win)
        grid = r.sse_base.shape[1:]
        gain = r.scores["oracle"]
        scores = {"oracle": gain}
        for name, fn in MAPS.items():
            scores[name] = eq.token_map(fn(r.lr), grid, ctx.patch)
        for name, fn in TOKEN_TRANSFORMS.items():
            scores[name] = fn(scores["laplacian"])
        scores["learned mask (shipped)"] = eq.token_map(ctx.runner.mask(r.lr), grid, ctx.patch)
        lap = scores["laplacian"]
        top = lap >= np.quantile(lap, 1 - TOP_SHARE)
        for name, s in scores.items():
            drops = np.array(eq.composite_drops(r, s))
            skips.setdefault(name, []).append(eq.largest_skip(drops, eq.FRACTIONS))
            aucs.setdefault(name, []).append(auc_helpful_over_harmful(gain, s, top))
        log.info(
            "%s: oracle %.2f, laplacian %.2f", win.name, skips["oracle"][-1], skips["laplacian"][-1]
        )
    oracle = float(np.mean(skips["oracle"]))
    return {
        name: {
            "skip": float(np.mean(v)),
            "ratio": float(np.mean(v)) / oracle if oracle else float("nan"),
            "auc": float(np.nanmean(aucs[name])) if not np.all(np.isnan(aucs[name])) else float("nan"),
        }
        for name, v in skips.items()
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--sets", default="train,val", help="comma-separated: train, val")
    ap.add_argument("--photos", type=int, default=None, help="only the first N photos of a set")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in sets if s not in ("train", "val")]
    if bad:
        ap.error(f"--sets: {bad[0]!r} is not 'train' or 'val'")
    runner = eq.TorchBackend(device="cpu", dtype="fp32", attention="padded").load(
        sr=eq.load_sr(), mask=eq.load_mask()
    )
    ctx = eq.Context(runner, None, runner.sr_config.patch, keep_y=set())
    for name in sets:
        wins = eq.photo_windows(args.data / name / "photos", args.photos)
        table = rank_set(ctx, wins)
        print(f"\n{name} photos ({len(wins)}): largest skip within {eq.TOL_DB} dB (composite)")
        print(f"| feature | skip | / oracle | AUC top {TOP_SHARE:.0%} |")
        print("| --- | ---: | ---: | ---: |")
        for feat, v in sorted(table.items(), key=lambda kv: -kv[1]["ratio"]):
            print(f"| {feat} | {v['skip']:.3f} | {v['ratio']:.3f} | {v['auc']:.3f} |")


if __name__ == "__main__":
    main()
