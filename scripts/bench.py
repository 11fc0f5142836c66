#!/usr/bin/env python3
"""SkipSR against dense, from the SR net alone to vspipe end to end. One command per machine.

Sections (``--sections``, comma-separated):
  peak      the card's measured bf16 matmul rate (the ceiling for achieved TFLOP/s)
  sr        the SR net alone: time against kept fraction at 720p and 1080p output windows,
            eager (padded / varlen attention) and CUDA graphs, with achieved TFLOP/s
  large     the same for the SeedVR2-3B-shaped preset (random weights) on 720p x 21 frames
  stages    per-stage times of upscale_window (H2D, upsample, mask, gather, SR, scatter, and on
            CUDA the colour conversion and D2H of the YUV planes) on a real validation clip,
            dense and skipped, at 1, 4 and 8 steps; plus the VapourSynth format conversion
            (resize YUV420P8 <-> RGBS) per frame
  vspipe    end to end: vspipe scripts/demo.vpy to a sink (null: vspipe's own, nothing
            written; pipe: y4m read by this process; x264: piped into the encoder where one is
            found), dense against SkipSR, same run, for each --vspipe-cases entry:
            the default model at 1, 4 and 8 steps, eager and (CUDA) with CUDA graphs, and
            (CUDA) the SeedVR2-3B-shaped preset on 720p windows of 21 frames; steady-state fps
            after W warm-up frames (vspipe's progress updates, or the times frames leave it)
Prints tables; writes --out/bench.json and --out/bench.png.

    python scripts/bench.py --sections peak,sr,large,stages,vspipe --out out/bench   # GPU
    python scripts/bench.py --device cpu --sections stages,vspipe --frames 30 \
        --vspipe-cases eager:1:null,eager:1:x264,eager:4:null --streams 1 --requests 2  # CPU
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
CAPTURE_MS = re.compile(r"captured a CUDA graph for .* in ([0-9.]+) ms")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from vs_skipsr.backends import TorchBackend  # noqa: E402
from vs_skipsr.benchmark import (  # noqa: E402
    FRACTIONS,
    format_table,
    median_seconds,
    mode_backend,
    scaling_table,
)
from vs_skipsr.color import rgb_to_yuv, yuv_layout  # noqa: E402
from vs_skipsr.models import SRTransformer, random_sr  # noqa: E402
from vs_skipsr.models.weights import load_mask, load_sr  # noqa: E402
from vs_skipsr.pipeline import upscale_window  # noqa: E402
from vs_skipsr.tokens import token_grid  # noqa: E402

RESULTS: dict[str, object] = {}


def say(*a: object) -> None:
    print(*a, flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({os.cpu_count()} cores, torch {torch.get_num_threads()} threads)"


# --- peak ----------------------------------------------------------------------------------


def bench_peak(dev: torch.device) -> float:
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    sec = median_seconds(lambda: a @ b, dev, 10)
    tflops = 2 * n**3 / sec / 1e12
    say(
        f"\nmeasured bf16 matmul peak ({n}^3, random data): {tflops:.0f} TFLOP/s on {device_name(dev)}"
    )
    RESULTS["peak_tflops"] = tflops
    return tflops


# --- SR net alone ---------------------------------------------------------------------------


def sr_table(
    net: SRTransformer,
    *,
    dev: torch.device,
    dtype: str,
    mode: str,
    size: tuple[int, int],
    frames: int,
    reps: int,
    peak: float | None,
    fractions=FRACTIONS,
    steps: int = 0,
) -> list[dict]:
    spec = mode_backend(mode, device=str(dev), dtype=dtype)
    runner = spec.load(sr=net, mask=None)
    rows = scaling_table(
        runner,
        size=size,
        frames=frames,
        fractions=fractions,
        reps=reps,
        bucketed=spec.cuda_graphs,
        steps=steps,
    )
    call = f"{steps}-step flow" if steps else "one call"
    say(
        f"\nSR net alone: {frames} x {size[0]}x{size[1]} output ({rows[-1].tokens} tokens), {dtype}, "
        f"{mode}, {call}, {device_name(dev)}"
    )
    say(format_table(rows, peak_tflops=peak))
    return [asdict(r) for r in rows]


def bench_sr(dev: torch.device, args, peak: float | None) -> None:
    """The default model alone, one table per output size, window length (--sr-frames) and
    mode (--sr-modes: padded, varlen (torch's flash varlen), triton (the Triton window
    attention), graphs, compiled (torch.compile, then graphs) in bf16 on CUDA; graphs-fp16
    and so on; graphs+varlen: graphs with that attention instead of the automatic choice)."""
    out = {}
    net = load_sr().to(dev)
    modes = args.sr_modes.split(",") if dev.type == "cuda" else ["padded"]
    for frames in (int(f) for f in args.sr_frames.split(",")):
        for size in ((1280, 720), (1920, 1080)):
            for entry, steps in itertools.product(modes, args.sr_steps):
                mode, _, dtype = entry.partition("-")
                dtype = dtype or ("bf16" if dev.type == "cuda" else "fp32")
                key = f"default_{size[0]}x{size[1]}_t{frames}_{mode}_{dtype}"
                key += f"_flow{steps}" if steps else ""
                try:
                    out[key] = sr_table(
                        net,
                        dev=dev,
                        dtype=dtype,
                        mode=mode,
                        size=size,
                        frames=frames,
                        reps=args.reps,
                        peak=peak,
                        steps=steps,
                    )
                except Exception as e:
                    say(f"{key}: failed: {type(e).__name__}: {e}")
    RESULTS["sr"] = out


def bench_large(dev: torch.device, args, peak: float | None) -> None:
    net = random_sr("seedvr2_3b", device=dev, dtype=torch.bfloat16)
    n = sum(p.numel() for p in net.parameters())
    say(f"\nseedvr2_3b preset: {n / 1e9:.2f} B parameters (random), window {net.config.window}")
    RESULTS["large"] = {"params": n}
    for mode in ("varlen", "graphs"):
        try:
            RESULTS["large"][mode] = sr_table(
                net,
                dev=dev,
                dtype="bf16",
                mode=mode,
                size=(1280, 720),
                frames=21,
                reps=3,
                peak=peak,
                fractions=(0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
            )
        except Exception as e:
            say(f"large {mode}: failed: {type(e).__name__}: {e}")
    del net
    if dev.type == "cuda":
        torch.cuda.empty_cache()


# --- per-stage times on a real clip ---------------------------------------------------------


def clip_frames(path: Path, n: int, size: tuple[int, int]) -> torch.Tensor:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        frames.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    if not frames:
        raise FileNotFoundError(f"no frames read from {path}")
    return torch.stack(frames)


# what the filter's YUV420P8 output takes on CUDA: BT.709, limited range, left chroma
STAGE_LAYOUT = yuv_layout(bits=8, ss_w=1, ss_h=1, matrix=1, full_range=False, chromaloc=0)


def to_host(planes: tuple[torch.Tensor, ...], pinned: dict[tuple[int, ...], torch.Tensor]) -> None:
    """A window's Y, U, V planes back to the host the way the filter brings them with device
    colour (the default on CUDA): into reused pinned buffers, then waited for."""
    for p in planes:
        buf = pinned.get(tuple(p.shape))
        if buf is None:
            buf = pinned[tuple(p.shape)] = torch.empty(p.shape, dtype=p.dtype, pin_memory=True)
        buf.copy_(p, non_blocking=True)
    torch.cuda.current_stream(planes[0].device).synchronize()


def bench_stages(dev: torch.device, args) -> None:
    sr = load_sr()
    mask = load_mask()
    dtype = "bf16" if dev.type == "cuda" else "fp32"
    runner = TorchBackend(device=str(dev), dtype=dtype).load(sr=sr, mask=mask)
    lr_size = (480, 270) if dev.type == "cuda" else (160, 90)
    lr_all = clip_frames(args.clip, args.frames, lr_size)
    t = sr.config.window[0]
    windows = [lr_all[i : i + t] for i in range(0, lr_all.shape[0] - t + 1, t)]
    if dev.type == "cuda":
        windows = [w.pin_memory() for w in windows]
    pinned: dict[tuple[int, ...], torch.Tensor] = {}
    out = {}
    say(
        f"\nper-stage ms per window of {t} frames, {lr_size[0]}x{lr_size[1]} -> x4, {args.clip.name}, "
        f"{device_name(dev)}, {dtype}"
    )
    # color and d2h as the filter does them on CUDA (YUV420P8 made on the device, its planes
    # copied back); on the CPU the window stays float32 in host memory and VapourSynth's
    # resize converts it (its cost: the line after the table)
    header = ["h2d", "upsample", "mask", "gather", "sr", "scatter", "color", "d2h"]
    say(
        f"{'case':<22} {'kept':>5} "
        + " ".join(f"{h:>8}" for h in header)
        + f" {'total':>8} {'ms/frame':>8}"
    )
    for steps in (1, 4, 8):
        cases = [("dense", {}), ("skip 0.5 gradient", {"skip_ratio": 0.5})]
        if args.threshold is not None:
            cases.append(
                (
                    f"thr {args.threshold} {args.scorer}",
                    {"threshold": args.threshold, "scorer": args.scorer},
                )
            )
        for label, kw in cases:
            for _ in range(2):  # the first pass warms up; the second is measured
                acc = {h: 0.0 for h in header}
                kept = 0.0
                for w in windows:
                    t0 = time.perf_counter()
                    x = w.to(dev, non_blocking=True)
                    sync(dev)
                    acc["h2d"] += time.perf_counter() - t0
                    res = upscale_window(x, scale=4, runner=runner, steps=steps, timing=True, **kw)
                    for k2, v in res.stats.times.items():
                        acc[k2] += v
                    kept += res.stats.kept_ratio
                    if dev.type == "cuda":
                        t0 = time.perf_counter()
                        planes = rgb_to_yuv(res.frames, STAGE_LAYOUT)
                        sync(dev)
                        acc["color"] += time.perf_counter() - t0
                        t0 = time.perf_counter()
                        to_host(planes, pinned)
                        acc["d2h"] += time.perf_counter() - t0
            n = len(windows)
            row = {h: 1e3 * acc[h] / n for h in header}
            total = sum(row.values())
            name = f"{steps} step {label}"
            out[name] = {"kept": kept / n, "ms": row, "total_ms": total, "ms_per_frame": total / t}
            say(
                f"{name:<22} {kept / n:5.2f} "
                + " ".join(f"{row[h]:8.2f}" for h in header)
                + f" {total:8.2f} {total / t:8.2f}"
            )
    RESULTS["stages"] = out
    RESULTS["stages_convert"] = bench_convert(lr_size)


def bench_convert(lr_size: tuple[int, int]) -> dict[str, float] | None:
    """VapourSynth's resize YUV420P8 -> RGBS (LR) and RGBS -> YUV420P8 (HR x4), ms a frame."""
    try:
        import vapoursynth as vs
    except ImportError:
        say("vapoursynth not importable: format conversion not measured")
        return None
    core = vs.core
    w, h = lr_size
    src = core.std.BlankClip(
        width=w, height=h, format=vs.YUV420P8, length=200, color=[100, 120, 140]
    )
    src = core.std.AddBorders(core.std.Crop(src, left=2), left=2)  # not a constant frame cache
    to_rgb = core.resize.Bicubic(src, format=vs.RGBS, matrix_in_s="709")
    hr = core.std.BlankClip(
        width=w * 4, height=h * 4, format=vs.RGBS, length=200, color=[0.3, 0.5, 0.7]
    )
    to_yuv = core.resize.Bicubic(hr, format=vs.YUV420P8, matrix_s="709")
    res = {}
    for name, clip in (("yuv420p8_to_rgbs_lr", to_rgb), ("rgbs_to_yuv420p8_hr", to_yuv)):
        t0 = time.perf_counter()
        for i in range(100):
            clip.get_frame(i)
        res[name] = 1e3 * (time.perf_counter() - t0) / 100
    say(
        f"VapourSynth resize, one thread of requests: LR {w}x{h} YUV420P8->RGBS "
        f"{res['yuv420p8_to_rgbs_lr']:.2f} ms/frame; HR {4 * w}x{4 * h} RGBS->YUV420P8 "
        f"{res['rgbs_to_yuv420p8_hr']:.2f} ms/frame"
    )
    return res


# --- vspipe end to end ----------------------------------------------------------------------


def find_encoder() -> list[str] | None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        try:
            import imageio_ffmpeg

            ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        except Exception:
            ffmpeg = None
    if ffmpeg:
        return [
            ffmpeg,
            "-v",
            "error",
            "-f",
            "yuv4mpegpipe",
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "18",
            "-f",
            "null",
            "-",
        ]
    if shutil.which("x264"):
        return [
            "x264",
            "--demuxer",
            "y4m",
            "--preset",
            "veryfast",
            "--crf",
            "18",
            "-o",
            "/dev/null",
            "-",
        ]
    return None


def y4m_frame_bytes(header: bytes) -> int:
    """Bytes of one frame's planes from a YUV4MPEG2 stream header (C tag: 420/422/444/mono,
    optional p10..p16 for two bytes a sample)."""
    tags = dict((t[:1], t[1:]) for t in header.split()[1:])
    w, h = int(tags[b"W"]), int(tags[b"H"])
    c = tags.get(b"C", b"420").decode()
    per_px = {"420": 1.5, "422": 2.0, "444": 3.0, "mon": 1.0}[c[:3]]
    depth = 2 if "p" in c[3:] or c.startswith("mono1") else 1
    return int(w * h * per_px) * depth


PROGRESS = re.compile(rb"Frame: (\d+)/\d+")
OUTPUT = re.compile(rb"Output (\d+) frames")  # the last frame is out; the process still exits
PIPE_BYTES = 1 << 20  # F_SETPIPE_SZ: a 1080p 4:2:0 frame in 3 reads, not 48 of 64 KiB


def _read_progress(stream, marks: list[tuple[float, int]], text: bytearray) -> None:
    """vspipe -p's stderr, as it comes: every "Frame: n/N" update (about two a second, and at
    the first frame) with the time it arrived, and all the text for the filter's log lines."""
    pending = b""
    while chunk := stream.read(1 << 16):  # unbuffered: whatever has arrived
        now = time.perf_counter()
        text += chunk
        pending += chunk
        *done, pending = re.split(rb"[\r\n]", pending)
        for line in done:
            if m := PROGRESS.search(line) or OUTPUT.search(line):
                marks.append((now, int(m.group(1))))


def _read_frames(src, enc, stamps: list[float], frames: int) -> None:
    """The y4m stream frame by frame into one reused buffer, each timestamped as it is
    complete and handed to the encoder if any. A 1 MiB pipe and readinto: a naive reader
    (readline + read of each 3 MB frame through a 64 KiB pipe) topped out at 357 fps of
    1080p on two cores, the sink then setting the pace, not the filter."""
    import fcntl

    fd = src.stdout.fileno()
    with contextlib.suppress(OSError):  # an older kernel or a capped size: slower, still right
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    f = open(fd, "rb", buffering=PIPE_BYTES, closefd=False)  # noqa: SIM115 (src owns the fd)
    header = f.readline()
    if not header.startswith(b"YUV4MPEG2"):
        raise RuntimeError(f"vspipe wrote no y4m header: {header[:80]!r}")
    size = y4m_frame_bytes(header)
    buf = memoryview(bytearray(size))
    if enc:
        enc.stdin.write(header)
    for _ in range(frames):
        tag = f.readline()
        got = 0
        while got < size and (n := f.readinto(buf[got:])):
            got += n
        if not tag.startswith(b"FRAME") or got != size:
            break
        stamps.append(time.perf_counter())
        if enc:
            enc.stdin.write(tag)
            enc.stdin.write(buf)


class GpuBusy:
    """The GPU's utilisation while a run goes on, from ``nvidia-smi -lms``: NVML's share of
    each sample period in which a kernel was running. Coarse (a sample every 100 ms), but it
    says over a steady window of seconds whether the device waits on the host. ``command``
    is for tests; by default nvidia-smi, or nothing where there is none."""

    def __init__(self, command: list[str] | None = None) -> None:
        if command is None and shutil.which("nvidia-smi"):
            command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            command += ["-i", "0", "-lms", "100"]
        self.samples: list[tuple[float, float]] = []  # (arrival time, percent)
        self._proc = None
        self._reader = None
        if command:
            self._proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _read(self) -> None:
        for line in self._proc.stdout:  # type: ignore[union-attr]
            with contextlib.suppress(ValueError):
                self.samples.append((time.perf_counter(), float(line.strip().split()[0])))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()
            self._reader.join(timeout=5)  # type: ignore[union-attr]

    def mean(self, start: float, end: float) -> float | None:
        """Mean utilisation (percent) of the samples that arrived in [start, end]."""
        inside = [u for t, u in self.samples if start <= t <= end]
        return sum(inside) / len(inside) if inside else None


def vspipe_run(
    args,
    extra: dict[str, str],
    encoder: list[str] | None,
    frames: int,
    warmup: int,
    label: str = "run",
    sink: str = "null",
) -> dict[str, float]:
    """vspipe demo.vpy into a sink, and the steady rate after ``warmup`` frames: on a GPU the
    first windows carry seconds of one-time costs (CUDA context, kernel selection, allocator
    growth, graph capture) that a long encode never sees again, so vspipe -p's one rate for
    the whole run would mostly measure those.

    Sinks: ``null``, vspipe's own (output ``--``: every frame computed, nothing written),
    timed by its -p progress updates as they arrive; ``pipe``, y4m into this process, read
    and dropped, each frame timestamped (a pipe's cost included); ``x264``, the same passed
    on to the encoder, whose back-pressure then paces vspipe. With ``--profile DIR`` vspipe
    runs under py-spy (all threads, raw collapsed stacks to DIR/label.txt)."""
    vspipe = shutil.which("vspipe") or str(Path(sys.executable).parent / "vspipe")
    extra = dict(extra)
    lr_w = extra.pop("lr_width", "480" if args.device.startswith("cuda") else "160")
    cmd = [vspipe, "-c", "y4m", "-r", str(args.requests)]
    if sink == "null":
        cmd.append("-p")
    kw = {
        "src": str(args.clip),
        "frames": str(frames),
        "loop": str(args.loop),
        "lr_width": lr_w,
        "backend": "cuda" if args.device.startswith("cuda") else "cpu",
        **({} if args.streams is None else {"num_streams": str(args.streams)}),
        **({} if args.readahead is None else {"readahead": str(args.readahead)}),
        **({} if args.switch_ms is None else {"switch_ms": str(args.switch_ms)}),
        **({"preload": "1"} if args.preload else {}),
        **extra,
    }
    for k, v in kw.items():
        cmd += ["-a", f"{k}={v}"]
    cmd += [str(ROOT / "scripts" / "demo.vpy"), "--" if sink == "null" else "-"]
    spy = shutil.which("py-spy") if args.profile else None
    frames *= args.loop  # what vspipe outputs
    marks: list[tuple[float, int]] = []
    text = bytearray()
    stamps: list[float] = []
    busy = GpuBusy() if args.device.startswith("cuda") else GpuBusy([])
    t_start = time.perf_counter()
    src = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL if sink == "null" else subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    err_reader = threading.Thread(target=_read_progress, args=(src.stderr, marks, text))
    err_reader.start()
    if spy:  # attached, not launching vspipe: py-spy talks on stdout, vspipe's y4m pipe
        args.profile.mkdir(parents=True, exist_ok=True)
        out = args.profile / f"{label}.txt"
        spy_cmd = [spy, "record", "-r", "200", "-f", "raw", "--threads", "--subprocesses"]
        subprocess.Popen(
            [*spy_cmd, "--nonblocking", "-o", str(out), "--pid", str(src.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    enc = None
    if encoder:
        enc = subprocess.Popen(
            encoder, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    try:
        if sink != "null":
            _read_frames(src, enc, stamps, frames)
    finally:
        if src.stdout:
            src.stdout.close()
        rc = src.wait()
        busy.stop()
        err_reader.join()
        enc_err = b""
        if enc:
            enc.stdin.close()
            enc_err = enc.stderr.read()
            enc.wait()
    msg = text.decode(errors="replace")
    if sink == "null":
        done = OUTPUT.search(text)
        count = int(done.group(1)) if done else 0
        stamps_ok = count == frames and marks
    else:
        count, stamps_ok = len(stamps), len(stamps) == frames
    if rc or not stamps_ok or (enc and enc.returncode):
        raise RuntimeError(
            f"vspipe rc={rc}, {count}/{frames} frames: {msg[-800:]}"
            + (f" encoder rc={enc.returncode} {enc_err[-300:]!r}" if enc else "")
        )
    if sink == "null":
        # from the first progress update at or past the warm-up to vspipe's "Output N frames"
        # line (not the process's exit: tearing down CUDA and Python took seconds); a run too
        # short to have an update there counts from its last update before the end
        early = [(t, n) for t, n in marks if n < frames]
        t_w, n_w = next(((t, n) for t, n in early if n >= warmup), early[-1] if early else marks[0])
        last = marks[-1][0]
        if n_w >= frames or marks[-1][1] != frames:
            raise RuntimeError(f"{label}: no progress update before the last frame, or none at it")
        steady = (frames - n_w) / (last - t_w)
        first = marks[0][0]
    else:
        t_w, n_w = stamps[warmup - 1], warmup
        steady = (frames - n_w) / (stamps[-1] - t_w)
        first, last = stamps[0], stamps[-1]
    captures = [float(ms) for ms in CAPTURE_MS.findall(msg)]
    return {
        "steady_fps": steady,
        "first_frame_s": first - t_start,
        # the filter logs each CUDA graph it captures (one per new token bucket), with its time
        "graph_captures": len(captures),
        "capture_s": sum(captures) / 1e3,
        "all_fps": frames / (last - t_start),
        "steady_from": n_w,
        # nvidia-smi's utilisation over the same steady window (None off CUDA)
        "gpu_busy_pct": busy.mean(t_w, last),
    }


def middle_run(runs: list[dict]) -> dict:
    """The run that stands for a case: the median by ``steady_fps``, and of an even count the
    lower of the two middle ones, so a printed rate is one that ran and never the better of a
    pair by default (until the twenty-eighth session it was the upper one: of two runs, the
    faster)."""
    return sorted(runs, key=lambda r: r["steady_fps"])[(len(runs) - 1) // 2]


def _middle(runs: list) -> str:
    return "the median" if len(runs) % 2 else "the lower of the two middle runs"


def bench_vspipe(args) -> None:
    encoder = find_encoder()
    rows = []
    cuda = args.device.startswith("cuda")
    say(
        f"\nend to end: vspipe demo.vpy, {args.clip.name}, x4, -r {args.requests}, "
        f"num_streams {'default' if args.streams is None else args.streams}, "
        f"{'LR preloaded, ' if args.preload else ''}readahead "
        f"{'default' if args.readahead is None else args.readahead}, GIL switch "
        f"{'5 ms (default)' if args.switch_ms is None else f'{args.switch_ms} ms'}, "
        f"backend {args.device}, "
        f"{device_name(torch.device(args.device))}"
    )
    say(
        "steady fps: over the frames after the first W (warm-up: CUDA context, kernels, graph"
        " capture), from vspipe's progress updates (null sink: from the first update at frame W"
        " or later) or the times frames leave vspipe (pipe, x264);"
        " 'first s' = process start to the first frame (script loading included);"
        " 'GPU %' = nvidia-smi's utilisation over the steady window"
    )
    skip_kw = (
        {"threshold": str(args.threshold), "scorer": args.scorer}
        if args.threshold is not None
        else {"skip_ratio": "0.5", "scorer": args.scorer}
    )
    say(f"SkipSR settings: {skip_kw}")
    window = 5
    large = {"preset": "seedvr2_3b", "window": "21", "lr_width": "320"}
    # regime -> (extra vspipe args, N frames, W warm-up frames)
    regimes = {
        "eager": ({"cuda_graphs": "0"}, args.frames, 2 * window),
        "rgb": ({"device_color": "0", "cuda_graphs": "0"}, args.frames, 2 * window),
        "graphs": ({"cuda_graphs": "1"}, args.frames, 2 * window),
        "compiled": ({"torch_compile": "1"}, args.frames, 2 * window),
        "large": ({**large, "cuda_graphs": "0"}, args.large_frames, 2 * 21),
        "large-graphs": ({**large, "cuda_graphs": "1"}, args.large_frames, 2 * 21),
        "large-compiled": (
            {**large, "cuda_graphs": "1", "torch_compile": "1"},
            args.large_frames,
            2 * 21,
        ),
    }
    cases = []
    for item in args.vspipe_cases.split(","):
        regime, steps, sink, *rest = item.split(":")
        if sink not in ("null", "pipe", "x264"):
            raise SystemExit(f"--vspipe-cases {item!r}: sink {sink!r}: accepted null, pipe, x264")
        if regime not in ("eager", "rgb") and not cuda:
            continue  # graphs and the 3B shape are GPU regimes
        extra, n, w = regimes[regime]
        w = w if args.warmup_frames is None else args.warmup_frames
        kw = skip_kw
        for field in rest:  # the case's own settings: regime:steps:sink[:r0.5|:t1e9][:s3][:a4]..
            key = CASE_FIELDS.get(field[:1])
            if key is None or not field[1:]:
                raise SystemExit(
                    f"--vspipe-cases {item!r}: field {field!r}: accepted rRATIO, tTHRESHOLD, "
                    "sSTREAMS, aREADAHEAD, jTHREADS, wWINDOW (e.g. r0.5, t1e9, s3, a4, j8, w20)"
                )
            if key in KEEP_FIELDS:
                kw = {key: field[1:], "scorer": args.scorer}
            else:
                extra = {**extra, key: field[1:]}
        cases.append((regime, int(steps), sink, extra, n, w, kw))
    # Two references per LR width, no SkipSR in either:
    # - the source chain alone (decode, resize to the LR size; demo.vpy -a sr=0): a ceiling
    #   for any filter reading it, the part of a floor that is not SkipSR's;
    # - the same with VapourSynth's own bicubic to the output size (-a plain_upscale=1): what
    #   making and writing the output frames costs with no Python filter in the loop, the part
    #   of SkipSR's floor that no change to the filter can remove.
    origin = "preloaded, from memory" if args.preload else "decode"
    references = {
        "vspipe_source": (
            {"sr": "0"},
            f"source chain alone ({origin}, resize to the LR width; no SkipSR)",
            "frame",
        ),
        "vspipe_plain_upscale": (
            {"plain_upscale": "1"},
            f"source chain ({origin}) + VapourSynth's bicubic x4, no Python filter",
            "output frame",
        ),
    }
    for key, (ref_kw, what, unit) in references.items():
        RESULTS[key] = {}
        for lr_w, n in sorted({(c[3].get("lr_width"), c[4]) for c in cases}, key=str):
            extra = {**ref_kw, **({} if lr_w is None else {"lr_width": lr_w})}
            try:
                r = vspipe_run(args, extra, None, n, 10, f"{key}-{lr_w}", "null")
            except Exception as e:
                say(f"{what}, lr_width {lr_w or 'default'}: failed: {e}")
                continue
            RESULTS[key][str(lr_w or "default")] = r
            say(
                f"{what}, lr_width {lr_w or 'default'}, {n * args.loop} frames: "
                f"{r['steady_fps']:.2f} fps = {1e3 / r['steady_fps']:.2f} ms per {unit}"
            )
    say(
        f"{'regime':>14} {'steps':>5} {'sink':>5} {'N':>4} {'W':>3} {'dense fps':>9} "
        f"{'skip fps':>8} {'speed-up':>8} {'kept':>5} {'ideal':>6} {'of ideal':>8} "
        f"{'first s d/s':>11} {'graphs d/s':>10} {'capture s d/s':>13} {'GPU % d/s':>9}"
    )
    for regime, steps, sink, extra, n, w, skip_kw in cases:
        enc = encoder if sink == "x264" else None
        if sink == "x264" and enc is None:
            say(f"{regime} {steps} x264: no encoder found (ffmpeg, imageio-ffmpeg or x264)")
            continue
        try:
            name = f"{_case_label(regime, extra).replace(' ', '-')}-{steps}-{sink}-" + "-".join(
                skip_kw.values()
            )
            dense_kw = {**extra, "skip_ratio": "0", "steps": str(steps)}
            skip_kw_run = {**extra, **skip_kw, "steps": str(steps)}
            denses, skips = [], []
            for i in range(max(args.repeat, args.dense_repeat)):  # dense and skip in turn
                if i < args.dense_repeat:
                    label = name + ("-dense" if i == 0 else f"-dense{i}")
                    denses.append(vspipe_run(args, dense_kw, enc, n, w, label, sink))
                if i < args.repeat:
                    skips.append(vspipe_run(args, skip_kw_run, enc, n, w, name + f"-skip{i}", sink))
        except Exception as e:
            say(f"{regime} {steps} {sink}: failed: {e}")
            continue
        # the median runs (of --repeat, --dense-repeat) stand for the case; all go to the JSON
        s_, d = middle_run(skips), middle_run(denses)
        kept = kept_fraction(args, extra, skip_kw, n)
        speedup = s_["steady_fps"] / d["steady_fps"]
        ideal = 1 / kept if kept else float("inf")
        rows.append(
            {
                "regime": regime,
                "num_streams": (  # None: skipsr's default
                    int(extra["num_streams"]) if "num_streams" in extra else args.streams
                ),
                "readahead": extra.get("readahead", args.readahead),
                "steps": steps,
                "sink": sink,
                "frames": n * args.loop,
                "warmup": w,
                "dense": d,
                "skip": s_,
                "skip_runs_fps": [r["steady_fps"] for r in skips],
                "dense_runs_fps": [r["steady_fps"] for r in denses],
                "speedup": speedup,
                "kept": kept,
                "ideal": ideal,
                "of_ideal": speedup / ideal,
                "skip_settings": skip_kw,
            }
        )
        if not kept:  # no token kept: the skip run is the pipeline without the SR net
            say(
                f"  ({regime}, {steps} steps, {sink}: no token kept, so the skip run is the floor:"
                f" everything but the SR net costs {1e3 / s_['steady_fps']:.2f} ms per output"
                f" frame, the dense run {1e3 / d['steady_fps']:.2f} ms)"
            )
        say(
            f"{_case_label(regime, extra):>14} {steps:5d} {sink:>5} {n * args.loop:4d} {w:3d} "
            f"{d['steady_fps']:9.2f} "
            f"{s_['steady_fps']:8.2f} {speedup:7.2f}x {kept:5.2f} {ideal:5.2f}x "
            f"{speedup / ideal:7.0%} {d['first_frame_s']:5.1f}/{s_['first_frame_s']:<5.1f}"
            f" {d['graph_captures']:3d}/{s_['graph_captures']:<3d}"
            f"    {d['capture_s']:5.2f}/{s_['capture_s']:<5.2f}"
            f"    {_pct(d['gpu_busy_pct'])}/{_pct(s_['gpu_busy_pct'])}"
        )
        if len(skips) > 1:
            runs = ", ".join(f"{r['steady_fps']:.1f}" for r in skips)
            say(f"  (skip fps of the {len(skips)} runs, in order: {runs}; {_middle(skips)} above)")
        if len(denses) > 1:
            runs = ", ".join(f"{r['steady_fps']:.1f}" for r in denses)
            say(
                f"  (dense fps of the {len(denses)} runs, in order: {runs}; {_middle(denses)} above)"
            )
    RESULTS["vspipe"] = rows


# the optional fields of a --vspipe-cases entry, by their first letter
CASE_FIELDS = {
    "r": "skip_ratio",
    "t": "threshold",
    "s": "num_streams",
    "a": "readahead",
    "j": "threads",
    "w": "window",
}
KEEP_FIELDS = ("skip_ratio", "threshold")  # the case's keep rule; the others are demo.vpy's


def _case_label(regime: str, extra: dict[str, str]) -> str:
    """The regime, with the case's own streams, read-ahead, threads and window if it sets them."""
    own = [f"{k}{extra[v]}" for k, v in CASE_FIELDS.items() if v not in KEEP_FIELDS and v in extra]
    return " ".join([regime, *own])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def kept_fraction(args, extra: dict[str, str], skip_kw: dict[str, str], frames: int) -> float:
    """The kept token fraction of the skip runs: the keep sets recomputed in this process by
    the pipeline's own select_tokens, window by window, on the same LR frames (demo.vpy's
    resize, the filter's conversion to RGB) with the same scorer and threshold; the SR net's
    weights play no part in them."""
    import vapoursynth as vs

    from vs_skipsr.filter import _to_rgbs
    from vs_skipsr.pipeline import select_tokens

    if "skip_ratio" in skip_kw:
        return 1.0 - float(skip_kw["skip_ratio"])
    core = vs.core
    clip = core.bs.VideoSource(str(args.clip)) if hasattr(core, "bs") else None
    if clip is None:
        clip = core.lsmas.LWLibavSource(str(args.clip))
    clip = clip[:frames]
    lr_w = int(extra.get("lr_width", "480" if args.device.startswith("cuda") else "160"))
    lr_h = round(clip.height * lr_w / clip.width / 2) * 2
    rgb = _to_rgbs(core.resize.Bicubic(clip, lr_w, lr_h, format=vs.YUV420P8))
    scorer = skip_kw["scorer"]
    runner = TorchBackend(device="cpu").load(
        sr=load_sr(), mask=load_mask() if scorer == "learned" else None
    )
    patch, scale, window = runner.sr_config.patch, 4, int(extra.get("window", 5))
    lr_all = torch.stack(
        [torch.from_numpy(np.stack([np.asarray(f[p]) for p in range(3)])) for f in rgb.frames()]
    )  # [N, 3, h, w]
    kept, total = 0, 0
    for start in range(0, lr_all.shape[0], window):
        lr = lr_all[start : start + window].float()
        grid = token_grid(lr.shape[0], lr_h * scale, lr_w * scale, patch=patch)
        with torch.inference_mode():
            keep = select_tokens(
                lr,
                runner=runner,
                scale=scale,
                grid=grid,
                scorer=scorer,
                threshold=float(skip_kw["threshold"]),
                skip_ratio=None,
                dilate=0,
            )
        kept, total = kept + int(keep.sum()), total + keep.numel()
    return kept / total


def plot(out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    series = {
        **{f"default {k}": v for k, v in (RESULTS.get("sr") or {}).items()},
        **{f"3B {k}": v for k, v in (RESULTS.get("large") or {}).items() if isinstance(v, list)},
    }
    if not series:
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, rows in series.items():
        ax.plot(
            [r["fraction"] for r in rows], [r["relative"] for r in rows], marker="o", label=name
        )
    ax.plot([0, 1], [0, 1], "k--", label="ideal (linear)")
    ax.set_xlabel("kept fraction")
    ax.set_ylabel("SR time / dense")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "bench.png", dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sections", default="peak,sr,large,stages,vspipe")
    ap.add_argument("--clip", type=Path, default=ROOT / "data/val/clips/cockatoo.mp4")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--scorer", default="gradient")
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument(
        "--vspipe-cases",
        default="eager:1:null,eager:1:x264,eager:4:null,eager:8:null,graphs:1:null,"
        "graphs:1:x264,graphs:4:null,large:1:null",
        help="regime:steps:sink[:rRATIO|:tTHRESHOLD][:sSTREAMS][:aREADAHEAD][:jTHREADS][:wWINDOW] "
        "list; "
        "sinks null "
        "(vspipe's own: nothing written), pipe (y4m read by this process and dropped), x264 "
        "(piped into the encoder); rRATIO: this case skips a fixed "
        "fraction instead of --threshold; tTHRESHOLD its own threshold, t1e9 keeps no token: "
        "the pipeline's floor; sSTREAMS / aREADAHEAD its own num_streams / readahead "
        "instead of --streams / --readahead; jTHREADS VapourSynth's thread count; wWINDOW "
        "skipsr's window in frames, default skipsr's own: 20 with torch on CUDA since the "
        "fifteenth session, w5 for the earlier figures' 5); regimes "
        "eager (the default model, cuda_graphs=0), "
        "rgb (the same with device_color=0: RGB back to the host, resized there), graphs "
        "(cuda_graphs=1, skipsr's default on CUDA), compiled (torch_compile=1), large "
        "(SeedVR2-3B shape, random weights, 21-frame 720p windows, eager), large-graphs (the "
        "same with CUDA graphs), large-compiled (and torch.compile)",
    )
    ap.add_argument(
        "--large-frames",
        type=int,
        default=42,
        help="N for the SeedVR2-3B-shape regime end to end (0 skips it; windows of 21)",
    )
    ap.add_argument(
        "--streams",
        type=int,
        default=None,
        help="skipsr(num_streams=) for the vspipe runs (default: skipsr's: 1 on the CPU, 2 on "
        "CUDA, 3 with its longer window on a card that holds three)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="vspipe runs: each case's skip run this many times, the median reported (of an "
        "even count the lower middle run; the dense runs, GPU-bound, varied little)",
    )
    ap.add_argument(
        "--dense-repeat",
        type=int,
        default=1,
        help="each case's dense run this many times, in turn with the skip runs, the median "
        "reported (on a shared CPU the one dense run set the share of the ideal: 9.84-12.36 "
        "fps over three cases at 1 step, sixteenth session)",
    )
    ap.add_argument(
        "--warmup-frames",
        type=int,
        default=None,
        help="vspipe runs: the steady rate counts from this frame (default two windows). The "
        "same 8-step run measured 236 and 321 fps on one H100 from frame 10 of 1080 (eighth "
        "session): the first windows after graph capture still vary",
    )
    ap.add_argument(
        "--loop",
        type=int,
        default=1,
        help="vspipe runs play the clip's N frames this many times (demo.vpy loop): skip runs "
        "of 260 steady frames varied by +-20%% from run to run on an H100 (sixth session)",
    )
    ap.add_argument(
        "--preload",
        action="store_true",
        help="vspipe runs play the LR frames from memory (demo.vpy preload=1): decoded and "
        "resized once at load, so the rates time the filter, not the source decoder",
    )
    ap.add_argument(
        "--readahead",
        type=int,
        default=None,
        help="skipsr(readahead=) for the vspipe runs (default: skipsr's, 2 on CUDA, 0 on CPU)",
    )
    ap.add_argument(
        "--switch-ms",
        type=float,
        default=None,
        help="Python's GIL switch interval in the vspipe runs, ms (demo.vpy switch_ms)",
    )
    ap.add_argument(
        "--sr-frames",
        default="5",
        help="window lengths T for the sr section, comma-separated (5: the model's window)",
    )
    ap.add_argument(
        "--sr-modes",
        default="padded,varlen,graphs,graphs-fp16",
        help="sr section modes on CUDA: padded, varlen, triton, graphs, compiled (torch.compile "
        "+ graphs), each -fp16 or bf16 (default); graphs+varlen, graphs+triton: graphs with "
        "that attention (plain graphs: the runner's automatic choice)",
    )
    ap.add_argument(
        "--sr-steps",
        default="0",
        help="sr section, comma-separated: 0 (default) times one SR call, which computes the "
        "step's modulation itself (the table of earlier sessions); N a window's N-step flow "
        "as the filter runs it (base features once, each step's modulation made once for "
        "the step count)",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run each vspipe under py-spy (if installed), collapsed stacks into this folder",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "out/bench")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(args.device)
    sections = args.sections.split(",")
    unknown = set(sections) - {"peak", "sr", "stages", "vspipe", "large"}
    if unknown:
        ap.error(f"--sections: unknown {sorted(unknown)}; accepted peak, sr, stages, vspipe, large")
    for flag, value in (("--repeat", args.repeat), ("--dense-repeat", args.dense_repeat)):
        if value < 1:
            ap.error(f"{flag} {value}: at least 1 run")
    try:
        steps = [int(v) for v in args.sr_steps.split(",")]
    except ValueError:
        steps = [-1]
    if min(steps) < 0:
        ap.error(f"--sr-steps {args.sr_steps!r}: comma-separated step counts, each 0 or more")
    args.sr_steps = steps
    RESULTS["device"] = device_name(dev)
    RESULTS["torch"] = torch.__version__
    peak = bench_peak(dev) if "peak" in sections and dev.type == "cuda" else None
    runs = {
        "sr": lambda: bench_sr(dev, args, peak),
        "stages": lambda: bench_stages(dev, args),
        "vspipe": lambda: bench_vspipe(args),
        "large": lambda: bench_large(dev, args, peak),
    }
    for name in sections:  # in the order given, so a time-limited run does the first ones
        if name not in runs:
            continue
        try:
            runs[name]()
        except Exception as e:
            say(f"section {name} failed: {type(e).__name__}: {e}")
        (args.out / "bench.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    plot(args.out)


if __name__ == "__main__":
    main()
