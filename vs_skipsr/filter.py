"""skipsr(): SkipSR as one stage of a VapourSynth script.

    clip (RGB/YUV, any depth) -> resize to RGBS (clip's matrix/range, BT.709 limited if absent)
      -> per output frame n: the windows n belongs to (windows.py), each computed once by
         pipeline.upscale_window and kept in a small LRU cache, blended by overlap weights
      -> an RGBS frame, or RGBH where half floats carry all the output can show (see below)
      -> resize back to the clip's format at the new size, frame props carried over
    (device_color, the default on CUDA for YUV clips without overlap: the window is converted
    to the clip's YUV planes on the GPU (color.py) and the frame is written in the clip's
    format directly, with no resize back)

VapourSynth asks for frames one at a time, from several threads, in any order, while the
network wants T frames at once. Without overlap (the default) each frame lies in one window,
and Python is asked a few times a window, never per frame (``_by_window``): a clip of one
tiny frame per window and part, the tickets, whose callback puts the window into the cache
(computing it from its source frames unless the read ahead did), writes that part's frames
and attaches them to the ticket as props; frame n is taken out of ticket n // T in native code
(PropToClip, Interleave). With overlap a :func:`~vapoursynth.core.std.FrameEval` looks at
frame n, asks the cache which of its windows are missing and returns a ``ModifyFrame`` fed
with just the source frames those windows need (or, when none is missing, one node built once
for such frames), whose callback blends and writes the frame. Either way a window is computed
under its own lock (so two threads asking frames of one window compute it once), and
callbacks of different windows or frames run concurrently, which is what lets the plumbing
keep up with a GPU (DESIGN.md). Nothing is written to stdout: vspipe owns it; messages go to
``logging``.

The plumbing, not the network, limits a small model on a GPU, so the bytes per frame are kept
down. On CUDA a window comes back as float16 (converted on the GPU: half the bytes over the
bus) into pinned host buffers reused from a pool (staging.py), copied asynchronously on the
window's stream; LR frames go the other way through pooled pinned buffers too. Where the
clip's format is integer of at most 10 bits or half float, those float16 frames go to the
resize as RGBH unchanged (the resize converts half floats in native code), so no float32 copy
of a 1080p frame is made on the host at all; float32 and deeper integer formats keep float32
all the way. On the CPU the window stays the pipeline's own float32 tensor (no copy, no
pinning) and frames go to the resize as RGBS: converting there to half in Python costs more
than the resize saves (scripts/bench_plumbing.py measures both). With device_color only the
clip's planes cross the bus (1.5 bytes a pixel for 4:2:0 8-bit instead of 6 for RGBH) and the
host's per-frame work is three plane copies.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import queue
import threading
import time
import warnings
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import vapoursynth as vs

from .backends.base import Runner
from .backends.cuda_graphs import StaticGraph
from .backends.select import BACKEND_NAMES, Backend, resolve_backend
from .backends.tensorrt_backend import TensorRTBackend
from .backends.torch_backend import TorchBackend
from .color import YuvLayout, rgb_to_yuv, triton_color_works, yuv_layout
from .models.sr import PRESETS as SR_PRESETS
from .models.sr import SRConfig, SRTransformer
from .models.weights import (
    DEFAULT_MASK_WEIGHTS,
    DEFAULT_SR_WEIGHTS,
    WeightsError,
    load_mask,
    load_sr,
)
from .pipeline import WindowOutput, upscale_window, window_inputs
from .staging import HostPool
from .tickets import PARTS, hand_out
from .tokens import token_grid
from .torch_thread import on_torch_thread
from .windows import Blend, Contribution, WindowPlan, longer_window

__all__ = ["SkipSRStats", "skipsr"]

log = logging.getLogger(__name__)


Scorer = Literal["auto", "learned", "gradient"]

# Used when neither threshold nor skip_ratio is given: per scorer, the threshold chosen from the
# validation curves of reports/quality.md (section 4): the largest whose real drop from the
# dense model stays within 0.1 dB on the validation photos and clips. gradient 0.004766: skips
# 65% of the photos' tokens (0.091 dB) and 46% of the clips' (0.048 dB); learned 0.01159 (a
# predicted per-pixel MSE gain; the shipped mask net is its Laplacian-energy prior): skips 68%
# of the photos' tokens (0.092 dB) and 54% of the clips' (0.015 dB).
DEFAULT_THRESHOLD = {"gradient": 0.004766, "learned": 0.01159}
MIN_SIDE = 8  # LR pixels: below this bicubic taps and the mask's 3x3 convs see mostly padding
# Devices whose windows come back to the host as float16 where the output format allows it
# (see _host_dtype). Not the CPU: there the window is already in host memory as float32, and
# a float16 copy would cost a conversion the resize does not win back. Tests add "cpu" to run
# the half-precision path without a GPU.
_HALF_HOST_DEVICES = frozenset({"cuda"})
# Devices on which YUV output is converted from the window's RGB there (color.py), by default.
# Not the CPU: there the window already is in host memory and the resize runs in native code
# on VapourSynth's threads (the GPU-side gain, fewer bytes over the bus, does not exist).
# Tests add "cpu" to run the path without a GPU.
_DEVICE_COLOR_DEVICES = frozenset({"cuda"})
# Devices on which the next window is computed ahead of the requests by default (readahead).
# Not the CPU: there the network and VapourSynth's threads share the same cores, so there is
# no idle device to fill. Tests add "cpu" to run the path without a GPU.
_READ_AHEAD_DEVICES = frozenset({"cuda"})
# How many windows by default there: with one, the device idled from the end of the window
# read ahead until a frame of it was produced and queued the next one. Two against one (H100,
# same machine, 1080 frames, one run each): 232.8 against 200.6 fps at one step, 199.5
# against 181.2 at 8 steps (reports/bench_gpu_h100_s6.log, call 12; the fifth session's larger
# gains came from a filter that ran windows during the graph captures, and are withdrawn;
# both measured before the read-ahead asked for its windows' source frames up front)
_READ_AHEAD_WINDOWS = 2
_READ_AHEAD_IDLE_S = 2.0  # the read-ahead thread ends after this long with nothing to do
# Windows in the network at once by default on a GPU (num_streams=None): two, what every GPU
# end-to-end figure since the third session was measured with (one was never measured
# there); one elsewhere, where the network already fills the cores.
_GPU_STREAMS = 2
# The default window of the shipped model's shape with the torch backend on CUDA
# (window=None; _default_window): up to 4 x the model's (20 frames), at most 163,200 tokens (20
# frames of 1080p output), and at most what half the card's memory holds at 0.14 MiB a window
# token. Against the model's 5 frames, one H200, cockatoo 480x270 -> 1080p, 1080 frames,
# default threshold: SkipSR 8 steps 375.1 -> 523.8 fps, 1 step 544.8 -> 728.8 fps, dense 1 step
# 318.0 -> 448.4 fps; bikes 8 steps 377.4 -> 493.6 fps (call 3); the floor (no token kept) 2.57
# -> 1.80 ms a frame (call 1; reports/bench_gpu_s15.log). The clips' Y-PSNR moves by at most
# 0.012 dB and their flicker not at all (scripts/eval_window_length.py, the same log). The
# memory is what a whole 8-step 1080p run peaked at in torch's allocator (reserved, 2 streams,
# graphs): 5648 MiB at 5 frames, 22074 MiB at 20 (call 6), 0.138 and 0.135 MiB a token; so a
# 24 GB card gets 10 frames at 1080p, a 16 GB one 5. Other model shapes were not measured and
# keep their own window.
_GPU_WINDOW_MULTIPLE = 4
_GPU_WINDOW_TOKENS = 20 * 120 * 68
_GPU_WINDOW_MIB_PER_TOKEN = 0.14
_GPU_WINDOW_MEMORY_SHARE = 0.5
# With that longer window, three windows in the network at once and three read ahead
# (num_streams=None and readahead=None) where the card's memory share holds three windows.
# Same H200, same run, 1080 frames, 8 steps, default threshold, two streams and two read
# ahead against three and three: cockatoo 572.2/568.0 -> 608.5/610.5 fps, bikes 479.0/479.3
# -> 493.6/521.0 (sixteenth session, call 5, reports/bench_gpu_s16.log; why is open: the
# profiles that seemed to show one read-ahead thread computing every window counted threads
# by name, and the workers shared one until the twenty-fifth session). The memory estimate
# scales by the windows in flight, 0.14 MiB a token being two of them: 34272 MiB for three
# 20-frame 1080p windows, where the whole run peaked at 26292 MiB reserved (call 6).
_LONG_WINDOW_STREAMS = 3


# --- what a caller can watch -----------------------------------------------------------------


@dataclass
class SkipSRStats:
    """Counters of one ``skipsr()`` node, filled while its frames are produced.

    Pass one as ``stats=`` to see the cache at work: ``computed[k]`` is how many times window
    k went through the network (1 unless the cache evicted it and a seek came back to it).
    """

    computed: Counter[int] = field(default_factory=Counter)
    hits: int = 0  # window outputs a frame took from the cache
    evicted: int = 0  # windows dropped from the cache
    max_cached: int = 0  # most windows held at once
    read_ahead: int = 0  # windows computed ahead of any request for their frames
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _add(
        self, *, hits: int = 0, evicted: int = 0, cached: int = 0, read_ahead: int = 0
    ) -> None:
        with self._lock:
            self.hits += hits
            self.evicted += evicted
            self.read_ahead += read_ahead
            self.max_cached = max(self.max_cached, cached)

    @property
    def passes(self) -> int:
        """Windows computed in all (a window computed twice counts twice)."""
        return sum(self.computed.values())


# --- the per-window cache --------------------------------------------------------------------


@dataclass(frozen=True)
class _WindowResult:
    """A finished window. Its frames may live in a pooled host buffer that goes back to the
    pool when this object is garbage (HostPool.bind): keep views of ``frames`` no longer than
    a reference to the result itself."""

    frames: np.ndarray | None  # [L, 3, H, W] float32 or float16 (_host_dtype), the real positions
    keep: np.ndarray  # [L, Hp, Wp] bool, the keep mask of each position
    kept_ratio: np.ndarray  # [L] float64
    ms: float  # wall time of the whole window (all of its pieces)
    # instead of frames where the device converts to the clip's YUV: Y [L, H, W], U, V
    planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    layout: YuvLayout | None = None  # what the planes were converted with, so their frames' label


class _Entry:
    __slots__ = ("delivered", "lock", "result")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.result: _WindowResult | None = None
        self.delivered: set[int] = set()


class _WindowCache:
    """Finished windows by id, one lock per window, LRU-bounded.

    A window is computed under its own lock, so concurrent requests for frames of one window
    wait for a single computation instead of repeating it, while other windows proceed. Once
    more than ``capacity`` windows hold results, the least recently used go first, windows all
    of whose frames were delivered before windows still being read.
    """

    def __init__(self, *, capacity: int, real_length: Callable[[int], int], stats: SkipSRStats):
        self.capacity = capacity
        self._real_length = real_length
        self._stats = stats
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, _Entry] = OrderedDict()

    def peek(self, window: int) -> _WindowResult | None:
        with self._lock:
            entry = self._entries.get(window)
            if entry is None or entry.result is None:
                return None
            self._entries.move_to_end(window)
            return entry.result

    def get(self, window: int, compute: Callable[[], _WindowResult]) -> _WindowResult:
        with self._lock:
            entry = self._entries.get(window)
            if entry is None:
                entry = self._entries[window] = _Entry()
            self._entries.move_to_end(window)
        with entry.lock:
            if entry.result is not None:
                self._stats._add(hits=1)
                return entry.result
            return self._compute_into(entry, window, compute)

    def has(self, window: int) -> bool:
        """Whether ``window`` is done or being computed."""
        with self._lock:
            return window in self._entries

    def offer(self, window: int, compute: Callable[[], _WindowResult]) -> bool:
        """Compute ``window`` unless it is done or being computed; never waits. For the read
        ahead: a request that comes meanwhile waits for this computation, as it would for
        another request's."""
        with self._lock:
            if window in self._entries:
                return False
            entry = self._entries[window] = _Entry()
            entry.lock.acquire()  # before the cache's lock goes: no request can get in first
        try:
            self._compute_into(entry, window, compute)
        finally:
            entry.lock.release()
        return True

    def _compute_into(
        self, entry: _Entry, window: int, compute: Callable[[], _WindowResult]
    ) -> _WindowResult:
        """Compute ``window`` into ``entry`` (whose lock the caller holds) and count it."""
        result = compute()
        with self._lock:
            entry.result = result
            self._evict()
        with self._stats._lock:
            self._stats.computed[window] += 1
        return result

    def delivered(self, window: int, position: int) -> None:
        """Note that output position ``position`` of ``window`` was handed out."""
        with self._lock:
            entry = self._entries.get(window)
            if entry is not None:
                entry.delivered.add(position)

    def __len__(self) -> int:
        with self._lock:
            return sum(e.result is not None for e in self._entries.values())

    def _evict(self) -> None:  # called with self._lock held
        done = [k for k, e in self._entries.items() if e.result is not None]
        excess = max(0, len(done) - self.capacity)
        if excess:
            finished = [k for k in done if len(self._entries[k].delivered) >= self._real_length(k)]
            rest = [k for k in done if k not in finished]
            for k in (finished + rest)[:excess]:
                del self._entries[k]
        self._stats._add(evicted=excess, cached=len(done) - excess)


# --- colour: the clip's props, with defaults -------------------------------------------------


@dataclass(frozen=True)
class _Color:
    """How to convert RGB back into the clip's format for one frame (zimg's numbering)."""

    matrix: int
    range: int  # 0 limited, 1 full
    chromaloc: int


def _color_of(props: Mapping[str, Any], *, family: vs.ColorFamily) -> _Color:
    """The frame's _Matrix/_Range/_ChromaLocation; BT.709 and limited range for YUV and full
    range for RGB where a prop is absent or unspecified (the same defaults the way in uses).
    A YUV clip with _Matrix=0 holds GBR planes and keeps that identity matrix."""
    rgb = family == vs.RGB
    matrix = int(props.get("_Matrix", 2))
    if rgb:
        matrix = 0
    elif matrix == 2:  # unspecified
        matrix = 1
    if "_Range" in props:
        rng = int(props["_Range"])
    elif "_ColorRange" in props:  # the deprecated name counts the other way: 0 full, 1 limited
        rng = 1 - int(props["_ColorRange"])
    else:
        rng = 1 if rgb else 0
    return _Color(matrix=matrix, range=rng, chromaloc=int(props.get("_ChromaLocation", 0)))


def _to_rgbs(clip: vs.VideoNode) -> vs.VideoNode:
    """The clip as float RGB. Props win over these arguments in zimg, so the arguments are the
    defaults for frames that do not say: BT.709, limited for YUV, full for RGB."""
    if clip.format.id == vs.RGBS:
        return clip
    if clip.format.color_family == vs.RGB:
        return vs.core.resize.Bicubic(clip, format=vs.RGBS, range_in=1)
    return vs.core.resize.Bicubic(clip, format=vs.RGBS, matrix_in=1, range_in=0, chromaloc_in=0)


def _shifted(clip: vs.VideoNode, offset: int) -> vs.VideoNode:
    """A clip whose frame n is ``clip``'s frame n + offset, clamped to the first/last frame."""
    n = clip.num_frames
    if offset == 0:
        return clip
    if offset > 0:
        return clip[n - 1] * n if offset >= n else clip[offset:] + clip[n - 1] * offset
    back = -offset
    return clip[0] * n if back >= n else clip[0] * back + clip[: n - back]


def _half_enough(fmt: vs.VideoFormat) -> bool:
    """Whether float16 carries all that ``fmt`` can show. Integer samples of at most 10 bits:
    fp16 keeps values in [0, 1] within 2^-12, a quarter of a 10-bit code, so the rounded
    output is the float32 path's or one code off. Half floats: the output is fp16 anyway.
    Not 12-16 bit integers (an fp16 step is several codes there) nor 32-bit floats."""
    if fmt.sample_type == vs.INTEGER:
        return fmt.bits_per_sample <= 10
    return fmt.bits_per_sample == 16


def _host_dtype(fmt: vs.VideoFormat, device: torch.device) -> torch.dtype:
    """How a window's frames are kept on the host: float16 where they come over a bus from the
    device and the output format cannot tell (half the bytes copied, cached and resized),
    else float32."""
    if device.type in _HALF_HOST_DEVICES and _half_enough(fmt):
        return torch.float16
    return torch.float32


# VapourSynth's source planes are read-only; they reach torch only as copy sources (_fill), so
# torch's once-per-process warning that it cannot protect them is noise on a user's stderr
warnings.filterwarnings(
    "ignore", message="The given NumPy array is not writable", module=r"vs_skipsr\.filter"
)


def _fill(dst: torch.Tensor, frames: list[vs.VideoFrame]) -> None:
    """Copy RGB float frames into ``dst`` [T, 3, h, w], straight out of VapourSynth's strided
    planes (dst is a reused staging buffer, pinned on a GPU). One torch call for all planes
    instead of a numpy copy per plane, each of which lets go of the GIL: 1.16 -> 0.86 ms a
    frame of wall time summed over threads (H100 floor profiles, eighth and ninth sessions)."""
    _, c, h, w = dst.shape
    torch.stack(
        [torch.from_numpy(np.asarray(frame[p])) for frame in frames for p in range(c)],
        out=dst[: len(frames)].view(-1, h, w),
    )


def _as_float32(a: np.ndarray) -> np.ndarray:
    """``a`` as float32: itself, or converted through torch where it is float16 (exact, and
    about ten times faster than numpy's element-by-element half conversion)."""
    if a.dtype == np.float32:
        return a
    return torch.from_numpy(a).float().numpy()


def _copy_plane(dst: np.ndarray, src: np.ndarray) -> None:
    """Write one plane into a VapourSynth frame: numpy's copy where dtypes match, else a
    conversion through torch (round to nearest even like numpy, but vectorised; numpy's
    float32 -> float16 cast takes ~15 ms for a 1080p RGB frame). Both let go of the GIL, so
    the threads' copies run side by side. A memcpy that kept the GIL (memoryviews) held it for
    ~0.7 ms a frame, 41% of py-spy's GIL samples, and made the floor 2.81 ms a frame where
    the filter before gave 2.14 (H100, ninth session, call 2). Not torch's copy_ for a plain
    copy: it splits each copy over torch's intra-op threads, and from VapourSynth's 16 threads
    at once those teams oversubscribe the cores; 1080p YUV420P8 frames from 16 threads took
    0.275 ms each through torch, 0.132 through numpy, and the stub-network plumbing went from
    366 to 390 fps at 20-frame windows (H200, sixteenth session, reports/bench_gpu_s16.log)."""
    if dst.dtype == src.dtype:
        np.copyto(dst, src)
    else:
        torch.from_numpy(dst).copy_(torch.from_numpy(src))


def _to_host(src: torch.Tensor, dst: torch.Tensor) -> None:
    """Copy a window's output ``src`` (device, float32) into the host buffer ``dst``. From a
    GPU the dtype conversion runs there first, so only ``dst``'s bytes cross the bus, and the
    copy is queued on the current stream without waiting (``dst`` is pinned); the caller
    synchronises the stream before reading ``dst``."""
    if src.device.type == "cuda":
        dst.copy_(src.to(dst.dtype), non_blocking=True)
    else:
        dst.copy_(src)


# --- show_mask -------------------------------------------------------------------------------


def _draw_mask(img: np.ndarray, keep: np.ndarray, *, patch: int) -> np.ndarray:
    """Dim and tint skipped tokens blue, outline kept tokens in green: [3,H,W] -> [3,H,W].

    Dimming (not hiding) keeps the picture readable, so a viewer can judge whether the mask
    skipped the right places; the outline shows the token grid the SR net actually ran on.
    """
    _, h, w = img.shape
    kp = np.repeat(np.repeat(keep, patch, axis=0), patch, axis=1)[:h, :w]  # [H, W]
    out = img.copy()
    skipped = ~kp
    out[:, skipped] *= 0.4
    out[2, skipped] += 0.25
    edge = np.zeros((patch, patch), dtype=bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    reps = (-(-h // patch), -(-w // patch))
    border = kp & np.tile(edge, reps)[:h, :w]
    out[:, border] = np.array([0.1, 0.9, 0.1], dtype=np.float32)[:, None]
    return np.clip(out, 0.0, 1.0, out=out)


# --- the node --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Settings:
    scale: int
    threshold: float | None
    skip_ratio: float | None
    scorer: Literal["learned", "gradient"]
    dilate: int
    steps: int
    seed: int
    scene_cuts: bool
    show_mask: bool
    device_color: bool  # YUV planes converted on the device (color.py), not by the resize
    # the steps around the net (window inputs, colour) replayed as CUDA graphs per stream
    small_graphs: bool


@dataclass(frozen=True)
class _Stashed:
    """Frame n's windows, all cached when _select ran, held for _produce_cached."""

    contributions: tuple[Contribution, ...]
    ready: dict[int, _WindowResult]


class _Stash[K, V]:
    """What a FrameEval's callback found in the cache, held for the callback of the node it
    picked (the cache may drop it in between): one ``put`` a request, one ``take`` a
    callback; an entry goes once every request routed to it took it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[K, list[Any]] = {}  # key -> [value, requests not yet taken]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = [value, 1]
            else:  # a second request before the first was produced
                entry[0], entry[1] = value, entry[1] + 1

    def take(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry[1] -= 1
            if not entry[1]:
                del self._entries[key]
            return entry[0]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass(frozen=True)
class _Fetch:
    """A read-ahead window's source frames, asked for and on their way."""

    frames: dict[int, Future[vs.VideoFrame]]
    source: Future[vs.VideoFrame] | None  # the clip's first frame, for device colour's props


class _Slots:
    """At most ``n`` windows in the network at once, each with its own CUDA stream on a GPU."""

    def __init__(self, n: int, device: torch.device) -> None:
        self._free: queue.SimpleQueue[torch.cuda.Stream | None] = queue.SimpleQueue()
        for _ in range(n):
            self._free.put(torch.cuda.Stream(device) if device.type == "cuda" else None)

    @contextmanager
    def take(self) -> Iterator[None]:
        stream = self._free.get()
        try:
            if stream is None:
                yield
            else:
                with torch.cuda.stream(stream):
                    yield
                stream.synchronize()
        finally:
            self._free.put(stream)


_WINDOW_FRAME = "SkipSRFrame"  # a ticket's prop holding the frame at a position (_by_window)

OWN_PROPS = (
    "_Matrix",
    "_Range",
    "_ChromaLocation",
    "_ColorRange",  # never set: the source's deprecated, inverted range goes (in R81 an alias of
    # _Range, which the callback sets)
    "SkipSRKeptRatio",
    "SkipSRWindow",
    "SkipSRWindowMs",
    "SkipSRBackend",
)
"""The props a SkipSR frame takes from the callback rather than from the source frame: a
listed prop the callback does not set is removed."""


class _SkipSRNode:
    """Everything one ``skipsr()`` call builds; its methods are the VapourSynth callbacks."""

    def __init__(
        self,
        clip: vs.VideoNode,
        *,
        runner: Runner,
        plan: WindowPlan,
        settings: _Settings,
        num_streams: int,
        cache_windows: int,
        readahead: int,
        stats: SkipSRStats,
    ) -> None:
        self.core = vs.core  # callbacks run on VapourSynth's threads: keep this script's core
        self.clip = clip
        self.runner = runner
        self.plan = plan
        self.settings = settings
        self.stats = stats
        self.backend_name = f"{runner.name}:{runner.device}"
        self.cache = _WindowCache(capacity=cache_windows, real_length=plan.real_length, stats=stats)
        self.slots = _Slots(num_streams, runner.device)
        # a window's ~45 colour launches and ~60 before the net (upsample, mask) as two
        # replays: each eager launch hands the GIL back and forth with VapourSynth's threads
        small = settings.small_graphs
        self.to_yuv = StaticGraph(rgb_to_yuv) if small else rgb_to_yuv
        self.inputs_of = StaticGraph(window_inputs) if small else None
        self.input_options = {  # window_inputs' settings, also the graphs' key
            "scale": settings.scale,
            "runner": runner,
            "scorer": settings.scorer,
            "threshold": settings.threshold,
            "skip_ratio": settings.skip_ratio,
            "dilate": settings.dilate,
        }
        # staging for LR frames and window outputs, pinned where copies cross to a GPU
        self.host = HostPool(pinned=runner.device.type == "cuda")
        self.host_dtype = _host_dtype(clip.format, runner.device)
        self.lr = _to_rgbs(clip)
        self.out_w, self.out_h = clip.width * settings.scale, clip.height * settings.scale
        # the frames the callback writes: RGBH when windows are kept as float16 (copied as they
        # are, converted by the resize in native code), else RGBS
        rgb = vs.RGBH if self.host_dtype == torch.float16 else vs.RGBS
        # with device colour conversion the callback writes the clip's own format directly
        fmt = clip.format.id if settings.device_color else rgb
        self.blank = self.core.std.BlankClip(
            self.lr, width=self.out_w, height=self.out_h, format=fmt, keep=True
        )
        self._create_frame = getattr(self.core, "create_video_frame", None)
        t = plan.size
        self.shifted = {d: _shifted(self.lr, d) for d in range(-(t - 1), t)}
        self.sr: vs.VideoNode | None = None  # the RGB float output, before the way back
        # without overlap, a clip of one frame a window for each part of a window (_by_window)
        self.tickets: list[vs.VideoNode] = []
        # (window, part) found cached by _select_window, for _frames_cached
        self._window_stash: _Stash[tuple[int, int], _WindowResult] = _Stash()
        self._back: dict[_Color, vs.VideoNode] = {}
        self._back_lock = threading.Lock()
        self.readahead = readahead
        self._ahead: queue.SimpleQueue[tuple[int, _Fetch]] = queue.SimpleQueue()
        self._ahead_threads: set[threading.Thread] = set()
        self._ahead_workers = max(1, min(readahead, num_streams))
        self._ahead_serial = itertools.count()
        self._ahead_lock = threading.Lock()
        self._ahead_next = 0  # windows below this one were read ahead or asked for already
        self._prepared = False
        self._prepare_lock = threading.Lock()
        # frame n's cached windows, from _select to _produce_cached
        self._stash: _Stash[int, _Stashed] = _Stash()
        # one node for every frame whose windows are all cached (with read ahead, nearly all
        # of them), instead of a ModifyFrame made per frame; uncached, so each request reaches
        # the callback and takes its frame's entry out of the stash. Fed the blank frame
        # alone: the source frame's props matter only to a window still to be computed (its
        # frames are labelled with the layout it was converted with), and asking VapourSynth
        # for the source frame and reading its colour props cost 0.03-0.11 ms of CPU a frame
        # in a callback microbenchmark on the 2-core development machine (twenty-first
        # session; not measurable end to end there, where a window's work dominates)
        self._from_cache = self.core.std.ModifyFrame(self.blank, [self.blank], self._produce_cached)
        self.core.std.SetVideoCache(self._from_cache, mode=0)  # sets the mode, returns nothing

    # the graph ------------------------------------------------------------------------------

    def build(self) -> vs.VideoNode:
        # the source's props copied on in native code, then this filter's own over them.
        # Copied key by key in the callback they took 0.85 ms a frame of wall time summed over
        # threads; the own ones alone take 0.28 (H100 floor profiles, eighth and ninth
        # sessions). VapourSynth caches the callback's frame for its second consumer, so each
        # frame is still produced once (a test counts).
        if self.plan.overlap == 0 and self._create_frame is not None:
            made = self._by_window()
        else:
            made = self.core.std.FrameEval(self.blank, self._select)
        self.sr = self.core.std.CopyFrameProps(
            self.core.std.CopyFrameProps(made, self.clip), made, props=list(OWN_PROPS)
        )
        fmt = self.clip.format
        if fmt.id == self.blank.format.id or self.settings.device_color:
            return self.sr
        target = self.core.std.BlankClip(
            self.clip, width=self.out_w, height=self.out_h, format=fmt.id, keep=True
        )
        return self.core.std.FrameEval(target, self._convert_back, prop_src=[self.clip])

    def _by_window(self) -> vs.VideoNode:
        """Without overlap every frame lies in one window, so Python is asked a few times a
        window, not twice a frame: clips of one tiny frame a window, the tickets, whose
        callbacks (:meth:`_frames_cached` or :meth:`_frames_computed`, picked by
        :meth:`_select_window`) write the window's frames and attach them to the ticket as
        props; frame n is then prop ``pos`` of ticket n // T, taken out in native code (a
        PropToClip per position, interleaved). A FrameEval and a ModifyFrame a frame set the
        host's floor: synthetic 1920x816 YUV420P8 frames written from numpy that way ran at
        1848 fps through vspipe, 2754 with the writing spread over one ModifyFrame per
        VapourSynth thread (an H200's 16-core host, twenty-fifth session), where the
        profiles of the twenty-first and twenty-fourth sessions found nothing left to shave
        off a frame's callbacks. End to end the floor (bikes, 1920x816, no token kept) went
        from 1.14 to 0.76 ms a frame, alternating in one call (reports/bench_gpu_s25.log).

        A window has :data:`~vs_skipsr.tickets.PARTS` tickets, part s writing the positions
        s, s + PARTS, ...: VapourSynth runs one ModifyFrame's callbacks one at a time, so one
        ticket a window wrote 20 frames one after another while the other threads waited
        (H200, twenty-fifth session: 20-26 ms a window through vspipe, 38 under the
        profiler). A window's source frames reach Python only where it has to be computed (once, under
        the cache's lock, whichever part asks first). VapourSynth keeps a few tickets of each
        part (the windows the requests in flight span); one asked for again after that is
        rebuilt from the window cache, or computed again if the window left it too (a seek
        back)."""
        plan, core, t = self.plan, self.core, self.plan.size
        windows = plan.num_windows
        tiny = core.std.BlankClip(
            self.blank, width=1, height=1, format=vs.GRAY8, length=windows, keep=True
        )
        padded = self.lr  # the tail window's positions past the end repeat the last frame
        if windows * t > plan.num_frames:
            padded = padded + padded[-1] * (windows * t - plan.num_frames)
        inputs = [
            core.std.SelectEvery(padded, cycle=t, offsets=[j], modify_duration=False)
            for j in range(t)
        ]
        if self.settings.device_color:  # each window's first source frame, for colour props
            first = core.std.SelectEvery(self.clip, cycle=t, offsets=[0], modify_duration=False)
            inputs.insert(0, first)
        held = -(-core.num_threads // t) + 2
        self.tickets = []
        for part in range(min(t, PARTS)):
            computed = core.std.ModifyFrame(
                tiny, [tiny, *inputs], partial(self._frames_computed, part=part)
            )
            cached = core.std.ModifyFrame(tiny, [tiny], partial(self._frames_cached, part=part))
            for node in (computed, cached):  # each asked once a ticket, which is cached
                core.std.SetVideoCache(node, mode=0)
            select = partial(self._select_window, part=part, computed=computed, cached=cached)
            tickets = core.std.FrameEval(tiny, select)
            core.std.SetVideoCache(tickets, mode=1, fixedsize=1, maxsize=held)
            self.tickets.append(tickets)
        return hand_out(
            self.tickets, like=self.blank, window=t, frames=plan.num_frames, prop=_WINDOW_FRAME
        )

    def _select_window(
        self, n: int, *, part: int, computed: vs.VideoNode, cached: vs.VideoNode
    ) -> vs.VideoNode:
        """Window n's ticket of ``part``: from the cache where the window is there (read
        ahead, or another part computed it), else from the node fed its source frames."""
        result = self.cache.peek(n)
        if result is None:
            return computed
        self._window_stash.put((n, part), result)
        return cached

    def _frames_cached(
        self, n: int, f: vs.VideoFrame | list[vs.VideoFrame], *, part: int
    ) -> vs.VideoFrame:
        """Window n's ticket of ``part`` from the result :meth:`_select_window` found
        (``f``: the tiny frame)."""
        result = self._window_stash.take((n, part))
        if result is None:
            result = self.cache.peek(n)
        if result is None:  # not expected (one _select_window per request)
            raise vs.Error(f"skipsr: window {n} left the cache before its frames were made")
        tiny = f if isinstance(f, vs.VideoFrame) else f[0]
        return self._window_frames(n, tiny, result, part=part, hits=True)

    def _frames_computed(self, n: int, f: list[vs.VideoFrame], *, part: int) -> vs.VideoFrame:
        """Window n's ticket of ``part``, the window computed (or waited for, where the read
        ahead or another part computes it). ``f``: the tiny frame, with device colour the
        window's first source frame, then its T LR frames."""
        tiny, rest = f[0], list(f[1:])
        layout = None
        if self.settings.device_color:
            layout = self._layout(self.plan.start(n), rest.pop(0).props)
        by_index = dict(zip(self.plan.frames(n), rest, strict=True))
        result = self.cache.get(n, partial(self._compute, n, by_index, layout))
        return self._window_frames(n, tiny, result, part=part, hits=False)

    def _window_frames(
        self, window: int, tiny: vs.VideoFrame, result: _WindowResult, *, part: int, hits: bool
    ) -> vs.VideoFrame:
        """The ticket of ``part``: ``tiny`` with its positions' frames attached, one prop
        each. ``hits``: count them as frames taken from the cache."""
        ticket = tiny.copy()
        props = ticket.props
        start = self.plan.start(window)
        positions = range(part, self.plan.real_length(window), len(self.tickets))
        for pos in positions:
            c = Contribution(window, pos, 1.0)
            props[f"{_WINDOW_FRAME}{pos}"] = self._write(start + pos, None, (c,), [result])
            self.cache.delivered(window, pos)
        if hits:
            self.stats._add(hits=len(positions))
        self._read_ahead_after(window)
        return ticket

    def _convert_back(self, n: int, f: vs.VideoFrame) -> vs.VideoNode:
        """The resize node for this frame's colour props (a handful per clip, built once)."""
        color = _color_of(f.props, family=self.clip.format.color_family)
        assert self.sr is not None
        with self._back_lock:
            node = self._back.get(color)
            if node is None:
                fmt = self.clip.format
                if fmt.color_family == vs.RGB:
                    node = self.core.resize.Bicubic(self.sr, format=fmt.id, range=color.range)
                else:
                    node = self.core.resize.Bicubic(
                        self.sr,
                        format=fmt.id,
                        matrix=color.matrix,
                        range=color.range,
                        chromaloc=color.chromaloc,
                    )
                self._back[color] = node
        return node

    def _select(self, n: int) -> vs.VideoNode:
        """Frame n: a ModifyFrame fed with the source frames of whichever of n's windows the
        cache lacks, or where it lacks none the one node built for that (so a seek inside a
        window decodes nothing). Making a node per frame was the largest named holder of the
        GIL in a floor profile, 11.4% of py-spy's samples (H200, sixteenth session, call 3)."""
        contributions = self.plan.contributions(n)
        ready: dict[int, _WindowResult] = {}
        needed: set[int] = set()
        for c in contributions:
            result = self.cache.peek(c.window)
            if result is None:
                needed.update(self.plan.frames(c.window))
            else:
                ready[c.window] = result
        if not needed:
            self._stash.put(n, _Stashed(contributions, ready))
            return self._from_cache
        offsets = sorted(i - n for i in needed)
        clips = [self.blank, self.clip] + [self.shifted[d] for d in offsets]
        produce = partial(self._produce, contributions=contributions, ready=ready, offsets=offsets)
        return self.core.std.ModifyFrame(self.blank, clips, produce)

    # the callback ---------------------------------------------------------------------------

    def _produce_cached(self, n: int, f: vs.VideoFrame | list[vs.VideoFrame]) -> vs.VideoFrame:
        """Frame n from windows that were all cached when _select ran; the stash holds them,
        so an eviction since then does not matter. ``f``: the blank frame (ModifyFrame hands
        a node of one clip its frame, not a list)."""
        entry = self._stash.take(n)
        if entry is None:  # not expected (one _select per request); the cache, if it still can
            contributions = self.plan.contributions(n)
            ready = {c.window: self.cache.peek(c.window) for c in contributions}
            if any(r is None for r in ready.values()):
                raise vs.Error(f"skipsr: frame {n}: its windows left the cache before it was made")
            entry = _Stashed(contributions, ready)  # type: ignore[arg-type]
        blank = f if isinstance(f, vs.VideoFrame) else f[0]
        return self._produce(
            n, [blank], contributions=entry.contributions, ready=entry.ready, offsets=[]
        )

    def _produce(
        self,
        n: int,
        f: list[vs.VideoFrame],
        *,
        contributions: tuple[Contribution, ...],
        ready: dict[int, _WindowResult],
        offsets: list[int],
    ) -> vs.VideoFrame:
        """Frame n from its windows, computing those ``ready`` lacks from ``f``: the blank frame,
        then (when a window is missing) the source frame n and the LR frames at ``offsets``
        from n. Device colour labels the frame with the layout its window was converted with,
        which is the first frame's (read ahead) or the requesting frame's, not necessarily
        this frame's own."""
        blank, lr_frames = f[0], f[2:]
        by_index = {n + d: frame for d, frame in zip(offsets, lr_frames, strict=True)}
        layout = None
        if self.settings.device_color and any(c.window not in ready for c in contributions):
            layout = self._layout(n, f[1].props)
        results = []
        for c in contributions:
            result = ready.get(c.window)
            if result is None:
                compute = partial(self._compute, c.window, by_index, layout)
                result = self.cache.get(c.window, compute)
            else:
                self.stats._add(hits=1)
            results.append(result)
        out = self._write(n, blank, contributions, results)
        for c in contributions:
            self.cache.delivered(c.window, c.position)
        self._read_ahead_after(contributions[-1].window)
        return out

    def _write(
        self,
        n: int,
        blank: vs.VideoFrame | None,
        contributions: tuple[Contribution, ...],
        results: list[_WindowResult],
    ) -> vs.VideoFrame:
        """Frame n, a new frame (like ``blank``: needed where VapourSynth cannot make one
        from a format) from its windows' results."""
        primary = max(range(len(contributions)), key=lambda i: contributions[i].weight)
        main, main_pos = results[primary], contributions[primary].position
        out = self._new_frame(blank)
        if main.planes is not None:  # device colour: one window per frame (no overlap)
            for p in range(3):
                dst = np.asarray(out[p])
                _copy_plane(dst, main.planes[p][main_pos].view(dst.dtype))
        else:
            img = self._blend(contributions, results)
            if self.settings.show_mask:
                img = _draw_mask(
                    _as_float32(img), main.keep[main_pos], patch=self.runner.sr_config.patch
                )
            for p in range(3):
                _copy_plane(np.asarray(out[p]), img[p])
        kept = sum(
            c.weight * r.kept_ratio[c.position] for c, r in zip(contributions, results, strict=True)
        )
        self._set_props(
            out, main.layout, kept=float(kept), window=contributions[primary].window, ms=main.ms
        )
        return out

    # the read ahead ---------------------------------------------------------------------------

    def _read_ahead_after(self, window: int) -> None:
        """Queue the ``readahead`` windows after ``window`` for the background threads, so the
        device computes them while this window's frames are copied out and encoded: without
        it the next window starts only when a request reaches its first frame, and the GPU
        waits for the host each window. Each window is queued once, in order; a seek back
        queues nothing, a seek forward skips the windows in between.

        The source frames of a queued window are asked for here, at once, not when a thread
        takes the window: VapourSynth's threads then decode and convert them while the device
        still runs the windows before it. Fetched by the thread that computes the window, a
        21-frame window of the SeedVR2-3B shape left the GPU idle for the decode of its 21
        source frames after every window. One thread per network slot (num_streams), so one
        window's host work overlaps another's device work. On an H100, same machine, 3B shape
        at 10% kept: 72% of the ideal speed-up before, 88% after (87% in a second run), where
        the SR net alone reaches 87% (reports/bench_gpu_h100_s7.log, calls 1, 3, 4)."""
        if not self.readahead:
            return
        last = min(window + self.readahead, self.plan.num_windows - 1)
        if max(window + 1, self._ahead_next) > last:
            # nothing to queue, known without the lock (_ahead_next only grows): four frames
            # of five end here. With the lock taken every frame, this method took 1.42 ms a
            # frame summed over VapourSynth's threads; 0.61 without (H100 floor profiles,
            # ninth session, calls 1 and 2)
            return
        with self._ahead_lock:
            first = max(window + 1, self._ahead_next)
            if first > last:
                return
            self._ahead_next = last + 1
            for w in range(first, last + 1):
                if not self.cache.has(w):
                    self._ahead.put((w, self._fetch(w)))
            while len(self._ahead_threads) < self._ahead_workers:
                thread = threading.Thread(  # numbered: a profile or py-spy tells them apart
                    target=self._ahead_loop,
                    name=f"skipsr-readahead-{next(self._ahead_serial)}",
                    daemon=True,
                )
                self._ahead_threads.add(thread)
                thread.start()

    def _fetch(self, window: int) -> _Fetch:
        """Ask for a window's LR frames (and, with device colour, its first source frame for
        the colour props) without waiting for them."""
        frames = {i: self.lr.get_frame_async(i) for i in sorted(set(self.plan.frames(window)))}
        source = None
        if self.settings.device_color:
            source = self.clip.get_frame_async(self.plan.start(window))
        return _Fetch(frames=frames, source=source)

    def _ahead_loop(self) -> None:
        """A read-ahead thread; it ends after a while with nothing queued, so a node the
        script dropped (a previewer reloading it) is not kept alive with its device memory."""
        me = threading.current_thread()
        while True:
            try:
                window, fetch = self._ahead.get(timeout=_READ_AHEAD_IDLE_S)
            except queue.Empty:
                with self._ahead_lock:
                    if self._ahead.empty():
                        self._ahead_threads.discard(me)
                        return
                continue
            try:
                self._read_ahead(window, fetch)
            except Exception:  # a request for its frames computes it again and raises there
                log.debug("skipsr: reading window %d ahead failed", window, exc_info=True)

    def _read_ahead(self, window: int, fetch: _Fetch) -> None:
        """Window ``window`` into the cache from this thread, once its source frames are in.
        They are waited for before the window is claimed in the cache: a request for one of
        its frames meanwhile computes it itself rather than waiting on a thread that waits on
        VapourSynth."""
        if self.cache.has(window):
            return
        by_index = {i: f.result() for i, f in fetch.frames.items()}
        layout = None
        if fetch.source is not None:
            layout = self._layout(self.plan.start(window), fetch.source.result().props)
        if self.cache.offer(window, partial(self._compute, window, by_index, layout)):
            self.stats._add(read_ahead=1)

    def _layout(self, n: int, props: Mapping[str, Any]) -> YuvLayout:
        """How frame n's window is converted on the device: the clip's depth and subsampling
        with this frame's matrix, range and chroma location (a window takes them from the
        frame whose request computes it, or from its first frame when read ahead)."""
        fmt = self.clip.format
        color = _color_of(props, family=fmt.color_family)
        layout = yuv_layout(
            bits=fmt.bits_per_sample,
            ss_w=fmt.subsampling_w,
            ss_h=fmt.subsampling_h,
            matrix=color.matrix,
            full_range=color.range == 1,
            chromaloc=color.chromaloc,
        )
        if layout is None:
            raise _fail(
                f"frame {n} has _Matrix={color.matrix}, which device_color does not convert "
                "(accepted 1, 4, 5, 6, 7, 9): pass device_color=False"
            )
        return layout

    def _new_frame(self, blank: vs.VideoFrame | None) -> vs.VideoFrame:
        """A fresh frame to write the picture into. Not ``blank.copy()``: that shares the blank
        frame's planes, and the first write to each would copy it (copy-on-write), ~25 MB of
        wasted memcpy per 1080p RGBS frame."""
        if self._create_frame is None:  # an older VapourSynth: only the per-frame path
            assert blank is not None
            return blank.copy()
        return self._create_frame(self.blank.format, self.out_w, self.out_h)

    @staticmethod
    def _blend(contributions: tuple[Contribution, ...], results: list[_WindowResult]) -> np.ndarray:
        """Weighted sum of the windows' outputs in window order (so any request order gives
        the same bytes), accumulated in float32 with numpy (deterministic whatever thread runs
        it). A frame in one window (weight 1, every frame when overlap=0) is that window's
        output as it is: no arithmetic, no copy, and in the window's dtype."""
        if len(contributions) == 1:
            return results[0].frames[contributions[0].position]
        acc: np.ndarray | None = None
        for c, r in zip(contributions, results, strict=True):
            part = np.float32(c.weight) * _as_float32(r.frames[c.position])
            if acc is None:
                acc = part  # the same bytes as 0 + part: weights and pixels are >= 0
            else:
                acc += part
        assert acc is not None
        return acc

    def _set_props(
        self, out: vs.VideoFrame, layout: YuvLayout | None, *, kept: float, window: int, ms: float
    ) -> None:
        """This filter's own props (:data:`OWN_PROPS`) on ``out``; the source's other props
        come on in native code (:meth:`build`). Colour: an RGB float frame (the resize back
        then sets the clip's matrix, range and chroma location again from the source's
        values), or with ``layout`` the YUV planes converted on the device, labelled as the
        resize would label them (no chroma location for 4:4:4)."""
        props = out.props
        if layout is None:
            props["_Matrix"] = 0
            props["_Range"] = 1
        else:
            props["_Matrix"] = layout.matrix
            props["_Range"] = 1 if layout.full_range else 0
            if layout.ss_w or layout.ss_h:
                props["_ChromaLocation"] = layout.chromaloc
        props["SkipSRKeptRatio"] = kept
        props["SkipSRWindow"] = window
        props["SkipSRWindowMs"] = ms
        props["SkipSRBackend"] = self.backend_name

    def _compute(
        self, window: int, by_index: Mapping[int, vs.VideoFrame], layout: YuvLayout | None = None
    ) -> _WindowResult:
        """:meth:`_compute_window`, on the torch thread where the network runs on the CPU
        (:mod:`vs_skipsr.torch_thread`: one OpenMP team in the process)."""
        if self.runner.device.type == "cpu":
            return on_torch_thread(self._compute_window, window, by_index, layout)
        return self._compute_window(window, by_index, layout)

    def _compute_window(
        self, window: int, by_index: Mapping[int, vs.VideoFrame], layout: YuvLayout | None = None
    ) -> _WindowResult:
        """One window through the network, split into pieces at scene cuts if asked. ``ms``
        counts the time in the network slot (copy in, network, copy out), not the wait for it.

        The LR frames are written straight into a pooled staging buffer outside the slot, so
        the slot is held for device work only. A window of one piece whose output already is
        what the host keeps (the CPU: float32 in host memory) is kept as it is, with no copy;
        otherwise the output goes into a pooled host buffer (float16 and pinned on a GPU),
        which returns to the pool once the result is dropped from the cache and no frame being
        produced holds it."""
        self._prepare_runner()
        busy = 0.0
        plan, s = self.plan, self.settings
        device = self.runner.device
        real = plan.real_length(window)
        first = plan.start(window)
        cuts: set[int] = set()
        if s.scene_cuts:
            cuts = {
                i
                for i in range(first, first + real)
                if by_index[i].props.get("_SceneChangePrev", 0)
            }
        pieces = plan.pieces(window, cuts)
        as_is = (
            layout is None
            and len(pieces) == 1
            and device.type == "cpu"
            and self.host_dtype == torch.float32
        )
        lr_shape = (plan.size, 3, self.clip.height, self.clip.width)
        out_shape = (real, 3, self.out_h, self.out_w)
        frames: torch.Tensor | None = None  # [real, 3, H, W] on the host
        planes: tuple[torch.Tensor, ...] = ()  # or Y, U, V [real, h, w] views of frames
        pooled = False
        keep_parts, ratios = [], np.empty(real, dtype=np.float64)
        for piece in pieces:
            span = slice(piece.start, piece.start + piece.length)
            # the lease outlives the slot, whose exit synchronises the stream: the copy in is
            # done before the staging buffer can be handed out again
            with self.host.lease(lr_shape, torch.float32) as staging:
                _fill(staging, [by_index[i] for i in piece.frames])
                with self.slots.take():  # copies run on the slot's stream, around the net
                    t0 = time.perf_counter()
                    lr = staging.to(device, non_blocking=True)
                    res = self._upscale(lr, seed=s.seed + piece.frames[0])
                    out = res.frames[: piece.length]
                    if layout is not None:
                        if frames is None:
                            frames, planes = self._plane_buffer(real, layout)
                            pooled = True
                        # all T frames, a tail window's padding too: one shape, one graph;
                        # the token grid's padded rows too, cropped in the graph
                        yuv = self.to_yuv(
                            res.grid_frames, layout=layout, size=(self.out_h, self.out_w)
                        )
                        for dst, src in zip(planes, yuv, strict=True):
                            dst[span].copy_(src[: piece.length], non_blocking=True)
                    elif as_is:
                        frames = out  # a fresh tensor of this window's own: no copy needed
                    else:
                        if frames is None:
                            frames, pooled = self.host.take(out_shape, self.host_dtype), True
                        _to_host(out, frames[span])
                    # queued after the frames' copy, so the wait for it covers both
                    keep = res.keep[: piece.length].cpu().numpy()
                    busy += time.perf_counter() - t0
            keep_parts.append(keep)
            ratios[span] = keep.reshape(piece.length, -1).mean(axis=1)
        assert frames is not None
        ms = busy * 1000.0
        log.debug(
            "skipsr: window %d (frames %d..%d) in %.1f ms", window, first, first + real - 1, ms
        )
        result = _WindowResult(
            frames=None if layout is not None else frames.numpy(),
            planes=tuple(p.numpy() for p in planes) if layout is not None else None,  # type: ignore[arg-type]
            layout=layout,
            keep=np.concatenate(keep_parts),
            kept_ratio=ratios,
            ms=ms,
        )
        if pooled:
            self.host.bind(result, frames)
        return result

    def _upscale(self, lr: torch.Tensor, *, seed: int) -> WindowOutput:
        """One window through the pipeline, its inputs (upsample, keep set) from a replayed
        graph where the settings ask for one."""
        s = self.settings
        threshold, skip_ratio, dilate = s.threshold, s.skip_ratio, s.dilate
        base = keep = None
        if self.inputs_of is not None:
            base, *made = self.inputs_of(lr, **self.input_options)
            keep = made[0] if made else None  # none when nothing is skipped: the dense path
            threshold = skip_ratio = None  # decided: the keep set holds them
            dilate = 0
        return upscale_window(
            lr,
            scale=s.scale,
            runner=self.runner,
            scorer=s.scorer,
            threshold=threshold,
            skip_ratio=skip_ratio,
            keep=keep,
            base=base,
            dilate=dilate,
            steps=s.steps,
            seed=seed,
        )

    def _prepare_runner(self) -> None:
        """Once, before the first window: the runner readies every token-count bucket of a
        full window (CUDA graphs: all captured now, 6.4-10.7 s for the default model's 56
        at 1080p on an H100 against 5.5-9.2 s for the one dense graph, instead of one capture
        now and then that stalls the other windows mid-run). Every window and scene-cut piece
        is fed T frames, so one grid serves the whole clip."""
        if self._prepared:
            return
        with self._prepare_lock:  # the other windows wait here until the prepare is done
            if self._prepared:
                return
            try:
                s = self.settings
                if s.device_color:  # the colour kernels' check, before any graph is captured
                    triton_color_works(self.runner.device)
                patch = self.runner.sr_config.patch
                grid = token_grid(self.plan.size, self.out_h, self.out_w, patch=patch)
                self.runner.prepare(
                    grid=grid, dense=s.threshold is None and s.skip_ratio is None, steps=s.steps
                )
            finally:
                # set only now: set before the prepare, it let the other threads' windows
                # run (and capture their own graphs) during the seconds it took, and vspipe
                # then had most of a short clip done before its first frame came out
                # (a steady rate of 740 fps at 4 steps where the work allows ~160, sixth
                # session). A failure surfaces once; later windows go the lazy way.
                self._prepared = True

    def _plane_buffer(
        self, real: int, layout: YuvLayout
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One pooled host buffer for a window's Y, U, V planes, and the three views of it."""
        shapes = layout.plane_shapes(self.out_h, self.out_w)
        sizes = [real * h * w for h, w in shapes]
        flat = self.host.take((sum(sizes),), layout.dtype)
        views, start = [], 0
        for (h, w), size in zip(shapes, sizes, strict=True):
            views.append(flat[start : start + size].view(real, h, w))
            start += size
        return flat, tuple(views)


# --- defaults --------------------------------------------------------------------------------


def _default_window(
    config: SRConfig, *, out_w: int, out_h: int, num_frames: int, device_mib: float | None
) -> int:
    """skipsr's window when none is given: the model's temporal window, or with the torch
    backend on a CUDA card of ``device_mib`` MiB and the shipped model's shape a longer one
    (see _GPU_WINDOW_MULTIPLE), no longer than the clip needs (a short clip would otherwise
    pay for padded frames). It depends on the card's total memory, not its free memory, so a
    card and a clip always give the same windows, and the same output."""
    frames = config.window[0]
    if device_mib is None or config != SR_PRESETS["default"]:
        return frames
    _, rows, cols = token_grid(1, out_h, out_w, patch=config.patch)
    fits = int(device_mib * _GPU_WINDOW_MEMORY_SHARE / _GPU_WINDOW_MIB_PER_TOKEN)
    return longer_window(
        model_frames=frames,
        tokens_per_frame=rows * cols,
        multiple=min(_GPU_WINDOW_MULTIPLE, -(-num_frames // frames)),
        max_tokens=min(_GPU_WINDOW_TOKENS, fits),
    )


def _long_window_streams(*, window_tokens: int, device_mib: float) -> int:
    """Windows in the network at once by default with a longer default window: three where
    the card's memory share holds three such windows at the measured cost a token, else the
    usual two (a card that only just holds the window keeps its length, not the third)."""
    per_window = _GPU_WINDOW_MIB_PER_TOKEN / _GPU_STREAMS * window_tokens
    if per_window * _LONG_WINDOW_STREAMS <= device_mib * _GPU_WINDOW_MEMORY_SHARE:
        return _LONG_WINDOW_STREAMS
    return _GPU_STREAMS


# --- validation ------------------------------------------------------------------------------


def _fail(message: str) -> vs.Error:
    return vs.Error(f"skipsr: {message}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_clip(clip: object) -> vs.VideoNode:
    if not isinstance(clip, vs.VideoNode):
        raise _fail(f"clip={type(clip).__name__}: accepted a vapoursynth.VideoNode")
    fmt = clip.format
    if fmt is None or fmt.color_family == vs.UNDEFINED:
        raise _fail("clip has a variable format: accepted a constant format (convert first)")
    if clip.width == 0 or clip.height == 0:
        raise _fail("clip has a variable size: accepted a constant size (resize first)")
    if fmt.color_family not in (vs.RGB, vs.YUV):
        raise _fail(
            f"clip format={fmt.name} ({fmt.color_family.name}): accepted RGB or YUV "
            "(convert other families with core.resize first)"
        )
    if fmt.sample_type == vs.INTEGER and not 8 <= fmt.bits_per_sample <= 16:
        raise _fail(f"clip format={fmt.name}: accepted integer samples of 8 to 16 bits")
    if fmt.sample_type == vs.FLOAT and fmt.bits_per_sample not in (16, 32):
        raise _fail(f"clip format={fmt.name}: accepted float samples of 16 or 32 bits")
    if clip.width < MIN_SIDE or clip.height < MIN_SIDE:
        raise _fail(
            f"clip size={clip.width}x{clip.height} is too small: accepted at least "
            f"{MIN_SIDE}x{MIN_SIDE}"
        )
    return clip


def _check_args(
    *,
    scale: object,
    window: object,
    overlap: object,
    blend: object,
    threshold: object,
    skip_ratio: object,
    scorer: object,
    dilate: object,
    steps: object,
    seed: object,
    device_index: object,
    num_streams: object,
    readahead: object,
    cache_windows: object,
    backend: object,
    cuda_graphs: object,
    torch_compile: object,
    fp16: object,
    device_color: object,
) -> None:
    if not _is_int(scale) or scale not in (2, 3, 4):
        raise _fail(f"scale={scale!r}: accepted 2, 3 or 4")
    if window is not None and (not _is_int(window) or window < 1):
        raise _fail(f"window={window!r}: accepted an int >= 1, or None for the model's")
    if not _is_int(overlap) or overlap < 0:
        raise _fail(f"overlap={overlap!r}: accepted an int >= 0 and < window")
    if _is_int(window) and overlap >= window:
        raise _fail(f"overlap={overlap} with window={window}: accepted 0 <= overlap < window")
    if blend not in ("linear", "smooth"):
        raise _fail(f"blend={blend!r}: accepted 'linear' or 'smooth'")
    if threshold is not None and skip_ratio is not None:
        raise _fail(
            f"threshold={threshold!r} and skip_ratio={skip_ratio!r} both given: accepted one of them"
        )
    if threshold is not None and not _is_real(threshold):
        raise _fail(f"threshold={threshold!r}: accepted a finite number")
    if skip_ratio is not None and not (_is_real(skip_ratio) and 0.0 <= skip_ratio < 1.0):
        raise _fail(f"skip_ratio={skip_ratio!r}: accepted 0 <= skip_ratio < 1")
    if scorer not in ("auto", "learned", "gradient"):
        raise _fail(f"scorer={scorer!r}: accepted 'auto', 'learned' or 'gradient'")
    if not _is_int(dilate) or dilate < 0:
        raise _fail(f"dilate={dilate!r}: accepted an int >= 0")
    if not _is_int(steps) or steps < 1:
        raise _fail(f"steps={steps!r}: accepted an int >= 1")
    if not _is_int(seed):
        raise _fail(f"seed={seed!r}: accepted an int")
    if num_streams is not None and (not _is_int(num_streams) or num_streams < 1):
        raise _fail(f"num_streams={num_streams!r}: accepted None or an int >= 1")
    if readahead is not None and (not _is_int(readahead) or readahead < 0):
        raise _fail(f"readahead={readahead!r}: accepted None or an int >= 0")
    if cache_windows is not None and (not _is_int(cache_windows) or cache_windows < 1):
        raise _fail(f"cache_windows={cache_windows!r}: accepted an int >= 1, or None")
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not _is_int(device_index) or not 0 <= device_index < max(n_cuda, 1):
        seen = f"{n_cuda} CUDA device(s)" if n_cuda else "no CUDA device, so only 0"
        raise _fail(f"device_index={device_index!r}: accepted 0..{max(n_cuda, 1) - 1} ({seen})")
    if device_color is not None and not isinstance(device_color, bool):
        raise _fail(f"device_color={device_color!r}: accepted True, False or None")
    if cuda_graphs is not None and not isinstance(cuda_graphs, bool):
        raise _fail(f"cuda_graphs={cuda_graphs!r}: accepted True, False or None")
    if cuda_graphs and backend in ("cpu", "trt", "tensorrt", "ort", "onnxruntime"):
        raise _fail(
            f"cuda_graphs=True with backend={backend!r}: CUDA graphs are for the torch backend "
            "on CUDA ('auto', 'torch' or 'cuda' on a machine with a GPU)"
        )
    if cuda_graphs and n_cuda == 0:
        raise _fail("cuda_graphs=True: torch sees no CUDA device on this machine")
    if not isinstance(torch_compile, bool):
        raise _fail(f"torch_compile={torch_compile!r}: accepted True or False")
    if torch_compile:
        if not isinstance(backend, str):
            raise _fail(
                f"torch_compile=True with backend={backend!r}: a backend value carries its own "
                "choice (TorchBackend(compile=True))"
            )
        if backend not in ("auto", "torch", "cuda") or n_cuda == 0:
            raise _fail(
                f"torch_compile=True with backend={backend!r}"
                + ("" if n_cuda else " on a machine with no CUDA device")
                + ": compiled kernels run under the torch backend's CUDA graphs on a GPU"
            )
        if cuda_graphs is False:
            raise _fail(
                "torch_compile=True with cuda_graphs=False: the compiled kernels are replayed as CUDA graphs"
            )
        if fp16 is not True:
            raise _fail(
                f"torch_compile=True with fp16={fp16!r}: it needs half precision (varlen attention)"
            )
    if isinstance(backend, str):
        if backend not in BACKEND_NAMES:
            raise _fail(f"backend={backend!r}: accepted {', '.join(map(repr, BACKEND_NAMES))}")
    elif not callable(getattr(backend, "load", None)):
        raise _fail(f"backend={backend!r}: accepted a backend name or a backend value")


def _device_color_unavailable(fmt: vs.VideoFormat, *, overlap: int, show_mask: bool) -> str | None:
    """Why the output cannot be converted to the clip's format on the device, or None."""
    if fmt.color_family != vs.YUV or fmt.sample_type != vs.INTEGER:
        return f"the clip is {fmt.name}; accepted YUV with integer samples"
    if not 8 <= fmt.bits_per_sample <= 15:
        return f"the clip is {fmt.name}; accepted 8-15 bits a sample"
    if fmt.subsampling_w > 1 or fmt.subsampling_h > 1:
        return f"the clip is {fmt.name}; accepted 4:4:4, 4:2:2 or 4:2:0"
    if overlap:
        return f"overlap={overlap} blends windows in RGB; accepted overlap=0"
    if show_mask:
        return "show_mask=True draws on RGB; accepted show_mask=False"
    return None


def _weights_path(value: str | os.PathLike[str] | None, default: Path, name: str) -> Path | None:
    """The weights file to load: the given one (which must exist) or the shipped default
    (None where it is absent, so the caller can fall back or explain)."""
    if value is None:
        return default if default.is_file() else None
    path = Path(value)
    if not path.is_file():
        raise _fail(f"{name}={os.fspath(value)!r}: no such file; accepted a .safetensors path")
    return path


# --- the public function ---------------------------------------------------------------------


def skipsr(
    clip: vs.VideoNode,
    *,
    scale: int = 4,
    backend: str | Backend = "auto",
    window: int | None = None,
    overlap: int = 0,
    blend: Blend = "linear",
    threshold: float | None = None,
    skip_ratio: float | None = None,
    scorer: Scorer = "gradient",
    dilate: int = 0,
    steps: int = 1,
    seed: int = 0,
    scene_cuts: bool = False,
    device_index: int = 0,
    num_streams: int | None = None,
    readahead: int | None = None,
    fp16: bool = True,
    cuda_graphs: bool | None = None,
    torch_compile: bool = False,
    device_color: bool | None = None,
    show_mask: bool = False,
    sr_weights: str | os.PathLike[str] | SRTransformer | None = None,
    mask_weights: str | os.PathLike[str] | None = None,
    cache_windows: int | None = None,
    stats: SkipSRStats | None = None,
) -> vs.VideoNode:
    """Super-resolve ``clip`` by ``scale`` with SkipSR: only tokens the mask keeps go through
    the SR transformer; the rest are the bicubic upsample, bit for bit.

    Args:
        clip: RGB or YUV, 8-16 bit integer or 16/32 bit float, constant format and size, at
            least 8x8. Comes back in the same format family, depth and subsampling at
            ``scale`` times the size, converted through RGB with each frame's _Matrix,
            _Range and _ChromaLocation (BT.709, limited range for YUV where absent).
        scale: 2, 3 or 4.
        backend: 'auto' (CUDA if torch sees one, else CPU), 'torch', 'cpu', 'cuda', or a
            backend value from ``vs_skipsr.backends``.
        window: frames the network sees at once (T); None takes the SR model's temporal
            attention window (5 for the shipped model); with the torch backend on CUDA
            and the shipped model's shape up to four times it (20 frames up to 1080p output
            on a card of 48 GB or more, 10 on 24 GB; fewer, fuller windows are faster there,
            at the same quality).
        overlap: frames shared by consecutive windows, blended across the border (0 <=
            overlap < window); costs window / (window - overlap) times the compute.
        blend: the overlap ramp, 'linear' or 'smooth' (raised cosine).
        threshold: keep tokens whose mask score exceeds this (learned scores, or the
            gradient energy of the LR luma with scorer='gradient').
        skip_ratio: skip this fraction of each window's tokens, 0 <= skip_ratio < 1; 0 runs
            every token (the dense model). Give threshold or skip_ratio, not both; with
            neither, the scorer's default threshold (gradient: 0.004766, chosen on the
            validation set; see the README).
        scorer: 'gradient' (the default: local gradient energy of the LR luma, no network),
            'learned' (the mask net: the shipped one is the LR's Laplacian energy, which
            skipped more at equal quality on the validation set, 68% / 54% of the photos' /
            clips' tokens against 65% / 46%, for a network pass) or 'auto' (learned if mask
            weights are there, else gradient).
        dilate: grow the keep set by this many tokens, giving kept regions context.
        steps: flow sampling steps; all reuse one keep set, so skipping saves on each.
        seed: noise seed; each window draws from seed + its first frame, so output does not
            depend on the order frames are requested in.
        scene_cuts: split windows at frames with _SceneChangePrev set, so no network pass
            mixes two scenes (a cut costs one extra pass of its window).
        device_index: CUDA device for 'auto'/'torch'/'cuda'.
        num_streams: windows in the network at once (each on its own CUDA stream on a GPU).
            None (default): 2 on CUDA, 1 elsewhere.
        readahead: windows after the last one asked for that background threads (one per
            stream, up to readahead) compute before any of their frames is requested, their
            source frames asked for as soon as they are queued, so the device works on the
            next window while this one's frames are copied out and encoded. None (default):
            2 on CUDA (1.10-1.16x the frame rate of 1 on an H100, one run each), 0 on the CPU
            (where the network and VapourSynth share the cores anyway).
        fp16: half precision on CUDA (the CPU always runs float32).
        cuda_graphs: replay the SR net as CUDA graphs (torch backend on CUDA), one per
            token-count bucket (geometric, at most ~9% padding, see tokens.kept_bucket), all
            captured when the first window is computed (56 graphs for 1080p windows of 5
            frames: 6.4-10.7 s on an H100, 5.5-9.2 s for one graph; 72 for windows of 20 on
            an H200: 6.2 s at one step, 10.0-17.6 s at 8, against 5.9 s and 8.4-15.2 s for
            56 there), so none stalls the run
            later; a window's whole flow, all its steps, is one graph replay. With
            device_color the steps around the net (upsample and keep set, colour conversion)
            replay as graphs too, one per stream. None (default): on where it applies, since
            a small model launching kernels costs more than running them and skipping would
            otherwise save nothing; False for eager kernels; True: an error where it does not
            apply. Replays of the SR graphs do not overlap one another (they share memory),
            the other stages still do.
        torch_compile: run torch.compile's fused kernels inside those graphs (torch backend
            on CUDA, fp16, cuda_graphs not False). It adds ~30 s before the first frame on a
            machine's first run and ~10 s later (torch's on-disk cache). On an H100 the
            default model's SR net alone runs 2.1x faster dense (1080p windows of 5 frames);
            end to end it has not been measured since the sixth session's fix of the
            benchmark (the earlier results are withdrawn, see reports/MEASUREMENTS.md).
            Default False: experimental.
        device_color: convert the output to the clip's YUV on the network's device and copy
            back only its planes, instead of RGB floats for VapourSynth's resize (which costs
            ~7 ms per 1080p frame on the host). None (default): on CUDA where it applies;
            True: wherever it applies, else an error saying why. It applies to YUV clips of
            8-15 bit integers, 4:4:4, 4:2:2 or 4:2:0, with overlap=0 and show_mask=False;
            the frames' matrix must be one with constant luma weights (BT.709, BT.601,
            BT.2020 NCL, FCC, 240M). Output matches the resize within one code. A window
            is converted with one frame's matrix, range and chroma location (its first
            frame's, or the frame whose request computes it), and its frames say so.
        show_mask: draw the keep mask over the output: skipped tokens dimmed and tinted
            blue, kept tokens outlined in green.
        sr_weights, mask_weights: safetensors files; default the shipped ones. sr_weights
            may also be an SRTransformer already built (benchmarks pass
            ``vs_skipsr.models.random_sr("seedvr2_3b", ...)`` to time production scale).
        cache_windows: finished windows kept for frames still to come (default enough for
            the core's threads, at least 2 * num_streams + 2, plus readahead). Each holds T
            frames at the output size: the clip's YUV planes with device_color, else RGB,
            float16 in pinned memory on CUDA where the clip's format is integer of at most 10
            bits or half float, else float32.
        stats: a :class:`SkipSRStats` to fill with window counts (tests, benchmarks).

    Each output frame carries the source frame's props plus SkipSRKeptRatio (kept fraction
    of its tokens), SkipSRWindow (the window it came from, the heaviest one when blended),
    SkipSRWindowMs (wall time of that window) and SkipSRBackend.
    """
    clip = _check_clip(clip)
    _check_args(
        scale=scale,
        window=window,
        overlap=overlap,
        blend=blend,
        threshold=threshold,
        skip_ratio=skip_ratio,
        scorer=scorer,
        dilate=dilate,
        steps=steps,
        seed=seed,
        device_index=device_index,
        num_streams=num_streams,
        cache_windows=cache_windows,
        readahead=readahead,
        backend=backend,
        cuda_graphs=cuda_graphs,
        torch_compile=torch_compile,
        fp16=fp16,
        device_color=device_color,
    )
    if stats is not None and not isinstance(stats, SkipSRStats):
        raise _fail(f"stats={stats!r}: accepted a SkipSRStats or None")

    given_net = sr_weights if isinstance(sr_weights, SRTransformer) else None
    sr_path = (
        None
        if given_net is not None
        else _weights_path(sr_weights, DEFAULT_SR_WEIGHTS, "sr_weights")  # type: ignore[arg-type]
    )
    if sr_path is None and given_net is None:
        raise _fail(
            f"sr_weights=None: the shipped weights {DEFAULT_SR_WEIGHTS} are not there; "
            "accepted a path to SR weights (.safetensors)"
        )
    mask_path = (
        None
        if scorer == "gradient"
        else _weights_path(mask_weights, DEFAULT_MASK_WEIGHTS, "mask_weights")
    )
    if scorer == "learned" and mask_path is None:
        raise _fail(
            f"scorer='learned' needs mask weights and {DEFAULT_MASK_WEIGHTS} is not there: "
            "accepted mask_weights=<path> or scorer='gradient'"
        )
    try:
        # on the torch thread: copying the weights in opens OpenMP regions (torch_thread.py)
        sr_net = given_net if given_net is not None else on_torch_thread(load_sr, sr_path)  # type: ignore[arg-type]
        mask_net = None if mask_path is None else on_torch_thread(load_mask, mask_path)
    except WeightsError as e:
        raise _fail(str(e)) from e

    patch = sr_net.config.patch
    if clip.width * scale < patch or clip.height * scale < patch:
        raise _fail(
            f"clip size={clip.width}x{clip.height} at scale={scale} is smaller than one "
            f"{patch}x{patch} token: accepted at least {-(-patch // scale)} pixels a side"
        )
    t = sr_net.config.window[0] if window is None else window
    if overlap >= t:
        raise _fail(f"overlap={overlap} with window={t} (the model's): accepted overlap < {t}")

    try:
        spec = resolve_backend(
            backend,
            device_index=device_index,
            fp16=fp16,
            cuda_graphs=cuda_graphs is not False,
            torch_compile=torch_compile,
        )
    except ValueError as e:
        raise _fail(f"backend={backend!r}: {e}") from e
    if torch_compile and not (isinstance(spec, TorchBackend) and spec.compile):
        raise _fail(
            f"torch_compile=True: backend={backend!r} chose {spec}; accepted with the torch "
            "backend on CUDA (backend='cuda')"
        )
    on_cuda = str(getattr(spec, "device", "cpu")).startswith("cuda")  # torch or onnxruntime
    long_streams = None  # streams (and windows read ahead) that suit a longer default window
    if window is None and isinstance(spec, TorchBackend) and on_cuda:
        card = torch.cuda.get_device_properties(torch.device(spec.device))
        card_mib = card.total_memory / 2**20
        t = _default_window(
            sr_net.config,
            out_w=clip.width * scale,
            out_h=clip.height * scale,
            num_frames=clip.num_frames,
            device_mib=card_mib,
        )
        if t > sr_net.config.window[0]:
            grid = token_grid(t, clip.height * scale, clip.width * scale, patch=sr_net.config.patch)
            long_streams = _long_window_streams(window_tokens=math.prod(grid), device_mib=card_mib)
    if num_streams is None:
        num_streams = _GPU_STREAMS if on_cuda or isinstance(spec, TensorRTBackend) else 1
        if long_streams is not None:  # measured as a pair: as many windows read ahead
            num_streams = long_streams
            readahead = long_streams if readahead is None else readahead
    if isinstance(spec, TensorRTBackend):  # engines sized for this clip's windows
        spec = dataclasses.replace(
            spec.for_clip(
                frames=t, width=clip.width * scale, height=clip.height * scale, scale=scale
            ),
            num_streams=num_streams,
        )
    if on_cuda or isinstance(spec, TensorRTBackend):
        runner = spec.load(sr=sr_net, mask=mask_net)
    else:  # the CPU: where its windows will run (torch_thread.py)
        runner = on_torch_thread(spec.load, sr=sr_net, mask=mask_net)
    why_not = _device_color_unavailable(clip.format, overlap=overlap, show_mask=bool(show_mask))
    if device_color is None:
        use_device_color = why_not is None and runner.device.type in _DEVICE_COLOR_DEVICES
    elif device_color and why_not is not None:
        raise _fail(f"device_color=True: {why_not}")
    else:
        use_device_color = bool(device_color)

    used_scorer = "learned" if mask_net is not None else "gradient"
    if threshold is None and skip_ratio is None:
        threshold = DEFAULT_THRESHOLD[used_scorer]
    if skip_ratio == 0:
        skip_ratio = None  # keep everything: the dense path, no mask evaluated
    settings = _Settings(
        scale=scale,
        threshold=None if threshold is None else float(threshold),
        skip_ratio=None if skip_ratio is None else float(skip_ratio),
        scorer=used_scorer,
        dilate=dilate,
        steps=steps,
        seed=seed,
        scene_cuts=bool(scene_cuts),
        show_mask=bool(show_mask),
        device_color=use_device_color,
        small_graphs=use_device_color
        and isinstance(spec, TorchBackend)
        and spec.cuda_graphs
        and runner.device.type == "cuda",
    )
    plan = WindowPlan(num_frames=clip.num_frames, size=t, overlap=overlap, blend=blend)
    if readahead is None:
        readahead = _READ_AHEAD_WINDOWS if runner.device.type in _READ_AHEAD_DEVICES else 0
    if cache_windows is None:
        per_frame = -(-t // plan.stride)
        cache_windows = readahead + max(
            2 * num_streams + 2, -(-vs.core.num_threads // plan.stride) + per_frame + 1
        )
    log.info(
        "skipsr: %dx%d %s x%d -> %dx%d, window=%d overlap=%d scorer=%s %s backend=%s cache=%d "
        "device_color=%s num_streams=%d readahead=%d",
        clip.width,
        clip.height,
        clip.format.name,
        scale,
        clip.width * scale,
        clip.height * scale,
        t,
        overlap,
        settings.scorer,
        f"threshold={settings.threshold}"
        if settings.threshold is not None
        else f"skip_ratio={settings.skip_ratio or 0.0}",
        f"{runner.name}:{runner.device}",
        cache_windows,
        use_device_color,
        num_streams,
        readahead,
    )
    node = _SkipSRNode(
        clip,
        runner=runner,
        plan=plan,
        settings=settings,
        num_streams=num_streams,
        cache_windows=cache_windows,
        readahead=readahead,
        stats=SkipSRStats() if stats is None else stats,
    )
    return node.build()
