"""The rotary rotation of q and k as one Triton kernel, for the Triton window attention.

``sr.apply_rope`` rotates q and k in four torch kernels with a float32 product in between:
~5.4 KB moved a token a block for the shipped model (6 heads of 32), a fifth of its GPU time
at 8 steps on an H200 (20-frame 1920x816 windows). Rotating inside the attention kernel
instead cost more than it saved: each query tile rotated every key of its window again and
loaded their float32 tables, and the attention went from 10.6 to 27.0 ms a dense 8-step
flow (H200, twentieth session). Here each q and k value is read once, rotated in float32
and written once, rounded as ``apply_rope`` rounds it: ~1.7 KB a token.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..triton_launch import on_device_of

__all__ = ["rotate_qk"]

# values of q or k a program holds at once: 4 tokens of the shipped model's 6 heads of 32 (in
# a block of 256), one token of the SeedVR2-3B shape's 20 heads of 128 (a block of 4096). For
# the shipped model 4 tokens on 2 warps took 80 us a call where 8 on 4 took 128 (the same
# bytes; 16 or 32 tokens on 2-8 warps 217-489 us): H200, q and k of a dense 20-frame 1920x816
# window, scratch sweep of the twenty-third session (reports/bench_gpu_s23.log, call 5)
TILE = 1024


@triton.jit
def _rotate_rows(
    x_ptr, out_ptr, cos_ptr, sin_ptr, rows, row_ok, s_t, s_h, sc_t, H, D: tl.constexpr, BLOCK_E
):
    """One of q, k: the rows' H x D values, flattened, rotated and written."""
    e = tl.arange(0, BLOCK_E)
    half: tl.constexpr = D // 2
    head = e // D
    d = e % D
    j = d % half
    mask = row_ok[:, None] & (e < H * D)[None, :]
    at = x_ptr + rows[:, None] * s_t + (head * s_h)[None, :]
    x = tl.load(at + d[None, :], mask=mask, other=0.0)
    xp = tl.load(at + ((d + half) % D)[None, :], mask=mask, other=0.0)
    c = tl.load(cos_ptr + rows[:, None] * sc_t + j[None, :], mask=mask, other=0.0)
    sn = tl.load(sin_ptr + rows[:, None] * sc_t + j[None, :], mask=mask, other=0.0)
    sign = tl.where(d < half, -1.0, 1.0)
    rotated = x.to(tl.float32) * c + sign[None, :] * xp.to(tl.float32) * sn
    tl.store(
        out_ptr + rows[:, None] * (2 * H * D) + e[None, :],
        rotated.to(out_ptr.dtype.element_ty),
        mask=mask,
    )


@triton.jit
def _rotate_kernel(
    q_ptr,
    k_ptr,
    out_ptr,
    cos_ptr,
    sin_ptr,
    n_rows,
    sq_t,
    sq_h,
    sk_t,
    sk_h,
    sc_t,
    H: tl.constexpr,
    D: tl.constexpr,
    BLOCK_E: tl.constexpr,
    ROWS: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    _rotate_rows(q_ptr, out_ptr, cos_ptr, sin_ptr, rows, row_ok, sq_t, sq_h, sc_t, H, D, BLOCK_E)
    _rotate_rows(
        k_ptr, out_ptr + H * D, cos_ptr, sin_ptr, rows, row_ok, sk_t, sk_h, sc_t, H, D, BLOCK_E
    )


def rotate_qk(q: Tensor, k: Tensor, rope: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """q and k [K, H, D] (any strides with the last dimension contiguous) rotated by the
    net's rotary tables (cos, sin [K, 1, D/2] or [K, D/2], float32): what ``apply_rope``
    gives, element d of a row x[d] cos[j] - x[d + D/2] sin[j] in the first half and x[d] cos[j]
    + x[d - D/2] sin[j] in the second (j = d mod D/2), in float32, rounded once. Both come
    back as views of one new [K, 2, H, D] tensor."""
    n_k, heads, dim = q.shape
    if k.shape != q.shape or k.dtype != q.dtype or k.device != q.device:
        raise ValueError(
            f"rotate_qk: k of {tuple(k.shape)} {k.dtype} on {k.device}, q of "
            f"{tuple(q.shape)} {q.dtype} on {q.device}"
        )
    if dim % 2:
        raise ValueError(f"rotate_qk: head size {dim} is odd (rotary positions rotate pairs)")
    for name, x in (("q", q), ("k", k)):
        if x.stride(-1) != 1:
            raise ValueError(f"rotate_qk: {name}'s last dimension is not contiguous")
    cos, sin = (t.reshape(t.shape[0], -1) for t in rope)
    if cos.shape != (n_k, dim // 2) or sin.shape != cos.shape:
        raise ValueError(
            f"rotate_qk: rotary tables of {tuple(rope[0].shape)} and {tuple(rope[1].shape)} "
            f"for {n_k} rows of heads of {dim}: expected [{n_k}, 1, {dim // 2}]"
        )
    if cos.dtype != torch.float32 or sin.dtype != torch.float32:
        raise ValueError(f"rotate_qk: rotary tables of {cos.dtype}, not float32")
    if cos.stride(1) != 1 or sin.stride() != cos.stride():
        raise ValueError("rotate_qk: rotary tables with strides of their own")
    out = torch.empty((n_k, 2, heads, dim), dtype=q.dtype, device=q.device)
    block_e = triton.next_power_of_2(heads * dim)
    rows = max(1, TILE // block_e)
    if n_k:
        with on_device_of(q):
            _rotate_kernel[(triton.cdiv(n_k, rows),)](
                q,
                k,
                out,
                cos,
                sin,
                n_k,
                q.stride(0),
                q.stride(1),
                k.stride(0),
                k.stride(1),
                cos.stride(0),
                H=heads,
                D=dim,
                BLOCK_E=block_e,
                ROWS=rows,
                num_warps=2 if block_e * rows <= 1024 else 8,
            )
    return out[:, 0], out[:, 1]
