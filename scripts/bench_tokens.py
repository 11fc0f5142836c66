#!/usr/bin/env python3
"""Time of the two token moves around the SR net for one window, against the kept fraction:
reading the kept tokens' patches with their halo (tokens.gather_patches) and adding their
residuals back into the base (tokens.add_to_tokens). Both run once a window whatever the
steps; with few tokens kept they are much of what a skipping window costs besides the net.

    python scripts/bench_tokens.py                   # CUDA if present: 20 x 1088 x 1920
    python scripts/bench_tokens.py --device cpu      # 5 x 368 x 640, as the CPU default

Prints one table: ms per window, median of --reps calls, each one timed on its own. The
gather writes the patches in --dtype (the net's: bf16 on CUDA, as the torch runner reads them);
on CUDA a second column times torch's flat index and cast, the way without Triton.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vs_skipsr import tokens  # noqa: E402
from vs_skipsr.benchmark import median_seconds  # noqa: E402
from vs_skipsr.tokens import add_to_tokens, gather_patches, token_coords  # noqa: E402

PATCH, HALO = 16, 8  # the shipped model's token and halo
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", default=None, help="T x H x W of the window (multiples of 16)")
    ap.add_argument("--kept", default="1.0,0.5,0.31,0.17,0.06,0.0")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="bf16 on CUDA, else fp32")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(2)
    size = args.size or ("20x1088x1920" if device.type == "cuda" else "5x368x640")
    try:
        t, h, w = (int(v) for v in size.split("x"))
    except ValueError:
        ap.error(f"--size {size!r}: expected T x H x W, e.g. 20x1088x1920")
    if h % PATCH or w % PATCH:
        ap.error(f"--size {size!r}: H and W must be multiples of {PATCH}")
    grid = (t, h // PATCH, w // PATCH)
    total = grid[0] * grid[1] * grid[2]
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(t, 3, h, w, generator=g).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    cuda = device.type == "cuda"
    way = "Triton" if cuda and tokens.triton_gather_works(device) else "torch"
    print(f"token moves, one {t} x {h} x {w} window (patch {PATCH}, halo {HALO}), {name}")
    print(f"gather: {way}, patches in {dtype}")
    torch_col = f" {'torch gather+cast':>18}" if cuda else ""
    print(f"{'kept':>6} {'tokens':>7} {'gather ms':>10}{torch_col} {'add back ms':>12}")
    for frac in (float(v) for v in args.kept.split(",")):
        keep = torch.rand(total, generator=g) < frac
        coords = token_coords(torch.nonzero(keep).squeeze(1), grid=grid).to(device)
        values = (0.05 * torch.randn(coords.shape[0], 3 * PATCH * PATCH, generator=g)).to(device)
        gather = 1e3 * median_seconds(
            lambda c=coords: gather_patches(frames, c, patch=PATCH, halo=HALO, dtype=dtype),
            device,
            args.reps,
        )
        plain = ""
        if cuda:  # what the gather was before the Triton kernel: flat index, then the cast
            ms = 1e3 * median_seconds(
                lambda c=coords: tokens._gather_flat(frames, c, patch=PATCH, halo=HALO).to(dtype),
                device,
                args.reps,
            )
            plain = f" {ms:18.3f}"
        base = frames.clone()  # added into again and again: the same work each call
        add = 1e3 * median_seconds(
            lambda c=coords, v=values, b=base: add_to_tokens(b, v, c, patch=PATCH),
            device,
            args.reps,
        )
        print(f"{frac:6.2f} {coords.shape[0]:7d} {gather:10.3f}{plain} {add:12.3f}")


if __name__ == "__main__":
    main()
