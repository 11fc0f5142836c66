#!/usr/bin/env python3
"""Two trees end to end in one device call: is a change faster?

Rates from different GPU hosts differ by more than most changes, and runs on one host spread
by 10-20% (bikes at 8 steps, H200: 833-1097 fps over fourteen runs of two trees), so a change
is judged only against the tree before it, on the same host, in alternating rounds: round 1
runs each case on the new tree then the old, round 2 the old first, and so on. Each run is
the tree's own ``scripts/bench.py --sections vspipe`` for one case, with the tree first on
PYTHONPATH (vspipe imports the package from there: with the new tree first, the old run
measured the new code, tenth session). A time budget stops starting runs, so a device call
ends with its results written rather than killed mid-run.

Prints, per case and tree, every skip run's rate in run order, their median (the middle of an
even count is the mean of the two middle runs), the dense runs' median, the change's ratio
of medians and whether the two trees' ranges overlap; writes ``OUT/ab.json``.

    mkdir -p .carry/old && git archive HEAD~1 vs_skipsr scripts | tar -x -C .carry/old  # before
    . scripts/gpu_env.sh && python3 scripts/ab_bench.py --old .carry/old --out $OUT/ab \\
        --cases graphs:8:null,graphs:1:null --rounds 2 --budget 480 -- \\
        --clip $PWD/data/val/clips/bikes.mp4 --frames 250 --threshold 0.004766 \\
        --scorer gradient --preload --loop 4 --warmup-frames 100 --repeat 3 --large-frames 0

Paths after ``--`` are read by each tree's bench.py from its own folder: give them absolute.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Runs:
    """One case on one tree: the rates of every run, in run order, and the logs of the runs
    that gave no rate."""

    def __init__(self) -> None:
        self.skip: list[float] = []
        self.dense: list[float] = []
        self.failed: list[str] = []

    def median(self) -> float | None:
        return statistics.median(self.skip) if self.skip else None

    def dense_median(self) -> float | None:
        return statistics.median(self.dense) if self.dense else None


def tree_env(tree: Path, base: dict[str, str], *, others: tuple[Path, ...]) -> dict[str, str]:
    """``base`` with ``tree`` first on PYTHONPATH and the ``others`` trees taken off it."""
    drop = {str(p.resolve()) for p in others}
    kept = [
        p
        for p in base.get("PYTHONPATH", "").split(os.pathsep)
        if p and str(Path(p).resolve()) not in drop
    ]
    return {**base, "PYTHONPATH": os.pathsep.join([str(tree), *kept])}


def schedule(cases: list[str], rounds: int) -> list[tuple[int, str, str]]:
    """(round, case, tree) in run order: odd rounds new first, even rounds old first."""
    order = []
    for r in range(1, rounds + 1):
        trees = ("new", "old") if r % 2 else ("old", "new")
        for case in cases:
            order.extend((r, case, t) for t in trees)
    return order


def read_rates(out: Path) -> tuple[list[float], list[float]]:
    """The skip and dense rates of one bench.py run's vspipe row (none where it failed)."""
    path = out / "bench.json"
    if not path.exists():
        return [], []
    rows = json.loads(path.read_text()).get("vspipe") or []
    if not rows:
        return [], []
    row = rows[0]
    return list(row.get("skip_runs_fps", [])), list(row.get("dense_runs_fps", []))


def overlap(a: list[float], b: list[float]) -> bool:
    return bool(a and b) and min(a) <= max(b) and min(b) <= max(a)


def report(results: dict[str, dict[str, Runs]]) -> str:
    lines = []
    for case, trees in results.items():
        lines.append(case)
        for name in ("new", "old"):
            runs = trees[name]
            rates = ", ".join(f"{v:.1f}" for v in runs.skip) or "no run"
            med, dense = runs.median(), runs.dense_median()
            lines.append(
                f"  {name}: skip fps {rates}"
                + (f"; median {med:.2f}" if med is not None else "")
                + (f"; dense median {dense:.2f}" if dense is not None else "")
                + (f"; {len(runs.failed)} failed: {', '.join(runs.failed)}" if runs.failed else "")
            )
        new, old = trees["new"], trees["old"]
        if new.skip and old.skip:
            ratio = new.median() / old.median() - 1  # type: ignore[operator]
            both = "overlap" if overlap(new.skip, old.skip) else "do not overlap"
            lines.append(f"  new against old: {100 * ratio:+.1f}% by the medians; ranges {both}")
    return "\n".join(lines)


def run_bounded(cmd: list[str], *, cwd: Path, env: dict[str, str], log, timeout: float) -> None:
    """Run ``cmd`` in its own process group and end the whole group after ``timeout`` s:
    bench.py starts vspipe, which a kill of bench.py alone would leave running on the GPU
    beside the next run."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.write(f"\nab_bench: stopped after {timeout:.0f} s\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, bench_args = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--old", type=Path, required=True, help="the tree before (its vs_skipsr and scripts)"
    )
    ap.add_argument("--new", type=Path, default=ROOT, help="the changed tree (default: this one)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cases", required=True, help="bench.py --vspipe-cases, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--budget",
        type=float,
        default=480,
        help="seconds after which no run is started (one started before may take "
        "--run-timeout more)",
    )
    ap.add_argument("--run-timeout", type=float, default=120, help="seconds a run may take")
    args = ap.parse_args(ours)
    trees = {"new": args.new.resolve(), "old": args.old.resolve()}
    for name, tree in trees.items():
        if not (tree / "scripts" / "bench.py").is_file():
            ap.error(f"--{name} {tree}: no scripts/bench.py there")
    if args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: at least 1")
    cases = [c for c in args.cases.split(",") if c]
    if not cases:
        ap.error(f"--cases {args.cases!r}: no case")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {c: {"new": Runs(), "old": Runs()} for c in cases}
    t0 = time.monotonic()
    for rnd, case, name in schedule(cases, args.rounds):
        elapsed = time.monotonic() - t0
        if elapsed > args.budget:
            print(f"budget: {case} on {name}, round {rnd}, not started at {elapsed:.0f} s")
            continue
        tree = trees[name]
        tag = f"{case.replace(':', '_')}_{name}_r{rnd}"
        out = args.out / tag
        cmd = [sys.executable, str(tree / "scripts" / "bench.py"), "--out", str(out)]
        cmd += ["--sections", "vspipe", "--vspipe-cases", case, *bench_args]
        env = tree_env(tree, dict(os.environ), others=tuple(t for t in trees.values() if t != tree))
        log = args.out / f"{tag}.txt"
        with log.open("w") as f:
            run_bounded(cmd, cwd=tree, env=env, log=f, timeout=args.run_timeout)
        skip, dense = read_rates(out)
        runs = results[case][name]
        runs.skip += skip
        runs.dense += dense
        if not skip:
            runs.failed.append(log.name)
        print(
            f"{tag}: {', '.join(f'{v:.1f}' for v in skip) or 'no rate'} "
            f"({time.monotonic() - t0:.0f} s)",
            flush=True,
        )
    text = report(results)
    print(text)
    (args.out / "ab.json").write_text(
        json.dumps(
            {
                case: {
                    name: {**vars(r), "median": r.median(), "dense_median": r.dense_median()}
                    for name, r in trees_.items()
                }
                for case, trees_ in results.items()
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
