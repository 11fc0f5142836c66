"""Optional dependencies, imported on first use. Each speeds up one step where it is installed,
and that step has a plain torch fallback: OpenCV's resize for the CPU's upsample, Triton's
kernels for the device colour conversion and the GPU's window attention."""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType

__all__ = ["optional_module"]


@cache
def optional_module(name: str) -> ModuleType | None:
    """``import name``, or None where it (or something it needs) is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
