"""Shared fixtures: small random weights, a short clip of real imagery with a frame index
stamped on it, and helpers to read that index back after SR and encoding.

Everything is made here, offline: the picture is matplotlib's sample photograph (a real
photo, in the venv through the train extras) or, where matplotlib is missing, a synthetic
texture. Frames pan across it by a pixel a frame, so windows see real motion.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from vs_skipsr.models.mask import MaskConfig, MaskNet
from vs_skipsr.models.sr import PRESETS, SRTransformer
from vs_skipsr.models.weights import save_weights

LR_W, LR_H = 64, 48
N_FRAMES = 14
BITS = 6  # frame index 0..63 as a row of black/white blocks in the top-left corner
BLOCK = 8  # LR pixels a side of one block: 32 output pixels at x4, past any token seam


# --- Triton's interpreter --------------------------------------------------------------------


def run_interpreted(code: str, *args: str, timeout: float) -> None:
    """``python -c code args`` with TRITON_INTERPRET=1, which Triton reads when a kernel is
    defined (so not settable in this process): Triton kernels then run on CPU tensors. The
    repository comes first on the child's path, the caller's PYTHONPATH after it (on the GPU
    machine the carried wheels live there); a failure shows the child's stderr."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def interpreter_bf16(v: torch.Tensor) -> torch.Tensor:
    """float32 to bfloat16 as Triton's interpreter casts it (3.6, 3.8): truncated, its
    rounding mode ignored; what :func:`run_interpreted`'s kernels give where torch rounds."""
    return (v.float().view(torch.int32) & -65536).view(torch.float32).to(torch.bfloat16)


@pytest.fixture()
def colour_check_forgotten() -> object:
    """The device colour check's answer, cached per card, forgotten before and after the test:
    for tests that change what the check finds (its Triton module swapped or taken away)."""
    from vs_skipsr import color

    color._triton_color_works_on.cache_clear()
    yield
    color._triton_color_works_on.cache_clear()


# --- weights ---------------------------------------------------------------------------------


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Normal(0, 0.02) everywhere, so the tiny SR net changes the picture (a fresh net is
    zero-initialised at its output and would return the base upsample)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("weights")
    sr = SRTransformer(PRESETS["tiny"])
    _randomise(sr, 1)
    save_weights(sr, d / "sr_tiny.safetensors")
    mask = MaskNet(MaskConfig(width=8, depth=3, prior="gradient", padding_mode="replicate"))
    _randomise(mask, 2)
    save_weights(mask, d / "mask_tiny.safetensors")
    return d


@pytest.fixture(scope="session")
def sr_weights(weights_dir: Path) -> Path:
    return weights_dir / "sr_tiny.safetensors"


@pytest.fixture(scope="session")
def mask_weights(weights_dir: Path) -> Path:
    return weights_dir / "mask_tiny.safetensors"


# --- vspipe ----------------------------------------------------------------------------------


def vspipe_exe() -> str:
    """vspipe of this venv (the PyPI wheel puts it beside python), else the one on PATH."""
    local = Path(sys.executable).parent / "vspipe"
    return str(local) if local.exists() else (shutil.which("vspipe") or "vspipe")


@pytest.fixture(scope="session")
def vs_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which vspipe finds this venv's Python: the PyPI VapourSynth needs
    ``vapoursynth config`` once; it is written into a temporary XDG_CONFIG_HOME so the test
    neither depends on nor changes the user's configuration."""
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg"))
    subprocess.run(
        [sys.executable, "-m", "vapoursynth", "config"], env=env, check=True, capture_output=True
    )
    return env


# --- imagery ---------------------------------------------------------------------------------


def _photo() -> np.ndarray:
    """A real photograph as [H, W, 3] uint8, or a synthetic texture if none is installed."""
    try:
        import matplotlib
        from PIL import Image

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        with Image.open(path) as im:
            im = im.convert("RGB").resize((160, 188), Image.Resampling.LANCZOS)
            return np.asarray(im).copy()
    except (ImportError, OSError):
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:188, 0:160].astype(np.float32)
        base = 0.5 + 0.25 * np.sin(x / 5.0) * np.cos(y / 7.0)
        img = np.stack([base, base[::-1], base[:, ::-1]], axis=-1)
        img += rng.normal(0, 0.05, img.shape)
        return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def stamp_index(frame: np.ndarray, index: int) -> np.ndarray:
    """Draw ``index`` in binary (MSB first) as BITS black/white blocks along the top edge."""
    out = frame.copy()
    for b in range(BITS):
        bit = (index >> (BITS - 1 - b)) & 1
        out[0:BLOCK, b * BLOCK : (b + 1) * BLOCK] = 255 if bit else 0
    return out


def read_index(luma: np.ndarray, *, scale: int) -> int:
    """The stamped index from a luma plane ([H, W], 0..1) of an output frame: the mean of
    each block's inner half, thresholded at mid grey."""
    s = BLOCK * scale
    value = 0
    for b in range(BITS):
        inner = luma[s // 4 : 3 * s // 4, b * s + s // 4 : b * s + 3 * s // 4]
        value = (value << 1) | int(inner.mean() > 0.5)
    return value


@pytest.fixture(scope="session")
def frames_rgb() -> np.ndarray:
    """N_FRAMES frames [N, LR_H, LR_W, 3] uint8: a pan across the photo, index stamped."""
    photo = _photo()
    out = []
    for i in range(N_FRAMES):
        y, x = 20 + i, 30 + 2 * i
        out.append(stamp_index(photo[y : y + LR_H, x : x + LR_W], i))
    return np.stack(out)


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


@pytest.fixture(scope="session")
def clip_file(frames_rgb: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The frames as a real H.264 file (lossless, yuv420p, BT.709 tagged) that BestSource and
    L-SMASH decode like any camera clip."""
    path = tmp_path_factory.mktemp("clip") / "indexed.mkv"
    _, h, w, _ = frames_rgb.shape
    cmd = [
        _ffmpeg(), "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "24", "-i", "-",
        "-vf", "scale=out_color_matrix=bt709:out_range=tv",
        "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
        "-color_range", "tv", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, input=frames_rgb.tobytes(), check=True, capture_output=True)
    return path


@pytest.fixture()
def make_clip(frames_rgb: np.ndarray) -> Callable[..., object]:
    """Build an in-memory VapourSynth clip of the indexed frames in any format."""

    def make(fmt: int | None = None, *, frames: np.ndarray | None = None, **props: object):
        import vapoursynth as vs

        data = frames_rgb if frames is None else frames
        n, h, w, _ = data.shape
        blank = vs.core.std.BlankClip(format=vs.RGB24, width=w, height=h, length=n, fpsnum=24)

        def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
            out = f.copy()
            for p in range(3):
                np.copyto(np.asarray(out[p]), data[n, :, :, p])
            return out

        clip = vs.core.std.ModifyFrame(blank, blank, fill)
        if fmt is not None and fmt != vs.RGB24:
            family = vs.core.get_video_format(fmt).color_family
            kw = {"matrix_s": "709"} if family == vs.YUV else {}
            clip = vs.core.resize.Bicubic(clip, format=fmt, **kw)
        if props:
            clip = vs.core.std.SetFrameProps(clip, **props)
        return clip

    return make
