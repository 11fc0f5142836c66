"""Window attention over kept tokens only, in three forms that compute the same numbers.

Every form takes q, k, v as [K, H, D] (one row per kept token, rotary positions already
applied) and returns [K, H, D]. A token attends only to kept tokens of its own window.

- :func:`padded_window_attention`: windows gathered to [nW, L] with a key mask. Exports to
  ONNX (Gather, Attention/MatMul+Softmax, ScatterND-add) and runs anywhere; costs L_max per
  window.
- :func:`varlen_window_attention`: tokens sorted window by window and handed to torch's
  variable-length flash attention (CUDA, fp16/bf16): no padding work at all.
- :func:`masked_dense_attention`: the slow reference, a [K, K] mask; tests only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tokens import Partition

Attend = Callable[[Tensor, Tensor, Tensor], Tensor]

__all__ = [
    "Attend",
    "masked_dense_attention",
    "padded_window_attention",
    "varlen_available",
    "varlen_window_attention",
]


def padded_window_attention(q: Tensor, k: Tensor, v: Tensor, part: Tensor) -> Tensor:
    """Attention inside windows given as ``part`` [nW, L] (indices into K, -1 = padding)."""
    n_k, heads, dim = q.shape
    pad = part < 0  # [nW, L]
    idx = torch.where(pad, torch.full_like(part, n_k), part)  # [nW, L], pad -> zero row K
    zero = q.new_zeros(1, heads, dim)
    qw = torch.cat((q, zero))[idx].transpose(1, 2)  # [nW, H, L, D]
    kw = torch.cat((k, zero))[idx].transpose(1, 2)  # [nW, H, L, D]
    vw = torch.cat((v, zero))[idx].transpose(1, 2)  # [nW, H, L, D]
    keep_key = ~pad
    # a window that is all padding (count buckets) attends to its zero rows: finite junk that
    # lands in the discarded row K instead of NaN
    keep_key = keep_key | ~keep_key.any(dim=1, keepdim=True)  # [nW, L]
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=keep_key[:, None, None, :])
    out = out.transpose(1, 2).reshape(-1, heads, dim)  # [nW*L, H, D]
    acc = q.new_zeros(n_k + 1, heads, dim)
    acc = acc.index_put((idx.reshape(-1),), out, accumulate=True)  # [K+1, H, D]
    return acc[:n_k]


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
    from torch.nn.attention.varlen import varlen_attn

    order, cu, max_len = partition.order, partition.cu_seqlens, partition.max_len
    out_sorted = varlen_attn(q[order], k[order], v[order], cu, cu, max_len, max_len)  # [Kv, H, D]
    out = torch.zeros_like(q)
    out[order] = out_sorted
    return out


def masked_dense_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """Full attention with an explicit [K, K] boolean mask (rows with no key attend to self)."""
    allowed = allowed | torch.eye(allowed.shape[0], dtype=torch.bool, device=allowed.device)
    qh, kh, vh = (x.transpose(0, 1)[None] for x in (q, k, v))  # [1, H, K, D]
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed[None, None])
    return out[0].transpose(0, 1)  # [K, H, D]
