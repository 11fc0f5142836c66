"""Backends that run the mask and SR networks; the pipeline sees only :class:`Runner`."""

from .base import Runner
from .torch_backend import TorchBackend, TorchRunner

__all__ = ["Runner", "TorchBackend", "TorchRunner"]
