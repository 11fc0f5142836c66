"""Optional dependencies, imported on first use. Each speeds up one step where it is installed,
and that step has a plain torch fallback: OpenCV's resize for the CPU's upsample, Triton's
kernels for the device colour conversion, the GPU's window attention, its rotary rotation,
its residual norms and the conv head's passes, and the gather of the kept tokens' patches."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from functools import cache
from types import ModuleType

__all__ = ["optional_module", "triton_module", "works_here"]

log = logging.getLogger(__name__)


@cache
def optional_module(name: str) -> ModuleType | None:
    """``import name``, or None where it (or something it needs) is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def triton_module(name: str) -> ModuleType:
    """``import name`` for one of this package's Triton kernel modules, or a RuntimeError
    naming it: for the places that run them only where a check said they work (or where the
    caller asked for them by name), so a missing Triton there is an error, not a fallback."""
    module = optional_module(name)
    if module is None:
        raise RuntimeError(f"{name} needs Triton, which is not installed")
    return module


def works_here(check: Callable[[], None], *, what: str) -> bool:
    """Whether ``check`` (build an optional kernel, compare it with torch's numbers on a
    small problem) runs without raising: a kernel that cannot build for this card, or a bug
    it meets, then costs a log line, not a run. Run it before any CUDA graph capture."""
    try:
        check()
    except Exception as e:  # any failure means: use torch's kernels
        log.warning("%s unavailable here (%r); using torch's", what, e)
        return False
    return True
