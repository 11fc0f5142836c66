"""Tokens of a window: patchify/unpatchify, gather/scatter of kept tokens, window partitions.

A token is a p x p patch of the (padded) upsampled frames. Tokens are numbered in (t, y, x)
raster order over the token grid [T, Hp, Wp]; a keep set is a sorted index vector into that order.
Everything here is plain torch on whatever device the tensors live on, so the same code serves
the CPU, CUDA and the ONNX export's preprocessing; only the gather of kept tokens has a Triton
kernel of its own on CUDA (:mod:`vs_skipsr.tokens_triton`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from .optional import optional_module, triton_module, works_here

__all__ = [
    "BUCKET_GROWTH",
    "Partition",
    "add_to_tokens",
    "bucket_partitions",
    "bucket_size",
    "bucket_tokens",
    "build_partition",
    "gather_patches",
    "kept_bucket",
    "kept_buckets",
    "pad_to_grid",
    "padded_tokens",
    "padded_windows",
    "patchify",
    "token_coords",
    "token_grid",
    "token_view",
    "triton_gather_works",
    "unpatchify",
    "window_grid",
    "window_partitions",
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


def token_grid(frames: int, height: int, width: int, *, patch: int) -> tuple[int, int, int]:
    """The token grid (T, Hp, Wp) of ``frames`` frames of ``height`` x ``width`` pixels,
    padded up to whole tokens as :func:`pad_to_grid` pads them: the grid a window runs on,
    known before it runs (the filter readies the runner for it)."""
    return (frames, -(-height // patch), -(-width // patch))


def token_view(frames: Tensor, *, patch: int) -> Tensor:
    """[T, C, H, W] (H, W multiples of patch) -> [T, Hp, Wp, C, p, p], a view of the same
    memory: token (t, y, x) is ``view[t, y, x]``, to read or write in place."""
    t, c, h, w = frames.shape
    if h % patch or w % patch:
        raise ValueError(
            f"token_view: frames {tuple(frames.shape)} are not whole {patch}-px tokens"
        )
    # only splits of dimensions: a view exists for any strides (a crop, channels last)
    x = frames.view(t, c, h // patch, patch, w // patch, patch)  # [T, C, Hp, p, Wp, p]
    return x.permute(0, 2, 4, 1, 3, 5)


def patchify(frames: Tensor, *, patch: int) -> Tensor:
    """[T, C, H, W] (H, W multiples of patch) -> [T*Hp*Wp, C*p*p] in (t, y, x) order."""
    t, c, h, w = frames.shape
    return token_view(frames.contiguous(), patch=patch).reshape(
        t * (h // patch) * (w // patch), c * patch * patch
    )


def gather_patches(
    frames: Tensor,
    coords: Tensor,
    *,
    patch: int,
    halo: int = 0,
    dtype: torch.dtype | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """The p x p patches of the tokens at ``coords`` [K, 3] ((t, y, x) on the token grid of
    ``frames`` [T, C, H, W]), each with ``halo`` pixels of its surroundings: [K, C*(p+2h)²],
    in ``dtype`` (the frames' if None): the SR net's own, so the patches are written once in
    what it reads rather than gathered in float32 and cast. With ``out`` ([K, C*(p+2h)²], of
    ``dtype``) they are written there (on CUDA by the kernel itself: a captured graph's static
    input, no copy) and ``out`` is returned.

    The frame border is replicated into the halo, as :func:`pad_to_grid` pads: rows and
    columns past the border are clamped to it. What reads the patches fastest differs by
    device. On CUDA one Triton kernel (:mod:`vs_skipsr.tokens_triton`, where Triton works)
    computes each token's clamped rows and columns and writes its patch in ``dtype``. Without
    it, one flat index of every pixel (:func:`_gather_flat`; H200, 20 x 1088 x 1920, 17% kept,
    0.82 ms against 1.23 ms for the unfolded padded copy before, seventeenth session); on the
    CPU (2 cores, 5 x 368 x 640, 31% kept) rows of a copy padded in width only
    (:func:`_gather_rows`), 3.8 ms against 5.0, where the flat index's int64 offsets took 20
    ms to build. ``scripts/bench_tokens.py`` times them."""
    k, c = coords.shape[0], frames.shape[1]
    side = patch + 2 * halo
    dtype = frames.dtype if dtype is None else dtype
    if out is not None and (tuple(out.shape) != (k, c * side * side) or out.dtype != dtype):
        raise ValueError(
            f"gather_patches: out is {out.dtype} {tuple(out.shape)}, not {dtype} "
            f"{(k, c * side * side)}"
        )
    if k == 0:
        return frames.new_empty(0, c * side * side, dtype=dtype) if out is None else out
    if frames.device.type == "cuda" and triton_gather_works(frames.device):
        gather = triton_module("vs_skipsr.tokens_triton").gather_patches
        return gather(frames, coords, patch=patch, halo=halo, dtype=dtype, out=out)
    if halo == 0:
        patches = token_view(frames, patch=patch)[tuple(coords.unbind(1))]
    elif frames.device.type == "cpu":
        patches = _gather_rows(frames, coords, patch=patch, halo=halo)
    else:
        patches = _gather_flat(frames, coords, patch=patch, halo=halo)
    patches = patches.reshape(k, c * side * side)
    if out is None:
        return patches.to(dtype)
    return out.copy_(patches)


@cache
def triton_gather_works(device: torch.device) -> bool:
    """Whether :mod:`vs_skipsr.tokens_triton`'s gather runs on ``device`` (CUDA, Triton
    installed) and gives the flat index's bytes, cast as torch casts, for tokens on every
    border of a small window in float32 and both half precisions; once a process and device
    (the gather runs eagerly, outside every captured graph)."""
    if device.type != "cuda" or optional_module("vs_skipsr.tokens_triton") is None:
        return False

    def check() -> None:
        gen = torch.Generator().manual_seed(0)
        frames = torch.rand(2, 3, 48, 64, generator=gen).to(device)  # grid (2, 3, 4)
        coords = token_coords(torch.tensor([0, 3, 5, 8, 11, 12, 23]), grid=(2, 3, 4))
        coords = coords.to(device)
        want = _gather_flat(frames, coords, patch=16, halo=8).reshape(7, -1)
        gather = triton_module("vs_skipsr.tokens_triton").gather_patches
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            got = gather(frames, coords, patch=16, halo=8, dtype=dt)
            if not torch.equal(got, want.to(dt)):
                raise RuntimeError(f"{dt} patches differ from torch's")

    return works_here(check, what="Triton token gather")


@lru_cache(maxsize=64)
def _halo_lines(
    count: int, *, patch: int, halo: int, size: int, stride: int, device: torch.device
) -> Tensor:
    """[count, s]: the pixel rows (or columns) that tokens 0 .. count-1 along one axis cover
    with their halo, clamped to the frame's ``size`` (replicate padding without a padded
    copy), times ``stride``. A table per shape instead of a few launches per window; made on
    the host and copied over synchronously, so any stream may read it at once."""
    offsets = torch.arange(-halo, patch + halo)
    lines = (torch.arange(count)[:, None] * patch + offsets).clamp_(0, size - 1)
    return (lines * stride).to(device)


@lru_cache(maxsize=16)
def _plane_starts(channels: int, *, plane: int, device: torch.device) -> Tensor:
    """[C]: where each channel's plane starts in a frame (see :func:`_halo_lines`)."""
    return (torch.arange(channels) * plane).to(device)


def _gather_flat(frames: Tensor, coords: Tensor, *, patch: int, halo: int) -> Tensor:
    """[K, C, s, s]: every pixel's flat offset into ``frames``, then one 1-D gather."""
    _, c, h, w = frames.shape
    t_i, y_i, x_i = coords.unbind(1)
    dev = frames.device
    rows = _halo_lines(h // patch, patch=patch, halo=halo, size=h, stride=w, device=dev)[y_i]
    cols = _halo_lines(w // patch, patch=patch, halo=halo, size=w, stride=1, device=dev)[x_i]
    planes = (t_i * (c * h * w))[:, None] + _plane_starts(c, plane=h * w, device=dev)  # [K, C]
    flat = planes[:, :, None, None] + rows[:, None, :, None] + cols[:, None, None, :]
    return frames.reshape(-1)[flat]


def _gather_rows(frames: Tensor, coords: Tensor, *, patch: int, halo: int) -> Tensor:
    """[K, C, s, s]: whole s-pixel rows of a copy padded in width only (its columns unfolded
    by token), picked by frame, channel and clamped row."""
    _, c, h, _ = frames.shape
    t_i, y_i, x_i = coords.unbind(1)
    side = patch + 2 * halo
    rows = _halo_lines(h // patch, patch=patch, halo=halo, size=h, stride=1, device=frames.device)
    wide = F.pad(frames, (halo, halo, 0, 0), mode="replicate")  # [T, C, H, W + 2h]
    view = wide.unfold(3, side, patch)  # [T, C, H, Wp, s]
    channels = _plane_starts(c, plane=1, device=frames.device)  # 0 .. C-1
    return view[
        t_i[:, None, None], channels[None, :, None], rows[y_i][:, None, :], x_i[:, None, None]
    ]


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


def add_to_tokens(frames: Tensor, values: Tensor, coords: Tensor, *, patch: int) -> None:
    """Add ``values`` [K, C*p*p] to the tokens at ``coords`` [K, 3] (unique (t, y, x) on the
    token grid) of ``frames`` [T, C, Hg, Wg] in place, clamping what it adds to [0, 1]; every
    other pixel is left as it is. Where SkipSR brings its kept tokens back: the work is K
    tokens', so a window with few kept costs little here (a residual scattered into a zeroed
    window and added to all of it took three full passes over the window whatever was kept).
    Every token of the grid, given in (t, y, x) order, is one in-place add."""
    t, c, h, w = frames.shape
    view = token_view(frames, patch=patch)  # [T, Hp, Wp, C, p, p]
    values = values.view(coords.shape[0], c, patch, patch)
    if coords.shape[0] == t * (h // patch) * (w // patch):  # every token, in order
        view.add_(values.view(view.shape))
        frames.clamp_(0, 1)
        return
    at = tuple(coords.unbind(1))
    view[at] = (view[at] + values).clamp_(0, 1)


# geometric token buckets where the runner wants few shapes (torch on CUDA: captured graphs,
# cuDNN plans): about 9% padding at most, 8 shapes per doubling
BUCKET_GROWTH = 2**0.125


def kept_bucket(k: int, *, total: int) -> int:
    """The token count a window of ``total`` tokens with ``k`` kept runs at, where the runner
    wants few distinct shapes: the geometric bucket (:data:`BUCKET_GROWTH`) of k, never above
    ``total``; 0 for 0."""
    if k <= 0:
        return 0
    return min(bucket_size(k, growth=BUCKET_GROWTH), total)


def kept_buckets(total: int) -> list[int]:
    """Every count :func:`kept_bucket` can give a window of ``total`` tokens, ascending: the
    shapes a runner that captures per shape meets over a whole clip, so it can capture them
    all before the first window instead of one by one in the middle of a run."""
    out: list[int] = []
    k = 1
    while k <= total:
        b = kept_bucket(k, total=total)
        out.append(b)
        k = b + 1
    return out


def bucket_size(
    k: int,
    *,
    buckets: tuple[int, ...] | None = None,
    multiple: int = 256,
    growth: float | None = None,
) -> int:
    """The token count a compiled graph is built for: the smallest bucket >= k.

    Without explicit buckets, k rounds up to a multiple of ``multiple``. With ``growth`` the
    buckets above ``multiple`` are geometric instead, multiple * growth^j rounded up to 64,
    so a keep set that wanders over a wide range of counts meets a few dozen shapes, not
    hundreds, for at most (growth - 1) + 64 growth / k of padding.
    """
    if buckets:
        for b in sorted(buckets):
            if b >= k:
                return b
        return k
    if growth is None or k <= multiple:
        return max(multiple, -(-k // multiple) * multiple)
    j = math.ceil(math.log(k / multiple, growth) - 1e-9)
    b = -(-math.ceil(multiple * growth**j - 1e-6) // 64) * 64
    return b if b >= k else -(-k // 64) * 64


@dataclass(frozen=True)
class Partition:
    """Kept tokens grouped into 3D attention windows, in two equivalent forms.

    ``order`` [K] with ``cu_seqlens`` [nW+1] is the packed form for variable-length attention
    kernels: ``order`` lists kept tokens window by window, and every window of the grid has a
    segment, empty ones too, so its shape depends on the grid only (no host sync to build it,
    and a CUDA graph sees the same shapes for any keep set). ``part`` [nW', L] (int64 indices
    into the kept tokens, -1 as padding; non-empty windows only, L the longest) is the
    exportable form (ONNX, TensorRT, CPU); it is built on first use, since its shape needs the
    counts on the host. Tokens with ``index >= valid`` (bucket padding) belong to no window.
    """

    order: Tensor  # [Kv] int64
    cu_seqlens: Tensor  # [nW+1] int32
    max_len: int
    padded: Tensor | None = None  # [nW', L] int64, -1 = padding (see ``part``)
    # the grid's attention windows, where cu_seqlens holds bucket padding's segments after
    # theirs (a partition made padded: bucket_tokens); None: one segment per window
    grid_windows: int | None = None

    @property
    def windows(self) -> int:
        """Attention windows of the grid (segments of real tokens)."""
        if self.grid_windows is not None:
            return self.grid_windows
        return self.cu_seqlens.shape[0] - 1

    @property
    def part(self) -> Tensor:
        if self.padded is None:
            object.__setattr__(self, "padded", _padded_form(self.order, self.cu_seqlens))
        return self.padded  # type: ignore[return-value]

    @property
    def inverse(self) -> Tensor | None:
        """Where each of the K rows sits in ``order``, when ``order`` covers all K rows (set
        by :meth:`cover`); attention then gathers its output back instead of scattering it
        into zeros in every block."""
        return self.__dict__.get("_inverse")

    def padded_to(
        self, *, tokens: int, windows: int, window_volume: int, with_part: bool = True
    ) -> Partition:
        """:func:`pad_partition` of this partition, kept for the next call with the same
        arguments: the N flow steps of a window pass the same partitions N times, and each
        padding is a dozen small launches on the host."""
        args = (tokens, windows, window_volume, with_part)
        memo = self.__dict__.get("_padded_to")
        if memo is None or memo[0] != args:
            padded = pad_partition(
                self,
                tokens=tokens,
                windows=windows,
                window_volume=window_volume,
                with_part=with_part,
            )
            memo = (args, padded)
            object.__setattr__(self, "_padded_to", memo)
        return memo[1]

    def cover(self, rows: int) -> Partition:
        """Record the inverse permutation if ``order`` lists all ``rows`` rows; once per
        forward, shared by every block that uses this partition."""
        if self.order.shape[0] == rows and "_inverse" not in self.__dict__:
            inv = torch.empty_like(self.order)
            inv[self.order] = torch.arange(rows, device=self.order.device)
            object.__setattr__(self, "_inverse", inv)
        return self


def _padded_form(order: Tensor, cu: Tensor) -> Tensor:
    """[nW', L] from the packed form: one row per non-empty window, -1 after its tokens."""
    device = order.device
    counts = (cu[1:] - cu[:-1]).long()  # [nW]
    rows = torch.nonzero(counts).squeeze(1)  # non-empty windows
    counts = counts[rows]
    n_w = rows.shape[0]
    length = max(1, int(counts.max()) if n_w else 0)
    k = order.shape[0]
    starts = torch.repeat_interleave(cu[:-1].long()[rows], counts, output_size=k)  # [K]
    pos = torch.arange(k, device=device) - starts
    row = torch.repeat_interleave(torch.arange(n_w, device=device), counts, output_size=k)
    part = torch.full((max(n_w, 1), length), -1, dtype=torch.long, device=device)
    part[row, pos] = order
    return part


def window_grid(
    grid: tuple[int, int, int], *, window: tuple[int, int, int], shift: tuple[int, int, int]
) -> tuple[int, int, int]:
    """Attention windows along (t, y, x) of a partition with offset ``shift``."""
    return tuple(-(-(grid[i] + shift[i]) // window[i]) for i in range(3))  # type: ignore[return-value]


def build_partition(
    coords: Tensor,
    *,
    grid: tuple[int, int, int],
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    valid: int | None = None,
    static_len: bool = False,
) -> Partition:
    """Group kept tokens by the 3D window their original (t, y, x) falls in.

    Windows tile the token grid with an offset of ``shift`` (Swin-style alternation: the
    shifted partition straddles the borders of the regular one). Edge windows are simply
    smaller, so no cyclic roll and no cross-edge masking is needed. Only the first ``valid``
    rows of ``coords`` are real tokens; the rest are bucket padding and join no window.
    ``static_len`` sets ``max_len`` to the window volume instead of the longest window,
    which would cost a device-to-host sync (varlen kernels only need an upper bound).
    """
    k = coords.shape[0] if valid is None else valid
    device = coords.device
    c = coords[:k]
    per_axis = window_grid(grid, window=window, shift=shift)
    _, n_y, n_x = per_axis
    n_w = math.prod(per_axis)
    wt, wy, wx = ((c[:, i] + shift[i]) // window[i] for i in range(3))
    win = (wt * n_y + wy) * n_x + wx  # [K] window id in [0, nW)
    order = torch.argsort(win, stable=True)  # [K]
    counts = torch.zeros(n_w, dtype=torch.long, device=device)
    counts.index_add_(0, win, torch.ones_like(win))  # no bincount: it syncs for its size
    cu = torch.zeros(n_w + 1, dtype=torch.int32, device=device)
    cu[1:] = torch.cumsum(counts, 0)
    longest = int(counts.max()) if k and not static_len else 0  # the sync static_len avoids
    max_len = math.prod(window) if static_len else longest
    return Partition(order=order, cu_seqlens=cu, max_len=max_len)


def window_partitions(
    coords: Tensor,
    *,
    grid: tuple[int, int, int],
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    valid: int | None = None,
    static_len: bool = False,
) -> tuple[Partition, Partition]:
    """The pair the SR net alternates between: the regular partition and the one offset by
    ``shift`` (see :func:`build_partition` for the arguments)."""
    return tuple(  # type: ignore[return-value]
        build_partition(
            coords, grid=grid, window=window, shift=s, valid=valid, static_len=static_len
        )
        for s in ((0, 0, 0), shift)
    )


def padded_tokens(
    index: Tensor,
    *,
    bucket: int,
    grid: tuple[int, int, int],
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    static_len: bool = False,
) -> tuple[Tensor, Tensor, tuple[Partition, Partition]]:
    """Kept indices [K] padded to ``bucket`` rows (the padding points at token 0 and joins no
    window), their (t, y, x) coords [bucket, 3] and the partition pair over them: what an SR
    call of a bucketed kept count needs besides the pixels."""
    k = int(index.numel())
    padded = F.pad(index, (0, bucket - k))
    coords = token_coords(padded, grid=grid)
    parts = window_partitions(
        coords, grid=grid, window=window, shift=shift, valid=k, static_len=static_len
    )
    return padded, coords, parts


def padded_windows(grid_windows: int, *, tokens: int, window_volume: int, multiple: int) -> int:
    """Segments of a partition padded for a CUDA graph: the grid's windows plus room for
    ``tokens`` rows of bucket padding in window-volume chunks, rounded up to ``multiple``. An
    upper bound that depends on the grid and the bucket, never on the keep set, so a graph
    serves every keep set of its bucket."""
    return bucket_size(grid_windows + -(-tokens // window_volume), multiple=multiple)


def bucket_tokens(
    keep: Tensor,
    *,
    bucket: int,
    grid: tuple[int, int, int],
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    window_multiple: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The kept tokens of ``keep`` [T, Hp, Wp] bool at ``bucket`` rows (at least as many as
    are kept): the same padded index, coords and partition pair, padded as
    :func:`pad_partition` pads them for ``window_multiple``, as :func:`padded_tokens` makes
    from the kept indices, but from static shapes with no host sync (the kept count stays on
    the device). So one CUDA graph per bucket makes them: made eagerly they were ~40 launches
    a window, and each hands Python's GIL back and forth with VapourSynth's frame threads
    (H200, 8 steps on bikes: 20.7 ms of wall and 3.0 ms of CPU a window, profile_filter.py).

    Flat, for :class:`~vs_skipsr.backends.cuda_graphs.StaticGraph`: (index, coords, order,
    cu_seqlens of the regular partition, order, cu_seqlens of the shifted one);
    :func:`bucket_partitions` makes the pair of them."""
    flat = keep.reshape(-1)
    total = flat.shape[0]
    dev = flat.device
    ranks = torch.cumsum(flat, 0)  # [total]: kept tokens up to and with each
    valid = ranks[-1]  # the kept count, on the device
    # row r holds the (r+1)-th kept token; rows past the kept count point at token 0
    index = torch.searchsorted(ranks, torch.arange(1, bucket + 1, device=dev))
    index = torch.where(index < total, index, 0)
    coords = token_coords(index, grid=grid)
    out = [index, coords]
    volume = math.prod(window)
    rows = torch.arange(bucket, device=dev)
    for s in ((0, 0, 0), shift):
        per_axis = window_grid(grid, window=window, shift=s)
        _, n_y, n_x = per_axis
        n_w = math.prod(per_axis)
        wt, wy, wx = ((coords[:, i] + s[i]) // window[i] for i in range(3))
        win = torch.where(rows < valid, (wt * n_y + wy) * n_x + wx, n_w)  # padding: after all
        order = torch.argsort(win, stable=True)  # padding rows last, in row order
        counts = torch.zeros(n_w + 1, dtype=torch.long, device=dev)
        counts.index_add_(0, win, torch.ones_like(win))
        segments = padded_windows(
            n_w, tokens=bucket, window_volume=volume, multiple=window_multiple
        )
        # zeros, not cu[0] = 0: a number set into a CUDA tensor is copied from the host,
        # which a graph capture refuses
        cu = torch.zeros(segments + 1, dtype=torch.int32, device=dev)
        cu[1 : n_w + 1] = torch.cumsum(counts[:n_w], 0)
        # the padding in window-volume chunks, then empty segments up to the bound
        chunk = torch.arange(1, segments - n_w + 1, device=dev) * volume
        cu[n_w + 1 :] = (valid + chunk).clamp_(max=bucket)
        out += [order, cu]
    return tuple(out)  # type: ignore[return-value]


def bucket_partitions(
    flat: tuple[Tensor, ...],
    *,
    grid: tuple[int, int, int],
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
) -> tuple[Partition, Partition]:
    """The partition pair of :func:`bucket_tokens`'s output (its last four tensors)."""
    volume = math.prod(window)
    return tuple(  # type: ignore[return-value]
        Partition(
            order=flat[i],
            cu_seqlens=flat[i + 1],
            max_len=volume,
            grid_windows=math.prod(window_grid(grid, window=window, shift=s)),
        )
        for i, s in ((2, (0, 0, 0)), (4, shift))
    )


def pad_partition(
    p: Partition, *, tokens: int, windows: int, window_volume: int, with_part: bool = True
) -> Partition:
    """The same partition with static shapes, for CUDA graphs and engine profiles.

    Bucket-padding tokens (indices ``len(p.order)`` .. ``tokens``-1) are packed into extra
    segments of at most ``window_volume`` tokens, so the packed form covers every row exactly
    once; the rest of the ``windows`` slots are empty segments. The padded form (built only
    ``with_part``: varlen attention never reads it) grows to [windows, window_volume] with -1.
    Real tokens' windows are unchanged, so padding changes no real token's result.
    """
    dev = p.order.device
    valid = p.order.shape[0]
    n_pad = tokens - valid
    n_chunks = -(-n_pad // window_volume)
    n_w = p.cu_seqlens.shape[0] - 1
    if n_w + n_chunks > windows or p.max_len > window_volume:
        raise ValueError(
            f"partition of {n_w} windows (+{n_chunks} padding) x {p.max_len} does not fit "
            f"{windows} x {window_volume}"
        )
    if not n_pad and n_w == windows and p.max_len == window_volume and not with_part:
        return p  # padded already (bucket_tokens): padding it again gives the same values
    order = torch.cat((p.order, torch.arange(valid, tokens, device=dev)))
    # segment ends made on the device: a host list would be a pageable copy per call
    ends = valid + (torch.arange(1, n_chunks + 1, device=dev) * window_volume).clamp_(max=n_pad)
    cu = torch.cat((p.cu_seqlens, ends.to(torch.int32)))
    cu = torch.cat((cu, cu[-1:].expand(windows + 1 - cu.shape[0])))
    part = None
    if with_part:
        src = p.part
        part = torch.full((windows, window_volume), -1, dtype=torch.long, device=dev)
        part[: src.shape[0], : src.shape[1]] = src
    return Partition(order=order, cu_seqlens=cu, max_len=window_volume, padded=part)
