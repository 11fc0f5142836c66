"""One thread for vs_skipsr's torch work on the CPU.

PyTorch runs the loops of its CPU ops in OpenMP parallel regions, and libgomp gives every
thread that opens one a team of worker threads of its own. Once the process holds more
OpenMP threads than CPUs, which a second thread opening regions is enough for (the script's
thread loading the weights, then VapourSynth's threads computing windows), libgomp cuts its
spinning between regions short (its documented throttling, which the runs with
OMP_WAIT_POLICY=PASSIVE and ACTIVE here match; not traced inside libgomp), and every region
waits for its workers to wake. A SkipSR window is
thousands of small regions: on a 2-core Xeon the same windows took 27.5 ms a frame on a
second thread against 21.6 on the only one, at the same CPU time (one parallel copy in the
main thread first was enough). So the weights are loaded and the CPU's windows computed on
this one thread, whichever of VapourSynth's threads asks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["on_torch_thread"]

_ident: list[int] = []  # the torch thread's id, recorded when the thread starts


def _remember() -> None:
    _ident.append(threading.get_ident())


_pool = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="vs_skipsr-torch", initializer=_remember
)


def on_torch_thread[T](fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on the torch thread, waiting for it: its result, or its
    exception raised here. Called on the torch thread itself, it runs directly (no wait on
    itself). Calls from several threads queue, one at a time."""
    if _ident and threading.get_ident() == _ident[0]:
        return fn(*args, **kwargs)
    return _pool.submit(fn, *args, **kwargs).result()
