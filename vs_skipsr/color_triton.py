"""The device colour conversion of :mod:`vs_skipsr.color` as three Triton kernels.

Written with torch ops the conversion of one window is ~40 kernels (the luma sum, two
replicate pads, a strided pass per chroma tap, the rounding), each a pass over a plane: a
5-frame 1080p window took 1.04 ms as one CUDA graph replay on an H200, ~0.2 ms a frame and
the largest item of the GPU's work outside the SR net. Here it is one pass for luma, one for
the horizontal chroma filter and one for the vertical filter with the rounding.

The kernels repeat the torch ops' arithmetic in the same order, so they give the same codes:
products and sums rounded one at a time (``enable_fp_fusion=False``), each chroma tap a fused
multiply-add where torch's ``add_(x, alpha=k)`` is one on a GPU, the division by a scalar as
torch does it (a multiply by its float32 reciprocal), and rounding half to even. Taps of
weight 0 run too: ``fma(0, x, s)`` is ``s``.

``TRITON_INTERPRET=1`` (set before this module is imported) runs the kernels on CPU tensors:
the tests check them there.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_launch import on_device_of

__all__ = ["rgb_to_yuv_triton"]

_BLOCK = 1024


@triton.jit
def _luma(r, g, b, KR, KG, KB):
    # torch: kr * r + (1 - kr - kb) * g + kb * b, each product and sum rounded
    return (KR * r + KG * g) + KB * b


@triton.jit
def _quantise(p, scale, offset, peak):
    q = p * scale + offset
    f = tl.floor(q + 0.5)
    # half to even, as torch.round: a tie (f - q == 0.5) rounded up to an odd number goes down
    tie = (f - q) == 0.5
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    f = tl.where(tie & odd, f - 1.0, f)
    return tl.minimum(tl.maximum(f, 0.0), peak)


@triton.jit
def _load_rgb(base, row, col, s_c, s_h, mask):
    at = base + row * s_h + col
    r = tl.load(at, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(at + s_c, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(at + 2 * s_c, mask=mask, other=0.0).to(tl.float32)
    return r, g, b


@triton.jit
def _luma_kernel(
    rgb, y_out, H, W, s_t, s_c, s_h, KR, KG, KB, scale, offset, peak, BLOCK: tl.constexpr
):
    t = tl.program_id(1).to(tl.int64)
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < H * W
    row, col = i // W, i % W
    r, g, b = _load_rgb(rgb + t * s_t, row, col, s_c, s_h, mask)
    q = _quantise(_luma(r, g, b, KR, KG, KB), scale, offset, peak)
    tl.store(y_out + t * H * W + i, q.to(y_out.dtype.element_ty), mask=mask)


@triton.jit
def _chroma_rows_kernel(
    rgb,
    uv,
    H,
    W,
    CW,
    s_t,
    s_c,
    s_h,
    KR,
    KG,
    KB,
    INV_U,
    INV_V,
    taps,
    SUB: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """U and V of every row, filtered (SUB: 9 taps, stride 2, edges replicated) or not along
    the width: uv [T, 2, H, CW] float32."""
    t = tl.program_id(1).to(tl.int64)
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < H * CW
    row, j = i // CW, i % CW
    base = rgb + t * s_t
    if SUB:
        su = tl.zeros((BLOCK,), tl.float32)
        sv = tl.zeros((BLOCK,), tl.float32)
        for m in tl.static_range(9):
            k = tl.load(taps + m)
            col = tl.minimum(tl.maximum(2 * j + (m - 4), 0), W - 1)
            r, g, b = _load_rgb(base, row, col, s_c, s_h, mask)
            y = _luma(r, g, b, KR, KG, KB)
            su = tl.fma((b - y) * INV_U, k, su)
            sv = tl.fma((r - y) * INV_V, k, sv)
    else:
        r, g, b = _load_rgb(base, row, j, s_c, s_h, mask)
        y = _luma(r, g, b, KR, KG, KB)
        su = (b - y) * INV_U
        sv = (r - y) * INV_V
    out = uv + t * 2 * H * CW + i
    tl.store(out, su, mask=mask)
    tl.store(out + H * CW, sv, mask=mask)


@triton.jit
def _chroma_cols_kernel(
    uv,
    u_out,
    v_out,
    H,
    CH,
    CW,
    taps,
    scale,
    offset,
    peak,
    SUB: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """uv [T, 2, H, CW] filtered (SUB) or not along the height, then rounded to codes."""
    t = tl.program_id(1).to(tl.int64)
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < CH * CW
    row, j = i // CW, i % CW
    src = uv + t * 2 * H * CW
    if SUB:
        su = tl.zeros((BLOCK,), tl.float32)
        sv = tl.zeros((BLOCK,), tl.float32)
        for m in tl.static_range(9):
            k = tl.load(taps + m)
            at = src + tl.minimum(tl.maximum(2 * row + (m - 4), 0), H - 1) * CW + j
            su = tl.fma(tl.load(at, mask=mask, other=0.0), k, su)
            sv = tl.fma(tl.load(at + H * CW, mask=mask, other=0.0), k, sv)
    else:
        at = src + row * CW + j
        su = tl.load(at, mask=mask, other=0.0)
        sv = tl.load(at + H * CW, mask=mask, other=0.0)
    dst = t * CH * CW + i
    tl.store(u_out + dst, _quantise(su, scale, offset, peak).to(u_out.dtype.element_ty), mask=mask)
    tl.store(v_out + dst, _quantise(sv, scale, offset, peak).to(v_out.dtype.element_ty), mask=mask)


@lru_cache(maxsize=16)
def _taps_tensor(
    taps_w: tuple[float, ...], taps_h: tuple[float, ...], device: torch.device
) -> Tensor:
    """The 9 width taps then the 9 height taps, float32 on ``device``: made once per layout
    (before a CUDA graph's capture, which could not copy them from the host)."""
    return torch.tensor(taps_w + taps_h, dtype=torch.float32, device=device)


def _f32(x: float) -> float:
    """``x`` rounded to float32, as torch rounds a Python scalar for a float32 tensor."""
    return float(np.float32(x))


def rgb_to_yuv_triton(
    rgb: Tensor,
    *,
    size: tuple[int, int],
    kr: float,
    kb: float,
    taps_w: tuple[float, ...] | None,
    taps_h: tuple[float, ...] | None,
    luma: tuple[float, float],
    chroma: tuple[float, float],
    peak: int,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`vs_skipsr.color.rgb_to_yuv` with its constants worked out by the caller:
    ``taps_w``/``taps_h`` the 9 chroma taps along that axis (None: not subsampled), ``luma``
    and ``chroma`` the (scale, offset) of the integer range. ``rgb`` [T, 3, Hg, Wg] with unit
    stride along the width; its top-left ``size`` is converted."""
    t_count = rgb.shape[0]
    h, w = size
    if rgb.stride(3) != 1:
        rgb = rgb.contiguous()
    ch = -(-h // 2) if taps_h else h
    cw = -(-w // 2) if taps_w else w
    dev = rgb.device
    y = torch.empty(t_count, h, w, dtype=dtype, device=dev)
    u = torch.empty(t_count, ch, cw, dtype=dtype, device=dev)
    v = torch.empty(t_count, ch, cw, dtype=dtype, device=dev)
    uv = torch.empty(t_count, 2, h, cw, dtype=torch.float32, device=dev)
    s_t, s_c, s_h = rgb.stride(0), rgb.stride(1), rgb.stride(2)
    kr32, kg32, kb32 = _f32(kr), _f32(1 - kr - kb), _f32(kb)
    inv_u = float(np.float32(1) / np.float32(2 * (1 - kb)))  # torch's x / s on a GPU
    inv_v = float(np.float32(1) / np.float32(2 * (1 - kr)))
    taps = _taps_tensor(taps_w or (0.0,) * 9, taps_h or (0.0,) * 9, dev)
    exact = {"enable_fp_fusion": False}  # each product and sum rounded, as torch's kernels
    with on_device_of(rgb):
        _luma_kernel[(triton.cdiv(h * w, _BLOCK), t_count)](
            rgb, y, h, w, s_t, s_c, s_h, kr32, kg32, kb32, *map(_f32, luma), float(peak),
            BLOCK=_BLOCK, **exact,
        )  # fmt: skip
        _chroma_rows_kernel[(triton.cdiv(h * cw, _BLOCK), t_count)](
            rgb, uv, h, w, cw, s_t, s_c, s_h, kr32, kg32, kb32, inv_u, inv_v, taps,
            SUB=taps_w is not None, BLOCK=_BLOCK, **exact,
        )  # fmt: skip
        _chroma_cols_kernel[(triton.cdiv(ch * cw, _BLOCK), t_count)](
            uv, u, v, h, ch, cw, taps[9:], *map(_f32, chroma), float(peak),
            SUB=taps_h is not None, BLOCK=_BLOCK, **exact,
        )  # fmt: skip
    return y, u, v
