#!/usr/bin/env python3
"""Where one SR call's time goes on a GPU, at a few kept fractions: the fixed cost behind
the SR table's distance from linear.

For each mode (eager varlen, CUDA graphs, torch.compile + graphs) and kept fraction, prints
the call's wall time (host included, as the SR table measures it), the GPU span from its
first kernel's start to its last kernel's end, the sum of its kernel times (span minus sum =
the GPU idle between kernels), the kernel count, and the kernels that take the most time,
grouped by what they compute. A cost that stays when the fraction drops is what keeps a
small net's skipped calls from scaling down.

    python scripts/profile_sr.py --frames 5 --size 1920x1080 --fractions 0.06,0.2,1.0 \
        --modes varlen,graphs,compiled --out out/profile
    python scripts/profile_sr.py --frames 20 --size 1920x816 --fractions 0.17,1.0 \
        --modes graphs --dtype fp16 --steps 8 --top 40   # the filter's windows on bikes
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vs_skipsr.benchmark import median_seconds, mode_backend, sr_inputs  # noqa: E402
from vs_skipsr.models import random_sr  # noqa: E402
from vs_skipsr.models.weights import load_sr  # noqa: E402
from vs_skipsr.tokens import token_grid  # noqa: E402

# kernel name patterns -> a readable group, first match wins
GROUPS = (
    ("attention (flash varlen)", r"flash|fmha|attn"),
    ("attention (Triton)", r"window_attention"),
    ("rotary (Triton)", r"_rotate_kernel"),
    ("residual + norm (Triton)", r"_residual_norm_kernel"),
    ("conv head (Triton)", r"_bias_gelu_kernel|_cells_kernel|_velocity_kernel"),
    ("conv (cuDNN)", r"conv|cudnn|implicit_gemm|xmma|winograd|fprop|dgrad|nchw|nhwc"),
    ("matmul (cuBLAS)", r"gemm|cutlass|sm90_xmma|nvjet|cublas"),
    ("layer norm", r"layer_norm|LayerNorm"),
    ("gather / index", r"index|gather|scatter|Index"),
    ("copy / cast", r"copy|Copy|cast|to_copy|memcpy|Memcpy|memset"),
    ("triton (inductor)", r"^triton"),
    ("elementwise", r"elementwise|vectorized|unrolled|Elementwise|reduce"),
)


def group_of(name: str) -> str:
    for label, pattern in GROUPS:
        if re.search(pattern, name):
            return label
    return "other"


def kernel_stats(prof, calls: int, top: int = 10) -> dict:
    """Per call: span, kernel-time sum, count, and time by group and by kernel."""
    kernels = [
        e
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.elapsed_us() >= 0
    ]
    if not kernels:
        return {}
    kernels.sort(key=lambda e: e.time_range.start)
    total = sum(e.time_range.elapsed_us() for e in kernels)
    span = kernels[-1].time_range.end - kernels[0].time_range.start
    by_group: dict[str, float] = defaultdict(float)
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in kernels:
        us = e.time_range.elapsed_us()
        by_group[group_of(e.name)] += us / calls
        by_name[e.name][0] += us / calls
        by_name[e.name][1] += 1 / calls
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])
    return {
        "kernels": len(kernels) / calls,
        "kernel_us": total / calls,
        "span_us": span / calls,  # includes the gaps between calls: an upper bound
        "groups": dict(sorted(by_group.items(), key=lambda kv: -kv[1])),
        "top": [(name[:90], us, n) for name, (us, n) in ranked[:top]],
        # every kernel (name, us and count per call): what a kept fraction's row divided by
        # the dense row's says which costs do not scale with the kept tokens
        "all": [(name[:160], us, n) for name, (us, n) in ranked],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="default", help="'default' (shipped weights) or a preset")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--fractions", default="0.06,0.2,1.0")
    ap.add_argument(
        "--modes",
        default="varlen,graphs,compiled",
        help="padded, varlen, triton (eager, that attention), graphs, compiled; graphs+varlen "
        "and the like name a graphed mode's attention (plain graphs: the runner's choice)",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=0,
        help="profile whole N-step flows (what the filter runs a window) instead of single calls",
    )
    ap.add_argument("--top", type=int, default=10, help="kernels listed per row")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--calls", type=int, default=5, help="profiled calls per row")
    ap.add_argument("--out", type=Path, default=ROOT / "out/profile")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        ap.error("profile_sr.py profiles CUDA kernels; this machine has no CUDA device")
    dev = torch.device("cuda")
    width, height = (int(v) for v in args.size.split("x"))
    net = load_sr().to(dev) if args.preset == "default" else random_sr(args.preset, device=dev)
    grid = token_grid(args.frames, height, width, patch=net.config.patch)
    what = f"{args.steps}-step flows" if args.steps else "single calls"
    print(
        f"{torch.cuda.get_device_name(dev)}; {args.preset} net, {args.dtype}, grid {grid}, {what}"
    )
    results = {}
    for mode in args.modes.split(","):
        spec = mode_backend(mode, device="cuda", dtype=args.dtype)
        graphs = spec.cuda_graphs
        runner = spec.load(sr=net, mask=None)
        if graphs and not args.steps:  # (a flow's graph is captured by its first call)
            runner.prepare(grid=grid)
        g = torch.Generator().manual_seed(1)
        for frac in (float(f) for f in args.fractions.split(",")):
            k, call = sr_inputs(runner, grid=grid, fraction=frac, bucketed=graphs, generator=g)
            if args.steps:
                base, state, coords, _, parts = call
                run = functools.partial(runner.flow, base, state, coords, parts, steps=args.steps)
            else:
                run = functools.partial(runner.sr, *call)
            wall = median_seconds(run, dev, 10) * 1e3
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.calls):
                    run()
                torch.cuda.synchronize(dev)
            st = kernel_stats(prof, args.calls, args.top)
            results[f"{mode}_{frac}"] = {
                "mode": mode,
                "kept": frac,
                "K": k,
                "steps": args.steps,
                "wall_ms": wall,
                **st,
            }
            print(
                f"\n{mode}, kept {frac:.2f} (K {k}, bucket {call[0].shape[0]}): wall {wall:.3f} ms"
                + (
                    f", kernels {st['kernels']:.0f}, kernel sum {st['kernel_us'] / 1e3:.3f} ms"
                    if st
                    else ", no kernels traced"
                )
            )
            for name, us in st.get("groups", {}).items():
                print(f"  {name:26s} {us / 1e3:8.3f} ms")
            for name, us, n in st.get("top", []):
                print(f"    {us:8.1f} us  x{n:4.1f}  {name}")
        del runner
        torch.cuda.empty_cache()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_sr.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
