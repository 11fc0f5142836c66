"""RGB windows to the clip's YUV planes on the network's device.

On a GPU the default model's window costs a few milliseconds, while VapourSynth's resize from
RGB floats back to YUV420P8 costs ~7 ms per 1080p frame on the host (scripts/bench.py, stages
section) and the RGB half floats it reads are four times the bytes of 4:2:0 8-bit planes
over the bus. So for YUV integer clips the filter converts each window on the device, copies back the
planes the clip stores and writes them straight into the output frames.

The conversion follows what ``resize.Bicubic(format=..., matrix=..., range=...,
chromaloc=...)`` does with its defaults: the matrix's luma/chroma equations in float, chroma
downsampled by the bicubic kernel (b = 0, c = 0.5) stretched to the subsampling factor and
centred at the chroma location, then scaled to the integer range and rounded to nearest. The
tests compare both paths code by code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from types import ModuleType
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .optional import optional_module, works_here

__all__ = ["YuvLayout", "kernels_agree", "rgb_to_yuv", "triton_color_works", "yuv_layout"]


# _Matrix values (ITU-T H.273) with constant (Kr, Kb) luma weights
_KR_KB: dict[int, tuple[float, float]] = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (BT.601)
    6: (0.299, 0.114),  # SMPTE 170M (BT.601)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
}


@dataclass(frozen=True)
class YuvLayout:
    """What one output frame holds: sample depth, subsampling (log2), and the colour props
    that decide the conversion."""

    bits: int
    ss_w: int
    ss_h: int
    matrix: int
    full_range: bool
    chromaloc: int

    def plane_shapes(self, height: int, width: int) -> tuple[tuple[int, int], ...]:
        ch, cw = -(-height >> self.ss_h), -(-width >> self.ss_w)
        return ((height, width), (ch, cw), (ch, cw))

    @property
    def dtype(self) -> torch.dtype:
        """uint8 up to 8 bits; int16 (the same bytes as uint16 for values below 2^15) above."""
        return torch.uint8 if self.bits <= 8 else torch.int16


@lru_cache(maxsize=64)  # asked for every frame with a handful of distinct answers
def yuv_layout(
    *, bits: int, ss_w: int, ss_h: int, matrix: int, full_range: bool, chromaloc: int
) -> YuvLayout | None:
    """The layout, or None where this module does not convert (the filter then refuses with
    an error naming the value): matrices without constant luma weights, more than 15 bits,
    subsampling beyond 4:2:0."""
    if matrix not in _KR_KB or not 8 <= bits <= 15 or ss_w > 1 or ss_h > 1:
        return None
    return YuvLayout(
        bits=bits,
        ss_w=ss_w,
        ss_h=ss_h,
        matrix=matrix,
        full_range=full_range,
        chromaloc=chromaloc if 0 <= chromaloc <= 5 else 0,
    )


def _bicubic(x: float, b: float = 0.0, c: float = 0.5) -> float:
    x = abs(x)
    if x < 1:
        return ((12 - 9 * b - 6 * c) * x**3 + (-18 + 12 * b + 6 * c) * x**2 + (6 - 2 * b)) / 6
    if x < 2:
        return (
            (-b - 6 * c) * x**3
            + (6 * b + 30 * c) * x**2
            + (-12 * b - 48 * c) * x
            + (8 * b + 24 * c)
        ) / 6
    return 0.0


@lru_cache(maxsize=16)
def _taps(offset: float) -> tuple[float, ...]:
    """Weights of luma positions 2i-4 .. 2i+4 for the chroma sample at 2i + offset (x2
    downscale: the kernel stretched by 2), normalised to sum 1. Python floats: they go into
    the kernels as scalars, with no host-to-device copy."""
    w = [_bicubic((m - offset) / 2) for m in range(-4, 5)]
    s = sum(w)
    return tuple(v / s for v in w)


def _chroma_offsets(chromaloc: int) -> tuple[float, float]:
    """(horizontal, vertical) chroma sample position past the first luma sample of its 2x2
    block, in luma samples (VapourSynth's _ChromaLocation: 0 left, 1 center, 2 top-left,
    3 top, 4 bottom-left, 5 bottom)."""
    horizontal = 0.0 if chromaloc in (0, 2, 4) else 0.5
    vertical = {2: 0.0, 3: 0.0, 4: 1.0, 5: 1.0}.get(chromaloc, 0.5)
    return horizontal, vertical


def _downsample(c: Tensor, *, axis: int, offset: float) -> Tensor:
    """Halve [N, C, H, W] along ``axis`` (2 rows, 3 columns), edges replicated: the 9 taps
    summed over strided views, 9 elementwise kernels. cuDNN ran the 1-channel conv2d this
    replaced as an implicit GEMM; the whole conversion of a 5-frame 1080p window went from
    1.79 to 1.49 ms as one CUDA graph replay (H100, ninth session; scripts/bench_color.py)."""
    k = _taps(offset)
    pad = (4, 4, 0, 0) if axis == 3 else (0, 0, 4, 4)
    win = F.pad(c, pad, mode="replicate").unfold(axis, 9, 2)  # [..., out, ..., 9] views
    # taps of weight 0 (the outer two at a co-sited location, one at a centred one) are left
    # out: adding 0 * x changes no bit, and each tap is a pass over the plane
    taps = [i for i in range(9) if k[i] != 0.0]
    out = win[..., taps[0]] * k[taps[0]]
    for i in taps[1:]:
        out.add_(win[..., i], alpha=k[i])
    return out


def _ranges(layout: YuvLayout) -> tuple[tuple[float, float], tuple[float, float]]:
    """(scale, offset) of luma and of chroma in ``layout``'s integer range."""
    if layout.full_range:
        peak = (1 << layout.bits) - 1
        return (float(peak), 0.0), (float(peak), float(1 << (layout.bits - 1)))
    unit = 1 << (layout.bits - 8)
    return (219.0 * unit, 16.0 * unit), (224.0 * unit, 128.0 * unit)


def _triton_kernels() -> ModuleType | None:
    """:mod:`vs_skipsr.color_triton`, or None where Triton is not installed."""
    return optional_module("vs_skipsr.color_triton")


def triton_color_works(device: torch.device) -> bool:
    """Whether :mod:`vs_skipsr.color_triton`'s kernels run on ``device`` (CUDA, Triton
    installed) and give the torch ops' codes on a small cropped window (BT.709: 4:2:0 8-bit
    limited, 4:4:4 10-bit full); once a process and card. The filter asks before its
    graphs are captured, so the check never runs inside one."""
    if device.type != "cuda":
        return False
    index = torch.cuda.current_device() if device.index is None else device.index
    return _triton_color_works_on(index)


@cache
def _triton_color_works_on(index: int) -> bool:
    module = _triton_kernels()
    if module is None:
        return False
    device = torch.device("cuda", index)
    return works_here(lambda: kernels_agree(module, device), what="Triton colour conversion")


def kernels_agree(module: ModuleType, device: torch.device) -> None:
    """Raise unless ``module``'s ``rgb_to_yuv_triton`` gives the torch ops' codes on
    ``device`` for a small window converted with a crop (the check of
    :func:`triton_color_works`; a module is passed so a test can hand it a broken one)."""
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 24, 32, generator=gen).to(device)
    size = (21, 29)  # odd: chroma rounds up, the crop leaves rows and columns out
    # BT.709, as the CUDA tests that found the kernels' codes equal to the ops' on every
    # layout: other matrices only change two constants the kernels take as arguments
    for bits, ss, matrix, full in ((8, 1, 1, False), (10, 0, 1, True)):
        layout = yuv_layout(
            bits=bits, ss_w=ss, ss_h=ss, matrix=matrix, full_range=full, chromaloc=0
        )
        assert layout is not None
        got = _convert_triton(module, rgb, layout, size=size)
        want = _convert_torch(rgb[..., : size[0], : size[1]], layout)
        for name, g, w in zip("YUV", got, want, strict=True):
            if g.shape != w.shape or not torch.equal(g, w):
                raise RuntimeError(f"{bits}-bit {name} plane differs from the torch ops' codes")


def rgb_to_yuv(
    rgb: Tensor,
    layout: YuvLayout,
    *,
    size: tuple[int, int] | None = None,
    kernels: Literal["auto", "torch", "triton"] = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """[T, 3, H, W] float RGB in [0, 1] -> (Y [T, H, W], U [T, h, w], V [T, h, w]) integer
    samples in ``layout.dtype``. ``size`` (height, width): convert only that top-left part,
    so a window padded to its token grid goes into a graph whole, a contiguous copy, and is
    cropped inside it.

    ``kernels``: "auto" runs the Triton kernels of :mod:`vs_skipsr.color_triton` (three passes
    instead of ~40, the same codes) on a GPU where :func:`triton_color_works` found them to
    give the torch ops' codes (a kernel that cannot build there, no C compiler for Triton's
    launcher say, costs a log line once), else torch ops."""
    if kernels not in ("auto", "torch", "triton"):
        raise ValueError(f"kernels must be 'auto', 'torch' or 'triton', not {kernels!r}")
    height, width = rgb.shape[-2:] if size is None else size
    auto = kernels == "auto" and rgb.device.type == "cuda" and triton_color_works(rgb.device)
    if kernels == "triton" or auto:
        module = _triton_kernels()
        if module is None:
            raise RuntimeError("rgb_to_yuv: kernels='triton' needs the triton package")
        return _convert_triton(module, rgb, layout, size=(height, width))
    return _convert_torch(rgb[..., :height, :width], layout)


def _convert_triton(
    module: ModuleType, rgb: Tensor, layout: YuvLayout, *, size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    kr, kb = _KR_KB[layout.matrix]
    off_x, off_y = _chroma_offsets(layout.chromaloc)
    luma, chroma = _ranges(layout)
    return module.rgb_to_yuv_triton(
        rgb,
        size=size,
        kr=kr,
        kb=kb,
        taps_w=_taps(off_x) if layout.ss_w else None,
        taps_h=_taps(off_y) if layout.ss_h else None,
        luma=luma,
        chroma=chroma,
        peak=(1 << layout.bits) - 1,
        dtype=layout.dtype,
    )


def _convert_torch(rgb: Tensor, layout: YuvLayout) -> tuple[Tensor, Tensor, Tensor]:
    """The conversion as torch ops (the CPU's, and the reference the kernels repeat)."""
    kr, kb = _KR_KB[layout.matrix]
    x = rgb.float()
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]  # [T, 1, H, W] each
    y = kr * r + (1 - kr - kb) * g + kb * b
    uv = torch.cat([b, r], 1).sub_(y)  # U and V as two channels: one pass downsamples both
    uv[:, 0:1].div_(2 * (1 - kb))
    uv[:, 1:2].div_(2 * (1 - kr))
    off_x, off_y = _chroma_offsets(layout.chromaloc)
    if layout.ss_w:
        uv = _downsample(uv, axis=3, offset=off_x)
    if layout.ss_h:
        uv = _downsample(uv, axis=2, offset=off_y)
    peak = (1 << layout.bits) - 1
    (y_scale, y_off), (c_scale, c_off) = _ranges(layout)

    def quantise(p: Tensor, scale: float, offset: float) -> Tensor:
        return (p * scale + offset).round_().clamp_(0, peak)[:, 0].to(layout.dtype)

    u, v = uv[:, 0:1], uv[:, 1:2]
    return quantise(y, y_scale, y_off), quantise(u, c_scale, c_off), quantise(v, c_scale, c_off)
