"""A clip whose frames are taken out of per-window tickets in native code.

A ticket is a tiny frame, one per window, that carries the window's output frames as props
(``prop0``, ``prop1``, ...). VapourSynth then hands frame n out of its ticket without calling
Python: a PropToClip per window position, interleaved. The filter writes its frames this way
without overlap (``filter._SkipSRNode._by_window``), and ``scripts/bench_frame_handoff.py``
times the same hand-out with no model.
"""

from __future__ import annotations

from collections.abc import Sequence

import vapoursynth as vs

__all__ = ["PARTS", "hand_out"]

PARTS = 4
"""Tickets a window, part s writing the window's positions s, s + PARTS, ...: VapourSynth runs
one ModifyFrame's callbacks one at a time, so one ticket a window wrote its 20 frames one
after another (H200, twenty-fifth session); the filter and bench_frame_handoff.py use it."""


def hand_out(
    tickets: Sequence[vs.VideoNode], *, like: vs.VideoNode, window: int, frames: int, prop: str
) -> vs.VideoNode:
    """``frames`` frames shaped and timed as ``like``: frame n is prop ``{prop}{n % window}``
    of frame n // window of ``tickets[(n % window) % len(tickets)]`` (a window's positions
    spread over the clips of its tickets in turn).

    PropToClip reads frame 0 of its clip when it is made, for the format: each position's
    clip starts with a blank ticket carrying ``like``'s first frame, cut off after, so no
    ticket is asked for (no window computed) before a frame is."""
    core = vs.core
    blank_ticket = core.std.BlankClip(tickets[0], length=1, keep=True)
    by_position = []
    for pos in range(window):
        name = f"{prop}{pos}"
        probe = core.std.ClipToProp(blank_ticket, mclip=like[0], prop=name)
        source = tickets[pos % len(tickets)]
        by_position.append(core.std.PropToClip(probe + source, prop=name)[1:])
    made = core.std.Interleave(by_position, modify_duration=False)[:frames]
    return core.std.AssumeFPS(made, src=like)
