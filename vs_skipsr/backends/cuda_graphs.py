"""CUDA graphs of the SR net, one per (token bucket, window bucket) shape.

A small net on a GPU spends more time launching kernels than running them; skipping makes
each launch smaller still, so eager mode stops scaling with the kept count. A captured graph
replays the whole net as one launch. Shapes must be static: the pipeline pads K to a
geometric bucket, partitions have one segment per window of the grid (empty ones too), and
:func:`~vs_skipsr.tokens.pad_partition` adds room for the bucket padding, so the shapes of a
call depend on the grid and the bucket only: one capture per bucket, whatever the keep set.
(Keying on the windows a keep set happens to fill gave a new shape nearly every window.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

from ..tokens import Partition, bucket_size, pad_partition

__all__ = ["GraphCache"]

log = logging.getLogger(__name__)


class _Graph:
    def __init__(self, fn: Callable[..., Tensor], inputs: list[Tensor], pool) -> None:
        self.inputs = [x.clone() for x in inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: lazy init and autotuning stay out of the graph
                fn(*self.inputs)
        self.graph = torch.cuda.CUDAGraph()
        # capture_begin/end on the side stream, not the torch.cuda.graph context manager: that
        # one synchronises the whole device and empties the allocator's caches (device and
        # pinned host) before each capture, which stalls the other stream's window and makes
        # it allocate again; a capture per new token bucket mid-run paid that every time.
        # thread_local: the filter's other threads keep launching work (and allocating) on
        # their own streams while this one captures.
        with torch.cuda.stream(stream):
            self.graph.capture_begin(pool, capture_error_mode="thread_local")
            try:
                self.output = fn(*self.inputs)
            finally:
                self.graph.capture_end()
        torch.cuda.current_stream().wait_stream(stream)

    def __call__(self, inputs: list[Tensor]) -> Tensor:
        for dst, src in zip(self.inputs, inputs, strict=True):
            dst.copy_(src, non_blocking=True)
        self.graph.replay()
        return self.output.clone()


class GraphCache:
    """Captures and replays graphs of ``fn(base, state, coords, t, order0, cu0[, part0],
    order1, cu1[, part1])`` (the padded form ``part`` only ``with_part``); at most
    ``max_graphs`` are kept (least recently used go)."""

    def __init__(
        self,
        fn: Callable[..., Tensor],
        *,
        window_volume: int,
        with_part: bool,
        max_graphs: int = 32,
        window_multiple: int = 32,
    ) -> None:
        self.fn = fn
        self.window_volume = window_volume
        self.with_part = with_part
        self.max_graphs = max_graphs
        self.window_multiple = window_multiple
        self.graphs: OrderedDict[tuple[int, ...], _Graph] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()
        self.captures = 0
        # the filter calls from several threads (one CUDA stream each): the cache, a capture
        # and the order of replays of one graph are guarded by one lock (replays are launches
        # only, so holding it costs microseconds)
        self._lock = threading.Lock()
        # graphs share one memory pool and each its static buffers: a replay must not run on
        # the GPU beside another, whatever their streams, so each waits for the last one's end
        self._last: torch.cuda.Event | None = None

    def _windows(self, p: Partition, tokens: int) -> int:
        """Segments for the grid's windows plus room for any bucket padding of ``tokens``:
        an upper bound that depends on the grid and the bucket, not on the keep set."""
        need = p.cu_seqlens.shape[0] - 1 + -(-tokens // self.window_volume)
        return bucket_size(need, multiple=self.window_multiple)

    def __call__(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        t: Tensor,
        partitions: tuple[Partition, ...],
    ) -> Tensor:
        k = base.shape[0]
        padded = [
            pad_partition(
                p,
                tokens=k,
                windows=self._windows(p, k),
                window_volume=self.window_volume,
                with_part=self.with_part,
            )
            for p in partitions
        ]
        key = (k, *(p.cu_seqlens.shape[0] for p in padded))
        inputs = [base, state, coords, t.reshape(1)]
        for p in padded:
            inputs += [p.order, p.cu_seqlens]
            if self.with_part:
                inputs.append(p.part)
        with self._lock:
            graph = self.graphs.get(key)
            if graph is None:
                t0 = time.perf_counter()
                graph = _Graph(self.fn, inputs, self.pool)
                ms = 1e3 * (time.perf_counter() - t0)  # host time, warm-up runs included
                self.captures += 1
                log.info(
                    "captured a CUDA graph for %d tokens, %s windows in %.1f ms", k, key[1:], ms
                )
                self.graphs[key] = graph
                while len(self.graphs) > self.max_graphs:
                    self.graphs.popitem(last=False)
            self.graphs.move_to_end(key)
            stream = torch.cuda.current_stream()
            if self._last is not None:
                stream.wait_event(self._last)
            out = graph(inputs)
            self._last = torch.cuda.Event()
            self._last.record(stream)
            return out
