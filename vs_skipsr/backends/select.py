"""Choosing a backend: one place, one ``match``, and a log line saying what was chosen."""

from __future__ import annotations

import logging

import torch

from .torch_backend import TorchBackend

__all__ = ["Backend", "autoselect", "resolve_backend"]

log = logging.getLogger(__name__)

Backend = TorchBackend

BACKEND_NAMES = ("auto", "torch", "cpu", "cuda")


def autoselect(*, device_index: int = 0, fp16: bool = True) -> Backend:
    """The fastest backend this machine can run: torch CUDA, else torch CPU."""
    match torch.cuda.is_available():
        case True:
            chosen: Backend = TorchBackend(
                device=f"cuda:{device_index}", dtype="fp16" if fp16 else "fp32"
            )
        case False:
            chosen = TorchBackend(device="cpu", dtype="fp32")
    log.info("skipsr: backend auto -> %s", chosen)
    return chosen


def resolve_backend(backend: str | Backend, *, device_index: int = 0, fp16: bool = True) -> Backend:
    """A backend value from a name ('auto', 'torch', 'cpu', 'cuda') or a backend value."""
    if not isinstance(backend, str):
        return backend
    match backend:
        case "auto":
            return autoselect(device_index=device_index, fp16=fp16)
        case "torch":
            if torch.cuda.is_available():
                return TorchBackend(device=f"cuda:{device_index}", dtype="fp16" if fp16 else "fp32")
            return TorchBackend(device="cpu", dtype="fp32")
        case "cpu":
            return TorchBackend(device="cpu", dtype="fp32")
        case "cuda":
            if not torch.cuda.is_available():
                raise ValueError("backend 'cuda': torch sees no CUDA device on this machine")
            return TorchBackend(device=f"cuda:{device_index}", dtype="fp16" if fp16 else "fp32")
    raise ValueError(f"backend must be one of {BACKEND_NAMES} or a backend value, not {backend!r}")
