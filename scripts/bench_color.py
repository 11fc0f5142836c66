#!/usr/bin/env python3
"""GPU time of the device colour conversion (color.rgb_to_yuv) for one 5-frame 1080p window,
eager and as one CUDA graph replay, optionally against another checkout's color.py, with the
largest code difference between the two.

    python scripts/bench_color.py [--against OTHER_CHECKOUT]

``--against`` names a folder holding ``vs_skipsr/color.py`` (e.g. an older commit unpacked
with ``git archive``). Needs CUDA.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vs_skipsr import color  # noqa: E402


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
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
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
    mods = {"this checkout": color}
    if args.against:
        mods[str(args.against)] = load_other(args.against)
    if not torch.cuda.is_available():
        raise SystemExit("bench_color.py needs CUDA")
    # what the filter converts: the clamped window view, rows cropped from the token grid
    x = torch.rand(5, 3, 1088, 1920, device="cuda")[..., :1080, :]
    outs = {}
    for name, mod in mods.items():
        layout = mod.yuv_layout(bits=8, ss_w=1, ss_h=1, matrix=1, full_range=False, chromaloc=0)
        eager, replay = gpu_ms(lambda m=mod, lay=layout: m.rgb_to_yuv(x, lay))
        outs[name] = mod.rgb_to_yuv(x, layout)
        print(f"{name}: eager {eager:.3f} ms, graph replay {replay:.3f} ms per 5 x 1080p window")
    if len(outs) == 2:
        a, b = outs.values()
        diff = [int((p.int() - q.int()).abs().max()) for p, q in zip(a, b, strict=True)]
        print(f"largest code difference (Y, U, V): {diff}")


if __name__ == "__main__":
    main()
