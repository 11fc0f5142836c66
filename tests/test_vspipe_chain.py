"""The chain users run: source plugin -> skipsr (scripts/demo.vpy) -> vspipe -c y4m -> x264 or
ffmpeg -> a file ffprobe reads. Frame count, size and order are checked on the decoded output
by reading the index stamped into every source frame, with vspipe asking for 4 frames at once.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import LR_H, LR_W, N_FRAMES, read_index, vspipe_exe

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "scripts" / "demo.vpy"
SCALE = 4
OUT_W, OUT_H = LR_W * SCALE, LR_H * SCALE

pytestmark = pytest.mark.skipif(
    not (shutil.which("x264") and shutil.which("ffmpeg") and shutil.which("ffprobe")),
    reason="needs x264, ffmpeg and ffprobe (scripts/setup.sh installs them)",
)


def _vspipe_cmd(
    clip: Path, source: str, sr_weights: Path, mask_weights: Path, *extra: str
) -> list[str]:
    args = {
        "src": clip,
        "source": source,
        "format": "keep",
        "window": 3,
        "overlap": 1,
        "skip_ratio": 0.5,
        "sr_weights": sr_weights,
        "mask_weights": mask_weights,
    }
    cmd = [vspipe_exe(), "-c", "y4m", "--requests", "4", *extra]
    for key, value in args.items():
        cmd += ["-a", f"{key}={value}"]
    return [*cmd, str(DEMO), "-"]


def _pipe(first: list[str], second: list[str], env: dict[str, str]) -> None:
    """first | second, failing with both stderrs if either fails."""
    a = subprocess.Popen(first, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    b = subprocess.run(
        second, check=False, stdin=a.stdout, capture_output=True, env=env, timeout=120
    )
    a.stdout.close()  # type: ignore[union-attr]
    a_err = a.stderr.read().decode(errors="replace")  # type: ignore[union-attr]
    a.wait(timeout=120)
    assert a.returncode == 0, f"vspipe failed:\n{a_err}"
    assert b.returncode == 0, f"{second[0]} failed:\n{b.stderr.decode(errors='replace')}"


def _probe(path: Path) -> tuple[int, int, int]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=width,height,nb_read_frames", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    w, h, n = (int(x) for x in out.split(","))
    return w, h, n


def _decoded_indices(path: Path) -> list[int]:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    frames = np.frombuffer(raw, np.uint8).reshape(-1, OUT_H, OUT_W)
    return [read_index(f / 255.0, scale=SCALE) for f in frames]


def _parse_y4m(data: bytes) -> tuple[dict[str, str], list[bytes]]:
    """Header fields and frame payloads; fails on any byte that is not y4m."""
    header, _, rest = data.partition(b"\n")
    fields = header.decode("ascii").split(" ")
    assert fields[0] == "YUV4MPEG2", f"stdout does not start with a y4m header: {header[:40]!r}"
    info = {f[0]: f[1:] for f in fields[1:]}
    w, h = int(info["W"]), int(info["H"])
    size = w * h + 2 * (w // 2) * (h // 2)  # 4:2:0 8-bit
    frames, pos = [], 0
    while pos < len(rest):
        end = rest.index(b"\n", pos)
        assert rest[pos:end].startswith(b"FRAME"), f"junk at byte {pos}: {rest[pos : pos + 20]!r}"
        frames.append(rest[end + 1 : end + 1 + size])
        pos = end + 1 + size
    assert pos == len(rest), "trailing bytes after the last frame"
    return info, frames


def test_vspipe_output_is_clean_y4m_in_order(
    clip_file: Path, sr_weights: Path, mask_weights: Path, vs_env: dict[str, str]
) -> None:
    """Progress and log lines go to stderr; stdout is y4m and nothing else."""
    cmd = _vspipe_cmd(clip_file, "bs", sr_weights, mask_weights, "-p")
    cmd[-2:-2] = ["-a", "verbose=1"]
    run = subprocess.run(cmd, check=False, capture_output=True, env=vs_env, timeout=120)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    info, frames = _parse_y4m(run.stdout)
    assert (int(info["W"]), int(info["H"])) == (OUT_W, OUT_H)
    assert info["C"].startswith("420")
    assert len(frames) == N_FRAMES
    luma = [np.frombuffer(f[: OUT_W * OUT_H], np.uint8).reshape(OUT_H, OUT_W) for f in frames]
    assert [read_index(y / 255.0, scale=SCALE) for y in luma] == list(range(N_FRAMES))


def test_demo_loop_plays_the_clip_again(
    clip_file: Path, sr_weights: Path, mask_weights: Path, vs_env: dict[str, str]
) -> None:
    """demo.vpy -a loop=2 (scripts/bench.py --loop): the clip's frames twice, in order."""
    cmd = _vspipe_cmd(clip_file, "bs", sr_weights, mask_weights)
    cmd[-2:-2] = ["-a", "loop=2"]
    run = subprocess.run(cmd, check=False, capture_output=True, env=vs_env, timeout=120)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    _, frames = _parse_y4m(run.stdout)
    luma = [np.frombuffer(f[: OUT_W * OUT_H], np.uint8).reshape(OUT_H, OUT_W) for f in frames]
    assert [read_index(y / 255.0, scale=SCALE) for y in luma] == list(range(N_FRAMES)) * 2

    cmd[cmd.index("loop=2")] = "loop=0"
    run = subprocess.run(cmd, check=False, capture_output=True, env=vs_env, timeout=120)
    assert run.returncode != 0 and not run.stdout
    assert "loop=0: accepted loop >= 1" in run.stderr.decode(errors="replace")


def test_demo_plain_upscale_is_vapoursynths_bicubic_without_skipsr(
    clip_file: Path, sr_weights: Path, mask_weights: Path, vs_env: dict[str, str]
) -> None:
    """demo.vpy -a plain_upscale=1 (bench.py's reference run): every frame, in order, at the
    output size, and not SkipSR's pictures."""
    cmd = _vspipe_cmd(clip_file, "bs", sr_weights, mask_weights)
    skip = subprocess.run(cmd, check=False, capture_output=True, env=vs_env, timeout=120)
    assert skip.returncode == 0, skip.stderr.decode(errors="replace")
    cmd[-2:-2] = ["-a", "plain_upscale=1"]
    run = subprocess.run(cmd, check=False, capture_output=True, env=vs_env, timeout=120)
    assert run.returncode == 0, run.stderr.decode(errors="replace")
    info, frames = _parse_y4m(run.stdout)
    assert (int(info["W"]), int(info["H"])) == (OUT_W, OUT_H)
    luma = [np.frombuffer(f[: OUT_W * OUT_H], np.uint8).reshape(OUT_H, OUT_W) for f in frames]
    assert [read_index(y / 255.0, scale=SCALE) for y in luma] == list(range(N_FRAMES))
    assert run.stdout != skip.stdout


def test_demo_preload_gives_the_bytes_of_the_decoded_clip(
    clip_file: Path, sr_weights: Path, mask_weights: Path, vs_env: dict[str, str]
) -> None:
    """demo.vpy -a preload=1 (scripts/bench.py --preload): the frames held in memory are the
    ones decoded, so SkipSR's output is byte for byte the same, looped too."""
    cmd = _vspipe_cmd(clip_file, "bs", sr_weights, mask_weights)
    cmd[-2:-2] = ["-a", "loop=2"]
    want = subprocess.run(cmd, check=False, capture_output=True, env=vs_env, timeout=120)
    assert want.returncode == 0, want.stderr.decode(errors="replace")
    cmd[-2:-2] = ["-a", "preload=1"]
    got = subprocess.run(cmd, check=False, capture_output=True, env=vs_env, timeout=120)
    assert got.returncode == 0, got.stderr.decode(errors="replace")
    assert len(_parse_y4m(got.stdout)[1]) == 2 * N_FRAMES
    assert got.stdout == want.stdout


@pytest.mark.parametrize("source", ["bs", "lsmas"])
def test_chain_through_x264_gives_every_frame_in_order(
    source: str,
    clip_file: Path,
    sr_weights: Path,
    mask_weights: Path,
    vs_env: dict[str, str],
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.mkv"
    x264 = ["x264", "--demuxer", "y4m", "--preset", "ultrafast", "--crf", "12", "--quiet",
            "-o", str(out), "-"]  # fmt: skip
    _pipe(_vspipe_cmd(clip_file, source, sr_weights, mask_weights), x264, vs_env)
    assert _probe(out) == (OUT_W, OUT_H, N_FRAMES)
    assert _decoded_indices(out) == list(range(N_FRAMES))


def test_chain_through_ffmpeg_gives_every_frame_in_order(
    clip_file: Path, sr_weights: Path, mask_weights: Path, vs_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "out.mkv"
    ffmpeg = ["ffmpeg", "-v", "error", "-f", "yuv4mpegpipe", "-i", "-", "-c:v", "ffv1",
              str(out)]  # fmt: skip
    _pipe(_vspipe_cmd(clip_file, "bs", sr_weights, mask_weights), ffmpeg, vs_env)
    assert _probe(out) == (OUT_W, OUT_H, N_FRAMES)
    assert _decoded_indices(out) == list(range(N_FRAMES))
