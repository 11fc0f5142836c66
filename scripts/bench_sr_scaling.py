#!/usr/bin/env python3
"""SR net time against the kept fraction: does skipping pay linearly?

Times the SR transformer alone (one flow step) on one window of T output frames at the given
size, for kept fractions 0.1 .. 1.0. Keep sets are clustered like real masks (the top tokens of
a smooth random field), not salt-and-pepper, so windows are mostly full or mostly empty as on
real video. Prints a table; --json writes the numbers.

    .venv/bin/python scripts/bench_sr_scaling.py --device cpu --size 640x360
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vs_skipsr.backends import TorchBackend  # noqa: E402
from vs_skipsr.models import PRESETS, SRTransformer  # noqa: E402
from vs_skipsr.models.weights import DEFAULT_SR_WEIGHTS, load_sr  # noqa: E402
from vs_skipsr.tokens import bucket_size, build_partition, token_coords  # noqa: E402


def clustered_keep(grid: tuple[int, int, int], frac: float, seed: int = 0) -> torch.Tensor:
    """Top ``frac`` of a smooth random field on the token grid: blobs, like textured regions."""
    g = torch.Generator().manual_seed(seed)
    t, h, w = grid
    coarse = torch.rand(t, 1, max(2, h // 4), max(2, w // 4), generator=g)
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    field = field + 0.02 * torch.rand(field.shape, generator=g)
    n = field.numel()
    keep = torch.zeros(n, dtype=torch.bool)
    keep[torch.topk(field.reshape(-1), max(1, round(frac * n))).indices] = True
    return keep.reshape(grid)


def time_sr(runner, keep: torch.Tensor, *, reps: int, buckets: bool) -> tuple[float, int, int]:
    cfg = runner.sr_config
    dev = runner.device
    grid = tuple(keep.shape)
    index = torch.nonzero(keep.reshape(-1)).squeeze(1).to(dev)
    k = index.numel()
    kb = min(bucket_size(k), keep.numel()) if buckets else k
    padded = F.pad(index, (0, kb - k))
    coords = token_coords(padded, grid=grid)
    parts = tuple(
        build_partition(coords, grid=grid, window=cfg.window, shift=s, valid=k)
        for s in ((0, 0, 0), cfg.shift)
    )
    g = torch.Generator(device="cpu").manual_seed(1)
    base = torch.rand(kb, cfg.token_dim, generator=g).to(dev)
    state = torch.randn(kb, cfg.token_dim, generator=g).to(dev) * cfg.noise_std
    t = torch.ones(1, device=dev)

    def once() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        runner.sr(base, state, coords, t, parts)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    once()  # warm-up
    return statistics.median(once() for _ in range(reps)), k, kb


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--attention", default="auto", choices=["auto", "padded", "varlen"])
    ap.add_argument(
        "--preset", default=None, help="random-weight preset instead of the shipped weights"
    )
    ap.add_argument("--size", default="640x360", help="output frame size WxH")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--fractions", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--buckets", action="store_true", help="pad K to buckets of 256")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.preset:
        torch.manual_seed(0)
        net = SRTransformer(PRESETS[args.preset])
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0, 0.02)
        label = f"preset {args.preset} (random weights)"
    else:
        net = load_sr(DEFAULT_SR_WEIGHTS)
        label = f"shipped weights {DEFAULT_SR_WEIGHTS.name}"
    runner = TorchBackend(device=args.device, dtype=args.dtype, attention=args.attention).load(
        sr=net, mask=None
    )
    w, h = (int(v) for v in args.size.lower().split("x"))
    p = net.config.patch
    grid = (args.frames, -(-h // p), -(-w // p))
    fracs = [float(f) for f in args.fractions.split(",")]
    device_name = (
        torch.cuda.get_device_name(runner.device)
        if runner.device.type == "cuda"
        else (f"CPU, {torch.get_num_threads()} threads")
    )
    rows = []
    for f in fracs:
        sec, k, kb = time_sr(runner, clustered_keep(grid, f), reps=args.reps, buckets=args.buckets)
        rows.append({"fraction": f, "kept": k, "bucket": kb, "ms": sec * 1e3})
        print(f"  kept {f:.1f}: {sec * 1e3:9.1f} ms", file=sys.stderr)
    dense = next(r for r in rows if r["fraction"] == 1.0)["ms"] if 1.0 in fracs else rows[-1]["ms"]
    attn = "varlen" if getattr(runner, "use_varlen", False) else "padded"
    print(f"\nSR net alone, {label}, {args.dtype}, attention {attn}, {device_name}")
    print(
        f"window {args.frames} x {w}x{h} output, {grid[0] * grid[1] * grid[2]} tokens of {p} px, one step"
    )
    print(f"{'kept':>5} {'K':>7} {'ms':>10} {'t/t_dense':>10} {'ideal':>6} {'vs linear':>10}")
    for r in rows:
        rel = r["ms"] / dense
        r["relative"] = rel
        r["vs_linear"] = rel / r["fraction"] - 1
        print(
            f"{r['fraction']:5.1f} {r['kept']:7d} {r['ms']:10.2f} {rel:10.3f} {r['fraction']:6.2f}"
            f" {100 * r['vs_linear']:+9.1f}%"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "device": device_name,
                    "label": label,
                    "dtype": args.dtype,
                    "attention": attn,
                    "size": args.size,
                    "frames": args.frames,
                    "rows": rows,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
