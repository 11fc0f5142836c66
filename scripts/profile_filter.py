#!/usr/bin/env python3
"""Where a frame's time goes inside the filter: host threads, the GIL and the GPU, for one
demo.vpy configuration run in this process the way vspipe runs it (frames asked for in
order, ``--requests`` at once, each written nowhere).

The end-to-end benchmark gives one rate; this splits it. Three passes over one clip:
warm-up (CUDA context, graph capture), a timed pass with py-spy sampling the thread that
holds the GIL (if py-spy is installed), and a pass under torch.profiler for the GPU's
kernels and copies (CUPTI sees every thread's work). The filter's own methods are wrapped
with timers for the second and third passes, so the host side is split by what each thread
did, whichever thread did it.

    python scripts/profile_filter.py --clip data/val/clips/cockatoo.mp4 --preload \
        --frames 270 --loop 4 --threshold 1e9 --steps 1 --out out/profile_floor

Prints a table; writes summary.json (and the torch.profiler trace with --trace) to --out.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import vapoursynth as vs  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import vs_skipsr.filter as filt  # noqa: E402
import vs_skipsr.pipeline as pipeline  # noqa: E402
from vs_skipsr.backends.cuda_graphs import GraphCache  # noqa: E402


class Spans:
    """Wall time spent inside named calls, per thread, while ``on``: summed, not a
    timeline, so it stays cheap at thousands of calls a second. The calling thread's CPU time
    is summed beside it: a call that only launches work (no sync) but takes far more wall
    than CPU time waited for something else, on a busy host mostly the GIL (each torch op
    hands it back and takes it again). A CUDA sync may spin, so there CPU time is no sign of
    work."""

    def __init__(self) -> None:
        self.on = False
        self._lock = threading.Lock()
        self.total: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        # by ident, not name: threads of one name (the filter's read-ahead workers) are several
        self.threads: dict[str, set[int]] = defaultdict(set)
        self.order: list[str] = []  # names in the order they were wrapped

    def add(self, name: str, seconds: float, cpu_seconds: float) -> None:
        if not self.on:
            return
        with self._lock:
            self.total[name] += seconds
            self.cpu[name] += cpu_seconds
            self.count[name] += 1
            self.threads[name].add(threading.get_ident())

    def reset(self) -> None:
        with self._lock:
            self.total.clear()
            self.cpu.clear()
            self.count.clear()
            self.threads.clear()

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """Time every call of ``owner.attr`` as ``name``."""
        fn = getattr(owner, attr)
        self.order.append(name)

        def timed(*a: Any, **kw: Any) -> Any:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                self.add(name, time.perf_counter() - t0, time.thread_time() - c0)

        static = isinstance(inspect.getattr_static(owner, attr), staticmethod)
        setattr(owner, attr, staticmethod(timed) if static else timed)

    def wrap_context(self, owner: Any, attr: str, name: str) -> None:
        """Time a context manager's entry (``name`` wait) and body (``name`` held)."""
        fn = getattr(owner, attr)
        self.order += [f"{name} wait", f"{name} held", f"{name} exit (stream sync)"]

        @contextmanager
        def timed(*a: Any, **kw: Any) -> Iterator[None]:
            t0, c0 = time.perf_counter(), time.thread_time()
            with fn(*a, **kw):
                t1, c1 = time.perf_counter(), time.thread_time()
                self.add(f"{name} wait", t1 - t0, c1 - c0)
                try:
                    yield
                finally:
                    t2, c2 = time.perf_counter(), time.thread_time()
            self.add(f"{name} held", t2 - t1, c2 - c1)
            self.add(
                f"{name} exit (stream sync)", time.perf_counter() - t2, time.thread_time() - c2
            )

        setattr(owner, attr, timed)


def instrument(spans: Spans) -> None:
    """The filter's steps, by the names a reader of filter.py finds them under."""
    node = filt._SkipSRNode
    spans.wrap(node, "_select_window", "_select_window (per window, no overlap: the node)")
    spans.wrap(node, "_frames_cached", "_frames_cached (per window: it was cached)")
    spans.wrap(node, "_frames_computed", "_frames_computed (per window: compute or wait)")
    spans.wrap(node, "_select", "_select (per frame, overlap: picks the node)")
    spans.wrap(node, "_produce_cached", "_produce_cached (per frame, overlap: windows cached)")
    spans.wrap(node, "_produce", "_produce (per frame, overlap: callback)")
    spans.wrap(node, "_write", "_write (per frame: writes it)")
    spans.wrap(node, "_new_frame", "  _new_frame")
    spans.wrap(node, "_set_props", "  _set_props")
    spans.wrap(node, "_compute", "_compute (per window)")
    spans.wrap(node, "_read_ahead", "_read_ahead (thread: wait frames + compute)")
    spans.wrap(node, "_read_ahead_after", "_read_ahead_after (queue + fetch)")
    spans.wrap(filt, "_fill", "  _fill (LR into staging)")
    spans.wrap(filt, "upscale_window", "  upscale_window (launch + keep-count sync)")
    # inside upscale_window, in its order: the one sync, then launches only
    spans.wrap(torch, "nonzero", "    torch.nonzero (the keep-count sync, any caller)")
    spans.wrap(torch, "count_nonzero", "    torch.count_nonzero (the sync, graphs)")
    spans.wrap(pipeline, "padded_tokens", "    padded_tokens (index, coords, partitions)")
    spans.wrap(pipeline, "gather_patches", "    gather_patches")
    spans.wrap(pipeline, "token_noise", "    token_noise")
    spans.wrap(GraphCache, "flow", "    GraphCache.flow (inputs in + one replay)")
    spans.wrap(GraphCache, "run_window", "    GraphCache.run_window (feed, gather, flow, scatter)")
    spans.wrap(pipeline, "add_to_tokens", "    add_to_tokens (the scatter)")
    spans.wrap(filt.StaticGraph, "__call__", "  StaticGraph (copy in + replay)")
    spans.wrap(filt, "_copy_plane", "  _copy_plane (planes into the frame)")
    spans.wrap_context(filt._Slots, "take", "  slot")
    spans.wrap(filt._WindowCache, "get", "  cache.get (compute or wait)")


# what --ablate can take out of the filter (monkeypatched here, never in the library): the
# frame rate without one step bounds what making that step cheaper can buy
ABLATIONS = {
    "copy": "the callback's plane copies (frames leave with whatever bytes they were made with)",
    "props": "the callback's own frame props",
    "fill": "the LR frames' copy into the staging buffer (the network reads stale LR)",
}


def ablate(names: list[str]) -> None:
    """Replace each named step of the filter with a no-op (see :data:`ABLATIONS`)."""
    for name in names:
        if name == "copy":
            filt._copy_plane = lambda dst, src: None
        elif name == "props":
            filt._SkipSRNode._set_props = lambda self, out, layout, **kw: None
        elif name == "fill":
            filt._fill = lambda dst, frames: None
        else:
            raise SystemExit(f"--ablate {name!r}: accepted {', '.join(ABLATIONS)}")


def gpu_busy(trace: dict[str, Any]) -> dict[str, float]:
    """Union of the GPU's kernel, copy and memset intervals over the trace's GPU span, and
    the host time in CUDA runtime calls (launches, syncs), from a chrome trace."""
    spans, copies = [], 0.0
    runtime: dict[str, float] = defaultdict(float)
    by_name: dict[str, float] = defaultdict(float)  # GPU time per kernel / copy name
    launches = 0
    for e in trace.get("traceEvents", []):
        cat = e.get("cat", "")
        if "dur" not in e:
            continue
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            spans.append((e["ts"], e["ts"] + e["dur"]))
            by_name[e.get("name", "?")[:90]] += e["dur"]
            if cat == "gpu_memcpy":
                copies += e["dur"]
        elif cat == "cuda_runtime" or cat == "cuda_driver":
            runtime[e.get("name", "?")] += e["dur"]
            if "Launch" in e.get("name", ""):
                launches += 1
    if not spans:
        return {}
    spans.sort()
    busy, end = 0.0, spans[0][0]
    for a, b in spans:
        if b <= end:
            continue
        busy += b - max(a, end)
        end = b
    wall = spans[-1][1] - spans[0][0]
    top = sorted(runtime.items(), key=lambda kv: -kv[1])[:6]
    kernels = sorted(by_name.items(), key=lambda kv: -kv[1])[:20]
    return {
        "gpu_span_ms": wall / 1e3,
        "gpu_busy_ms": busy / 1e3,
        "gpu_busy_pct": 100.0 * busy / wall,
        "memcpy_ms": copies / 1e3,
        "launches": launches,
        "runtime_ms": {k: v / 1e3 for k, v in top},
        # summed durations (streams overlap, so these can add up to more than busy)
        "kernels_ms": {k: v / 1e3 for k, v in kernels},
        "kernels_total_ms": sum(by_name.values()) / 1e3,
    }


def gil_profile(pid: int, out: Path, rate: int) -> subprocess.Popen | None:
    """py-spy sampling only the thread that holds the GIL (``--gil``) until it is sent
    SIGINT (then it writes ``out``): so its window is the timed pass, not a whole number of
    seconds around it."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        return None
    cmd = [spy, "record", "--gil", "-r", str(rate), "-f", "raw", "--nonblocking"]
    cmd += ["-o", str(out), "--pid", str(pid)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def gil_summary(raw: Path, seconds: float, rate: int) -> dict[str, Any]:
    """GIL held as a share of the pass (samples over rate x seconds) and the leaf
    functions that held it most."""
    if not raw.exists():
        return {}
    leaves: dict[str, int] = defaultdict(int)
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        leaves[frames[-1] if frames else "?"] += n
    top = sorted(leaves.items(), key=lambda kv: -kv[1])[:12]
    return {
        "gil_held_pct": 100.0 * total / (rate * seconds),
        "samples": total,
        "top": [(k, 100.0 * v / max(total, 1)) for k, v in top],
    }


def consume(frames: Iterator[vs.VideoFrame], count: int) -> float:
    """Take ``count`` frames in order; the seconds it took."""
    t0 = time.perf_counter()
    for _ in range(count):
        next(frames).close()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clip", type=Path, default=ROOT / "data/val/clips/cockatoo.mp4")
    ap.add_argument("--frames", type=int, default=270)
    ap.add_argument("--loop", type=int, default=4)
    ap.add_argument("--preload", action="store_true")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=60, help="frames before the timed pass")
    ap.add_argument("--timed", type=int, default=400, help="frames of the timed pass")
    ap.add_argument("--profiled", type=int, default=200, help="frames under torch.profiler")
    ap.add_argument("--trace", action="store_true", help="keep the chrome trace (trace.json.gz)")
    ap.add_argument("--spy-rate", type=int, default=500)
    ap.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a demo.vpy argument (repeatable): threshold=1e9, steps=8, num_streams=3, ...",
    )
    ap.add_argument(
        "--ablate",
        action="append",
        default=[],
        metavar="STEP",
        help="take a step out, for what-if rates (repeatable; the output is then wrong): "
        + "; ".join(f"{k}: {v}" for k, v in ABLATIONS.items()),
    )
    ap.add_argument("--out", type=Path, default=ROOT / "out/profile_filter")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    script_args = {
        "src": str(args.clip.resolve()),
        "frames": str(args.frames),
        "loop": str(args.loop),
        "lr_width": "480",
        "backend": "cuda" if torch.cuda.is_available() else "cpu",
        **({"preload": "1"} if args.preload else {}),
    }
    for item in args.arg:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--arg {item!r}: give NAME=VALUE")
        script_args[name] = value
    if args.timed <= 20:
        raise SystemExit(
            f"--timed {args.timed}: accepted more than 20 (its first 20 frames refill the requests)"
        )
    need = args.warmup + args.timed + args.profiled
    total = args.frames * args.loop
    if need > total:
        raise SystemExit(f"--warmup + --timed + --profiled = {need} > frames x loop = {total}")

    ablate(args.ablate)
    spans = Spans()
    instrument(spans)
    runpy.run_path(str(ROOT / "scripts/demo.vpy"), init_globals=dict(script_args))
    clip = vs.get_output(0)
    clip = getattr(clip, "clip", clip)
    frames = clip.frames(prefetch=args.requests, backlog=args.requests)

    warm_s = consume(frames, args.warmup)
    spans.on = True
    raw = args.out / "gil.txt"
    consume(frames, 20)  # the requests ahead are in flight again after the warm-up's end
    spy = gil_profile(os.getpid(), raw, args.spy_rate)
    time.sleep(0.5 if spy else 0.0)  # py-spy attaches (the filter idles once 8 are ahead)
    spans.reset()
    timed_s = consume(frames, args.timed - 20)
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    host = {
        k: {
            "ms_per_frame": 1e3 * v / (args.timed - 20),
            "cpu_ms_per_frame": 1e3 * spans.cpu[k] / (args.timed - 20),
            "calls": spans.count[k],
            "threads": len(spans.threads[k]),
        }
        for k, v in sorted(spans.total.items(), key=lambda kv: spans.order.index(kv[0]))
    }
    gil = gil_summary(raw, timed_s, args.spy_rate)

    spans.reset()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        prof_s = consume(frames, args.profiled)
    trace_path = args.out / "trace.json"
    prof.export_chrome_trace(str(trace_path))
    gpu = gpu_busy(json.loads(trace_path.read_text()))
    if args.trace:
        subprocess.run(["gzip", "-f", str(trace_path)], check=False)
    else:
        trace_path.unlink()
    spans.on = False

    fps = (args.timed - 20) / timed_s
    memory = {}
    if torch.cuda.is_available():  # the graphs' pools and every stream's buffers, at their peak
        memory = {
            "max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
            "max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
        }
    summary = {
        "script_args": script_args,
        "requests": args.requests,
        "ablated": args.ablate,
        "vs_threads": vs.core.num_threads,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "warmup_s": warm_s,
        "timed_fps": fps,
        "timed_ms_per_frame": 1e3 / fps,
        "profiled_fps": args.profiled / prof_s,
        "host": host,
        "gil": gil,
        "gpu": {
            **gpu,
            "gpu_ms_per_frame": gpu.get("gpu_busy_ms", 0.0) / args.profiled,
            "profiled_frames": args.profiled,
        },
        "gpu_memory": memory,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(report(summary), flush=True)
    # requests still in flight call back into Python from VapourSynth's threads while the
    # interpreter finalises, which aborted the process after its summary (H100, eighth
    # session): leave without finalising, everything is written
    sys.stderr.flush()
    os._exit(0)


def report(s: dict[str, Any]) -> str:
    lines = [
        f"profile: {s['device']}, demo.vpy {s['script_args']}, {s['requests']} requests, "
        f"{s['vs_threads']} VapourSynth threads"
        + (f", without: {', '.join(s['ablated'])}" if s.get("ablated") else ""),
        f"timed pass: {s['timed_fps']:.1f} fps = {s['timed_ms_per_frame']:.3f} ms per frame "
        f"(under torch.profiler: {s['profiled_fps']:.1f} fps)",
        "host, wall time inside each call summed over threads (ms per output frame; a sum "
        "over threads can exceed the frame's time when they overlap), and the calling "
        "threads' CPU time in it:",
        f"  {'':<52} {'wall':>8}  {'cpu':>7}",
    ]
    for name, v in s["host"].items():
        lines.append(
            f"  {name:<52} {v['ms_per_frame']:8.3f}  {v.get('cpu_ms_per_frame', 0.0):7.3f}  "
            f"calls {v['calls']:6d}  threads {v['threads']}"
        )
    g = s["gil"]
    if g:
        lines.append(
            f"GIL held {g['gil_held_pct']:.0f}% of the timed pass "
            f"({g['samples']} py-spy samples); leaves holding it most:"
        )
        for name, pct in g["top"]:
            lines.append(f"  {pct:5.1f}%  {name}")
    else:
        lines.append("GIL: py-spy not found")
    gpu = s["gpu"]
    if gpu.get("gpu_span_ms"):
        lines.append(
            f"GPU (profiled pass): busy {gpu['gpu_busy_pct']:.0f}% of its span "
            f"{gpu['gpu_span_ms']:.0f} ms = {gpu['gpu_ms_per_frame']:.3f} ms per frame busy; "
            f"copies {gpu['memcpy_ms']:.0f} ms; {gpu['launches']} launches; runtime calls "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in gpu["runtime_ms"].items())
        )
        n = gpu["profiled_frames"]
        lines.append(
            f"GPU time by kernel or copy, summed over streams ({gpu['kernels_total_ms'] / n:.3f} "
            "ms per frame in all), ms per frame, the largest:"
        )
        for name, ms in gpu["kernels_ms"].items():
            lines.append(f"  {ms / n:8.4f}  {name}")
    mem = s.get("gpu_memory")
    if mem:
        lines.append(
            f"GPU memory, peak over the run (torch's allocator): {mem['max_allocated_mib']:.0f} MiB "
            f"allocated, {mem['max_reserved_mib']:.0f} MiB reserved"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
