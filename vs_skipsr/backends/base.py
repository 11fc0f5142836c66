"""What every backend gives the pipeline: the two networks, nothing else.

The pipeline (upsample, keep set, gather, sampling loop, scatter) is backend-free; a backend
only evaluates ``mask(lr)`` and ``sr(base, state, coords, t, partitions)`` on its device. So
torch, onnxruntime and TensorRT can be swapped without touching the data flow, and every
backend must give the same numbers within its precision.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ..models.sr import SRConfig
from ..tokens import Partition

__all__ = ["Runner"]


class Runner(Protocol):
    """A loaded backend, ready to run windows."""

    name: str
    device: torch.device
    sr_config: SRConfig
    has_mask: bool
    # True where few distinct token counts pay (captured CUDA graphs, per-shape cuDNN plans):
    # the pipeline then pads the kept count up to a bucket; the others take any count as is
    wants_buckets: bool

    def prepare(self, *, grid: tuple[int, int, int], dense: bool = False) -> None:
        """Make every token-count bucket of a window with token grid ``grid`` (T, Hp, Wp)
        ready before the first one runs (CUDA graphs: capture them), or only the all-tokens
        one with ``dense`` (a run that skips nothing); nothing where shapes cost nothing to
        change."""
        ...

    def mask(self, lr: Tensor) -> Tensor:
        """LR frames [T, 3, h, w] float32 on ``device`` -> score map [T, 1, h, w] float32."""
        ...

    def sr(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        t: Tensor,
        partitions: tuple[Partition, Partition],
    ) -> Tensor:
        """Velocity [K, 3p²] float32 for kept tokens (base [K, 3(p+2 halo)²], state [K, 3p²],
        coords [K, 3])."""
        ...
