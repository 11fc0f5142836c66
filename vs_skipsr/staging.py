"""Host buffers for the copies between VapourSynth and the network's device, reused.

Every window crosses host memory twice: its LR frames on the way to the device, its output on
the way back. On a GPU that memory must be page-locked ("pinned") for the copies to run at bus
speed and asynchronously on the window's CUDA stream, and pinning is costly to set up (and
``tensor.pin_memory()`` also copies the data once more). So buffers come from a pool keyed by
(shape, dtype) and go back to it when done, instead of being pinned afresh for every window.
On the CPU the same pool hands out ordinary pageable buffers: no pinning, and no page faults
from touching a freshly mapped allocation every window.

Two ways to give a buffer back:
- ``lease`` for a buffer used within one block (the LR staging of one network pass): back on a
  clean exit, dropped on an exception, since a copy from it may still be queued on the device;
- ``bind`` for a buffer that outlives the call (a window's output in the filter's cache): back
  once the object holding it is garbage, i.e. once no cache entry and no frame being produced
  can reach it any more, so a buffer is never reused while something may still read it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["HostPool"]


class HostPool:
    """Host tensors by (shape, dtype), pinned if ``pinned`` (needs CUDA), handed out again.

    At most ``spare`` free buffers of each key are kept; more than that go back to torch (its
    pinned-memory allocator caches them in turn). ``allocated`` counts buffers ever made, so a
    test or benchmark can see that a long run reuses a few instead of making one a window.
    """

    def __init__(self, *, pinned: bool, spare: int = 4) -> None:
        self.pinned = pinned
        self.spare = spare
        self.allocated = 0
        self._free: dict[tuple[tuple[int, ...], torch.dtype], list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A contiguous host tensor of ``shape`` and ``dtype``; its contents are undefined."""
        key = (tuple(shape), dtype)
        with self._lock:
            free = self._free.get(key)
            if free:
                return free.pop()
            self.allocated += 1
        return torch.empty(key[0], dtype=dtype, pin_memory=self.pinned)

    def give(self, buf: torch.Tensor) -> None:
        """Return ``buf`` for reuse; the caller must no longer read or write it, and no
        asynchronous copy may still be pending on it."""
        key = (tuple(buf.shape), buf.dtype)
        with self._lock:
            free = self._free.setdefault(key, [])
            if len(free) < self.spare:
                free.append(buf)

    @contextmanager
    def lease(self, shape: tuple[int, ...], dtype: torch.dtype) -> Iterator[torch.Tensor]:
        """A buffer for the duration of the block. The block must leave no copy pending on it
        (on a GPU: synchronise the stream before leaving). On an exception the buffer is
        dropped rather than returned, as a copy from it may still be queued."""
        buf = self.take(shape, dtype)
        yield buf
        self.give(buf)

    def bind(self, owner: object, buf: torch.Tensor) -> None:
        """Give ``buf`` back once ``owner`` is garbage. ``owner`` must be the only way to reach
        ``buf`` (no view of it may outlive ``owner``)."""
        done = weakref.finalize(owner, self.give, buf)
        done.atexit = False  # nothing to recycle at interpreter exit
