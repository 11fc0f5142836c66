"""A block's residual update and the next layer norm as one Triton kernel.

The SR transformer is small (width 192, fp16 on the GPU) and bound by memory traffic. In
each block a gated residual update, ``x = torch.addcmul(x, gate, y)``, is followed at once
by the layer norm of its result, whose modulation is the norm's own affine
(:class:`~vs_skipsr.models.sr.BlockModulation`). On an H200 torch's
``vectorized_layer_norm_kernel`` took 29 us a call on [21248, 192] fp16 (16 MB moved: ~6x
slower than the bandwidth) and the ``addcmul`` 13-25 us: together a quarter of the net's GPU time. Here one kernel reads x and
y once and writes the updated x and its normalised-and-modulated form once.

The arithmetic is torch's: the update a float32 fused multiply-add (torch 2.14's ``addcmul``
computes ``fma(gate, y, x)`` on the GPU and the CPU) rounded once to x's dtype; the norm of
that ROUNDED value (what the next block would read back), mean and biased variance in
float32, ``rsqrt(var + eps)``, the affine in float32, the output rounded once. So the
updated x is torch's to the bit, and the normalised output differs from torch's by rounding
only (the order of the float32 sums). ``TRITON_INTERPRET=1`` (set before this module is
imported) runs the kernel on CPU tensors: the tests check it there. Triton's interpreter
(3.6, 3.8) rounds the product of ``tl.fma`` before the sum and truncates float32 to
bfloat16, so there a float32 update (or one with a float32 gate) may differ from torch's by
the product's rounding and bfloat16 results by an ulp or two; the compiled kernel does
neither (on an H200 the update was torch's to the bit in float16 and bfloat16).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..triton_launch import on_device_of

__all__ = ["blocks_for", "residual_norm"]

# Values of one tile a program holds in registers: 8 rows of the shipped model's 192
# channels (in a block of 256), 3 KB of fp16 x and 12 KB moved a program. On an H200 (Triton
# 3.6, [21248, 192] fp16, CUDA graph replays) it took 8.0 us a call against 8.7 for 16 rows
# and 8.0 to 9.2 for 4 to 32 rows of 2 to 8 warps: ~95% of the 4.3 TB/s a copy reaches
# (7.6 us). torch's addcmul and layer norm took 11.4 + 28.2 us there.
_TILE = 2048

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def blocks_for(channels: int) -> tuple[int, int, int]:
    """(block_c, rows, num_warps) for rows of ``channels``: whole rows of a power-of-two
    block (masked past ``channels``), as many of them as fill a tile of ``_TILE`` values, so
    a narrow net's programs still move a few KB each."""
    block_c = triton.next_power_of_2(max(channels, 1))
    rows = max(1, _TILE // block_c)
    num_warps = min(16, max(4, block_c * rows // 1024))
    return block_c, rows, num_warps


@triton.jit
def _residual_norm_kernel(
    x_ptr,
    y_ptr,
    gate_ptr,
    w_ptr,
    b_ptr,
    x_out_ptr,
    n_out_ptr,
    n_rows,
    C,
    sx,
    sy,
    sg,
    sw,
    sb,
    eps,
    BLOCK_C: tl.constexpr,
    ROWS: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    in_c = cols < C
    mask = (rows < n_rows)[:, None] & in_c[None, :]
    x = tl.load(x_ptr + rows[:, None] * sx + cols[None, :], mask=mask, other=0.0)
    y = tl.load(y_ptr + rows[:, None] * sy + cols[None, :], mask=mask, other=0.0)
    gate = tl.load(gate_ptr + cols * sg, mask=in_c, other=0.0).to(tl.float32)
    # torch's addcmul: one rounding in float32 (exact for half inputs: their product fits)
    x_new = tl.fma(gate[None, :], y.to(tl.float32), x.to(tl.float32))
    x_new = x_new.to(x_out_ptr.dtype.element_ty)
    out_at = rows[:, None] * C + cols[None, :]
    tl.store(x_out_ptr + out_at, x_new, mask=mask)
    # the norm of the rounded update, as the next block's layer norm would read it back
    v = x_new.to(tl.float32)
    mean = tl.sum(v, axis=1) / C
    d = tl.where(mask, v - mean[:, None], 0.0)
    var = tl.sum(d * d, axis=1) / C  # biased, as torch's layer norm
    rstd = tl.math.rsqrt(var + eps)
    w = tl.load(w_ptr + cols * sw, mask=in_c, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols * sb, mask=in_c, other=0.0).to(tl.float32)
    normed = (d * rstd[:, None]) * w[None, :] + b[None, :]
    tl.store(n_out_ptr + out_at, normed.to(n_out_ptr.dtype.element_ty), mask=mask)


def _vector(name: str, t: Tensor, x: Tensor) -> Tensor:
    """``t`` as a [C] view, refused with its name where the net could not have meant it."""
    c = x.shape[1]
    if tuple(t.shape) not in ((c,), (1, c)):
        raise ValueError(f"residual_norm: {name} has shape {tuple(t.shape)}, not [{c}] or [1, {c}]")
    if t.dtype not in (x.dtype, torch.float32):
        raise ValueError(f"residual_norm: {name} is {t.dtype}, not x's {x.dtype} or float32")
    if t.device != x.device:
        raise ValueError(f"residual_norm: {name} is on {t.device}, x on {x.device}")
    return t.reshape(c)


def residual_norm(
    x: Tensor, y: Tensor, gate: Tensor, weight: Tensor, bias: Tensor, *, eps: float
) -> tuple[Tensor, Tensor]:
    """``x_new = torch.addcmul(x, gate, y)`` and ``F.layer_norm(x_new, (C,), weight, bias,
    eps)`` in one pass, both new [K, C] tensors of x's dtype: the block's residual update
    and the next norm without a round trip through memory between them. x and y [K, C]
    with the last dimension contiguous (y may be a view: a column slice); gate, weight and
    bias [C] or [1, C] in x's dtype or float32 (a float32 gate as torch would promote it:
    the update computed in float32 and rounded to x's dtype once)."""
    if x.dim() != 2:
        raise ValueError(f"residual_norm: x has shape {tuple(x.shape)}, not [K, C]")
    if x.dtype not in _DTYPES:
        raise ValueError(f"residual_norm: x is {x.dtype}, not float16, bfloat16 or float32")
    if y.shape != x.shape:
        raise ValueError(f"residual_norm: y has shape {tuple(y.shape)}, x {tuple(x.shape)}")
    if y.dtype != x.dtype:
        raise ValueError(f"residual_norm: y is {y.dtype}, x {x.dtype}")
    if y.device != x.device:
        raise ValueError(f"residual_norm: y is on {y.device}, x on {x.device}")
    n_rows, c = x.shape
    for name, t in (("x", x), ("y", y)):
        if c > 1 and t.stride(1) != 1:
            raise ValueError(
                f"residual_norm: {name}'s last dimension is not contiguous (strides {t.stride()})"
            )
    gate, weight, bias = (
        _vector(n, t, x) for n, t in (("gate", gate), ("weight", weight), ("bias", bias))
    )
    x_new = torch.empty((n_rows, c), dtype=x.dtype, device=x.device)
    normed = torch.empty_like(x_new)
    if n_rows == 0 or c == 0:
        return x_new, normed
    block_c, rows, num_warps = blocks_for(c)
    with on_device_of(x):
        _residual_norm_kernel[(triton.cdiv(n_rows, rows),)](
            x,
            y,
            gate,
            weight,
            bias,
            x_new,
            normed,
            n_rows,
            c,
            x.stride(0),
            y.stride(0),
            gate.stride(0),
            weight.stride(0),
            bias.stride(0),
            float(eps),
            BLOCK_C=block_c,
            ROWS=rows,
            num_warps=num_warps,
        )
    return x_new, normed
