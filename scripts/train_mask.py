#!/usr/bin/env python3
"""Train the mask predictor to rank tokens by the trained SR net's gain, from the LR alone.

Labels: for every token of a training window, gain = MSE(base, HR) - MSE(SR, HR) over the
token's pixels, with the SR net run one step on all tokens. The net regresses
log10(max(gain, 1e-6)) per token (the LR score map averaged over each token's footprint), so a
threshold reads as "keep tokens whose predicted per-pixel MSE gain exceeds 10^tau".

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

from vs_skipsr.models import MaskConfig, MaskNet
from vs_skipsr.models.mask import token_scores
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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pack", type=Path, default=Path("data/pack"))
    ap.add_argument("--sr-weights", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hr-size", type=int, default=192)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", type=Path, default=Path("out/train_mask"))
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sr = load_sr(args.sr_weights).to(dev).eval()
    p = sr.config.patch
    mask = MaskNet(MaskConfig()).to(dev)
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
    val_lr, val_hr, val_s = held.sample(8, scale=4)
    val_target = token_gain(sr, val_lr, val_hr, val_s)
    curve = CurveLog(args.out / "curve.jsonl", append=False)
    budget = args.minutes * 60
    t0 = time.time()
    step = 0
    while time.time() - t0 < budget:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(args.lr, (time.time() - t0) / budget)
        lr, hr, scale = sampler.sample(args.batch)
        target = torch.log10(token_gain(sr, lr, hr, scale).clamp_min(LOG_FLOOR))
        pred = predicted_scores(mask, lr, scale, p)
        loss = F.smooth_l1_loss(pred, target, beta=0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 25 == 0:
            curve.log(step=step, loss=loss.item())
        if step % 200 == 0:
            with torch.no_grad():
                vp = predicted_scores(mask, val_lr, val_s, p).flatten()
                vt = val_target.flatten()
                rank = torch.corrcoef(
                    torch.stack([vp.argsort().argsort().float(), vt.argsort().argsort().float()])
                )[0, 1]
            curve.log(step=step, spearman=float(rank))
            log.info("step %d loss %.4f held-out spearman %.3f", step, loss.item(), float(rank))
    curve.plot(args.out / "curve_mask.png", ("loss", "spearman"))
    if args.weights:
        save_weights(
            mask.eval(),
            args.weights,
            extra={
                "steps": str(step),
                "target": "log10 per-pixel MSE gain",
                "sr_weights": args.sr_weights.name,
            },
        )
        log.info("wrote %s after %d steps", args.weights, step)


if __name__ == "__main__":
    main()
