"""The device colour conversion's Triton kernels against its torch ops.

On a GPU the two must give the same codes (the kernels repeat the ops' arithmetic in order).
On the CPU the kernels run under Triton's interpreter, in a subprocess (``TRITON_INTERPRET``
is read when the kernels are defined): that checks their indexing, edges and crop on every
machine. The CPU's torch ops divide where the GPU's multiply by a reciprocal, so there the
codes may differ by one, rarely.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_interpreted

from vs_skipsr import color
from vs_skipsr.color import rgb_to_yuv, yuv_layout

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_triton = pytest.mark.skipif(color._triton_kernels() is None, reason="needs triton")

# (ss_w, ss_h, chromaloc, full_range, bits): 4:2:0 at a co-sited, a centred and a bottom
# location, 4:2:2, 4:4:4, limited and full range, 8 and 10 bits
LAYOUTS = [
    (1, 1, 0, False, 8),
    (1, 1, 1, True, 8),
    (1, 1, 5, False, 10),
    (1, 0, 2, False, 8),
    (0, 0, 0, True, 10),
]
SIZE = (91, 121)  # odd: the chroma planes round up, the crop leaves the grid's last rows out


def _window(frames_rgb: np.ndarray) -> torch.Tensor:
    """Three frames of the photo pan, upscaled x2 (SR-like values between the 8-bit codes),
    on a 96 x 128 grid: [3, 3, 96, 128] float32 in [0, 1]."""
    x = torch.from_numpy(frames_rgb[:3]).permute(0, 3, 1, 2).float() / 255
    return F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp_(0, 1)


_INTERPRETED = """
import sys, numpy as np, torch
from vs_skipsr.color import rgb_to_yuv, yuv_layout
rgb = torch.from_numpy(np.load(sys.argv[1]))
for ss_w, ss_h, loc, full, bits in eval(sys.argv[2]):
    lay = yuv_layout(bits=bits, ss_w=ss_w, ss_h=ss_h, matrix=1, full_range=full, chromaloc=loc)
    for name, p in zip("yuv", rgb_to_yuv(rgb, lay, size=eval(sys.argv[3]), kernels="triton")):
        np.save(f"{sys.argv[4]}/{ss_w}{ss_h}{loc}{int(full)}{bits}{name}.npy", p.numpy())
"""


@needs_triton
def test_triton_kernels_interpreted_give_the_torch_ops_codes(
    frames_rgb: np.ndarray, tmp_path: Path
) -> None:
    rgb = _window(frames_rgb)
    np.save(tmp_path / "rgb.npy", rgb.numpy())
    args = [str(tmp_path / "rgb.npy"), repr(LAYOUTS), repr(SIZE), str(tmp_path)]
    run_interpreted(_INTERPRETED, *args, timeout=300)
    differ = total = 0
    for ss_w, ss_h, loc, full, bits in LAYOUTS:
        lay = yuv_layout(bits=bits, ss_w=ss_w, ss_h=ss_h, matrix=1, full_range=full, chromaloc=loc)
        want = rgb_to_yuv(rgb, lay, size=SIZE, kernels="torch")
        for name, w in zip("yuv", want, strict=True):
            got = torch.from_numpy(
                np.load(tmp_path / f"{ss_w}{ss_h}{loc}{int(full)}{bits}{name}.npy")
            )
            assert got.dtype == w.dtype and got.shape == w.shape, (name, got.shape, w.shape)
            assert int((got.int() - w.int()).abs().max()) <= 1, (ss_w, ss_h, loc, full, bits, name)
            differ += int((got != w).sum())
            total += w.numel()
    assert differ <= total // 10_000  # one code in ten thousand at most (a reciprocal's rounding)


def test_rgb_to_yuv_names_a_bad_kernels_value() -> None:
    lay = yuv_layout(bits=8, ss_w=1, ss_h=1, matrix=1, full_range=False, chromaloc=0)
    with pytest.raises(ValueError, match="kernels must be 'auto', 'torch' or 'triton', not 'cuda'"):
        rgb_to_yuv(torch.zeros(1, 3, 4, 4), lay, kernels="cuda")  # type: ignore[arg-type]


@needs_cuda
@needs_triton
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_triton_kernels_give_the_same_codes_as_torch_ops(
    frames_rgb: np.ndarray, layout: tuple[int, int, int, bool, int]
) -> None:
    ss_w, ss_h, loc, full, bits = layout
    lay = yuv_layout(bits=bits, ss_w=ss_w, ss_h=ss_h, matrix=1, full_range=full, chromaloc=loc)
    rgb = _window(frames_rgb).cuda()
    for x in (rgb, rgb.half()):  # the filter's windows are float32; half is accepted too
        want = rgb_to_yuv(x, lay, size=SIZE, kernels="torch")
        got = rgb_to_yuv(x, lay, size=SIZE, kernels="triton")
        for w, g in zip(want, got, strict=True):
            assert g.dtype == w.dtype and g.shape == w.shape
            assert torch.equal(g, w), int((g != w).sum())


_CHECKED = """
import types, torch
from vs_skipsr import color, color_triton
cpu = torch.device("cpu")
color.kernels_agree(color_triton, cpu)  # the real kernels, interpreted
off = types.SimpleNamespace(
    rgb_to_yuv_triton=lambda *a, **k: tuple(
        p + (i == 2) for i, p in enumerate(color_triton.rgb_to_yuv_triton(*a, **k))
    )
)
try:
    color.kernels_agree(off, cpu)  # one code off in V
except RuntimeError as e:
    assert "8-bit V plane differs" in str(e), e
else:
    raise AssertionError("a kernel one code off passed the check")
"""


@needs_triton
def test_colour_check_passes_the_kernels_and_names_a_plane_one_code_off() -> None:
    """The check that decides the kernels on a GPU (:func:`color.kernels_agree`), run on the
    CPU under Triton's interpreter: the shipped kernels give the torch ops' codes on its
    window, and a kernel whose V plane is one code off is refused, the plane named."""
    run_interpreted(_CHECKED, timeout=300)


def test_colour_check_is_only_for_cuda() -> None:
    assert not color.triton_color_works(torch.device("cpu"))


@needs_cuda
@pytest.mark.usefixtures("colour_check_forgotten")
def test_cuda_colour_takes_torch_ops_where_the_kernels_fail_their_check(
    frames_rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        @staticmethod
        def rgb_to_yuv_triton(*args: object, **kwargs: object) -> None:
            raise RuntimeError("no C compiler")

    monkeypatch.setattr(color, "_triton_kernels", lambda: Broken)
    lay = yuv_layout(bits=8, ss_w=1, ss_h=1, matrix=1, full_range=False, chromaloc=0)
    rgb = _window(frames_rgb).cuda()
    want = rgb_to_yuv(rgb, lay, size=SIZE, kernels="torch")
    with caplog.at_level(logging.WARNING, logger="vs_skipsr.optional"):
        for _ in range(2):
            got = rgb_to_yuv(rgb, lay, size=SIZE)
            assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    assert not color.triton_color_works(rgb.device)
    # said once (the check runs once a card), then torch ops without trying
    assert caplog.text.count("Triton colour conversion unavailable here") == 1
    with pytest.raises(RuntimeError, match="no C compiler"):
        rgb_to_yuv(rgb, lay, size=SIZE, kernels="triton")
