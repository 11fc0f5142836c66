"""The CPU's one torch thread (vs_skipsr/torch_thread.py): what runs there, and that the
filter's CPU windows and weights go through it whichever thread asks."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from vs_skipsr.torch_thread import on_torch_thread


def test_calls_from_many_threads_run_on_one_thread_in_turn() -> None:
    active, most = [0], [0]
    lock = threading.Lock()

    def work(i: int) -> tuple[int, int]:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        ident = threading.get_ident()
        with lock:
            active[0] -= 1
        return i, ident

    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda i: on_torch_thread(work, i), range(60)))
    assert [i for i, _ in got] == list(range(60))  # each caller gets its own result
    idents = {ident for _, ident in got}
    assert len(idents) == 1 and threading.get_ident() not in idents
    assert most[0] == 1  # one call at a time


def test_errors_reach_the_caller_and_nested_calls_run_directly() -> None:
    def fail() -> None:
        raise KeyError("window 3")

    with pytest.raises(KeyError, match="window 3"):
        on_torch_thread(fail)
    # a call made on the torch thread runs there at once instead of waiting on itself
    outer, inner = on_torch_thread(
        lambda: (threading.get_ident(), on_torch_thread(threading.get_ident))
    )
    assert outer == inner
    assert on_torch_thread(sorted, [3, 1, 2], reverse=True) == [3, 2, 1]
