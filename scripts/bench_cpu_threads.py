#!/usr/bin/env python3
"""Why the CPU's windows run on one torch thread (vs_skipsr/torch_thread.py): the same
windows timed where they run, each case in a fresh process (OpenMP's threads live as long as
the process).

  main          loaded and computed on the main thread
  second        loaded and warmed up on the main thread, computed on a second thread (what
                vspipe did before: the script's thread loads, VapourSynth's compute)
  one thread    everything on one thread that is not the main thread
  after a copy  the same, after one parallel copy on the main thread

    python scripts/bench_cpu_threads.py [--steps 1] [--frames 90] [--reps 2]

Prints wall and CPU milliseconds a frame (best of --reps passes over the clip's windows).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ("main", "second", "one thread", "after a copy")


def _child(case: str, clip: Path, frames: int, steps: int, reps: int) -> dict[str, float]:
    """One case in this process: load, warm up and time where ``case`` says."""
    sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
    import torch
    from bench import clip_frames

    from vs_skipsr.backends import TorchBackend
    from vs_skipsr.models.weights import load_mask, load_sr
    from vs_skipsr.pipeline import upscale_window

    kw = {"threshold": 0.004766, "scorer": "gradient", "steps": steps}
    state: dict[str, object] = {}

    def load() -> None:
        runner = TorchBackend(device="cpu", dtype="fp32").load(sr=load_sr(), mask=load_mask())
        lr = clip_frames(clip, frames, (160, 90))
        windows = [lr[i : i + 5] for i in range(0, lr.shape[0] - 4, 5)]
        upscale_window(windows[0], scale=4, runner=runner, **kw)
        state.update(runner=runner, windows=windows)

    def timed() -> None:
        best = (float("inf"), 0.0)
        for _ in range(reps):
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu0, t0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
            for w in state["windows"]:  # type: ignore[attr-defined]
                upscale_window(w, scale=4, runner=state["runner"], **kw)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            wall, cpu = time.perf_counter() - t0, usage.ru_utime + usage.ru_stime - cpu0
            best = min(best, (wall, cpu))
        n = 5 * len(state["windows"])  # type: ignore[arg-type]
        state["result"] = {"wall_ms": 1e3 * best[0] / n, "cpu_ms": 1e3 * best[1] / n}

    def on_thread(*fns) -> None:  # type: ignore[no-untyped-def]
        th = threading.Thread(target=lambda: [f() for f in fns])
        th.start()
        th.join()

    if case == "main":
        load()
        timed()
    elif case == "second":
        load()
        on_thread(timed)
    else:
        if case == "after a copy":
            torch.empty(10_000_000).copy_(torch.ones(10_000_000))  # one parallel region
        on_thread(load, timed)
    return state["result"]  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, default=ROOT / "data/val/clips/cockatoo.mp4")
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # a child process
    args = ap.parse_args()
    if args.frames < 5:
        ap.error(f"--frames {args.frames}: accepted 5 or more (one 5-frame window)")
    if not args.clip.is_file():
        ap.error(f"--clip {args.clip}: no such file (scripts/fetch_data.py fetches it)")
    if args.case:
        print(json.dumps(_child(args.case, args.clip, args.frames, args.steps, args.reps)))
        return
    print(f"{args.frames} frames of {args.clip.name}, 160x90 -> 640x360, {args.steps} step(s), CPU")
    print(f"{'case':<14} {'wall ms/frame':>14} {'cpu ms/frame':>13}")
    for case in CASES:
        cmd = [sys.executable, __file__, "--case", case, "--clip", str(args.clip)]
        cmd += ["--frames", str(args.frames), "--steps", str(args.steps), "--reps", str(args.reps)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        r = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"{case:<14} {r['wall_ms']:14.1f} {r['cpu_ms']:13.1f}")


if __name__ == "__main__":
    main()
