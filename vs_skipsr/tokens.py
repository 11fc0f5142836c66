"""Tokens of a window: patchify/unpatchify, gather/scatter of kept tokens, window partitions.

A token is a p x p patch of the (padded) upsampled frames. Tokens are numbered in (t, y, x)
raster order over the token grid [T, Hp, Wp]; a keep set is a sorted index vector into that order.
Everything here is plain torch on whatever device the tensors live on, so the same code serves
the CPU, CUDA and the ONNX export's preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Partition",
    "bucket_size",
    "build_partition",
    "pad_to_grid",
    "patchify",
    "scatter_tokens",
    "token_coords",
    "unpatchify",
]


def pad_to_grid(frames: Tensor, *, patch: int) -> Tensor:
    """Replicate-pad [T, C, H, W] on the bottom/right to multiples of ``patch``.

    Replicate, not zeros: a zero border would read as a strong edge to the SR net and the mask.
    """
    _, _, h, w = frames.shape
    ph, pw = (-h) % patch, (-w) % patch
    if ph == 0 and pw == 0:
        return frames
    return F.pad(frames, (0, pw, 0, ph), mode="replicate")


def patchify(frames: Tensor, *, patch: int) -> Tensor:
    """[T, C, H, W] (H, W multiples of patch) -> [T*Hp*Wp, C*p*p] in (t, y, x) order."""
    t, c, h, w = frames.shape
    hp, wp = h // patch, w // patch
    x = frames.reshape(t, c, hp, patch, wp, patch)  # [T, C, Hp, p, Wp, p]
    x = x.permute(0, 2, 4, 1, 3, 5)  # [T, Hp, Wp, C, p, p]
    return x.reshape(t * hp * wp, c * patch * patch)


def unpatchify(tokens: Tensor, *, grid: tuple[int, int, int], patch: int) -> Tensor:
    """[T*Hp*Wp, C*p*p] -> [T, C, Hp*p, Wp*p]; the inverse of :func:`patchify`."""
    t, hp, wp = grid
    c = tokens.shape[1] // (patch * patch)
    x = tokens.reshape(t, hp, wp, c, patch, patch)  # [T, Hp, Wp, C, p, p]
    x = x.permute(0, 3, 1, 4, 2, 5)  # [T, C, Hp, p, Wp, p]
    return x.reshape(t, c, hp * patch, wp * patch)


def token_coords(index: Tensor, *, grid: tuple[int, int, int]) -> Tensor:
    """Flat token indices [K] -> their original (t, y, x) on the grid, [K, 3] int64."""
    _, hp, wp = grid
    t = index // (hp * wp)
    rem = index - t * (hp * wp)
    y = rem // wp
    x = rem - y * wp
    return torch.stack((t, y, x), dim=1)


def scatter_tokens(values: Tensor, index: Tensor, *, total: int) -> Tensor:
    """Kept-token values [K, D] placed at ``index`` in zeros [total, D]: skipped tokens stay 0."""
    out = values.new_zeros(total, values.shape[1])
    out[index] = values
    return out


def bucket_size(k: int, *, buckets: tuple[int, ...] | None = None, multiple: int = 256) -> int:
    """The token count a compiled graph is built for: the smallest bucket >= k.

    Without explicit buckets, k rounds up to a multiple of ``multiple`` (so graphs are reused
    across windows whose kept counts differ a little).
    """
    if buckets:
        for b in sorted(buckets):
            if b >= k:
                return b
        return k
    return max(multiple, -(-k // multiple) * multiple)


@dataclass(frozen=True)
class Partition:
    """Kept tokens grouped into 3D attention windows, in two equivalent forms.

    ``part`` [nW, L] (int64 indices into the kept tokens, -1 as padding) is the exportable
    form (ONNX, TensorRT, CPU). ``order`` [K] with ``cu_seqlens`` [nW+1] is the packed form
    for variable-length attention kernels: ``order`` lists kept tokens window by window.
    Tokens with ``index >= valid`` (bucket padding) belong to no window.
    """

    part: Tensor  # [nW, L] int64, -1 = padding
    order: Tensor  # [Kv] int64
    cu_seqlens: Tensor  # [nW+1] int32
    max_len: int


def build_partition(
    coords: Tensor,
    *,
    grid: tuple[int, int, int],
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    valid: int | None = None,
) -> Partition:
    """Group kept tokens by the 3D window their original (t, y, x) falls in.

    Windows tile the token grid with an offset of ``shift`` (Swin-style alternation: the
    shifted partition straddles the borders of the regular one). Edge windows are simply
    smaller, so no cyclic roll and no cross-edge masking is needed. Only the first ``valid``
    rows of ``coords`` are real tokens; the rest are bucket padding and join no window.
    """
    k = coords.shape[0] if valid is None else valid
    device = coords.device
    c = coords[:k]
    n_y, n_x = (-(-(grid[i] + shift[i]) // window[i]) for i in (1, 2))
    wt, wy, wx = ((c[:, i] + shift[i]) // window[i] for i in range(3))
    win = (wt * n_y + wy) * n_x + wx  # [K] window id, not compact
    order = torch.argsort(win, stable=True)  # [K]
    sorted_win = win[order]
    _, counts = torch.unique_consecutive(sorted_win, return_counts=True)  # [nW]
    n_w = counts.shape[0]
    cu = torch.zeros(n_w + 1, dtype=torch.int32, device=device)
    cu[1:] = torch.cumsum(counts, 0)
    max_len = int(counts.max()) if n_w else 0
    length = max(1, max_len)
    # position of each sorted token inside its window
    starts = torch.repeat_interleave(cu[:-1].long(), counts)  # [K]
    pos = torch.arange(k, device=device) - starts
    row = torch.repeat_interleave(torch.arange(n_w, device=device), counts)
    part = torch.full((max(n_w, 1), length), -1, dtype=torch.long, device=device)
    part[row, pos] = order
    return Partition(part=part, order=order, cu_seqlens=cu, max_len=max_len)


def pad_partition(p: Partition, *, tokens: int, windows: int, window_volume: int) -> Partition:
    """The same partition with static shapes, for CUDA graphs and engine profiles.

    Bucket-padding tokens (indices ``len(p.order)`` .. ``tokens``-1) are packed into extra
    segments of at most ``window_volume`` tokens, so the packed form covers every row exactly
    once; the rest of the ``windows`` slots are empty segments. The padded form grows to
    [windows, window_volume] with -1. Real tokens' windows are unchanged, so padding changes
    no real token's result.
    """
    dev = p.order.device
    valid = p.order.shape[0]
    n_pad = tokens - valid
    chunks = [window_volume] * (n_pad // window_volume)
    if n_pad % window_volume:
        chunks.append(n_pad % window_volume)
    n_w = p.cu_seqlens.shape[0] - 1
    if n_w + len(chunks) > windows or p.max_len > window_volume:
        raise ValueError(
            f"partition of {n_w} windows (+{len(chunks)} padding) x {p.max_len} does not fit "
            f"{windows} x {window_volume}"
        )
    order = torch.cat((p.order, torch.arange(valid, tokens, device=dev)))
    ends = valid + torch.cumsum(torch.tensor(chunks, dtype=torch.int64), 0).to(dev, torch.int32)
    cu = torch.cat((p.cu_seqlens, ends))
    cu = torch.cat((cu, cu[-1:].expand(windows + 1 - cu.shape[0])))
    part = torch.full((windows, window_volume), -1, dtype=torch.long, device=dev)
    part[: p.part.shape[0], : p.part.shape[1]] = p.part
    return Partition(part=part, order=order, cu_seqlens=cu, max_len=window_volume)
