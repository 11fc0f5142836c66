"""Which frames form each window of T, how overlapping windows blend, tail padding, scene cuts.

Pure Python (no VapourSynth, no torch), so the plan can be tested exhaustively and reasoned
about on paper:

    frames   0 1 2 3 4 5 6 7 8 9          N = 10, T = 4, overlap = 1, stride S = T - overlap = 3
    window 0 [0 1 2 3]
    window 1       [3 4 5 6]
    window 2             [6 7 8 9]
    window 3                   [9 9 9 9]   <- not made: 9 is already covered, see below

- Window k starts at k * S and holds T frames; positions past the clip's end repeat the last
  frame (tail padding), so every window has exactly T frames and no frame is dropped. Only as
  many windows are made as it takes to reach the last frame.
- A frame covered by several windows (the ``overlap`` frames at each border) takes a weighted
  mean of their outputs: a ramp that rises over the first ``overlap`` positions of a window and
  falls over its last ones (``linear``, or ``smooth`` = raised cosine), normalised per frame so
  the weights of a frame always sum to 1. The first window does not ramp up and the last does
  not ramp down, since nothing is there to blend with. A frame in one window gets weight 1.0.
- Scene cuts do not move windows. A window that contains a cut (a frame whose
  ``_SceneChangePrev`` is set) is split into pieces at the cut, and each piece is run as its own
  T-frame input padded by repeating its last frame. So no network pass mixes two scenes, and
  which windows a frame belongs to, with which weights, is known without reading any frame:
  the filter learns the cuts from the frames a window fetches anyway, with no upfront scan.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

__all__ = ["Blend", "Contribution", "Piece", "WindowPlan", "longer_window"]

Blend = Literal["linear", "smooth"]


@dataclass(frozen=True)
class Contribution:
    """Output frame n takes ``weight`` x (window ``window``'s output at ``position``)."""

    window: int
    position: int
    weight: float


@dataclass(frozen=True)
class Piece:
    """One network pass inside a window: window positions [start, start + length) come from
    the pass's first ``length`` outputs; ``frames`` are the T source frames it is fed."""

    start: int
    length: int
    frames: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class WindowPlan:
    """Windows of ``size`` frames over a clip of ``num_frames``, ``overlap`` frames shared by
    consecutive windows."""

    num_frames: int
    size: int
    overlap: int = 0
    blend: Blend = "linear"

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames={self.num_frames}: a plan needs at least one frame")
        if self.size < 1:
            raise ValueError(f"size={self.size}: a window holds at least one frame")
        if not 0 <= self.overlap < self.size:
            raise ValueError(f"overlap={self.overlap}: accepted 0 <= overlap < size={self.size}")
        if self.blend not in ("linear", "smooth"):
            raise ValueError(f"blend={self.blend!r}: accepted 'linear' or 'smooth'")

    @property
    def stride(self) -> int:
        """Frames between the starts of consecutive windows."""
        return self.size - self.overlap

    @property
    def num_windows(self) -> int:
        """Just enough windows for the last one to reach the clip's last frame."""
        beyond = self.num_frames - self.size
        return 1 + max(0, -(-beyond // self.stride))

    def start(self, window: int) -> int:
        """First source frame of ``window``."""
        self._check_window(window)
        return window * self.stride

    def real_length(self, window: int) -> int:
        """How many of the window's T positions are real frames, not tail padding."""
        return min(self.size, self.num_frames - self.start(window))

    def frames(self, window: int) -> tuple[int, ...]:
        """The T source frames of ``window`` in order; positions past the end repeat the last
        frame, so the network always sees T frames and the clip's tail is never dropped."""
        s, last = self.start(window), self.num_frames - 1
        return tuple(min(s + j, last) for j in range(self.size))

    def windows_of(self, frame: int) -> range:
        """Windows whose real positions include ``frame``, in increasing order."""
        self._check_frame(frame)
        first = max(0, -(-(frame - self.size + 1) // self.stride))
        last = min(frame // self.stride, self.num_windows - 1)
        return range(first, last + 1)

    def contributions(self, frame: int) -> tuple[Contribution, ...]:
        """The windows output ``frame`` is blended from, with weights that sum to 1."""
        raw = [(k, frame - k * self.stride) for k in self.windows_of(frame)]
        if len(raw) == 1:
            k, pos = raw[0]
            return (Contribution(k, pos, 1.0),)
        ramps = [self._ramp(k, pos) for k, pos in raw]
        total = math.fsum(ramps)
        return tuple(
            Contribution(k, pos, r / total) for (k, pos), r in zip(raw, ramps, strict=True)
        )

    def pieces(self, window: int, cuts: Collection[int] = ()) -> tuple[Piece, ...]:
        """Split ``window`` at scene cuts: ``cuts`` holds frames that start a new scene.

        A cut at the window's first frame changes nothing (the window already starts there).
        Each piece is fed its own frames followed by repeats of its last frame, up to T.
        """
        s, n_real = self.start(window), self.real_length(window)
        bounds = [0, *sorted(c - s for c in set(cuts) if s < c < s + n_real), n_real]
        out = []
        for a, b in itertools.pairwise(bounds):
            frames = tuple(s + min(j, b - 1) for j in range(a, a + self.size))
            out.append(Piece(start=a, length=b - a, frames=frames))
        return tuple(out)

    def _ramp(self, window: int, position: int) -> float:
        """Unnormalised blend weight of a position: rises over the first ``overlap`` positions
        (unless first window), falls over the last ones (unless last window)."""
        o = self.overlap
        up = (position + 1) / (o + 1) if window > 0 and position < o else 1.0
        down = (self.size - position) / (o + 1) if window < self.num_windows - 1 else 1.0
        x = min(up, down, 1.0)
        if self.blend == "smooth":
            # sin²(πx/2): the crossing window gets cos², so a pair still sums to 1, with a
            # gentler start and end than the linear ramp
            return math.sin(math.pi * x / 2) ** 2
        return x

    def _check_window(self, window: int) -> None:
        if not 0 <= window < self.num_windows:
            raise IndexError(f"window {window} outside 0..{self.num_windows - 1}")

    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.num_frames:
            raise IndexError(f"frame {frame} outside 0..{self.num_frames - 1}")


def longer_window(
    *, model_frames: int, tokens_per_frame: int, multiple: int, max_tokens: int
) -> int:
    """The largest multiple of the model's temporal window, up to ``multiple`` times it, whose
    tokens stay within ``max_tokens``; the model's own window when even that is over.

    Why longer windows: each window costs the host a fixed amount of work (launches, syncs,
    the read-ahead's hand-offs) and a small SR call cannot fill a GPU, so on a GPU fewer,
    fuller windows are faster. A multiple of the model's window, so its attention windows tile
    the window in time as they do at the model's length. Capped in tokens, so a 4K clip does
    not get four times the device memory of a 1080p one.
    """
    if model_frames < 1 or tokens_per_frame < 1 or multiple < 1:
        raise ValueError(
            f"longer_window: model_frames={model_frames}, tokens_per_frame={tokens_per_frame}, "
            f"multiple={multiple}: accepted values >= 1"
        )
    fits = max_tokens // (model_frames * tokens_per_frame)
    return model_frames * max(1, min(multiple, fits))
