"""CUDA graphs of the SR net, one per (token bucket, window bucket) shape.

A small net on a GPU spends more time launching kernels than running them; skipping makes
each launch smaller still, so eager mode stops scaling with the kept count. A captured graph
replays the whole net as one launch. Shapes must be static: the pipeline pads K to a
geometric bucket, partitions have one segment per window of the grid (empty ones too), and
:meth:`~vs_skipsr.tokens.Partition.padded_to` adds room for the bucket padding, so the
shapes of a call depend on the grid and the bucket only: one capture per bucket, whatever
the keep set.
(Keying on the windows a keep set happens to fill gave a new shape nearly every window.)

:meth:`GraphCache.prepare` captures all the buckets of a grid before the first window,
largest first: a capture in the middle of a run stalled every other window for 0.2-0.5 s
inside vspipe (H100), and graphs captured in growing order each took new pool memory where
the largest-first order lets the smaller ones reuse what the larger ones freed.

Both classes capture and replay on their tensors' device, whatever device the calling thread
has current: a capture sits on a stream of the current device, and torch runs each op on
the current stream of its tensors' device, so from a thread whose current device was 0 the
net of a ``device_index=1`` clip ran eagerly beside an empty graph (torch's "The CUDA Graph
is empty" warning), and every replay handed back what the captures had left in the shared
output buffer (H200 x2, the twenty-first session).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..tokens import Partition, bucket_partitions, bucket_tokens, padded_windows, window_grid

__all__ = ["GraphCache", "SRCall", "StaticGraph", "WindowOps", "feed_window"]

# the arguments of one SR call: base, state, coords, t, partitions
SRCall = tuple[Tensor, Tensor, Tensor, Tensor, tuple[Partition, ...]]

log = logging.getLogger(__name__)


class _Staging:
    """Static buffers shared by every graph of a cache, one per input position plus one for
    the output: a graph reads and writes views of their first rows. Replays never overlap
    (see GraphCache), so one set of the largest size serves all buckets, instead of a copy
    of every input and output per graph (at 1080p x 5 the 56 buckets add up to 12.4 dense
    windows of them)."""

    def __init__(self) -> None:
        self._bufs: dict[int, Tensor] = {}

    def view(self, slot: int, like: Tensor) -> Tensor:
        """A view shaped and typed like ``like``, over the first rows of buffer ``slot`` (a
        larger buffer replaces it when needed; graphs holding the old one keep it alive)."""
        buf = self._bufs.get(slot)
        if (
            buf is None
            or buf.shape[0] < like.shape[0]
            or buf.shape[1:] != like.shape[1:]
            or buf.dtype != like.dtype
        ):
            buf = self._bufs[slot] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf[: like.shape[0]]


class _Graph:
    """One captured call. ``inputs`` are views into ``staging``; the caller has made the
    side ``stream`` wait for everything that may still read them."""

    def __init__(
        self,
        fn: Callable[..., Tensor],
        inputs: list[Tensor],
        *,
        pool,
        stream: torch.cuda.Stream,
        staging: _Staging,
    ) -> None:
        self.inputs = [staging.view(i, x) for i, x in enumerate(inputs)]
        self.feeds: dict[tuple, Any] = {}  # GraphCache.run_window's feeds into this graph
        t0 = time.perf_counter()
        with torch.cuda.stream(stream):
            for dst, src in zip(self.inputs, inputs, strict=True):
                dst.copy_(src)
                # src was made on the caller's stream, which the allocator hands its memory
                # back to once the caller drops it; prepare() then builds the next example
                # there while this copy may still be queued. Without this the next example
                # overwrote the indices being copied, and the warm-up indexed out of bounds
                # (a device-side assert at 1080p x 21, H100, the largest grids only).
                src.record_stream(stream)
            # one warm-up: lazy init, cuDNN's per-shape plans and cuBLAS's workspace for this
            # stream stay out of the graph
            sample = fn(*self.inputs)
        self.warmup_ms = 1e3 * (time.perf_counter() - t0)
        self.output = staging.view(len(inputs), sample)
        del sample
        self.graph = torch.cuda.CUDAGraph()
        # capture_begin/end on the side stream, not the torch.cuda.graph context manager: that
        # one synchronises the whole device and empties the allocator's caches (device and
        # pinned host) before each capture, which stalls the other stream's window and makes
        # it allocate again; a capture per new token bucket mid-run paid that every time.
        # thread_local: the filter's other threads keep launching work (and allocating) on
        # their own streams while this one captures.
        t0 = time.perf_counter()
        with torch.cuda.stream(stream):
            self.graph.capture_begin(pool, capture_error_mode="thread_local")
            try:
                # the net's own output is freed at the end of the capture (the pool reuses
                # it for the next, smaller graph); the shared output buffer holds the result
                self.output.copy_(fn(*self.inputs))
            finally:
                self.graph.capture_end()
        self.capture_ms = 1e3 * (time.perf_counter() - t0)

    def load(self, inputs: list[Tensor]) -> None:
        for dst, src in zip(self.inputs, inputs, strict=True):
            dst.copy_(src, non_blocking=True)

    def __call__(self, inputs: list[Tensor]) -> Tensor:
        self.load(inputs)
        self.graph.replay()
        return self.output.clone()


class GraphCache:
    """Captures and replays graphs of ``fn(base, state, coords, t, order0, cu0[, part0],
    order1, cu1[, part1])`` (the padded form ``part`` only ``with_part``), one SR call, and
    of ``flow_fn(the same, steps=N)``, a window's whole N-step flow; at most ``max_graphs``
    are kept (least recently used go)."""

    def __init__(
        self,
        fn: Callable[..., Tensor],
        *,
        device: torch.device,
        flow_fn: Callable[..., Tensor],
        window_volume: int,
        with_part: bool,
        max_graphs: int = 64,
        window_multiple: int = 32,
    ) -> None:
        self.fn = fn
        self.device = device
        self.flow_fn = flow_fn
        self.window_volume = window_volume
        self.with_part = with_part
        self.max_graphs = max_graphs
        self.window_multiple = window_multiple
        self.graphs: OrderedDict[tuple[int, ...], _Graph] = OrderedDict()
        self.pool = torch.cuda.graph_pool_handle()
        self.captures = 0
        # one side stream for every warm-up and capture: the caching allocator keeps freed
        # blocks per stream, so a fresh stream per capture kept each warm-up's memory apart
        self._stream: torch.cuda.Stream | None = None
        self._staging = _Staging()
        # the window feeds' inputs (keep set, seed) and outputs; the feeds themselves live on
        # their flow graph (_Graph.feeds), which they write into
        self._feed_staging = _Staging()
        # the filter calls from several threads (one CUDA stream each): the cache, a capture
        # and the order of replays of one graph are guarded by one lock (replays are launches
        # only, so holding it costs microseconds)
        self._lock = threading.Lock()
        # graphs share one memory pool and their static buffers: a replay (or a capture's
        # warm-up) must not run on the GPU beside another, whatever their streams, so each
        # waits for the last one's end
        self._last: torch.cuda.Event | None = None

    def _windows(self, p: Partition, tokens: int) -> int:
        """Segments for the grid's windows plus room for any bucket padding of ``tokens``:
        an upper bound that depends on the grid and the bucket, not on the keep set."""
        return padded_windows(
            p.windows,
            tokens=tokens,
            window_volume=self.window_volume,
            multiple=self.window_multiple,
        )

    def _inputs(self, call: SRCall, *, steps: int) -> tuple[tuple[int, ...], list[Tensor]]:
        """The graph's key and its flat static inputs for the arguments of one call (of a
        ``steps``-step flow; 0: a single call)."""
        base, state, coords, t, partitions = call
        k = base.shape[0]
        padded = [
            p.padded_to(
                tokens=k,
                windows=self._windows(p, k),
                window_volume=self.window_volume,
                with_part=self.with_part,
            )
            for p in partitions
        ]
        key = (k, *(p.cu_seqlens.shape[0] for p in padded), steps)
        inputs = [base, state, coords, t.reshape(1)]
        for p in padded:
            inputs += [p.order, p.cu_seqlens]
            if self.with_part:
                inputs.append(p.part)
        return key, inputs

    def _side_stream(self) -> torch.cuda.Stream:
        """The one stream every capture runs on, after the caller's work and the last replay
        (a capture's warm-up reads and writes the shared buffers)."""
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        stream = self._stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        if self._last is not None:
            stream.wait_event(self._last)
        return stream

    def _capture(self, key: tuple[int, ...], inputs: list[Tensor]) -> _Graph:
        """Capture under the lock, after the last replay (it reads the shared buffers). The
        key's last entry is the flow's step count, 0 for a single call."""
        stream = self._side_stream()
        steps = key[-1]
        fn = functools.partial(self.flow_fn, steps=steps) if steps else self.fn
        with torch.cuda.device(self.device):
            graph = _Graph(fn, inputs, pool=self.pool, stream=stream, staging=self._staging)
        self._last = torch.cuda.Event()
        self._last.record(stream)
        self.captures += 1
        log.info(
            "captured a CUDA graph for %d tokens, %s windows, %s in %.1f ms (warm-up %.1f ms)",
            key[0],
            key[1:-1],
            f"{steps}-step flow" if steps else "one call",
            graph.warmup_ms + graph.capture_ms,
            graph.warmup_ms,
        )
        self.graphs[key] = graph
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
        return graph

    def prepare(self, calls: Iterable[SRCall], *, count: int, steps: int | None = None) -> int:
        """Capture the graph of every call in ``calls`` (``count`` example arguments, largest
        first, so each later graph fits the pool memory the earlier ones freed) that is not
        captured yet: of its whole ``steps``-step flow, or of the single call without
        ``steps``; nothing runs for real. The cache grows to keep them all (a 1080p x 21
        grid has 73 buckets). Returns how many were captured."""
        self.max_graphs = max(self.max_graphs, len(self.graphs) + count)
        done = 0
        for call in calls:
            key, inputs = self._inputs(call, steps=steps or 0)
            with self._lock:
                if key not in self.graphs:
                    self._capture(key, inputs)
                    done += 1
        return done

    def run_window(
        self,
        keep: Tensor,
        base: Tensor,
        seed: Tensor,
        *,
        kept: int,
        bucket: int,
        grid: tuple[int, int, int],
        window: tuple[int, int, int],
        shift: tuple[int, int, int],
        steps: int,
        ops: WindowOps,
    ) -> None:
        """Add a window's SR residual at its ``kept`` tokens (``keep`` [T, Hp, Wp] bool) into
        ``base`` (the padded window, in place) in a handful of launches: one replay of the
        bucket's feed (its kept tokens, partitions and noise made from the keep set and
        written straight into the flow graph's static inputs, :func:`feed_window`), the gather
        into the flow's base input, one replay of the flow, the scatter from its static
        output. Made one op at a time they were ~30 launches after the window's sync, each
        handing Python's GIL back and forth with VapourSynth's frame threads (H200, 8 steps on
        bikes: upscale_window 0.70 ms of wall a frame for 0.24 of CPU, profile_filter.py).
        The lock is held from the feed to the scatter: they share the flow's buffers, which
        the next window's feed (any stream) overwrites. ``seed`` [1] int64 on the device."""
        with self._lock:
            fkey = (grid, window, shift)
            flow = self._flow_graph(bucket, fkey, steps=steps, ops=ops)
            feed = flow.feeds.get(fkey)
            if feed is None:
                feed = self._capture_feed(flow, fkey, keep, seed, bucket=bucket, ops=ops)
            stream = torch.cuda.current_stream(self.device)
            if self._last is not None:
                stream.wait_event(self._last)
            with torch.cuda.device(self.device):
                if feed is _EAGER:  # its capture failed: the same writes, one op at a time
                    self._feed_fn(flow, fkey, bucket=bucket, ops=ops)(keep, seed)
                else:
                    feed.load([keep, seed])
                    feed.graph.replay()
                ins = flow.inputs
                ops.gather(base, ins[2], ins[0])  # coords -> the flow's base patches
                flow.graph.replay()
                ops.scatter(base, flow.output[:kept], ins[2][:kept])
            self._last = torch.cuda.Event()
            self._last.record(stream)

    def prepare_windows(
        self,
        *,
        buckets: Iterable[int],
        grid: tuple[int, int, int],
        window: tuple[int, int, int],
        shift: tuple[int, int, int],
        steps: int,
        ops: WindowOps,
    ) -> int:
        """Capture the feed (:meth:`run_window`) of every bucket of ``grid`` for its ``steps``-step
        flow graph, capturing that too where missing; returns how many feeds were captured.
        Before the first window: a capture mid-run made the first windows of a run wait
        (the twenty-sixth session's per-stream tokens graphs)."""
        keep = torch.zeros(grid, dtype=torch.bool, device=self.device)  # any keep set will do
        seed = torch.zeros(1, dtype=torch.long, device=self.device)
        fkey, done = (grid, window, shift), 0
        for bucket in buckets:
            with self._lock:
                flow = self._flow_graph(bucket, fkey, steps=steps, ops=ops)
                if fkey not in flow.feeds:
                    self._capture_feed(flow, fkey, keep, seed, bucket=bucket, ops=ops)
                    done += 1
        return done

    def _flow_graph(self, bucket: int, fkey: tuple, *, steps: int, ops: WindowOps) -> _Graph:
        """The ``steps``-step flow graph of ``bucket`` rows on the grid of ``fkey`` (grid,
        window, shift), under the lock, captured from example inputs where missing."""
        key = self._flow_key(bucket, fkey, steps=steps)
        graph = self.graphs.get(key)
        if graph is None:  # not prepared: capture it from example inputs of the bucket
            grid, window, shift = fkey
            flat = bucket_tokens(
                torch.zeros(grid, dtype=torch.bool, device=self.device),
                bucket=bucket,
                grid=grid,
                window=window,
                shift=shift,
                window_multiple=self.window_multiple,
            )
            parts = bucket_partitions(flat, grid=grid, window=window, shift=shift)
            base, state = ops.examples(bucket)
            t = torch.ones(1, device=self.device)
            _, inputs = self._inputs((base, state, flat[1], t, parts), steps=steps)
            graph = self._capture(key, inputs)
        self.graphs.move_to_end(key)
        return graph

    def _flow_key(self, bucket: int, fkey: tuple, *, steps: int) -> tuple[int, ...]:
        """The key :meth:`_inputs` gives the flow of ``bucket`` rows on the grid of ``fkey``
        (grid, window, shift), from the shapes alone (no launch): rows, each partition's
        padded segment ends, steps."""
        grid, window, shift = fkey
        segments = (
            padded_windows(
                math.prod(window_grid(grid, window=window, shift=s)),
                tokens=bucket,
                window_volume=self.window_volume,
                multiple=self.window_multiple,
            )
            for s in ((0, 0, 0), shift)
        )
        return (bucket, *(n + 1 for n in segments), steps)

    def _feed_fn(
        self, flow: _Graph, fkey: tuple, *, bucket: int, ops: WindowOps
    ) -> Callable[[Tensor, Tensor], Tensor]:
        grid, window, shift = fkey
        return functools.partial(
            feed_window,
            inputs=flow.inputs,
            bucket=bucket,
            grid=grid,
            window=window,
            shift=shift,
            window_multiple=self.window_multiple,
            noise=ops.noise,
        )

    def _capture_feed(
        self, flow: _Graph, fkey: tuple, keep: Tensor, seed: Tensor, *, bucket: int, ops: WindowOps
    ) -> Any:
        """Capture the feed of ``flow`` for ``fkey`` under the lock, after the last replay;
        _EAGER where the capture fails (said once a key), so a run goes on without it."""
        stream = self._side_stream()
        fn = self._feed_fn(flow, fkey, bucket=bucket, ops=ops)
        graph: Any
        try:
            with torch.cuda.device(self.device):
                graph = _Graph(
                    fn, [keep, seed], pool=self.pool, stream=stream, staging=self._feed_staging
                )
        except RuntimeError as e:
            log.warning(
                "could not capture the window feed's graph for %s, feeding it eagerly: %s",
                (bucket, *fkey),
                e,
            )
            graph = _EAGER
        self._last = torch.cuda.Event()
        self._last.record(stream)
        flow.feeds[fkey] = graph
        return graph

    def __call__(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        t: Tensor,
        partitions: tuple[Partition, ...],
    ) -> Tensor:
        return self._replay((base, state, coords, t, partitions), steps=0)

    def flow(
        self,
        base: Tensor,
        state: Tensor,
        coords: Tensor,
        partitions: tuple[Partition, ...],
        *,
        steps: int,
    ) -> Tensor:
        """All ``steps`` Euler steps of one window as one replay: its inputs are copied into
        the graph once, and the host launches one graph instead of a replay, a time update
        and a state update per step. The graph runs ``flow_fn``, the same arithmetic as
        :func:`~vs_skipsr.backends.base.euler_flow`, so the same numbers."""
        if steps < 1:
            raise ValueError(f"steps={steps}: a flow takes at least one step")
        t = torch.ones(1, device=state.device)  # a static input the flow does not read
        return self._replay((base, state, coords, t, partitions), steps=steps)

    def _replay(self, call: SRCall, *, steps: int) -> Tensor:
        """Replay the graph of ``call`` (its ``steps``-step flow, or one call with 0),
        captured first if new, on the current stream, after the last replay on any stream
        and before the next."""
        key, inputs = self._inputs(call, steps=steps)
        with self._lock:
            graph = self.graphs.get(key)
            stream = torch.cuda.current_stream(self.device)
            if graph is None:
                graph = self._capture(key, inputs)
            self.graphs.move_to_end(key)
            if self._last is not None:
                stream.wait_event(self._last)
            with torch.cuda.device(self.device):  # a replay launches on the current device
                out = graph(inputs)
            self._last = torch.cuda.Event()
            self._last.record(stream)
            return out


@dataclass(frozen=True)
class WindowOps:
    """The model's share of :meth:`GraphCache.run_window`, from its runner: ``gather(frames,
    coords, out)`` writes the kept tokens' base patches into ``out``; ``noise(index, seed)``
    is their starting state ([K] padded index, [1] seed); ``scatter(frames, rows, coords)``
    adds the SR residual ``rows`` into ``frames`` in place; ``examples(n)``: inputs to capture
    a flow graph of n rows from."""

    gather: Callable[[Tensor, Tensor, Tensor], None]
    noise: Callable[[Tensor, Tensor], Tensor]
    scatter: Callable[[Tensor, Tensor, Tensor], None]
    examples: Callable[[int], tuple[Tensor, Tensor]]  # zero base patches and state, n rows


def feed_window(
    keep: Tensor,
    seed: Tensor,
    *,
    inputs: list[Tensor],
    bucket: int,
    grid: tuple[int, int, int],
    window: tuple[int, int, int],
    shift: tuple[int, int, int],
    window_multiple: int,
    noise: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """Write a window's kept tokens into a flow graph's static ``inputs`` (base, state,
    coords, t, order, cu_seqlens of each partition): coords and the partitions padded for the
    graph from :func:`bucket_tokens`, the state from ``noise`` at the padded index and
    ``seed``; the base patches are the caller's (they read the window's frames). Static
    shapes and no host sync, so one graph per bucket makes it. Returns the first partition's
    segment ends (a graph of the cache has one output)."""
    index, coords, order0, cu0, order1, cu1 = bucket_tokens(
        keep, bucket=bucket, grid=grid, window=window, shift=shift, window_multiple=window_multiple
    )
    inputs[1].copy_(noise(index, seed))
    inputs[2].copy_(coords)
    for dst, src in zip(inputs[4:8], (order0, cu0, order1, cu1), strict=True):
        dst.copy_(src)
    return cu0


_EAGER: Any = object()  # StaticGraph's entry for a call that could not be captured


class StaticGraph:
    """A function of fixed-shape tensors, captured once per CUDA stream and input shape, then
    replayed: its inputs are copied into the graph's own buffers and its outputs are the
    graph's buffers too, valid until the next call on the same stream (the caller copies them
    out on that stream, which orders the next replay after the copy). One graph per stream,
    so windows on different streams never share buffers.

    For the small per-window steps around the net (the window inputs, upsample and keep set:
    ~60 launches a window; the device colour conversion: ~45). Each eager launch hands
    Python's GIL back and forth with VapourSynth's threads, and at a few hundred frames a
    second those hand-offs, not the GPU, were the pipeline's floor (profile_filter.py on an
    H100: GPU 23% busy). Off a side stream (the legacy default stream cannot be captured) it
    runs eagerly."""

    def __init__(self, fn: Callable[..., tuple[Tensor, ...]]) -> None:
        self.fn = fn
        self.captures = 0
        self._lock = threading.Lock()
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[Tensor], tuple[Tensor, ...]]]
        self._graphs = {}

    @torch.inference_mode()
    def __call__(self, *inputs: Tensor, **options: object) -> tuple[Tensor, ...]:
        device = inputs[0].device
        stream = torch.cuda.current_stream(device)
        if stream == torch.cuda.default_stream(device):
            return self.fn(*inputs, **options)
        key = (
            stream.cuda_stream,
            tuple((x.shape, x.dtype, x.device) for x in inputs),
            tuple(sorted(options.items())),
        )
        with torch.cuda.device(device):  # captures and replays go to the current device
            entry = self._graphs.get(key)
            if entry is None:
                with self._lock:
                    entry = self._graphs.get(key) or self._capture(key, inputs, options)
            if entry is _EAGER:
                return self.fn(*inputs, **options)
            graph, static, outputs = entry
            for dst, src in zip(static, inputs, strict=True):
                dst.copy_(src, non_blocking=True)
            graph.replay()
            return outputs

    def _capture(
        self, key: tuple, inputs: tuple[Tensor, ...], options: dict[str, object]
    ) -> tuple[torch.cuda.CUDAGraph, list[Tensor], tuple[Tensor, ...]]:
        static = [x.clone() for x in inputs]
        self.fn(*static, **options)  # warm-up: cuDNN's plans and lazy init stay out of it
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local, as for the SR graphs: the other streams' threads keep launching
            graph.capture_begin(capture_error_mode="thread_local")
            try:
                outputs = tuple(self.fn(*static, **options))
            finally:
                graph.capture_end()
        except RuntimeError as e:  # a step that waits for the host: it stays eager
            log.warning("could not capture %s as a CUDA graph, running it eagerly: %s", self.fn, e)
            self._graphs[key] = _EAGER
            return _EAGER
        self.captures += 1
        self._graphs[key] = (graph, static, outputs)
        return graph, static, outputs
