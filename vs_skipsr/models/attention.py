"""Window attention over kept tokens only, in three forms that compute the same numbers.

Every form takes q, k, v as [K, H, D] (one row per kept token, rotary positions already
applied) and returns [K, H, D]. A token attends only to kept tokens of its own window.

- :func:`padded_window_attention`: windows laid out as [nW, L] with a key mask. Exports to
  ONNX (ScatterND, Gather, MatMul+Softmax) and runs anywhere; costs L_max per
  window.
- :func:`varlen_window_attention`: tokens sorted window by window and handed to torch's
  variable-length flash attention (CUDA, fp16/bf16): no padding work at all.
- :func:`tiled_window_attention`: one Triton kernel that reads the kept tokens where they
  are and tiles each window by its own length (CUDA, half precision; see
  ``attention_triton.py``): no gathers, and a sparse window costs what its tokens cost.
  With :class:`RotatingAttend` (the net's attention wherever the kernel runs) q and k come
  unrotated, and a Triton kernel of its own rotates them first.
- :func:`grouped_window_attention`: the padded form run per group of windows of similar
  length, each padded only to its group's longest (the CPU's eager path: skipping leaves
  windows of very different fill, and one [nW, L_max] layout pays for the fullest).
- :func:`masked_dense_attention`: the slow reference, a [K, K] mask; tests only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..optional import optional_module, triton_module, works_here
from ..tokens import Partition

Attend = Callable[[Tensor, Tensor, Tensor], Tensor]

# Not cuDNN: it builds a new graph on the CPU for every new shape (~7 ms a call, measured on an
# H100), and window counts change with every keep set.
_MASKED_SDPA_BACKENDS = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]

__all__ = [
    "Attend",
    "RotatingAttend",
    "grouped_window_attention",
    "masked_dense_attention",
    "packed_window_attention",
    "padded_window_attention",
    "tiled_window_attention",
    "triton_attention_unavailable",
    "triton_attention_works",
    "varlen_available",
    "varlen_window_attention",
]


def padded_window_attention(q: Tensor, k: Tensor, v: Tensor, part: Tensor) -> Tensor:
    """Attention inside windows given as ``part`` [nW, L] (indices into K, -1 = padding).

    Tokens move into the [nW, L] layout and back through ``slot`` [K], each token's place in
    that layout, so both moves touch every token once. Gathering with every pad aimed at one
    zero row would make the backward (and an accumulating scatter back) serialise on that row
    on a GPU. No NonZero either: TensorRT-RTX parses it only as a plugin.
    """
    n_k, heads, dim = q.shape
    n_w, length = part.shape
    pad = part < 0  # [nW, L]
    flat = torch.where(pad, torch.full_like(part, n_k), part).reshape(-1)  # [nW*L], pad -> K
    slots = n_w * length
    positions = torch.arange(slots, device=part.device)
    # slot of each token; the pads all write row K, which is dropped. Tokens in no window
    # (count-bucket padding) keep the spare slot nW*L, which nothing attends to.
    slot = torch.full((n_k + 1,), slots, dtype=torch.long, device=part.device)
    slot = slot.index_put((flat,), positions)[:n_k]  # [K]

    def to_windows(x: Tensor) -> Tensor:  # [K, H, D] -> [nW, H, L, D], zeros in pads
        xw = x.new_zeros(slots + 1, heads, dim).index_put((slot,), x)[:slots]
        return xw.reshape(n_w, length, heads, dim).transpose(1, 2)

    keep_key = ~pad
    # a window that is all padding (count buckets) attends to its zero rows: finite junk
    # that no token reads, instead of NaN
    keep_key = keep_key | ~keep_key.any(dim=1, keepdim=True)  # [nW, L]
    with sdpa_kernel(_MASKED_SDPA_BACKENDS):
        out = F.scaled_dot_product_attention(
            to_windows(q), to_windows(k), to_windows(v), attn_mask=keep_key[:, None, None, :]
        )  # [nW, H, L, D]
    out = torch.cat((out.transpose(1, 2).reshape(slots, heads, dim), q.new_zeros(1, heads, dim)))
    return out[slot]  # [K, H, D]; tokens in no window get zeros


@dataclass(frozen=True)
class _Group:
    """Windows of one length class: where their tokens sit in K, and back."""

    rows: Tensor  # [n, cap] token rows per window (pads: row 0, a key nobody attends to)
    keep_key: Tensor  # [n, 1, 1, cap] bool, True at real tokens
    src: Tensor  # [m] flat slots in [n * cap] of the group's real tokens
    dst: Tensor  # [m] their rows in K


def _group_layout(partition: Partition) -> tuple[_Group, ...] | None:
    """The groups of :func:`grouped_window_attention` (None: the padded form is cheaper),
    built once a partition: every block and flow step of a window uses the same partitions,
    and building them is ~10 small ops a group, a host sync included, each time."""
    memo = partition.__dict__.get("_groups")
    if memo is not None:
        return memo[0]
    part = partition.part  # [nW, L], each window's tokens first, then -1
    lengths = (part >= 0).sum(dim=1)  # [nW]
    n_w, length = part.shape
    classes = torch.ceil(torch.log2(lengths.clamp_min(1).float())).long()  # [nW]
    caps = (2**classes).clamp(max=length)
    groups: tuple[_Group, ...] | None = None
    if n_w >= 2 and int((caps * caps).sum()) <= 0.75 * n_w * length * length:
        built = []
        for c in torch.unique(classes).tolist():
            pg = part[torch.nonzero(classes == c).squeeze(1), : min(1 << c, length)]  # [n, cap]
            real = pg >= 0
            built.append(
                _Group(
                    rows=pg.clamp_min(0),
                    keep_key=real[:, None, None, :],
                    src=torch.nonzero(real.reshape(-1)).squeeze(1),
                    dst=pg[real],
                )
            )
        groups = tuple(built)
    object.__setattr__(partition, "_groups", (groups,))
    return groups


def grouped_window_attention(q: Tensor, k: Tensor, v: Tensor, partition: Partition) -> Tensor:
    """:func:`padded_window_attention` with windows grouped by length (powers of two), each
    group padded to its own longest window, where that saves at least a quarter of the
    padded layout's attention work; else the padded form itself. Inference only (a token's
    rows are gathered through one row, which a backward pass would serialise on). The
    groups are built on the first call with a partition and reused (:func:`_group_layout`).
    A pad slot reads row 0 as its key and value: masked out, it gets weight exactly 0."""
    groups = _group_layout(partition)
    if groups is None:
        return padded_window_attention(q, k, v, partition.part)
    heads, dim = q.shape[1:]
    out = torch.zeros_like(q)
    for g in groups:
        qw, kw, vw = (x[g.rows].transpose(1, 2) for x in (q, k, v))  # [n, H, cap, D]
        ow = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=g.keep_key)
        out[g.dst] = ow.transpose(1, 2).reshape(-1, heads, dim)[g.src]  # [m, H, D]
    return out


def varlen_available(device: torch.device) -> bool:
    """True where torch's variable-length flash attention can run (CUDA builds that have it)."""
    if device.type != "cuda":
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def varlen_window_attention(q: Tensor, k: Tensor, v: Tensor, partition: Partition) -> Tensor:
    """Packed attention: windows are contiguous runs of ``partition.order``."""
    return packed_window_attention(
        q,
        k,
        v,
        order=partition.order,
        cu_seqlens=partition.cu_seqlens,
        max_len=partition.max_len,
        inverse=partition.inverse,
    )


def packed_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    order: Tensor,
    cu_seqlens: Tensor,
    max_len: int,
    inverse: Tensor | None,
) -> Tensor:
    """:func:`varlen_window_attention` on the partition's tensors (what torch.compile traces)."""
    from torch.nn.attention.varlen import varlen_attn

    out_sorted = varlen_attn(
        q[order], k[order], v[order], cu_seqlens, cu_seqlens, max_len, max_len
    )  # [Kv, H, D]
    if inverse is not None:  # order is a permutation of all K rows: one gather back
        return out_sorted[inverse]
    out = torch.zeros_like(q)
    out[order] = out_sorted
    return out


def tiled_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    partition: Partition,
    *,
    rope: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Packed attention as one Triton kernel (``attention_triton.py``): the numbers of
    :func:`varlen_window_attention` to rounding, without its gathers or its full tiles for
    sparse windows; with ``rope`` (cos, sin tables) q and k come unrotated and one more
    kernel rotates them first (``rope_triton.py``)."""
    if rope is not None:
        q, k = triton_module("vs_skipsr.models.rope_triton").rotate_qk(q, k, rope)
    module = triton_module("vs_skipsr.models.attention_triton")
    return module.tiled_window_attention(q, k, v, partition)


@dataclass(frozen=True)
class RotatingAttend:
    """The Triton attention over one partition, taking q and k before their rotary rotation
    (``rope``: the net's cos, sin tables) and rotating them with a Triton kernel of its own:
    ``apply_rope``'s four torch kernels cost as much GPU time as the attention itself."""

    partition: Partition

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, rope: tuple[Tensor, Tensor]) -> Tensor:
        return tiled_window_attention(q, k, v, self.partition, rope=rope)


def triton_attention_unavailable(
    device: torch.device, dtype: torch.dtype, *, head_dim: int
) -> str | None:
    """Why :func:`tiled_window_attention` cannot run here, or None where it can."""
    if device.type != "cuda":
        return f"it runs on CUDA devices, not {device.type!r}"
    if dtype == torch.float32:
        return "it runs in fp16 or bf16, not fp32"
    module = optional_module("vs_skipsr.models.attention_triton")
    if module is None:
        return "the triton package is not installed"
    if not module.supported(head_dim):
        return f"head size {head_dim} is not a power of two of at least 16"
    return None


@cache
def triton_attention_works(device: torch.device, dtype: torch.dtype, *, head_dim: int) -> bool:
    """Whether the Triton kernel compiles and agrees with the exact attention (the padded
    form in float32) on a small problem here, once a process: the automatic choice takes it
    only then, so a Triton that cannot build for this card (or a bug it meets) costs a log
    line, not a run."""

    def check() -> None:
        from ..tokens import padded_tokens
        from .sr import apply_rope, rope_tables

        gen = torch.Generator().manual_seed(0)
        grid, window = (4, 6, 10), (2, 4, 4)
        keep = torch.rand(grid, generator=gen) < 0.4
        index = torch.nonzero(keep.reshape(-1)).squeeze(1).to(device)
        _, _, parts = padded_tokens(
            index, bucket=index.numel() + 3, grid=grid, window=window, shift=(1, 2, 2)
        )
        q, k, v = (
            torch.randn(index.numel() + 3, 2, head_dim, generator=gen).to(device, dtype)
            for _ in range(3)
        )
        coords = torch.randint(0, 10, (q.shape[0], 3), generator=gen).to(device)
        rope = rope_tables(coords, head_dim, 64.0)
        qr, kr = (apply_rope(x.float(), *rope) for x in (q, k))
        for p in parts:
            for got, want in (
                (tiled_window_attention(q, k, v, p), (q.float(), k.float())),
                (tiled_window_attention(q, k, v, p, rope=rope), (qr, kr)),  # (RotatingAttend)
            ):
                want = padded_window_attention(*want, v.float(), p.part)
                err = float((got.float() - want).abs().max())
                if not err < 0.05:  # rounding of bf16 values within [-5, 5] is ~0.02 at most
                    raise RuntimeError(f"differs from the reference by {err}")

    return works_here(check, what="Triton window attention")


def masked_dense_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """Full attention with an explicit [K, K] boolean mask (rows with no key attend to self)."""
    allowed = allowed | torch.eye(allowed.shape[0], dtype=torch.bool, device=allowed.device)
    qh, kh, vh = (x.transpose(0, 1)[None] for x in (q, k, v))  # [1, H, K, D]
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed[None, None])
    return out[0].transpose(0, 1)  # [K, H, D]
