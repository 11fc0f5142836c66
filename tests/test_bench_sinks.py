"""The end-to-end benchmark's sinks (scripts/bench.py) on a real vspipe: the y4m reader hands
on every frame whole and in order, and the null sink's progress reader sees the run's end.
A reader that loses a byte or a frame would time a different stream than the encoder gets."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

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


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
