"""Backends that run the mask and SR networks; the pipeline sees only :class:`Runner`.

torch (CPU/CUDA), TensorRT (NVIDIA's ``tensorrt`` or TensorRT-RTX) and onnxruntime, each a
frozen keyword-only value with ``load(sr=..., mask=...) -> Runner``; :func:`resolve_backend`
turns a name into one and :func:`autoselect` picks by what the machine has.
"""

from .base import Runner
from .onnxruntime_backend import OnnxRuntimeBackend, OnnxRuntimeRunner
from .select import BACKEND_NAMES, Backend, autoselect, resolve_backend
from .tensorrt_backend import TensorRTBackend, TensorRTRunner
from .torch_backend import TorchBackend, TorchRunner

__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "OnnxRuntimeBackend",
    "OnnxRuntimeRunner",
    "Runner",
    "TensorRTBackend",
    "TensorRTRunner",
    "TorchBackend",
    "TorchRunner",
    "autoselect",
    "resolve_backend",
]
