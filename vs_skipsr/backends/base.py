"""What every backend gives the pipeline: the two networks, nothing else.

The pipeline (upsample, keep set, gather, sampling loop, scatter) is backend-free; a backend
only evaluates ``mask(lr)`` and ``sr(base, state, coords, t, partitions)`` on its device (and
``flow``, the N steps of sampling, which most backends take from :func:`euler_flow`). So
torch, onnxruntime and TensorRT can be swapped without touching the data flow, and every
backend must give the same numbers within its precision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from ..models.sr import SRConfig, euler_update
from ..tokens import Partition

__all__ = ["EulerFlow", "Runner", "euler_flow", "euler_update", "step_time"]


# a runner's own way with a window after its sync: (keep, base, kept=, bucket=, grid=, steps=,
# seed=) adds the SR residual of the kept tokens into base in place
StaticWindow = Callable[..., None]


class Runner(Protocol):
    """A loaded backend, ready to run windows."""

    name: str
    device: torch.device
    sr_config: SRConfig
    has_mask: bool
    # True where few distinct token counts pay (captured CUDA graphs, per-shape cuDNN plans):
    # the pipeline then pads the kept count up to a bucket; the others take any count as is
    wants_buckets: bool
    # the dtype ``sr`` and ``flow`` read base patches in: the pipeline gathers them in it, so
    # they are written once as the net reads them instead of gathered and then cast
    base_dtype: torch.dtype
    # where set, (keep, base, kept=, bucket=, grid=, steps=, seed=) makes the kept tokens,
    # their noise, gather, flow and scatter into base the runner's own way (CUDA graphs): the
    # pipeline then reads only the kept count; None: it runs them itself
    static_window: StaticWindow | None

    def prepare(
        self, *, grid: tuple[int, int, int], dense: bool = False, steps: int | None = None
    ) -> None:
        """Make every token-count bucket of a window with token grid ``grid`` (T, Hp, Wp)
        ready before the first one runs (CUDA graphs: capture them), or only the all-tokens
        one with ``dense`` (a run that skips nothing): for ``flow`` with ``steps`` steps, or
        for single ``sr`` calls without; nothing where shapes cost nothing to change."""
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

    def flow(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        partitions: tuple[Partition, Partition],
        *,
        steps: int,
    ) -> Tensor:
        """The state after ``steps`` Euler steps of the flow from t = 1 to 0 (the noise
        ``state`` [K, 3p²] float32 in, the residual out), all with one keep set: what
        :func:`euler_flow` computes, which a backend may run cheaper as long as the numbers
        stay the same."""
        ...


# a runner's sr: (base, state, coords, t, partitions) -> velocity
_Velocity = Callable[[Tensor, Tensor, Tensor, Tensor, tuple[Partition, Partition]], Tensor]


def euler_flow(
    sr: _Velocity,
    base: Tensor,
    state: Tensor,
    coords: Tensor,
    partitions: tuple[Partition, Partition],
    *,
    steps: int,
) -> Tensor:
    """Rectified flow on the residual, sampled with ``steps`` Euler steps of the velocity
    ``sr``: one step is the default, more steps reuse the same tokens and partitions."""
    for i in range(steps):
        t = torch.full((1,), step_time(i, steps=steps), device=state.device)
        v = sr(base, state, coords, t, partitions)  # [K, 3p²]
        state = euler_update(state, v, steps=steps)
    return state


def step_time(i: int, *, steps: int) -> float:
    """The flow's time at step ``i`` of ``steps``: 1 at the first, down to 1/steps."""
    return 1.0 - i / steps


class EulerFlow:
    """``Runner.flow`` as :func:`euler_flow` over the runner's own ``sr``: for backends
    that have nothing cheaper (one engine call per step anyway)."""

    sr: _Velocity

    static_window: StaticWindow | None = None  # an engine call a step: little to save there

    def flow(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        partitions: tuple[Partition, Partition],
        *,
        steps: int,
    ) -> Tensor:
        return euler_flow(self.sr, base, state, coords, partitions, steps=steps)
