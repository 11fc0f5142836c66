#!/usr/bin/env python3
"""Train the SR transformer: rectified flow on the residual HR - bicubic, with token skipping.

Each step samples B windows of T frames (photos with sub-pixel camera motion and real clip
runs, scales 2-4), drops tokens as inference would (training_keep), and regresses the
residual estimate behind the velocity (v = (x_t - r_hat) / t) at t ~ {1 (3/4 of the time: the
one-step default), U(0, 1)} on kept tokens only. The budget is wall time (--minutes), so a
run fits a device lease; --resume continues from the checkpoint; --init fine-tunes saved
weights. bf16 autocast on CUDA. Under torchrun it trains data-parallel (DDP, one GPU a rank;
gloo on CPU), each rank drawing its own windows.

    python scripts/train_sr.py --pack data/pack --minutes 6 --out out/train_sr \
        --weights vs_skipsr/weights/sr_default.safetensors
    torchrun --nproc_per_node 4 scripts/train_sr.py ...   # 4 GPUs
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

from train_common import (
    CurveLog,
    Distributed,
    StageTimer,
    cosine_lr,
    make_batch,
    one_step_all_tokens,
    psnr,
    training_keep,
)
from train_data import WindowSampler

from vs_skipsr.models import PRESETS, SRConfig, SRTransformer
from vs_skipsr.models.weights import load_sr, save_weights
from vs_skipsr.tokens import unpatchify

log = logging.getLogger("train_sr")


def velocity_loss(model, cfg, batch, *, generator, one_step_frac: float) -> torch.Tensor:
    k = batch.base.shape[0]
    dev = batch.base.device
    b = int(batch.sample.max()) + 1
    t_s = torch.rand(b, generator=generator, device=dev)
    t_s = torch.where(torch.rand(b, generator=generator, device=dev) < one_step_frac, 1.0, t_s)
    t_tok = t_s[batch.sample]  # [K]
    noise = torch.randn(k, cfg.token_dim, generator=generator, device=dev) * cfg.noise_std
    state = t_tok[:, None] * noise + (1 - t_tok[:, None]) * batch.target
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        v = model(batch.base, state, batch.coords, t_tok, batch.parts[0].part, batch.parts[1].part)
    r_hat = state - t_tok[:, None] * v.float()  # the net's residual estimate
    return F.mse_loss(r_hat, batch.target)


@torch.no_grad()
def one_step_psnr(model, lr, hr, scale) -> tuple[float, float]:
    """PSNR of bicubic and of the one-step model (all tokens kept) on a fixed batch."""
    cfg = model.config
    batch, res = one_step_all_tokens(model, lr, hr, scale=scale)
    b, tt = lr.shape[:2]
    hp, wp = hr.shape[-2] // cfg.patch, hr.shape[-1] // cfg.patch
    res = unpatchify(res, grid=(b * tt, hp, wp), patch=cfg.patch).reshape(hr.shape)
    out = (batch.base_frames + res).clamp(0, 1)
    return psnr(batch.base_frames, hr), psnr(out, hr)


def with_overrides(cfg: SRConfig, items: list[str]) -> SRConfig:
    """The config with FIELD=VALUE overrides, each value parsed as the field's current type."""
    fields = cfg.to_dict()
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(
                f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}"
            )
        kind = type(fields[name])
        if kind is tuple:
            fields[name] = tuple(int(v) for v in value.split(","))
        else:
            fields[name] = kind(value)
    return SRConfig.from_dict(fields)


def save_checkpoint(path: Path, model, opt, *, step: int, spent_s: float) -> None:
    """What --resume needs: weights, optimiser state, step and the time budget spent."""
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "spent_s": spent_s}
    torch.save(state, path)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pack", type=Path, default=Path("data/pack"))
    ap.add_argument("--preset", default="default")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of the preset's SRConfig (an int, float or string), e.g. halo=0",
    )
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--hr-size", type=int, default=192)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--one-step-frac", type=float, default=0.75)
    ap.add_argument("--scale4-frac", type=float, default=0.5, help="share of steps at scale 4")
    ap.add_argument("--out", type=Path, default=Path("out/train_sr"))
    ap.add_argument(
        "--weights", type=Path, default=None, help="where to write the final safetensors"
    )
    ap.add_argument(
        "--keep-rankings",
        choices=("gradient", "both"),
        default="gradient",
        help="what ranks the training keep sets: the gradient energy (the shipped weights' "
        "recipe) or, per window at equal odds, the gradient or the Laplacian energy",
    )
    ap.add_argument("--resume", action="store_true")
    ap.add_argument(
        "--init",
        type=Path,
        default=None,
        help="fine-tune: start from these SR weights (their config; not with --preset/--set)",
    )
    ap.add_argument("--half-weights", action="store_true", help="store the safetensors in float16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-step-s", type=float, default=1e9, help="give up early if slower")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    dist = Distributed.from_env()
    dev = dist.device
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.init is not None:
        if args.set or args.preset != "default":
            raise SystemExit("--init takes the config stored with the weights: drop --preset/--set")
        net = load_sr(args.init).train().to(dev)
        cfg = net.config
        log.info("starting from %s", args.init)
    else:
        cfg = with_overrides(PRESETS[args.preset], args.set)
        net = SRTransformer(cfg).to(dev)
    frames = cfg.window[0]
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ckpt = args.out / "ckpt.pt"
    step, spent = 0, 0.0
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, map_location=dev)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state["spent_s"]
        log.info("resumed at step %d (%.0f s spent)", step, spent)
    model = dist.wrap(net)
    budget = args.minutes * 60.0 + spent
    curve = CurveLog(args.out / "curve.jsonl", append=args.resume) if dist.main else None
    # each rank its own stream of windows; the held-out batch is the same everywhere
    sampler = WindowSampler(
        pack_dir=args.pack,
        frames=frames,
        hr_size=args.hr_size,
        device=str(dev),
        seed=args.seed + step + 1000 * dist.rank,
    )
    held = WindowSampler(
        pack_dir=args.pack, frames=frames, hr_size=args.hr_size, device=str(dev), seed=12345
    )
    val_lr, val_hr, val_s = held.sample(8, scale=4)
    if args.init is not None and dist.main and step == 0:
        p_bic, p_sr = one_step_psnr(net.eval(), val_lr, val_hr, val_s)
        net.train()
        curve.log(step=0, psnr_bicubic=p_bic, psnr_sr=p_sr, gain_db=p_sr - p_bic)
        log.info(
            "x4 held-out at the start: bicubic %.2f dB, SR %.2f dB (%+.2f)",
            p_bic,
            p_sr,
            p_sr - p_bic,
        )
    g = torch.Generator(device=dev).manual_seed(args.seed + 1 + step + 1000 * dist.rank)
    n_params = sum(p.numel() for p in net.parameters())
    log.info(
        "SR net %s: %.2f M params, %s x %d, batch %d per rank, budget %.1f min",
        args.preset,
        n_params / 1e6,
        dev,
        dist.world,
        args.batch,
        args.minutes,
    )

    stages = StageTimer(dev, steps=range(5, 25))
    t_start = time.time() - spent
    ema = None
    t10 = time.time()
    while True:
        # every rank takes the slowest rank's clock: one learning rate and one last step
        elapsed = dist.max(time.time() - t_start)
        if elapsed >= budget:
            break
        for group in opt.param_groups:
            group["lr"] = cosine_lr(args.lr, elapsed / budget)
        stages.start(step)
        use4 = torch.rand(1, generator=g, device=dev).item() < args.scale4_frac
        lr, hr, scale = sampler.sample(args.batch, scale=4 if use4 else None)
        stages.mark("sample")
        keep = training_keep(
            lr, scale=scale, patch=cfg.patch, generator=g, rankings=args.keep_rankings
        )
        batch = make_batch(lr, hr, scale=scale, cfg=cfg, keep=keep)
        stages.mark("tokens")
        loss = velocity_loss(model, cfg, batch, generator=g, one_step_frac=args.one_step_frac)
        stages.mark("forward")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        stages.mark("backward+step")
        step += 1
        if step == 10:
            t10 = time.time()
        if step == 40 and (time.time() - t10) / 30 > args.max_step_s:
            log.error(
                "%.3f s a step, over --max-step-s %.2f: stopping",
                (time.time() - t10) / 30,
                args.max_step_s,
            )
            sys.exit(3)
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if not dist.main:
            continue
        if step % 50 == 0:
            curve.log(step=step, loss=loss.item(), loss_ema=ema, lr=opt.param_groups[0]["lr"])
        if step % 500 == 0:
            net.eval()  # the bare net: the wrapper's forward would wait for the other ranks
            p_bic, p_sr = one_step_psnr(net, val_lr, val_hr, val_s)
            net.train()
            curve.log(step=step, psnr_bicubic=p_bic, psnr_sr=p_sr, gain_db=p_sr - p_bic)
            log.info(
                "step %d loss %.5f  x4 held-out: bicubic %.2f dB, SR %.2f dB (%+.2f)  %.0f s",
                step,
                ema,
                p_bic,
                p_sr,
                p_sr - p_bic,
                elapsed,
            )
            save_checkpoint(ckpt, net, opt, step=step, spent_s=time.time() - t_start)

    dist.close()
    if not dist.main:
        return
    net.eval()
    p_bic, p_sr = one_step_psnr(net, val_lr, val_hr, val_s)
    curve.log(step=step, psnr_bicubic=p_bic, psnr_sr=p_sr, gain_db=p_sr - p_bic)
    log.info(
        "done: %d steps x %d ranks, x4 held-out bicubic %.2f dB, SR %.2f dB (%+.2f)",
        step,
        dist.world,
        p_bic,
        p_sr,
        p_sr - p_bic,
    )
    save_checkpoint(ckpt, net, opt, step=step, spent_s=time.time() - t_start)
    curve.plot(args.out / "curve_sr.png", ("loss_ema", "gain_db"))
    if args.weights:
        save_weights(
            net,
            args.weights,
            extra={"steps": str(step), "ranks": str(dist.world), "trained_on": "data/pack"},
            half=args.half_weights,
        )
        log.info("wrote %s", args.weights)


if __name__ == "__main__":
    main()
