#!/usr/bin/env python3
"""How fast this host hands frames written in Python to vspipe, with no model at all: the
ceiling under the filter's per-frame work (its floor, no token kept, is the model's cost plus
this). Each mode writes the same frames, a window of T source frames cycled, with the eight
props the filter sets, into fresh VapourSynth frames with numpy; they differ only in the nodes
that carry the callback:

    frameeval    a FrameEval per frame returning one ModifyFrame (the filter's way with
                 overlap)
    modifyframe  one ModifyFrame, nothing in front
    tickets      one FrameEval per window over a clip of one tiny frame a window, Interleaved
                 T times in front of one ModifyFrame a frame (a window settled once)
    shards       one ModifyFrame per VapourSynth thread, frame n written by node n % threads
                 (VapourSynth runs one ModifyFrame's callbacks one at a time)
    windows      four tickets a window, each writing every fourth of its frames and attaching
                 them as props, taken out in native code (PropToClip, Interleave): the
                 filter's way without overlap, no Python callback per frame

    python scripts/bench_frame_handoff.py                       # 1920x816 YUV420P8, T = 20
    python scripts/bench_frame_handoff.py --spin-share 0,0.55 --threads 0,8 --copy numpy,held

Two ways to write a plane (--copy): ``numpy``, numpy.copyto as the filter does, which lets go of
the GIL for the copy and takes it back after; ``held``, one memmove of the whole plane with the
GIL kept (where the frame's stride is the row's length; else numpy's), one hand-off fewer per
plane but the copy serialised with every other thread's Python.

Every mode's frames are checked against the window they come from before it is timed. vspipe
runs each (mode, threads, spin) once per repeat to a null sink; the table shows vspipe's own
rate, the median of the repeats. --spin-share adds a thread that spins in Python for that share
of its time (bursts between sleeps of 0.1 ms), the way the filter's window threads hold the
GIL. Figures from an H200's 16-core host are in reports/bench_gpu_s24.log (frameeval
1094-1310 fps, modifyframe 1524-1719 without spinning; 754-991 and 1092-1544 beside a thread
spinning 0.12 ms between its sleeps, about --spin-share 0.55) and reports/bench_gpu_s25.log
(another host: frameeval 1847, modifyframe 1832, shards 2754; the windows mode was added
after that call)."""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import vapoursynth as vs

from vs_skipsr.tickets import PARTS, hand_out

MODES = ("frameeval", "modifyframe", "tickets", "shards", "windows")
COPIES = ("numpy", "held")
# memmove called the way a PyDLL function is: ctypes keeps the GIL for the call
_memmove_holding_gil = ctypes.PYFUNCTYPE(
    ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t
)(ctypes._memmove_addr)
_RATE = re.compile(r"Output (\d+) frames in ([\d.]+) seconds \(([\d.]+) fps\)")


def source_window(fmt: vs.VideoFormat, *, width: int, height: int, window: int) -> list[np.ndarray]:
    """T frames of random samples per plane, [T, h, w] each, in the format's sample type."""
    rng = np.random.default_rng(0)
    dtype = np.uint8 if fmt.bytes_per_sample == 1 else np.uint16
    top = (1 << fmt.bits_per_sample) - 1
    planes = []
    for p in range(fmt.num_planes):
        h = height >> (fmt.subsampling_h if p else 0)
        w = width >> (fmt.subsampling_w if p else 0)
        planes.append(rng.integers(0, top, (window, h, w), dtype=dtype, endpoint=True))
    return planes


def write_plane(frame: vs.VideoFrame, plane: int, src: np.ndarray, *, copy: str) -> None:
    """``src`` (C-contiguous) into ``frame``'s plane, by ``copy`` (module docstring)."""
    if copy == "held" and frame.get_stride(plane) == src.strides[0]:
        _memmove_holding_gil(frame.get_write_ptr(plane).value, src.ctypes.data, src.nbytes)
    else:
        np.copyto(np.asarray(frame[plane]), src)


def build(
    mode: str,
    *,
    width: int,
    height: int,
    fmt: vs.VideoFormat,
    window: int,
    frames: int,
    planes: list[np.ndarray],
    copy: str = "numpy",
) -> vs.VideoNode:
    """The output node of ``mode``: frame n holds ``planes[p][n % window]``, written by
    ``copy``."""
    if copy not in COPIES:
        raise ValueError(f"copy={copy!r}: accepted {', '.join(COPIES)}")
    core = vs.core
    blank = core.std.BlankClip(width=width, height=height, format=fmt.id, length=frames, keep=True)

    def write(n: int, like: vs.VideoFrame) -> vs.VideoFrame:
        out = core.create_video_frame(like.format, like.width, like.height)
        for p in range(fmt.num_planes):
            write_plane(out, p, planes[p][n % window], copy=copy)
        props = out.props
        props["_Matrix"], props["_Range"], props["_ChromaLocation"] = 1, 0, 0
        props["SkipSRKeptRatio"], props["SkipSRWindow"] = 0.17, n // window
        props["SkipSRWindowMs"], props["SkipSRBackend"] = 1.0, "bench"
        return out

    if mode == "frameeval":
        node = core.std.ModifyFrame(blank, [blank], lambda n, f: write(n, f))
        return core.std.FrameEval(blank, lambda n: node)
    if mode == "modifyframe":
        return core.std.ModifyFrame(blank, [blank], lambda n, f: write(n, f))
    if mode == "tickets":
        windows = -(-frames // window)
        tiny = core.std.BlankClip(width=1, height=1, format=vs.GRAY8, length=windows, keep=True)
        settled = core.std.ModifyFrame(tiny, [tiny], lambda n, f: f)
        tickets = core.std.FrameEval(tiny, lambda n: settled)
        per_frame = core.std.Interleave([tickets] * window, modify_duration=False)[:frames]
        return core.std.ModifyFrame(blank, [blank, per_frame], lambda n, f: write(n, f[0]))
    if mode == "shards":
        k = core.num_threads
        if k == 1:
            return core.std.ModifyFrame(blank, [blank], lambda n, f: write(n, f))
        shards = []
        for shard in range(k):
            part = core.std.SelectEvery(blank, cycle=k, offsets=[shard], modify_duration=False)
            shards.append(
                core.std.ModifyFrame(
                    part, [part], lambda n, f, shard=shard: write(n * k + shard, f)
                )
            )
        return core.std.Interleave(shards, extend=True, modify_duration=False)[:frames]
    if mode == "windows":
        windows = -(-frames // window)
        tiny = core.std.BlankClip(width=1, height=1, format=vs.GRAY8, length=windows, keep=True)
        parts = min(window, PARTS)

        def attach(k: int, f: vs.VideoFrame, part: int) -> vs.VideoFrame:
            ticket = f.copy()
            for pos in range(part, min(window, frames - k * window), parts):
                ticket.props[f"f{pos}"] = write(k * window + pos, blank_frame)
            return ticket

        blank_frame = blank.get_frame(0)
        tickets = [
            core.std.ModifyFrame(tiny, [tiny], lambda n, f, part=part: attach(n, f, part))
            for part in range(parts)
        ]
        return hand_out(tickets, like=blank, window=window, frames=frames, prop="f")
    raise ValueError(f"mode={mode!r}: accepted {', '.join(MODES)}")


def check(node: vs.VideoNode, planes: list[np.ndarray], *, window: int) -> None:
    """Every frame of ``node`` holds its window position's planes, or raise naming it."""
    for n in range(node.num_frames):
        frame = node.get_frame(n)
        for p, src in enumerate(planes):
            if not np.array_equal(np.asarray(frame[p]), src[n % window]):
                raise AssertionError(f"frame {n}, plane {p}: not window position {n % window}")
        if frame.props["SkipSRWindow"] != n // window:
            raise AssertionError(f"frame {n}: SkipSRWindow {frame.props['SkipSRWindow']}")


def _spin(share: float, clock=time.perf_counter, sleep=time.sleep) -> None:
    """Spin in Python ``share`` of the time, in bursts between sleeps of 0.1 ms, forever (a
    daemon thread; the clock and sleep are bound here, as vspipe clears this module's globals
    while the thread still runs)."""
    burst = 0.0001 * share / (1.0 - share)
    while True:
        end = clock() + burst
        while clock() < end:
            pass
        sleep(0.0001)


def _script_args() -> dict[str, Any]:
    """Arguments vspipe passed (-a name=value): globals of this module when it runs there."""
    g = globals()
    width, height = (int(v) for v in str(g["size"]).split("x"))
    return {
        "mode": str(g["mode"]),
        "width": width,
        "height": height,
        "fmt": vs.core.get_video_format(getattr(vs, str(g["format"]))),
        "window": int(g["window"]),
        "frames": int(g["frames"]),
        "threads": int(g.get("threads", 0)),
        "spin_share": float(g.get("spin_share", 0)),
        "copy": str(g.get("copy", "numpy")),
    }


def _size(text: str) -> tuple[int, int]:
    """``W x H`` from --size, or an exit naming it."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size {text!r}: give WIDTHxHEIGHT, e.g. 1920x816") from None
    if width < 1 or height < 1:
        raise SystemExit(f"--size {text!r}: both sides must be 1 or more")
    return width, height


def _format(name: str) -> vs.VideoFormat:
    """The VapourSynth preset named by --format: integer YUV or GRAY (numpy writes it)."""
    preset = getattr(vs, name, None)
    if not isinstance(preset, vs.PresetVideoFormat):
        raise SystemExit(f"--format {name!r}: not a VapourSynth format preset (YUV420P8, ...)")
    fmt = vs.core.get_video_format(preset)
    if fmt.sample_type != vs.INTEGER:
        raise SystemExit(f"--format {name!r}: accepted integer formats only")
    return fmt


def _numbers(text: str, flag: str, kind: type, ok: Callable[[Any], bool], accepted: str) -> list:
    """A comma-separated list of ``kind`` from ``flag``, or an exit naming the bad value."""
    values = []
    for item in text.split(","):
        try:
            value = kind(item)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise SystemExit(f"{flag} {item!r}: accepted {accepted}")
        values.append(value)
    return values


def _vspipe() -> str:
    here = Path(sys.executable).parent / "vspipe"
    found = str(here) if here.exists() else shutil.which("vspipe")
    if found is None:
        raise SystemExit("vspipe not found next to this Python or on PATH (scripts/setup.sh)")
    return found


def run_vspipe(
    args: argparse.Namespace, *, mode: str, threads: int, spin_share: float, copy: str
) -> float:
    """vspipe's own rate for one mode, to a null sink."""
    cmd = [_vspipe(), str(Path(__file__).resolve()), "--"]
    values = {
        "mode": mode,
        "size": args.size,
        "format": args.format,
        "window": args.window,
        "frames": args.frames,
        "threads": threads,
        "spin_share": spin_share,
        "copy": copy,
    }
    for key, value in values.items():
        cmd[2:2] = ["-a", f"{key}={value}"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = _RATE.search(run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {run.returncode}):\n{run.stderr[-2000:]}")
    return float(found.group(3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1920x816", help="W x H of the frames")
    ap.add_argument("--format", default="YUV420P8", help="a VapourSynth preset: YUV420P8, ...")
    ap.add_argument("--window", type=int, default=20, help="T: frames a window")
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--threads", default="0", help="VapourSynth threads to try (0: its default)")
    ap.add_argument(
        "--spin-share", default="0", help="shares of time a thread spins in Python, to try"
    )
    ap.add_argument("--copy", default="numpy", help="ways to write a plane: numpy, held")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"--modes: {mode!r}: accepted {', '.join(MODES)}")
    width, height = _size(args.size)
    fmt = _format(args.format)
    if args.window < 1 or args.frames < 1 or args.repeats < 1:
        raise SystemExit(
            f"--window {args.window}, --frames {args.frames}, --repeats {args.repeats}: "
            "accepted 1 or more each"
        )
    threads = _numbers(args.threads, "--threads", int, lambda v: v >= 0, "0 or more")
    spins = _numbers(args.spin_share, "--spin-share", float, lambda v: 0 <= v < 1, "0 <= share < 1")
    copies = args.copy.split(",")
    for copy in copies:
        if copy not in COPIES:
            raise SystemExit(f"--copy {copy!r}: accepted {', '.join(COPIES)}")
    planes = source_window(fmt, width=width, height=height, window=args.window)
    frames = min(args.frames, 3 * args.window + 1)  # the checks: a few windows and a tail
    for mode in modes:
        for copy in copies:
            node = build(
                mode, width=width, height=height, fmt=fmt, window=args.window, frames=frames,
                planes=planes, copy=copy,
            )  # fmt: skip
            check(node, planes, window=args.window)

    rows = []
    print(f"{args.size} {args.format}, T = {args.window}, {args.frames} frames through vspipe")
    print(f"{'mode':>12} {'copy':>6} {'threads':>7} {'spin':>5} {'fps':>9} {'ms/frame':>8}  runs")
    for spin in spins:
        for th in threads:
            for mode in modes:
                for copy in copies:
                    rates = [
                        run_vspipe(args, mode=mode, threads=th, spin_share=spin, copy=copy)
                        for _ in range(args.repeats)
                    ]
                    fps = statistics.median(rates)
                    label = th or vs.core.num_threads
                    runs = ", ".join(f"{r:.1f}" for r in rates)
                    print(
                        f"{mode:>12} {copy:>6} {label:>7} {spin:>5g} {fps:>9.1f} "
                        f"{1000 / fps:>8.3f}  {runs}"
                    )
                    rows.append(
                        {"mode": mode, "copy": copy, "threads": label, "spin_share": spin,
                         "fps": rates}
                    )  # fmt: skip
    if args.json is not None:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows})
        )


if __name__ == "__vapoursynth__":
    _a = _script_args()
    if _a["threads"]:
        vs.core.num_threads = _a["threads"]
    if _a["spin_share"]:
        threading.Thread(target=_spin, args=(_a["spin_share"],), daemon=True).start()
    _planes = source_window(_a["fmt"], width=_a["width"], height=_a["height"], window=_a["window"])
    build(
        _a["mode"], width=_a["width"], height=_a["height"], fmt=_a["fmt"], window=_a["window"],
        frames=_a["frames"], planes=_planes, copy=_a["copy"],
    ).set_output()  # fmt: skip
elif __name__ == "__main__":
    main()
