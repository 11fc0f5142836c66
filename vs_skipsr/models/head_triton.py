"""The conv head's passes over whole tensors as Triton kernels, for the GPU.

The shipped model's head (:class:`~vs_skipsr.models.sr.ConvHead`) works on a few-cell grid a
token, so its tensors are the net's largest, and torch ran its elementwise steps with kernels
that read them at a fraction of the bandwidth (H200, a dense 720p x 20 SR call of 8.47 ms of
kernels, twenty-first session, ``scripts/profile_sr.py``):

- **bias + GELU** (:func:`bias_gelu_`): torch runs a cuDNN convolution with a bias as the
  convolution and then a broadcasting add of the bias, 1.21 ms for the head's five, about as
  long as the convolutions; then each GELU read and wrote the tensor again. Here the conv runs
  without its bias and one pass adds the bias (and, for the head's first conv, the base
  pixels' term that a window's steps share) and applies the tanh GELU in place.
- **cells** (:func:`cells`): base - 0.5 laid out as the space-to-depth cells the stem reads
  and the embedding takes (one pass; torch's strided subtraction into that layout took
  0.75 ms, its two passes before ~0.4).
- **velocity** (:func:`head_velocity`): (state - noise_std · residual) / t with the residual
  read in the head's cell order, the pixel shuffle done by the addressing (one pass where
  torch's strided add and its division took 0.55 ms); in a flow, with the Euler step that
  follows it (state - velocity / N), which was another pass over the float32 state, 2.07 of
  a dense 8-step flow's 52.67 ms (1920x816 x 20 window, H200, twenty-third session).

The arithmetic is torch's: bias + GELU is ``F.gelu((x + add) + bias, approximate="tanh")``
with each sum rounded to x's dtype as torch's adds round it, the GELU in float32 as
``0.5 v (1 + tanh(u)) = v / (1 + exp(-2u))``, ``u = sqrt(2/pi) (v + 0.044715 v^3)``, rounded
once: the sums are torch's to the bit, the GELU within an ulp of its dtype (torch's goes
through ``tanhf``; this form has no cancellation where the GELU is tiny). The cells and the
velocity are torch's to the bit. ``TRITON_INTERPRET=1`` runs them on CPU tensors for the
tests (the interpreter truncates float32 to bfloat16, so there each rounding may be an ulp
further off).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..triton_launch import on_device_of

__all__ = ["bias_gelu_", "cells", "head_velocity"]

# values a program holds; its tensor is flat, each value's channel from its offset
_BLOCK = 2048

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _bias_gelu_kernel(
    x_ptr,
    add_ptr,
    b_ptr,
    n,
    C,
    CS,
    sb,
    HAS_ADD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dt = x_ptr.dtype.element_ty
    v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_ADD:
        a = tl.load(add_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        v = (v + a).to(dt).to(tl.float32)  # rounded as torch's add rounds it
    b = tl.load(b_ptr + ((offs // CS) % C) * sb, mask=mask, other=0.0).to(tl.float32)
    v = (v + b).to(dt).to(tl.float32)
    u = 0.7978845608028654 * (v + 0.044715 * v * v * v)  # sqrt(2 / pi) (v + 0.044715 v^3)
    y = v / (1.0 + tl.exp(-2.0 * u))
    tl.store(x_ptr + offs, y.to(dt), mask=mask)


def _channel_stride(x: Tensor) -> int:
    """The distance between a value and the next channel's in ``x`` [K, C, H, W] (or [N, C])
    laid out densely with channels innermost (channels-last: 1) or outermost but for the
    batch (contiguous: H*W), so each value's channel is (offset // it) % C; other layouts
    are refused."""
    if x.dim() == 2:
        x = x[:, :, None, None]
    _, c, h, w = x.shape
    last = (h * w * c, 1, w * c, c)
    first = (c * h * w, h * w, w, 1)
    for strides, cs in ((last, 1), (first, h * w)):
        if all(s == t or n == 1 for s, t, n in zip(x.stride(), strides, x.shape, strict=True)):
            return cs
    raise ValueError(
        f"bias_gelu_: x of shape {tuple(x.shape)} is neither channels-last nor contiguous "
        f"(strides {x.stride()})"
    )


def bias_gelu_(x: Tensor, bias: Tensor, *, add: Tensor | None = None) -> Tensor:
    """``x = F.gelu((x + add) + bias, approximate="tanh")`` in place, in one pass; returns x.
    x: a conv's output [K, C, H, W], channels-last or contiguous (or rows [N, C]);
    ``add`` (optional): the same shape, dtype and strides; bias [C] in x's dtype or
    float32."""
    if x.dtype not in _DTYPES:
        raise ValueError(f"bias_gelu_: x is {x.dtype}, not float16, bfloat16 or float32")
    if x.dim() not in (2, 4):
        raise ValueError(f"bias_gelu_: x has shape {tuple(x.shape)}, not [K, C, H, W] or [N, C]")
    cs = _channel_stride(x)
    c = x.shape[1]
    if tuple(bias.shape) != (c,):
        raise ValueError(f"bias_gelu_: bias has shape {tuple(bias.shape)}, not [{c}]")
    if bias.dtype not in (x.dtype, torch.float32):
        raise ValueError(f"bias_gelu_: bias is {bias.dtype}, not x's {x.dtype} or float32")
    if add is not None and (
        add.shape != x.shape or add.dtype != x.dtype or add.stride() != x.stride()
    ):
        raise ValueError(
            f"bias_gelu_: add is {tuple(add.shape)} {add.dtype} (strides {add.stride()}), "
            f"x {tuple(x.shape)} {x.dtype} (strides {x.stride()})"
        )
    for name, t in (("bias", bias), ("add", add)):
        if t is not None and t.device != x.device:
            raise ValueError(f"bias_gelu_: {name} is on {t.device}, x on {x.device}")
    n = x.numel()
    if n == 0:
        return x
    with on_device_of(x):
        _bias_gelu_kernel[(triton.cdiv(n, _BLOCK),)](
            x,
            x if add is None else add,
            bias,
            n,
            c,
            cs,
            bias.stride(0),
            HAS_ADD=add is not None,
            BLOCK=_BLOCK,
            num_warps=8,
        )
    return x


# output values a program writes: a row of the shipped head's 3072 cells is three programs
_CELL_BLOCK = 1024


@triton.jit
def _cells_kernel(
    base_ptr,
    out_ptr,
    sb,
    D,
    C: tl.constexpr,
    BP: tl.constexpr,
    CELL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # in (gy, gx, ch, i, j) order
    mask = col < D
    j = col % CELL
    r = col // CELL
    i = r % CELL
    r = r // CELL
    ch = r % C
    r = r // C
    gb: tl.constexpr = BP // CELL
    gx = r % gb
    gy = r // gb
    src = ch * (BP * BP) + (gy * CELL + i) * BP + gx * CELL + j
    v = tl.load(base_ptr + row * sb + src, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * D + col, (v - 0.5).to(out_ptr.dtype.element_ty), mask=mask)


def cells(base: Tensor, *, channels: int, patch: int, cell: int) -> Tensor:
    """``base`` [K, channels · patch²] (each token's ``patch`` x ``patch`` pixels, its halo
    included, channel by channel) minus 0.5 as [K, (patch/cell)² · channels · cell²] in
    (cell row, cell column, channel, row in the cell, column in the cell) order, rounded to
    base's dtype as torch's subtraction rounds it; rows may have a stride (a view)."""
    if base.dtype not in _DTYPES:
        raise ValueError(f"cells: base is {base.dtype}, not float16, bfloat16 or float32")
    d = channels * patch * patch
    if base.dim() != 2 or base.shape[1] != d:
        raise ValueError(f"cells: base has shape {tuple(base.shape)}, not [K, {d}]")
    if patch % cell:
        raise ValueError(f"cells: cell={cell} does not divide patch={patch}")
    if d > 1 and base.stride(1) != 1:
        raise ValueError(f"cells: base's rows are not contiguous (strides {base.stride()})")
    k = base.shape[0]
    out = torch.empty((k, d), dtype=base.dtype, device=base.device)
    if k == 0:
        return out
    with on_device_of(base):
        _cells_kernel[(k, triton.cdiv(d, _CELL_BLOCK))](
            base,
            out,
            base.stride(0),
            d,
            C=channels,
            BP=patch,
            CELL=cell,
            BLOCK=_CELL_BLOCK,
            num_warps=4,
        )
    return out


@triton.jit
def _velocity_kernel(
    state_ptr,
    rows_ptr,
    t_ptr,
    out_ptr,
    D,
    noise_std,
    alpha,
    C: tl.constexpr,
    P: tl.constexpr,
    CELL: tl.constexpr,
    STEP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    tok = tl.program_id(0).to(tl.int64)
    col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # in (ch, y, x) order
    mask = col < D
    x = col % P
    r = col // P
    y = r % P
    ch = r // P
    g: tl.constexpr = P // CELL
    # the head's row (token, y // cell, x // cell), its channel (ch, y % cell, x % cell)
    at = ((y // CELL) * g + x // CELL) * (C * CELL * CELL) + (ch * CELL + y % CELL) * CELL
    at += x % CELL
    s = tl.load(state_ptr + tok * D + col, mask=mask, other=0.0).to(tl.float32)
    o = tl.load(rows_ptr + tok * D + at, mask=mask, other=0.0).to(tl.float32)
    t = tl.maximum(tl.load(t_ptr).to(tl.float32), 1e-3)
    v = tl.math.div_rn(s - noise_std * o, t)  # IEEE division, as torch's (not Triton's default)
    if STEP:  # the Euler step s + alpha v, one rounding as torch's add (a + alpha * b, an FMA)
        v = tl.fma(v, alpha, s)
    tl.store(out_ptr + tok * D + col, v, mask=mask)


def head_velocity(
    state: Tensor,
    rows: Tensor,
    t: Tensor,
    *,
    noise_std: float,
    channels: int,
    patch: int,
    cell: int,
    euler_steps: int | None = None,
) -> Tensor:
    """``(state - noise_std · residual) / max(t, 1e-3)``, float32 [K, channels · patch²], where
    the residual is the head's last layer's output ``rows`` [K · (patch/cell)², channels ·
    cell²] (contiguous: one row a cell of a token, channel-major within it) read in patch
    order, the pixel shuffle done by the addressing. ``t``: one time, [1]. torch's
    ``torch.add(state, residual, alpha=-noise_std).div_(t)`` to the bit where noise_std is a
    power of two (the product is exact). With ``euler_steps`` N, the state after one Euler
    step of an N-step flow instead, ``state - velocity / N`` (``base.euler_update``'s add, one
    rounding), so the velocity is never written nor read again."""
    d = channels * patch * patch
    g = patch // cell
    if patch % cell:
        raise ValueError(f"head_velocity: cell={cell} does not divide patch={patch}")
    if state.dim() != 2 or state.shape[1] != d or not state.is_contiguous():
        raise ValueError(
            f"head_velocity: state has shape {tuple(state.shape)} (strides {state.stride()}), "
            f"not contiguous [K, {d}]"
        )
    k = state.shape[0]
    want = (k * g * g, channels * cell * cell)
    if tuple(rows.shape) != want or not rows.is_contiguous():
        raise ValueError(
            f"head_velocity: rows have shape {tuple(rows.shape)} (strides {rows.stride()}), "
            f"not contiguous {list(want)}"
        )
    if t.numel() != 1:
        raise ValueError(f"head_velocity: t has {t.numel()} values, not one")
    if euler_steps is not None and euler_steps < 1:
        raise ValueError(f"head_velocity: euler_steps={euler_steps}, not a step count >= 1")
    for name, v in (("rows", rows), ("t", t)):
        if v.device != state.device:
            raise ValueError(f"head_velocity: {name} is on {v.device}, state on {state.device}")
    out = torch.empty((k, d), dtype=torch.float32, device=state.device)
    if k == 0:
        return out
    with on_device_of(state):
        _velocity_kernel[(k, triton.cdiv(d, _CELL_BLOCK))](
            state,
            rows,
            t,
            out,
            d,
            float(noise_std),
            -1.0 / (euler_steps or 1),
            C=channels,
            P=patch,
            CELL=cell,
            STEP=euler_steps is not None,
            BLOCK=_CELL_BLOCK,
            num_warps=4,
        )
    return out
