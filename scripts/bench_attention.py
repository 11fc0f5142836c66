#!/usr/bin/env python3
"""The net's window attention alone on a GPU: torch's flash varlen (with the gathers into
window order and back that it needs) against the Triton kernel, at a few kept fractions.

One block's attention of the shipped model (6 heads of 32, bf16) over both partitions of a
20-frame 1920x816 window (bikes.mp4 x4: 20 x 51 x 120 tokens; other shapes by the options,
e.g. the SeedVR2-3B preset's 20 heads of 128 on 21-frame 720p windows), with clustered keep sets
padded to the pipeline's buckets, each form captured in a CUDA graph and replayed as the
filter replays it. Prints ms a call, each form's time over its dense time (1.0 = linear in
kept tokens) and the largest difference between the forms; ``--blocks`` adds Triton tile
sizes (block_m x block_n x warps) to the table.

    python scripts/bench_attention.py --out out/attention   # writes attention_6x32.json
    python scripts/bench_attention.py --heads 20 --dim 128 --window 4,8,8 --grid 21,45,80
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vs_skipsr.benchmark import captured, clustered_keep  # noqa: E402
from vs_skipsr.models.attention import varlen_window_attention  # noqa: E402
from vs_skipsr.optional import optional_module  # noqa: E402
from vs_skipsr.tokens import Partition, kept_bucket, padded_tokens  # noqa: E402


def replay_ms(fn: Callable[[], object], *, reps: int) -> float:
    """Median ms of one replay of ``fn`` captured in a CUDA graph, ``reps`` replays timed."""
    graph, _ = captured(fn)
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(10):
            graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 10)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="20,51,120", help="token grid t,y,x")
    ap.add_argument("--window", default="5,8,8", help="attention window t,y,x (shift: half)")
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--dim", type=int, default=32, help="head size")
    ap.add_argument("--fractions", default="0.06,0.1,0.17,0.3,0.5,1.0")
    ap.add_argument("--blocks", default="16x64x2,32x64x2,32x32x2,64x64x4", help="extra tiles")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "out/attention")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_attention.py: needs a CUDA device")
    kernels = optional_module("vs_skipsr.models.attention_triton")
    if kernels is None:
        sys.exit("bench_attention.py: needs the triton package")
    dev = torch.device("cuda")
    grid = tuple(int(v) for v in args.grid.split(","))
    window = tuple(int(v) for v in args.window.split(","))
    shift = tuple(w // 2 for w in window)
    heads, dim = args.heads, args.dim
    total = grid[0] * grid[1] * grid[2]
    blocks = [kernels.blocks_for(dim)] + [
        tuple(int(v) for v in b.split("x")) for b in args.blocks.split(",") if b
    ]
    forms: dict[str, Callable] = {
        "varlen": lambda q, k, v, p: varlen_window_attention(q, k, v, p),
    }
    for bm, bn, w in blocks:
        forms[f"triton {bm}x{bn}x{w}"] = lambda q, k, v, p, bm=bm, bn=bn, w=w: (
            kernels.tiled_window_attention(q, k, v, p, block_m=bm, block_n=bn, num_warps=w)
        )
    rows = []
    for frac in (float(f) for f in args.fractions.split(",")):
        index = torch.nonzero(clustered_keep(grid, frac).reshape(-1)).squeeze(1).to(dev)
        bucket = kept_bucket(index.numel(), total=total)
        _, _, parts = padded_tokens(
            index, bucket=bucket, grid=grid, window=window, shift=shift, static_len=True
        )
        parts = tuple(p.cover(bucket) for p in parts)
        qkv = torch.randn(bucket, 3, heads, dim, device=dev, dtype=torch.bfloat16)
        q, k, v = qkv.unbind(1)
        row = {"fraction": frac, "kept": index.numel(), "bucket": bucket, "ms": {}}
        outs = {}
        for name, form in forms.items():
            # a fresh Partition per form: the Triton tile table is memoised on it
            ps = [
                Partition(order=p.order, cu_seqlens=p.cu_seqlens, max_len=p.max_len) for p in parts
            ]
            if name == "varlen":
                ps = [p.cover(bucket) for p in ps]
            row["ms"][name] = replay_ms(
                lambda f=form, ps=ps, qkv=(q, k, v): [f(*qkv, p) for p in ps], reps=args.reps
            )
            outs[name] = [form(q, k, v, p).float() for p in ps]
        kept = index.numel()
        row["max_diff"] = max(
            (o[:kept] - r[:kept]).abs().max().item()
            for name in outs
            for o, r in zip(outs[name], outs["varlen"], strict=True)
        )
        rows.append(row)
    dense = rows[-1]["ms"] if rows[-1]["fraction"] == 1.0 else None
    names = list(forms)
    print(
        f"window attention of one block, both partitions: grid {grid}, window {window}, "
        f"{heads} heads of {dim}, bf16, {torch.cuda.get_device_name(dev)}; ms a call "
        "(time / fraction of dense in brackets)"
    )
    print(f"{'kept':>6} {'bucket':>7} " + " ".join(f"{n:>22}" for n in names) + "   max diff")
    for r in rows:
        cells = []
        for n in names:
            rel = "" if dense is None else f" ({r['ms'][n] / (r['fraction'] * dense[n]):.2f})"
            cells.append(f"{r['ms'][n]:>14.4f}{rel:>8}")
        print(
            f"{r['fraction']:>6.2f} {r['bucket']:>7} " + " ".join(cells) + f"   {r['max_diff']:.2e}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(dev)
    name = f"attention_{heads}x{dim}.json"
    (args.out / name).write_text(json.dumps({"device": device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
