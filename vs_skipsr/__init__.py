"""vs_skipsr: SkipSR video super-resolution for VapourSynth."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["SkipSRStats", "__version__", "skipsr"]

if TYPE_CHECKING:
    from .filter import SkipSRStats, skipsr


def __getattr__(name: str) -> Any:
    """``skipsr`` is imported on first use, so training and export code that imports
    ``vs_skipsr.models`` does not need VapourSynth."""
    if name in ("skipsr", "SkipSRStats"):
        from . import filter as _filter

        return getattr(_filter, name)
    raise AttributeError(f"module 'vs_skipsr' has no attribute {name!r}")
