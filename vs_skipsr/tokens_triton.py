"""The kept tokens' patches with their halo (:func:`~vs_skipsr.tokens.gather_patches`) as one
Triton kernel, for the GPU.

torch's way reads every pixel through a flat int64 offset tensor it builds first, in the
frames' float32, and the runner then casts the patches to the net's half precision: about 30
bytes of traffic a value (8 to write the offset, 8 + 4 to read it and the pixel, 4 to write
it, 4 + 2 to cast it) where the picture's own are 4 read and 2 written (H200, a 20 x 1088 x
1920 window: 4.3 ms dense, 0.86 ms at 17% kept, before the cast; ``scripts/bench_tokens.py``).
Here each program computes its token's clamped rows and columns (the frame border replicated,
as :func:`~vs_skipsr.tokens.pad_to_grid` pads) and writes the patch once, in the dtype the
net reads. The values are the frames' own, cast once with round-to-nearest-even as torch's
``.to`` casts them, so the patches are torch's to the bit (``TRITON_INTERPRET=1``, which the
CPU tests use, truncates float32 to bfloat16 instead, so there a value may be an ulp off).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_launch import on_device_of

__all__ = ["gather_patches"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _gather_kernel(
    src_ptr,
    coords_ptr,
    out_ptr,
    H,
    W,
    st,
    sc,
    sh,
    sw,
    C: tl.constexpr,
    PATCH: tl.constexpr,
    HALO: tl.constexpr,
    SIDE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    k = tl.program_id(0).to(tl.int64)
    ch = tl.program_id(1)
    t = tl.load(coords_ptr + 3 * k)
    y = tl.load(coords_ptr + 3 * k + 1)
    x = tl.load(coords_ptr + 3 * k + 2)
    i = tl.arange(0, BLOCK)
    inside = i < SIDE
    rows = tl.minimum(tl.maximum(y * PATCH - HALO + i, 0), H - 1)  # replicate = clamp
    cols = tl.minimum(tl.maximum(x * PATCH - HALO + i, 0), W - 1)
    at = t * st + ch * sc + rows[:, None] * sh + cols[None, :] * sw
    mask = inside[:, None] & inside[None, :]
    v = tl.load(src_ptr + at, mask=mask, other=0.0)
    dst = k * (C * SIDE * SIDE) + ch * (SIDE * SIDE) + i[:, None] * SIDE + i[None, :]
    tl.store(out_ptr + dst, v.to(out_ptr.dtype.element_ty), mask=mask)


def gather_patches(
    frames: Tensor,
    coords: Tensor,
    *,
    patch: int,
    halo: int,
    dtype: torch.dtype,
    out: Tensor | None = None,
) -> Tensor:
    """[K, C · (patch + 2 halo)²] in ``dtype``: each token at ``coords`` [K, 3] ((t, y, x),
    int64, on the token grid of ``frames`` [T, C, H, W], any strides) with ``halo`` pixels
    of its surroundings, channel by channel, rows then columns; written into ``out`` (of
    that shape and dtype, contiguous) where given."""
    if frames.dim() != 4 or frames.dtype not in _DTYPES:
        raise ValueError(
            f"gather_patches: frames are {frames.dtype} {tuple(frames.shape)}, not float "
            "[T, C, H, W]"
        )
    if dtype not in _DTYPES:
        raise ValueError(f"gather_patches: dtype={dtype}, expected one of {_DTYPES}")
    if coords.dim() != 2 or coords.shape[1] != 3 or coords.dtype != torch.int64:
        raise ValueError(
            f"gather_patches: coords are {coords.dtype} {tuple(coords.shape)}, not int64 [K, 3]"
        )
    _, c, h, w = frames.shape
    side = patch + 2 * halo
    k = coords.shape[0]
    if out is None:
        out = torch.empty(k, c * side * side, dtype=dtype, device=frames.device)
    elif tuple(out.shape) != (k, c * side * side) or out.dtype != dtype or not out.is_contiguous():
        raise ValueError(
            f"gather_patches: out is {out.dtype} {tuple(out.shape)}, not a contiguous {dtype} "
            f"{(k, c * side * side)}"
        )
    if k == 0:
        return out
    with on_device_of(frames):
        _gather_kernel[(k, c)](
            frames,
            coords.contiguous(),
            out,
            h,
            w,
            *frames.stride(),
            C=c,
            PATCH=patch,
            HALO=halo,
            SIDE=side,
            BLOCK=triton.next_power_of_2(side),
            num_warps=4,
        )
    return out
