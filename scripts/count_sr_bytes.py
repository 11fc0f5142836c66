#!/usr/bin/env python3
"""Bytes one SR net call moves, op by op: the small default net is bound by memory traffic
on a GPU, not by its matmuls, so this count is what its eager speed follows.

Runs on the CPU (no GPU needed): every aten op of one call is intercepted and the sizes of
its tensor inputs and outputs summed (views, reshapes that make a view and allocations do not
move bytes and are not counted; a reshape that copies is; an out= tensor counts once, as
written). A grid with a fraction of a 1080p x 5 window's tokens runs and the totals
are scaled to the full window. Attention itself is a stand-in with the varlen path's
gathers (the CUDA kernel is not run here); everything else is the real net in bf16.

    python scripts/count_sr_bytes.py                 # lean (inference) and plain forms
    python scripts/count_sr_bytes.py --top 12        # the largest ops of each

Prints one table per form, and the split of the lean form into the base features computed
once per window and one flow step.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vs_skipsr.models.sr import random_sr
from vs_skipsr.tokens import padded_tokens

VIEWS = {  # no bytes move where the result is a view of the input (a reshape may copy)
    "view", "_unsafe_view", "reshape", "unbind", "split", "chunk", "slice", "select", "t",
    "transpose", "permute", "expand", "unsqueeze", "squeeze", "detach", "alias", "unfold",
}  # fmt: skip
ALLOCATIONS = {"empty", "new_empty", "empty_like", "empty_strided"}  # nothing moves
FULL_TOKENS = 5 * 68 * 120  # a 1080p x 5 window of 16-px tokens


class ByteCount(TorchDispatchMode):
    """Bytes read and written per aten op name while active."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        # a functional op that hands back its input unchanged (a .to() to the dtype it has)
        # moves nothing; in-place and out= ops hand back what they wrote, and are counted
        kwargs = kwargs or {}
        functional = not name.endswith("_") and "out" not in kwargs
        aliased = functional and any(out is a for a in tree_leaves((args, kwargs)))
        viewed = name in VIEWS and _shares_storage(out, args)
        if name not in ALLOCATIONS and not aliased and not viewed:
            # an out= tensor is written, not read: counted once, as the result
            inputs = (args, {k: v for k, v in kwargs.items() if k != "out"})
            moved = sum(_nbytes(x) for x in tree_leaves((inputs, out)))
            self.bytes[name] += moved
            self.calls[name] += 1
        return out


def _shares_storage(out: object, args: object) -> bool:
    """Whether every tensor ``out`` holds is a view of one of ``args``' tensors."""
    storages = {
        x.untyped_storage().data_ptr() for x in tree_leaves(args) if isinstance(x, torch.Tensor)
    }
    return all(
        x.untyped_storage().data_ptr() in storages
        for x in tree_leaves(out)
        if isinstance(x, torch.Tensor)
    )


def _nbytes(x: object) -> int:
    return x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0


def _print(title: str, count: ByteCount, scale: float, top: int) -> None:
    total = sum(count.bytes.values()) * scale / 1e9
    print(f"{title}: {total:.2f} GB, {sum(count.calls.values())} ops")
    for name, b in count.bytes.most_common(top):
        print(f"  {name:24s} {count.calls[name]:4d} ops {b * scale / 1e9:7.3f} GB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", default="5,17,60", help="token grid T,Hp,Wp run (then scaled)")
    ap.add_argument("--top", type=int, default=8, help="largest ops listed per form")
    args = ap.parse_args()
    grid = tuple(int(v) for v in args.grid.split(","))
    torch.manual_seed(0)
    net = random_sr("default", dtype=torch.bfloat16)
    cfg = net.config
    k = grid[0] * grid[1] * grid[2]
    scale = FULL_TOKENS / k
    _, coords, parts = padded_tokens(
        torch.arange(k), bucket=k, grid=grid, window=cfg.window, shift=cfg.shift
    )
    base = torch.rand(k, cfg.base_dim).to(torch.bfloat16)  # the runner casts base to bf16
    state = torch.randn(k, cfg.token_dim) * cfg.noise_std
    t = torch.ones(1)
    orders = [torch.randperm(k) for _ in parts]

    def attend(q, kk, v, order):  # varlen's gathers in and out; its kernel is not counted
        q, kk, v = q[order], kk[order], v[order]
        return q[torch.argsort(order)]

    attends = tuple((lambda q, kk, v, o=o: attend(q, kk, v, o)) for o in orders)
    print(f"default SR net, bf16, grid {grid} ({k} tokens), scaled x{scale:.2f} to 1080p x 5")
    plain = ByteCount()
    with plain:  # grad mode on: the plain forms (what training and export run)
        net.forward_attend(base, state, coords, t, attends)
    _print("plain forms, one call", plain, scale, args.top)
    with torch.inference_mode():
        # once uncounted: the lean forms' reordered weights are made at the first call of a
        # process (ConvHead._split_weights, SRTransformer._cell_columns), not at every call
        net.forward_attend(base, state, coords, t, attends)
        lean = ByteCount()
        with lean:
            net.forward_attend(base, state, coords, t, attends)
        _print("lean forms, one call", lean, scale, args.top)
        feats, step = ByteCount(), ByteCount()
        with feats:
            features = net.base_features(base, coords)
        with step:
            net.velocity(features, state, t, attends)
    f, s = (sum(c.bytes.values()) * scale / 1e9 for c in (feats, step))
    print(f"lean, split: base features {f:.2f} GB once per window, {s:.2f} GB per flow step")


if __name__ == "__main__":
    main()
