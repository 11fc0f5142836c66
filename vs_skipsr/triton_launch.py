"""Where a Triton kernel runs: Triton launches on the current CUDA device, not on the device
of the tensors it is given (its driver's ``get_current_device``), so a clip on
``device_index=1`` would send every kernel to device 0's context. Each launch of this
package's Triton kernels goes through :func:`on_device_of`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

__all__ = ["on_device_of"]


def on_device_of(tensor: torch.Tensor) -> AbstractContextManager[object]:
    """The tensor's CUDA device made current for a launch; nothing for CPU tensors (Triton's
    interpreter, which the tests run on the CPU)."""
    if tensor.device.type == "cuda":
        return torch.cuda.device(tensor.device)
    return nullcontext()
