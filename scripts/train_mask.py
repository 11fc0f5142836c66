#!/usr/bin/env python3
"""Train the mask predictor to rank tokens by the trained SR net's gain, from the LR alone.

Labels: for every token of a training window, gain = MSE(base, HR) - MSE(SR, HR) over the
token's pixels, with the SR net run one step on all tokens. What matters at inference is the
order: skipping token i instead of j costs gain_i - gain_j of squared error. So the loss is a
pairwise logistic ranking loss inside each window, every pair weighted by |gain_i - gain_j|
(swapping two flat tokens costs nothing, missing a textured one costs much), plus a small
regression of log10(max(gain, 1e-6)) that keeps scores calibrated, so a threshold reads as
"keep tokens whose predicted per-pixel MSE gain exceeds tau" (the map is linear; tokens
average it). The net starts as its prior (MaskConfig.prior: the Laplacian energy for the
shipped config; the log also gives the gradient energy's score for comparison) and the
checkpoint kept is the one that loses the least SR gain on held-out windows at skip ratios
0.3 / 0.5 / 0.7 (the starting point included: training cannot ship worse than the prior).

    python scripts/train_mask.py --pack data/pack --sr-weights vs_skipsr/weights/sr_default.safetensors \
        --minutes 2 --weights vs_skipsr/weights/mask_default.safetensors
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train_common import CurveLog, cosine_lr, one_step_all_tokens
from train_data import WindowSampler

from vs_skipsr.models import MASK_PRESETS, MaskNet
from vs_skipsr.models.mask import gradient_energy, token_scores
from vs_skipsr.models.weights import load_sr, save_weights

log = logging.getLogger("train_mask")
LOG_FLOOR = 1e-6


@torch.no_grad()
def token_gain(sr, lr, hr, scale) -> torch.Tensor:
    """Per-token MSE gain of the one-step SR net over bicubic: [B, T, Hp, Wp]."""
    batch, res = one_step_all_tokens(sr, lr, hr, scale=scale)
    err_base = (batch.target**2).mean(1)  # [K]
    err_sr = ((batch.target - res) ** 2).mean(1)
    return (err_base - err_sr).reshape(batch.keep.shape)


def predicted_scores(mask: MaskNet, lr: torch.Tensor, scale: int, patch: int) -> torch.Tensor:
    b, t, _, h, w = lr.shape
    grid = (h * scale // patch, w * scale // patch)
    maps = torch.cat([mask(lr[i]) for i in range(b)])  # [B*T, 1, h, w]
    return token_scores(maps, scale=scale, patch=patch, grid=grid).reshape(b, t, *grid)


def ranking_loss(pred: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Gain-weighted pairwise logistic loss over all token pairs of each window.

    pred, gain: [B, N]. For a pair with gain_i > gain_j the loss is softplus(s_j - s_i),
    weighted by gain_i - gain_j and normalised per window.
    """
    d_gain = gain[:, :, None] - gain[:, None, :]  # [B, N, N]
    d_pred = pred[:, :, None] - pred[:, None, :]
    w = d_gain.clamp_min(0)
    w = w / w.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return (w * F.softplus(-d_pred)).sum(dim=(1, 2)).mean()


SKIP_RATIOS = (0.3, 0.5, 0.7)


def lost_gain(scores: torch.Tensor, gain: torch.Tensor) -> float:
    """Share of the SR net's total gain lost by skipping the lowest-scored tokens of each
    window, pooled over windows (a flat window's tiny total must not dominate a mean of
    ratios), averaged over SKIP_RATIOS; oracle scores (= gain) give the floor, below 0 where
    the net makes tokens worse and skipping them helps. scores, gain: [B, N]."""
    total = gain.clamp_min(0).sum()
    order = scores.argsort(dim=1)
    out = []
    for r in SKIP_RATIOS:
        n = round(r * scores.shape[1])
        out.append(torch.gather(gain, 1, order[:, :n]).sum() / total.clamp_min(1e-12))
    return float(torch.stack(out).mean())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pack", type=Path, default=Path("data/pack"))
    ap.add_argument("--sr-weights", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--val-windows",
        type=int,
        default=32,
        help="held-out windows that pick the checkpoint (8 gave a noisy pick that lost on clips)",
    )
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--hr-size", type=int, default=192)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--reg-weight", type=float, default=0.05, help="weight of the log-gain term")
    ap.add_argument("--out", type=Path, default=Path("out/train_mask"))
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--cache-batches",
        type=int,
        default=0,
        help="label this many batches once and train on them over and over (the SR net's "
        "labels cost ~100x the mask's step on a CPU; 60 batches of 8 overfit within ~200 "
        "steps, reports/train_mask_s5_log.txt); 0: a fresh batch every step",
    )
    ap.add_argument(
        "--scale",
        type=int,
        default=None,
        help="train on this scale only (default: the sampler's mix; held-out windows are x4)",
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sr = load_sr(args.sr_weights).to(dev).eval()
    p = sr.config.patch
    mask = MaskNet(MASK_PRESETS["default"]).to(dev)
    opt = torch.optim.AdamW(mask.parameters(), lr=args.lr, weight_decay=1e-4)
    sampler = WindowSampler(
        pack_dir=args.pack,
        frames=sr.config.window[0],
        hr_size=args.hr_size,
        device=str(dev),
        seed=args.seed,
    )
    held = WindowSampler(
        pack_dir=args.pack,
        frames=sr.config.window[0],
        hr_size=args.hr_size,
        device=str(dev),
        seed=54321,
    )
    val_lr, val_hr, val_s = held.sample(args.val_windows, scale=4)
    val_gain = torch.cat(
        [
            token_gain(sr, val_lr[i : i + 8], val_hr[i : i + 8], val_s).flatten(1)
            for i in range(0, args.val_windows, 8)
        ]
    )  # [B, N]
    b, _, _, h, w = val_lr.shape
    grid = (h * val_s // p, w * val_s // p)
    grad = gradient_energy(val_lr.flatten(0, 1))
    grad_scores = token_scores(grad, scale=val_s, patch=p, grid=grid).reshape(b, -1)
    floor = lost_gain(val_gain, val_gain)
    log.info(
        "held-out lost gain at skip %s: oracle %.4f, gradient heuristic %.4f",
        SKIP_RATIOS,
        floor,
        lost_gain(grad_scores, val_gain),
    )

    def evaluate() -> float:
        with torch.no_grad():
            return lost_gain(predicted_scores(mask, val_lr, val_s, p).flatten(1), val_gain)

    best = evaluate()
    best_state = {k: v.detach().clone() for k, v in mask.state_dict().items()}
    log.info("held-out lost gain at start (the prior): %.4f", best)
    curve = CurveLog(args.out / "curve.jsonl", append=False)
    cached = []
    for _ in range(args.cache_batches):
        lr, hr, scale = sampler.sample(args.batch, scale=args.scale)
        cached.append((lr, token_gain(sr, lr, hr, scale), scale))
    if cached:
        log.info("labelled %d cached batches of %d windows", len(cached), args.batch)
    pick = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60
    t0 = time.time()
    step = 0
    while time.time() - t0 < budget:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(args.lr, (time.time() - t0) / budget)
        if cached:
            lr, gain, scale = cached[int(torch.randint(len(cached), (1,), generator=pick))]
        else:
            lr, hr, scale = sampler.sample(args.batch, scale=args.scale)
            gain = token_gain(sr, lr, hr, scale)
        # the map is a linear gain (tokens average it); rank and regress in log10
        pred = torch.log10(predicted_scores(mask, lr, scale, p).clamp_min(LOG_FLOOR))
        target = torch.log10(gain.clamp_min(LOG_FLOOR))
        loss = ranking_loss(pred.flatten(1), gain.flatten(1)) + args.reg_weight * (
            F.smooth_l1_loss(pred, target, beta=0.5)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            curve.log(step=step, loss=loss.item())
        if step % args.eval_every == 0:
            lost = evaluate()
            curve.log(step=step, lost_gain=lost)
            if lost < best:
                best = lost
                best_state = {k: v.detach().clone() for k, v in mask.state_dict().items()}
            log.info("step %d loss %.4f held-out lost gain %.4f", step, loss.item(), lost)
    mask.load_state_dict(best_state)
    log.info("kept the checkpoint with held-out lost gain %.4f (oracle %.4f)", best, floor)
    curve.plot(args.out / "curve_mask.png", ("loss", "lost_gain"))
    if args.weights:
        save_weights(
            mask.eval(),
            args.weights,
            extra={
                "steps": str(step),
                "target": "rank by per-pixel MSE gain (log10-calibrated)",
                "heldout_lost_gain": f"{best:.4f}",
                "sr_weights": args.sr_weights.name,
            },
        )
        log.info("wrote %s after %d steps", args.weights, step)


if __name__ == "__main__":
    main()
