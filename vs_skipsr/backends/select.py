"""Choosing a backend: one place, one ``match``, and a log line saying what was chosen and why.

``auto`` prefers TensorRT (a TensorRT module that imports, and a CUDA GPU it runs on:
TensorRT-RTX does not run on compute capability 9.0), then torch on CUDA, then torch on the
CPU. onnxruntime is never chosen by ``auto`` (on the CPU torch is as fast and needs no export);
ask for it by name.
"""

from __future__ import annotations

import logging

import torch

from .onnxruntime_backend import OnnxRuntimeBackend, ort_providers
from .tensorrt_backend import TensorRTBackend, tensorrt_unavailable_reason
from .torch_backend import TorchBackend

__all__ = ["BACKEND_NAMES", "Backend", "autoselect", "resolve_backend"]

log = logging.getLogger(__name__)

Backend = TorchBackend | TensorRTBackend | OnnxRuntimeBackend

BACKEND_NAMES = ("auto", "torch", "cpu", "cuda", "trt", "tensorrt", "ort", "onnxruntime")


def _torch_cuda(
    device_index: int, fp16: bool, cuda_graphs: bool = False, torch_compile: bool = False
) -> TorchBackend:
    return TorchBackend(
        device=f"cuda:{device_index}",
        dtype="fp16" if fp16 else "fp32",
        cuda_graphs=cuda_graphs,
        compile=torch_compile,
    )


def autoselect(
    *,
    device_index: int = 0,
    fp16: bool = True,
    cuda_graphs: bool = False,
    torch_compile: bool = False,
) -> Backend:
    """The fastest backend this machine can run: TensorRT, else torch CUDA, else torch CPU."""
    trt_missing = tensorrt_unavailable_reason(device_index)
    chosen: Backend
    match (trt_missing is None, torch.cuda.is_available()):
        case (True, _):
            chosen = TensorRTBackend(device_index=device_index, fp16=fp16)
            why = "TensorRT runs on this GPU"
        case (False, True):
            chosen = _torch_cuda(device_index, fp16, cuda_graphs, torch_compile)
            why = f"no TensorRT: {trt_missing}"
        case _:
            chosen = TorchBackend(device="cpu", dtype="fp32")
            why = "torch sees no CUDA device"
    log.info("skipsr: backend auto -> %s (%s)", chosen, why)
    return chosen


def resolve_backend(
    backend: str | Backend,
    *,
    device_index: int = 0,
    fp16: bool = True,
    cuda_graphs: bool = False,
    torch_compile: bool = False,
) -> Backend:
    """A backend value from a name (see ``BACKEND_NAMES``) or a backend value (returned as is).
    ``cuda_graphs`` and ``torch_compile`` apply where the name resolves to torch on CUDA.
    Raises ValueError, saying why, for a named backend this machine cannot run."""
    if not isinstance(backend, str):
        return backend
    match backend:
        case "auto":
            return autoselect(
                device_index=device_index,
                fp16=fp16,
                cuda_graphs=cuda_graphs,
                torch_compile=torch_compile,
            )
        case "torch":
            if torch.cuda.is_available():
                return _torch_cuda(device_index, fp16, cuda_graphs, torch_compile)
            return TorchBackend(device="cpu", dtype="fp32")
        case "cpu":
            return TorchBackend(device="cpu", dtype="fp32")
        case "cuda":
            if not torch.cuda.is_available():
                raise ValueError("backend 'cuda': torch sees no CUDA device on this machine")
            return _torch_cuda(device_index, fp16, cuda_graphs, torch_compile)
        case "trt" | "tensorrt":
            why = tensorrt_unavailable_reason(device_index)
            if why is not None:
                raise ValueError(f"backend {backend!r}: {why}")
            return TensorRTBackend(device_index=device_index, fp16=fp16)
        case "ort" | "onnxruntime":
            providers = ort_providers()
            if not providers:
                raise ValueError(f"backend {backend!r}: onnxruntime is not installed")
            if "CUDAExecutionProvider" in providers and torch.cuda.is_available():
                return OnnxRuntimeBackend(device=f"cuda:{device_index}")
            return OnnxRuntimeBackend(device="cpu")
    raise ValueError(f"backend must be one of {BACKEND_NAMES} or a backend value, not {backend!r}")
