"""What the end-to-end benchmark (scripts/bench.py) measures with, on real processes: the y4m
reader hands on every frame whole and in order, the null sink's progress reader sees the run's
end, and the GPU utilisation sampler averages what its command reports over a time window.
A reader that loses a byte or a frame would time a different stream than the encoder gets."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from conftest import vspipe_exe

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 40

# frame i: luma 3 * i, a size whose 4:2:0 frame (460800 bytes) spans several pipe buffers
SCRIPT = f"""
import vapoursynth as vs
core = vs.core
clips = [core.std.BlankClip(width=640, height=480, format=vs.YUV420P8, color=[3 * i, 128, 128],
                            length=1) for i in range({FRAMES})]
core.std.Splice(clips).set_output()
"""


def _script(name: str) -> ModuleType:
    """scripts/``name``.py imported by path (scripts/ is not a package), a fresh module each
    call."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _script("bench")


@pytest.fixture()
def script(tmp_path: Path) -> Path:
    path = tmp_path / "ramp.vpy"
    path.write_text(SCRIPT)
    return path


def test_pipe_reader_passes_on_the_stream_vspipe_writes(
    bench, script: Path, vs_env: dict[str, str]
) -> None:
    want = subprocess.run(
        [vspipe_exe(), "-c", "y4m", str(script), "-"], env=vs_env, check=True, capture_output=True
    ).stdout
    src = subprocess.Popen(
        [vspipe_exe(), "-c", "y4m", str(script), "-"],
        env=vs_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    encoder = SimpleNamespace(stdin=io.BytesIO())
    stamps: list[float] = []
    try:
        bench._read_frames(src, encoder, stamps, FRAMES)
    finally:
        src.stdout.close()
        src.wait()
    assert len(stamps) == FRAMES and stamps == sorted(stamps)
    got = encoder.stdin.getvalue()
    assert got == want  # header, every FRAME tag and every plane byte, in order
    size = bench.y4m_frame_bytes(got.split(b"\n", 1)[0])
    last = got[-size:]
    assert last[0] == 3 * (FRAMES - 1)  # the last frame's luma: the ramp came through in order


def test_null_sink_progress_reader_ends_at_the_last_frame(
    bench, script: Path, vs_env: dict[str, str]
) -> None:
    src = subprocess.Popen(
        [vspipe_exe(), "-p", "-c", "y4m", str(script), "--"],
        env=vs_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    marks: list[tuple[float, int]] = []
    text = bytearray()
    reader = threading.Thread(target=bench._read_progress, args=(src.stderr, marks, text))
    reader.start()
    assert src.wait(timeout=60) == 0
    reader.join(timeout=60)
    assert marks, text.decode(errors="replace")
    assert marks[-1][1] == FRAMES  # vspipe's "Output N frames" line: the end of the timing
    assert [t for t, _ in marks] == sorted(t for t, _ in marks)
    assert [n for _, n in marks] == sorted(n for _, n in marks)
    assert f"Output {FRAMES} frames".encode() in text


def test_the_run_standing_for_a_case_is_the_median_and_never_the_faster_of_a_pair(bench):
    runs = [{"steady_fps": f} for f in (1434.5, 1125.5)]
    assert bench.middle_run(runs)["steady_fps"] == 1125.5  # of two, the slower
    three = [{"steady_fps": f} for f in (1263.3, 1302.1, 1278.9)]
    assert bench.middle_run(three)["steady_fps"] == 1278.9
    four = [{"steady_fps": f} for f in (4.0, 1.0, 3.0, 2.0)]
    assert bench.middle_run(four)["steady_fps"] == 2.0
    assert bench.middle_run(runs[:1]) is runs[0]


def test_gpu_busy_averages_the_samples_of_a_window(bench) -> None:
    """Fed by a stand-in for nvidia-smi -lms (one percentage a line, 50 ms apart)."""
    sampler = bench.GpuBusy(
        ["sh", "-c", "for u in 10 20 30 40; do echo $u; sleep 0.05; done; sleep 30"]
    )
    end = time.monotonic() + 20
    while len(sampler.samples) < 4 and time.monotonic() < end:
        time.sleep(0.01)
    sampler.stop()  # ends the command's sleep: stop does not wait for it
    times = [t for t, _ in sampler.samples]
    assert [u for _, u in sampler.samples] == [10.0, 20.0, 30.0, 40.0]
    assert sampler.mean(times[0], times[-1]) == 25.0
    assert sampler.mean(times[1], times[2]) == 25.0  # the 20 and the 30
    assert sampler.mean(times[-1] + 1, times[-1] + 2) is None
    assert bench.GpuBusy([]).mean(0, float("inf")) is None  # no sampler off CUDA


def test_profile_filter_times_each_frame_and_window_of_a_run(
    clip_file: Path, vs_env: dict[str, str], tmp_path: Path
) -> None:
    """scripts/profile_filter.py runs demo.vpy in-process the way vspipe does and times the
    filter's calls: in its timed pass every frame is written once (give or take the frames
    requested ahead at its edges and the rest of their windows), the windows computed are a fifth of the frames, and the
    GIL's share, where py-spy is there, is a share."""
    out = tmp_path / "profile"
    requests, timed = 2, 45
    cmd = [sys.executable, str(ROOT / "scripts" / "profile_filter.py"), "--clip", str(clip_file)]
    cmd += ["--frames", "14", "--loop", "6", "--preload", "--requests", str(requests)]
    cmd += ["--warmup", "6", "--timed", str(timed), "--profiled", "8", "--out", str(out)]
    cmd += ["--arg", "lr_width=64", "--arg", "threshold=0.004766", "--arg", "backend=cpu"]
    run = subprocess.run(cmd, env=vs_env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    frames = timed - 20  # the first 20 frames of the pass estimate its length
    written = summary["host"]["_write (per frame: writes it)"]["calls"]
    # the windows' frames are written a window (5) at a time
    assert frames - requests - 5 <= written <= frames + requests + 5
    windows = summary["host"]["_compute (per window)"]["calls"]
    assert frames // 5 - 1 <= windows <= frames // 5 + 2
    assert summary["timed_fps"] > 0 and summary["gpu"]["gpu_ms_per_frame"] == 0
    # a thread's CPU time inside a call is never more than the call's wall time
    for name, v in summary["host"].items():
        assert v["cpu_ms_per_frame"] <= v["ms_per_frame"] * 1.01 + 1e-3, name
    assert summary["host"]["    padded_tokens (index, coords, partitions)"]["calls"] >= windows
    if summary["gil"]:
        assert 0 < summary["gil"]["gil_held_pct"] <= 100
    assert "timed pass:" in run.stdout


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("eager:1:nul", "sink 'nul': accepted null, pipe, x264"),
        ("eager:1:null:q5", "field 'q5': accepted rRATIO, tTHRESHOLD"),
        ("eager:1:null:s", "field 's': accepted"),
        ("eager:1:null:w", "field 'w': accepted"),
    ],
)
def test_bench_refuses_a_bad_case_naming_the_value(case: str, needle: str, tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu"]
    cmd += ["--sections", "vspipe", "--vspipe-cases", case, "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert f"--vspipe-cases {case!r}: {needle}" in run.stderr


@pytest.mark.parametrize("flag", ["--repeat", "--dense-repeat"])
def test_bench_refuses_no_runs_naming_the_flag(flag: str, tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu"]
    cmd += ["--sections", "vspipe", flag, "0", "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert f"{flag} 0: at least 1 run" in run.stderr


@pytest.mark.parametrize("value", ["-1", "0,x", ""])
def test_bench_refuses_bad_sr_steps_naming_the_value(value: str, tmp_path: Path) -> None:
    """A negative step count ran no step at all on the CPU (a flow of range(-1)) and timed
    nothing: refused up front, as a count that is not a number is."""
    cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--device", "cpu"]
    cmd += ["--sections", "sr", "--sr-steps", value, "--out", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert f"--sr-steps {value!r}: comma-separated step counts, each 0 or more" in run.stderr


def test_bench_color_refuses_a_folder_without_color_py(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_color.py"), "--against", str(tmp_path)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert f"--against {tmp_path}: no {tmp_path / 'vs_skipsr/color.py'}" in run.stderr


def test_profile_filter_ablations_make_each_step_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """--ablate's what-if rates mean something only if the step really does nothing: a plane
    copy leaves the frame's bytes, the LR fill the staging buffer, the props the frame's
    props as they were."""
    import numpy as np
    import torch
    import vapoursynth as vs

    import vs_skipsr.filter as filt

    for name in ("_copy_plane", "_fill"):
        monkeypatch.setattr(filt, name, getattr(filt, name))
    monkeypatch.setattr(filt._SkipSRNode, "_set_props", filt._SkipSRNode._set_props)
    module = _script("profile_filter")
    module.ablate(["copy", "props", "fill"])

    dst = np.zeros((4, 6), dtype=np.uint8)
    filt._copy_plane(dst, np.full((4, 6), 7, dtype=np.uint8))
    assert not dst.any()
    staging = torch.zeros(1, 3, 4, 6)
    frame = vs.core.std.BlankClip(format=vs.RGBS, width=6, height=4, color=[1, 1, 1]).get_frame(0)
    filt._fill(staging, [frame])
    assert not staging.any()
    out = frame.copy()
    filt._SkipSRNode._set_props(None, out, None, kept=0.5, window=3, ms=1.0)
    assert "SkipSRKeptRatio" not in out.props
    with pytest.raises(SystemExit, match="--ablate 'paint': accepted copy, props, fill"):
        module.ablate(["paint"])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--arg", "threshold"], "--arg 'threshold': give NAME=VALUE"),
        (["--timed", "20"], "--timed 20: accepted more than 20"),
        (
            ["--frames", "10", "--loop", "2"],
            "--warmup + --timed + --profiled = 660 > frames x loop = 20",
        ),
    ],
)
def test_profile_filter_refuses_bad_arguments_naming_them(args: list[str], needle: str) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "profile_filter.py"), *args]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert needle in run.stderr


def test_byte_count_shows_the_lean_forms_and_their_split():
    """scripts/count_sr_bytes.py counts what one SR call moves: the lean inference forms move
    far less than the plain ones, and the base features plus one flow step are one lean
    call (the split a window's steps share)."""
    import re

    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "count_sr_bytes.py"), "--grid", "5,8,16"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    gb = {
        name: float(re.search(rf"{name}[^:]*: ([0-9.]+) GB", out).group(1))
        for name in ("plain forms", "lean forms")
    }
    split = re.search(r"base features ([0-9.]+) GB once per window, ([0-9.]+) GB per flow", out)
    features, step = float(split.group(1)), float(split.group(2))
    assert 0 < gb["lean forms"] < 0.75 * gb["plain forms"], out
    assert features > 0 and step > 0
    assert abs(features + step - gb["lean forms"]) < 0.02 * gb["lean forms"], out


def test_bench_tokens_times_every_kept_fraction_it_is_given():
    """scripts/bench_tokens.py prints a row a kept fraction: every token at 1.0, none at 0,
    and a time for each move, after naming the gather it ran and its dtype (torch's, float32
    on the CPU); a window size that is not whole tokens is refused by name."""
    script = str(ROOT / "scripts" / "bench_tokens.py")
    cmd = [sys.executable, script, "--device", "cpu", "--size", "2x32x48", "--reps", "2"]
    run = subprocess.run([*cmd, "--kept", "1.0,0.5,0.0"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[1] == "gather: torch, patches in torch.float32"
    rows = [line.split() for line in run.stdout.splitlines()[3:]]
    assert [r[0] for r in rows] == ["1.00", "0.50", "0.00"]
    assert int(rows[0][1]) == 2 * 2 * 3 and int(rows[2][1]) == 0
    assert all(float(v) >= 0 for r in rows for v in r[2:])
    bad = subprocess.run([*cmd[:-4], "--size", "2x30x48"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--size '2x30x48': H and W must be multiples of 16" in bad.stderr


def test_bench_cpu_threads_times_each_case_in_its_own_process(clip_file: Path) -> None:
    """scripts/bench_cpu_threads.py prints a wall and a CPU time for each of its four cases
    (each a fresh process); fewer frames than one window are refused by name."""
    script = str(ROOT / "scripts" / "bench_cpu_threads.py")
    cmd = [sys.executable, script, "--clip", str(clip_file), "--reps", "1"]
    run = subprocess.run([*cmd, "--frames", "10"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = run.stdout.splitlines()[2:]
    assert [r[:14].strip() for r in rows] == ["main", "second", "one thread", "after a copy"]
    assert all(float(v) > 0 for r in rows for v in r[14:].split())
    bad = subprocess.run([*cmd, "--frames", "3"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--frames 3: accepted 5 or more" in bad.stderr


@pytest.mark.parametrize(
    ("mode", "attention", "graphs", "compiled"),
    [
        ("varlen", "varlen", False, False),
        ("triton", "triton", False, False),
        ("graphs", "auto", True, False),
        ("graphs+varlen", "varlen", True, False),
        ("compiled", "auto", True, True),
    ],
)
def test_benchmark_modes_name_the_backend_they_time(
    mode: str, attention: str, graphs: bool, compiled: bool
) -> None:
    """bench.py and profile_sr.py read --sr-modes / --modes through one function: a mode
    they both accept times the same runner in both."""
    from vs_skipsr.benchmark import mode_backend

    spec = mode_backend(mode, device="cuda", dtype="fp16")
    assert (spec.attention, spec.cuda_graphs, spec.compile) == (attention, graphs, compiled)
    with pytest.raises(ValueError, match=r"mode 'graph\+varlen'"):
        mode_backend("graph+varlen", device="cuda", dtype="fp16")


def test_scaling_table_times_a_call_or_a_windows_whole_flow() -> None:
    """The SR table's rows time one call (the step's modulation made in it) or, with steps,
    the runner's N-step flow: the filter's work per window, each step's modulation made once
    for the step count. Counted here by what each row calls."""
    from vs_skipsr.backends import TorchBackend
    from vs_skipsr.benchmark import scaling_table
    from vs_skipsr.models import random_sr

    runner = TorchBackend(device="cpu").load(sr=random_sr("tiny"), mask=None)
    calls = {"sr": 0, "flow": []}
    sr, flow = runner.sr, runner.flow

    def counted_sr(*a):
        calls["sr"] += 1
        return sr(*a)

    def counted_flow(*a, steps):
        calls["flow"].append(steps)
        return flow(*a, steps=steps)

    runner.sr, runner.flow = counted_sr, counted_flow
    rows = scaling_table(runner, size=(64, 32), frames=2, fractions=(0.5, 1.0), reps=1)
    assert [r.fraction for r in rows] == [0.5, 1.0] and calls["sr"] > 0 and not calls["flow"]
    calls["sr"] = 0
    rows = scaling_table(runner, size=(64, 32), frames=2, fractions=(0.5, 1.0), reps=1, steps=3)
    assert calls["sr"] == 0 and calls["flow"] and set(calls["flow"]) == {3}
    assert rows[-1].relative == 1.0 and rows[0].kept < rows[-1].kept


def test_profile_sr_groups_every_triton_kernel_of_the_net() -> None:
    """profile_sr.py's groups name each of the net's Triton kernels (the cuBLAS and cuDNN
    ones by their libraries' names): a kernel left to 'other' hides what its pass costs."""
    import re

    profile_sr = _script("profile_sr")
    names = [
        name
        for path in (ROOT / "vs_skipsr" / "models").glob("*_triton.py")
        for name in re.findall(r"^def (_\w+_kernel)\(", path.read_text(), flags=re.M)
    ]
    assert len(names) >= 6, names
    groups = {name: profile_sr.group_of(name) for name in names}
    assert "other" not in groups.values(), groups
    assert groups["_cells_kernel"] == "conv head (Triton)"


def test_profile_spans_count_threads_of_one_name_apart() -> None:
    """The filter's read-ahead workers share a name; counted by name, three of them read as one
    thread (how the twenty-fourth session came to think one thread computed every window)."""
    module = _script("profile_filter")
    spans = module.Spans()
    spans.on = True
    ready = threading.Barrier(3)

    def work() -> None:
        ready.wait()  # all three alive at once: no ident is reused
        spans.add("window", 0.001, 0.0005)
        ready.wait()

    workers = [threading.Thread(target=work, name="skipsr-readahead") for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert spans.count["window"] == 3 and len(spans.threads["window"]) == 3


def test_profile_spans_tell_waiting_from_working() -> None:
    """A wrapped call's wall time and its thread's CPU time are summed apart: a call that
    sleeps (as one waiting for the GIL does) shows wall without CPU, one that computes both."""
    module = _script("profile_filter")

    class Work:
        def sleep(self) -> None:
            time.sleep(0.05)

        def spin(self) -> None:
            end = time.perf_counter() + 0.05
            while time.perf_counter() < end:
                pass

    spans = module.Spans()
    spans.wrap(Work, "sleep", "sleep")
    spans.wrap(Work, "spin", "spin")
    spans.on = True
    Work().sleep()
    Work().spin()
    assert spans.total["sleep"] >= 0.05 and spans.cpu["sleep"] < 0.02
    assert spans.total["spin"] >= 0.05 and spans.cpu["spin"] > 0.03


# --- scripts/bench_frame_handoff.py ----------------------------------------------------------


@pytest.fixture(scope="module")
def handoff():
    return _script("bench_frame_handoff")


@pytest.mark.parametrize(("copy", "width"), [("numpy", 32), ("held", 32), ("held", 128)])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("mode", ["frameeval", "modifyframe", "tickets", "shards", "windows"])
def test_frame_handoff_modes_write_each_frame_from_its_window_position(
    handoff, mode: str, threads: int, copy: str, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each way of handing frames over writes frame n from window position n % T, whatever
    the clip's tail (14 frames: T = 4 and 3 threads divide neither), so the rates it prints
    compare the same frames; so does each way of copying (held: at width 128 every plane's
    stride is its row, one memmove a plane; at 32 the chroma rows are padded, numpy's copy)."""
    import vapoursynth as vs

    monkeypatch.setattr(vs.core, "num_threads", threads)
    fmt = vs.core.get_video_format(vs.YUV420P10)
    planes = handoff.source_window(fmt, width=width, height=16, window=4)
    assert [p.shape for p in planes] == [(4, 16, width), (4, 8, width // 2), (4, 8, width // 2)]
    node = handoff.build(
        mode, width=width, height=16, fmt=fmt, window=4, frames=14, planes=planes, copy=copy
    )
    assert node.num_frames == 14
    if copy == "held":
        frame = node.get_frame(0)
        padded = [frame.get_stride(p) != planes[p].strides[1] for p in range(3)]
        assert padded == ([False, True, True] if width == 32 else [False] * 3)
    handoff.check(node, planes, window=4)


def test_frame_handoff_check_names_a_frame_from_another_position(handoff) -> None:
    import vapoursynth as vs

    fmt = vs.core.get_video_format(vs.YUV420P8)
    planes = handoff.source_window(fmt, width=32, height=16, window=4)
    node = handoff.build(
        "modifyframe", width=32, height=16, fmt=fmt, window=4, frames=6, planes=planes
    )
    shifted = [np.roll(p, 1, axis=0) for p in planes]
    with pytest.raises(AssertionError, match="frame 0, plane 0: not window position 0"):
        handoff.check(node, shifted, window=4)


def test_frame_handoff_prints_vspipes_rate_for_every_mode(
    tmp_path: Path, vs_env: dict[str, str]
) -> None:
    out = tmp_path / "handoff.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_frame_handoff.py"), "--size", "64x32"]
    cmd += ["--window", "5", "--frames", "120", "--repeats", "1", "--spin-share", "0,0.5"]
    cmd += ["--copy", "numpy,held"]
    run = subprocess.run([*cmd, "--json", str(out)], env=vs_env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["copy"], r["spin_share"]) for r in rows] == [
        (m, c, s)
        for s in (0.0, 0.5)
        for m in ("frameeval", "modifyframe", "tickets", "shards", "windows")
        for c in ("numpy", "held")
    ]
    assert all(len(r["fps"]) == 1 and r["fps"][0] > 0 for r in rows)
    assert run.stdout.count("\n") == 2 + len(rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "12"], "--size '12': give WIDTHxHEIGHT"),
        (["--format", "RGBS"], "--format 'RGBS': accepted integer formats only"),
        (["--modes", "tickets,fast"], "--modes: 'fast': accepted frameeval"),
        (["--spin-share", "1"], "--spin-share '1': accepted 0 <= share < 1"),
        (["--spin-share", "0,half"], "--spin-share 'half': accepted 0 <= share < 1"),
        (["--threads", "0,-2"], "--threads '-2': accepted 0 or more"),
        (["--copy", "numpy,fast"], "--copy 'fast': accepted numpy, held"),
    ],
)
def test_frame_handoff_names_a_bad_argument(args: list[str], message: str) -> None:
    script = str(ROOT / "scripts" / "bench_frame_handoff.py")
    run = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    assert run.returncode != 0 and message in run.stderr, run.stderr[-500:]


_STUB_BENCH = """
import json, os, pathlib, sys, time
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--out") + 1])
case = args[args.index("--vspipe-cases") + 1]
tree = pathlib.Path(__file__).resolve().parent.parent
first_on_path = os.environ["PYTHONPATH"].split(os.pathsep)[0]
with open(os.environ["AB_LOG"], "a") as f:
    path = ",".join(pathlib.Path(p).name for p in os.environ["PYTHONPATH"].split(os.pathsep))
    f.write(f"{tree.name} {case} {pathlib.Path(first_on_path).name} {pathlib.Path.cwd().name} "
            f"{args[-1]} {path}\\n")
time.sleep(float(os.environ.get("AB_SLEEP", "0")))
if tree.name == "old" and case == "graphs:1:null":
    sys.exit(1)  # this tree fails this case: no bench.json
done = sum(p.is_dir() for p in out.parent.glob(f"*_{tree.name}_*")) if out.parent.exists() else 0
base = {"new": 1000.0, "old": 900.0}[tree.name] + 10 * done
out.mkdir(parents=True)
rows = [{"skip_runs_fps": [base, base + 5], "dense_runs_fps": [400.0]}]
(out / "bench.json").write_text(json.dumps({"vspipe": rows}))
"""


def _stub_trees(tmp_path: Path) -> tuple[Path, Path]:
    trees = []
    for name in ("new", "old"):
        (tmp_path / name / "scripts").mkdir(parents=True)
        (tmp_path / name / "scripts" / "bench.py").write_text(_STUB_BENCH)
        trees.append(tmp_path / name)
    return trees[0], trees[1]


def test_ab_bench_alternates_the_trees_each_first_on_its_own_path(tmp_path, monkeypatch, capsys):
    """Round 1 new then old, round 2 old then new, each case; each run the tree's own
    bench.py, run in that tree with it first on PYTHONPATH (the other tree taken off), the
    arguments after -- passed on; medians over every run of a tree, the failed case said."""
    new, old = _stub_trees(tmp_path)
    log = tmp_path / "log.txt"
    monkeypatch.setenv("AB_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(new), "/tmp/site"]))
    ab = _script("ab_bench")
    out = tmp_path / "out"
    argv = ["--new", str(new), "--old", str(old), "--out", str(out), "--rounds", "2"]
    assert ab.main([*argv, "--cases", "graphs:8:null,graphs:1:null", "--", "--frames", "7"]) == 0
    runs = [line.split() for line in log.read_text().splitlines()]
    assert [(r[0], r[1]) for r in runs] == [
        ("new", "graphs:8:null"), ("old", "graphs:8:null"),
        ("new", "graphs:1:null"), ("old", "graphs:1:null"),
        ("old", "graphs:8:null"), ("new", "graphs:8:null"),
        ("old", "graphs:1:null"), ("new", "graphs:1:null"),
    ]  # fmt: skip
    assert all(r[0] == r[2] == r[3] and r[4] == "7" for r in runs)
    other = {"new": "old", "old": "new"}
    assert all(other[r[0]] not in r[5].split(",") and "site" in r[5] for r in runs)
    saved = json.loads((out / "ab.json").read_text())
    eight = saved["graphs:8:null"]
    assert eight["new"]["skip"] == [1000.0, 1005.0, 1020.0, 1025.0]
    assert eight["new"]["median"] == 1012.5  # the mean of the middle two
    assert eight["old"]["skip"] == [900.0, 905.0, 910.0, 915.0]
    assert eight["old"]["dense_median"] == 400.0
    assert saved["graphs:1:null"]["old"]["skip"] == []
    assert len(saved["graphs:1:null"]["old"]["failed"]) == 2
    text = capsys.readouterr().out
    assert "new against old: +11.6% by the medians; ranges do not overlap" in text
    assert "2 failed" in text


def test_ab_bench_starts_no_run_past_its_budget_and_refuses_a_tree_without_bench(
    tmp_path, monkeypatch, capsys
):
    new, old = _stub_trees(tmp_path)
    monkeypatch.setenv("AB_LOG", str(tmp_path / "log.txt"))
    monkeypatch.setenv("AB_SLEEP", "1.5")  # the first run ends past the budget
    ab = _script("ab_bench")
    argv = ["--new", str(new), "--old", str(old), "--out", str(tmp_path / "o"), "--budget", "1"]
    assert ab.main([*argv, "--cases", "graphs:8:null"]) == 0
    started = (tmp_path / "log.txt").read_text().splitlines()
    assert len(started) == 1, started  # of two rounds of two
    assert "not started" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ab.main(["--old", str(tmp_path), "--out", str(tmp_path / "x"), "--cases", "a:1:null"])
    assert "no scripts/bench.py there" in capsys.readouterr().err


def test_ab_bench_ends_a_run_with_the_processes_it_started(tmp_path):
    """A run past its time is killed with its children (bench.py's vspipe would otherwise
    keep the GPU busy under the next run)."""
    ab = _script("ab_bench")
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(60)"
    )
    with (tmp_path / "log.txt").open("w") as log:
        t0 = time.monotonic()
        ab.run_bounded(
            [sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ), log=log, timeout=2
        )
    assert time.monotonic() - t0 < 20
    child = int(pid_file.read_text())
    status = Path(f"/proc/{child}/status")
    for _ in range(50):  # gone, or a zombie where no init reaps it
        if not status.exists() or "State:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the run's child {child} is still alive")
    assert "stopped after 2 s" in (tmp_path / "log.txt").read_text()
