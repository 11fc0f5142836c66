#!/usr/bin/env python3
"""GPU time of the device colour conversion (color.rgb_to_yuv) for one 5-frame 1080p window,
eager and as one CUDA graph replay: this checkout's torch ops and its Triton kernels (where
Triton is installed), optionally another checkout's color.py, with the largest code
difference from the first row and how many codes differ.

    python scripts/bench_color.py [--against OTHER_CHECKOUT]

``--against`` names a folder holding ``vs_skipsr/color.py`` (e.g. an older commit unpacked
with ``git archive``). Needs CUDA.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vs_skipsr import color  # noqa: E402
from vs_skipsr.benchmark import captured  # noqa: E402


def load_other(folder: Path) -> ModuleType:
    path = folder / "vs_skipsr/color.py"
    spec = importlib.util.spec_from_file_location("other_color", path)
    if not path.is_file() or spec is None or spec.loader is None:
        raise SystemExit(f"--against {folder}: no {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def gpu_ms(fn: Callable[[], object], reps: int = 20) -> tuple[float, float]:
    """(eager, graph replay) milliseconds per call."""
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    eager = start.elapsed_time(end) / reps
    graph, _ = captured(fn)
    graph.replay()
    torch.cuda.synchronize()
    start.record()
    for _ in range(reps):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return eager, start.elapsed_time(end) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", type=Path, help="a folder with another vs_skipsr/color.py")
    args = ap.parse_args()
    cases: dict[str, tuple[ModuleType, dict[str, object]]] = {
        "this checkout, torch ops": (color, {"kernels": "torch"}),
    }
    if color._triton_kernels() is not None:
        cases["this checkout, Triton"] = (color, {"kernels": "triton"})
    if args.against:
        cases[str(args.against)] = (load_other(args.against), {})
    if not torch.cuda.is_available():
        raise SystemExit("bench_color.py needs CUDA")
    # what the filter converts: the window on its token grid (1088 rows), cropped inside
    x = torch.rand(5, 3, 1088, 1920, device="cuda")
    outs = {}
    for name, (mod, kw) in cases.items():
        layout = mod.yuv_layout(bits=8, ss_w=1, ss_h=1, matrix=1, full_range=False, chromaloc=0)
        if "size" in inspect.signature(mod.rgb_to_yuv).parameters:
            call = {**kw, "size": (1080, 1920)}
            src = x
        else:  # older: the caller crops
            call, src = kw, x[..., :1080, :]
        eager, replay = gpu_ms(lambda m=mod, lay=layout, s=src, c=call: m.rgb_to_yuv(s, lay, **c))
        outs[name] = mod.rgb_to_yuv(src, layout, **call)
        print(f"{name}: eager {eager:.3f} ms, graph replay {replay:.3f} ms per 5 x 1080p window")
    first, *others = outs.items()
    for name, planes in others:
        diff = [int((p.int() - q.int()).abs().max()) for p, q in zip(first[1], planes, strict=True)]
        count = sum(int((p != q).sum()) for p, q in zip(first[1], planes, strict=True))
        print(
            f"{name} against {first[0]}: largest code difference (Y, U, V) {diff}, {count} codes differ"
        )


if __name__ == "__main__":
    main()
