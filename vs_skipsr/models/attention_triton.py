"""Window attention over kept tokens as one Triton kernel, sized for sparse windows.

torch's variable-length flash attention (:func:`attention.varlen_window_attention`) needs
each window's tokens contiguous, so every block gathers q, k and v into window order and
its output back: four passes over [K, H, D] a block. And it computes every window in tiles
of 128 queries by 128 keys (head size 32), so a window that skipping left with a few dozen
tokens costs most of a full tile. In the eighteenth session's profile of the shipped model
at 8 steps on bikes.mp4 (H200), flash attention and the gathers took up to 0.28 ms of the
skip run's 1.41 ms of GPU work a frame. One block's attention alone (both partitions of a
20-frame 1920x816 window, a CUDA graph replay, H200): torch's form 0.263 ms at 17% kept
against 1.198 dense, 1.29x linear, and 2.44x linear at 6%.

Here one kernel reads q, k and v where they are, through ``order``, and writes each output
row back to its token's row: no gathers. Its tiles are ``block_m`` queries by ``block_n``
keys (32 x 32 for the shipped model's heads of 32, :func:`blocks_for`), packed window after
window: a window costs ceil(len / block_m) query tiles and nothing when it is empty. The
grid has room for the most tiles any keep set of ``K`` tokens over ``nW`` windows can need
(K / block_m + nW), so its shape depends on the bucket alone and a CUDA graph replays it for
any keep set; a tile past the keep set's own count returns at once. Each tile finds its window by a binary search over the windows'
first tiles (``tile_starts``, computed once a partition).

Softmax as flash attention computes it (running maximum and sum in float32, scale
1/sqrt(D)); the products of two half-precision tiles accumulate in float32. So the outputs
differ from torch's kernel by rounding only (tests: within bf16's precision of it on CUDA,
and of the exact attention under ``TRITON_INTERPRET=1`` on the CPU). Same measurement as
above: 0.057 ms at 17% kept against 0.442 dense (0.75x linear), 0.027 ms at 6%.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..tokens import Partition
from ..triton_launch import on_device_of

__all__ = ["blocks_for", "supported", "tile_starts", "tiled_window_attention"]

# Tiles (block_m, block_n, warps) by head size, the fastest of four to six shapes on an H200
# (scripts/bench_attention.py, nineteenth session): heads of 32 (the shipped model, 20-frame
# 1920x816 windows) 32x32x2 at every kept fraction 0.06..1.0; heads of 64 (the large preset's)
# 64x32x4 at every fraction; heads of 128 (the SeedVR2-3B shape, 21-frame 720p windows)
# 64x32x4 from 30% kept up, within 2% of 32x32x2 at 10%. Faster than torch's form at every
# fraction and size measured.
SMALL_HEAD_BLOCKS = (32, 32, 2)
LARGE_HEAD_BLOCKS = (64, 32, 4)


def blocks_for(head_dim: int) -> tuple[int, int, int]:
    """(block_m, block_n, num_warps) for heads of ``head_dim``."""
    return SMALL_HEAD_BLOCKS if head_dim <= 32 else LARGE_HEAD_BLOCKS


@triton.jit
def _window_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    order_ptr,
    cu_ptr,
    starts_ptr,
    n_windows,
    sq_t,
    sq_h,
    sk_t,
    sk_h,
    sv_t,
    sv_h,
    so_t,
    so_h,
    scale_log2,
    D: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    SEARCH: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1)
    if tile >= tl.load(starts_ptr + n_windows):
        return  # beyond this keep set's tiles
    # the window of this tile: the last w with starts[w] <= tile (empty windows share their
    # start with the next one, so the last is the one that has tiles)
    lo = 0
    hi = n_windows
    for _ in tl.static_range(SEARCH):
        mid = (lo + hi) // 2
        go = tl.load(starts_ptr + mid) <= tile
        lo = tl.where(go, mid, lo)
        hi = tl.where(go, hi, mid)
    first = tl.load(cu_ptr + lo)
    end = tl.load(cu_ptr + lo + 1)
    at = first + (tile - tl.load(starts_ptr + lo)) * BM + tl.arange(0, BM)
    in_window = at < end
    rows = tl.load(order_ptr + at, mask=in_window, other=0).to(tl.int64)
    d = tl.arange(0, D)
    q = tl.load(
        q_ptr + rows[:, None] * sq_t + head * sq_h + d[None, :], mask=in_window[:, None], other=0.0
    )
    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, D), tl.float32)
    for n0 in range(first, end, BN):
        at_n = n0 + tl.arange(0, BN)
        valid = at_n < end
        cols = tl.load(order_ptr + at_n, mask=valid, other=0).to(tl.int64)
        k = tl.load(
            k_ptr + cols[:, None] * sk_t + head * sk_h + d[None, :], mask=valid[:, None], other=0.0
        )
        s = tl.dot(q, tl.trans(k)) * scale_log2  # [BM, BN] float32, in log2 units
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_ptr + cols[:, None] * sv_t + head * sv_h + d[None, :], mask=valid[:, None], other=0.0
        )
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(
        o_ptr + rows[:, None] * so_t + head * so_h + d[None, :],
        out.to(o_ptr.dtype.element_ty),
        mask=in_window[:, None],
    )


def supported(head_dim: int) -> bool:
    """Head sizes the kernel takes: a power of two of at least 16 (its tiles' inner size)."""
    return head_dim >= 16 and head_dim & (head_dim - 1) == 0


def tile_starts(cu_seqlens: Tensor, *, block_m: int) -> Tensor:
    """[nW + 1] int32: the first query tile of each window, then the keep set's tile count."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    tiles = torch.div(lengths + (block_m - 1), block_m, rounding_mode="floor")
    starts = torch.zeros_like(cu_seqlens)
    torch.cumsum(tiles, dim=0, dtype=starts.dtype, out=starts[1:])
    return starts


def tiled_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    partition: Partition,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
) -> Tensor:
    """Attention inside ``partition``'s windows for q, k, v [K, H, D] (any strides with the
    last dimension contiguous). Rows of K that ``order`` does not list (bucket padding) come
    out zero. The tile table is kept on the partition: every block and flow step of a
    window uses the same two partitions. Tiles not given are :func:`blocks_for`'s."""
    n_k, heads, dim = q.shape
    if not supported(dim):
        raise ValueError(f"tiled_window_attention: head size {dim} is not a power of two >= 16")
    default_m, default_n, default_warps = blocks_for(dim)
    block_m, block_n = block_m or default_m, block_n or default_n
    num_warps = num_warps or default_warps
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.stride(-1) != 1:
            raise ValueError(f"tiled_window_attention: {name}'s last dimension is not contiguous")
    order, cu = partition.order, partition.cu_seqlens
    key = f"_tile_starts_{block_m}"
    starts = partition.__dict__.get(key)
    if starts is None:
        starts = tile_starts(cu, block_m=block_m)
        object.__setattr__(partition, key, starts)  # a frozen dataclass: memo beside it
    n_windows = cu.shape[0] - 1
    covers_all = order.shape[0] == n_k
    out = (torch.empty if covers_all else torch.zeros)(
        (n_k, heads, dim), dtype=q.dtype, device=q.device
    )
    if order.shape[0] == 0 or n_windows == 0:
        return out
    with on_device_of(q):
        grid = (triton.cdiv(order.shape[0], block_m) + n_windows, heads)
        _window_attention_kernel[grid](
            q,
            k,
            v,
            out,
            order,
            cu,
            starts,
            n_windows,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            v.stride(0),
            v.stride(1),
            out.stride(0),
            out.stride(1),
            math.log2(math.e) / math.sqrt(dim),
            D=dim,
            BM=block_m,
            BN=block_n,
            SEARCH=max(1, n_windows.bit_length()),
            num_warps=num_warps,
        )
    return out
