"""vs_skipsr: SkipSR video super-resolution for VapourSynth."""

from __future__ import annotations

__version__ = "0.1.0"
