"""skipsr() inside VapourSynth: formats, props, windows computed once whatever the request
order, overlap and scene cuts matching the pipeline, and a clear error for each bad input."""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs
from conftest import N_FRAMES, read_index

import vs_skipsr.filter as skipsr_filter
from vs_skipsr import SkipSRStats, color, skipsr, tickets
from vs_skipsr.backends.torch_backend import TorchBackend
from vs_skipsr.color import rgb_to_yuv, yuv_layout
from vs_skipsr.models.weights import DEFAULT_MASK_WEIGHTS, DEFAULT_SR_WEIGHTS, load_mask, load_sr
from vs_skipsr.pipeline import upscale_window
from vs_skipsr.staging import HostPool

MakeClip = Callable[..., vs.VideoNode]


def _bytes(frame: vs.VideoFrame) -> list[bytes]:
    return [np.asarray(frame[p]).tobytes() for p in range(frame.format.num_planes)]


def _rgb(frame: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(3)])


@pytest.fixture()
def sr(sr_weights: Path, mask_weights: Path) -> Callable[..., vs.VideoNode]:
    """skipsr with the test weights, on the CPU unless a test names a backend: these tests
    pin the CPU's behaviour (some stand the CPU in for CUDA by monkeypatching), and on a
    machine with a GPU the default would be CUDA; the CUDA tests name it."""

    def run(clip: vs.VideoNode, **kw: object) -> vs.VideoNode:
        kw.setdefault("backend", "cpu")
        kw.setdefault("sr_weights", sr_weights)
        kw.setdefault("mask_weights", mask_weights)
        kw.setdefault("scorer", "learned")  # exercise the mask net; the default is 'gradient'
        return skipsr(clip, **kw)  # type: ignore[arg-type]

    return run


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt",
    [
        vs.RGB24,
        vs.RGB48,
        vs.RGBH,
        vs.RGBS,
        vs.YUV420P8,
        vs.YUV420P10,
        vs.YUV422P8,
        vs.YUV444P16,
        vs.YUV444PH,
        vs.YUV444PS,
    ],
)
def test_output_keeps_the_format_family_at_the_new_size(make_clip: MakeClip, sr, fmt: int) -> None:
    clip = make_clip(fmt)[:3]
    out = sr(clip, scale=2, window=3)
    assert out.format.id == clip.format.id
    assert (out.width, out.height, out.num_frames) == (128, 96, 3)
    assert out.fps == clip.fps
    frame = out.get_frame(2)
    assert frame.format.id == fmt and (frame.width, frame.height) == (128, 96)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_scales(make_clip: MakeClip, sr, scale: int) -> None:
    out = sr(make_clip(vs.YUV420P8)[:2], scale=scale)
    assert (out.width, out.height) == (64 * scale, 48 * scale)
    out.get_frame(1)


def test_picture_survives_the_round_trip(make_clip: MakeClip, sr) -> None:
    """Downscaled back, the output is close to the input, and the index stamp reads."""
    clip = make_clip(vs.RGB24)[:4]
    out = sr(clip, window=4)
    for n in range(4):
        small = vs.core.resize.Bicubic(out, 64, 48, format=vs.RGBS).get_frame(n)
        ref = _rgb(vs.core.resize.Point(clip, format=vs.RGBS).get_frame(n))
        assert np.abs(_rgb(small) - ref).mean() < 0.05
        luma = _rgb(vs.core.resize.Point(out, format=vs.RGBS).get_frame(n)).mean(0)
        assert read_index(luma, scale=4) == n


def test_yuv_matrix_and_range_props_are_used_and_carried(make_clip: MakeClip, sr) -> None:
    """A BT.601 full-range clip comes back BT.601 full range; flat colour is preserved."""
    flat = np.full((2, 48, 64, 3), (200, 60, 90), dtype=np.uint8)
    rgb = make_clip(vs.RGB24, frames=flat)
    yuv = vs.core.resize.Bicubic(rgb, format=vs.YUV444P8, matrix_s="170m", range_s="full")
    out = sr(yuv, skip_ratio=0.9, window=2).get_frame(0)
    assert out.props["_Matrix"] == 6 and out.props["_Range"] == vs.RANGE_FULL
    src = yuv.get_frame(0)
    for p in range(3):
        assert np.median(np.asarray(out[p])) == pytest.approx(np.asarray(src[p])[0, 0], abs=1)


def test_yuv_without_props_is_read_as_bt709_limited(make_clip: MakeClip, sr) -> None:
    yuv = vs.core.std.RemoveFrameProps(make_clip(vs.YUV420P8)[:2], ["_Matrix", "_Range"])
    out = sr(yuv, window=2).get_frame(0)
    assert out.props["_Matrix"] == 1 and out.props["_Range"] == vs.RANGE_LIMITED


def test_frame_props_are_carried_and_skipsr_props_added(make_clip: MakeClip, sr) -> None:
    clip = make_clip(vs.YUV420P8, Foo=7, Title="cockatoo")[:5]
    out = sr(clip, window=3, skip_ratio=0.5, scorer="gradient")
    for n in range(5):
        props = out.get_frame(n).props
        assert props["Foo"] == 7 and props["Title"] == "cockatoo"
        assert 0.0 < props["SkipSRKeptRatio"] <= 1.0
        assert props["SkipSRWindow"] == n // 3
        assert props["SkipSRWindowMs"] > 0.0
        assert props["SkipSRBackend"] == "torch:cpu"


@pytest.mark.parametrize("overlap", [0, 1])
def test_each_frame_gets_its_own_source_props_and_is_produced_once(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch, overlap: int
) -> None:
    """The source's props come on in native code after the callback (two CopyFrameProps over
    the frames the callbacks write): each frame still gets its own frame's props, and is
    written once whatever the request order, a window's frames at once (no overlap) or
    frame by frame (overlap)."""
    base = make_clip(vs.YUV420P8)[:7]
    clip = vs.core.std.Splice([vs.core.std.SetFrameProps(base[i], Index=i) for i in range(7)])
    written: list[int] = []
    real = skipsr_filter._SkipSRNode._write

    def counted(self, n: int, *args: object) -> vs.VideoFrame:
        written.append(n)
        return real(self, n, *args)

    monkeypatch.setattr(skipsr_filter._SkipSRNode, "_write", counted)
    out = sr(clip, window=3, overlap=overlap, skip_ratio=0.5, device_color=False)
    futures = [(n, out.get_frame_async(n)) for n in (6, 0, 3, 5, 1, 2, 4)]
    for n, fut in futures:
        props = fut.result().props
        assert props["Index"] == n
        assert props["_Matrix"] == 1
        # windows of 3 frames every 3 frames, or every 2 (a frame in two: either)
        windows = {n // 3} if not overlap else {max(0, (n - 1) // 2), min(n // 2, 2)}
        assert props["SkipSRWindow"] in windows
    assert sorted(written) == list(range(7)), "a frame was written twice or not at all"


def test_skip_ratio_sets_the_kept_ratio(make_clip: MakeClip, sr) -> None:
    clip = make_clip(vs.RGBS)[:4]
    kept = [
        sr(clip, window=4, skip_ratio=r).get_frame(1).props["SkipSRKeptRatio"] for r in (0, 0.75)
    ]
    assert kept[0] == 1.0
    assert kept[1] == pytest.approx(0.25, abs=0.1)


def test_show_mask_dims_skipped_tokens(make_clip: MakeClip, sr) -> None:
    clip = make_clip(vs.RGBS)[:2]
    plain = _rgb(sr(clip, window=2, skip_ratio=0.75).get_frame(0))
    shown = _rgb(sr(clip, window=2, skip_ratio=0.75, show_mask=True).get_frame(0))
    same = np.all(plain == shown, axis=0)
    # kept token interiors are untouched, skipped tokens and kept borders are drawn over
    assert 0.05 < same.mean() < 0.5
    assert shown[:, ~same].mean() < plain[:, ~same].mean() + 0.1


def test_nothing_is_written_to_stdout(
    make_clip: MakeClip, sr, capfd: pytest.CaptureFixture[str]
) -> None:
    out = sr(make_clip(vs.YUV420P8)[:3], window=2)
    for n in range(3):
        out.get_frame(n)
    assert capfd.readouterr().out == ""


# --- windows and the cache -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("card_mib", "out", "frames"),
    [
        (143771, (1920, 1080), 20),  # H200: four model windows, the token cap
        (81559, (1920, 1080), 20),  # H100 80 GB
        (40960, (1920, 1080), 15),  # 40 GB: half of it holds three
        (24564, (1920, 1080), 10),  # 24 GB: two
        (16376, (1920, 1080), 5),  # 16 GB: the model's own
        (24564, (1280, 720), 20),  # smaller frames: more of them fit
        (143771, (3840, 2160), 5),  # 4K: the token cap leaves the model's own
        (None, (1920, 1080), 5),  # not torch on CUDA: the model's own
        (143771, (1920, 1080, 12), 15),  # a 12-frame clip: three model windows cover it
        (143771, (1920, 1080, 3), 5),  # shorter than one: the model's own
    ],
)
def test_default_window_grows_on_cuda_within_the_cards_memory_and_the_clip(
    card_mib: float | None, out: tuple[int, ...], frames: int
) -> None:
    shipped = load_sr(DEFAULT_SR_WEIGHTS).config
    num_frames = out[2] if len(out) > 2 else 1000
    got = skipsr_filter._default_window(
        shipped, out_w=out[0], out_h=out[1], num_frames=num_frames, device_mib=card_mib
    )
    assert got == frames
    # the estimate of the memory it takes stays within half the card
    tokens = got * -(-out[0] // 16) * -(-out[1] // 16)
    assert got == shipped.window[0] or tokens * 0.14 <= card_mib * 0.5


@pytest.mark.parametrize(
    ("card_mib", "frames", "streams"),
    [
        (143771, 20, 3),  # H200: three 20-frame 1080p windows take ~34 GB of its ~70 GB share
        (81559, 20, 3),  # an 80 GB card: 34 GB of 40
        (49140, 20, 2),  # 48 GB: the 20-frame window fits twice in its share, not three times
        (40960, 15, 2),  # 40 GB: its 15-frame window (~8.6 GB a window in flight) twice
    ],
)
def test_longer_default_window_runs_three_where_the_card_holds_three(
    card_mib: float, frames: int, streams: int
) -> None:
    shipped = load_sr(DEFAULT_SR_WEIGHTS).config
    t = skipsr_filter._default_window(
        shipped, out_w=1920, out_h=1080, num_frames=1000, device_mib=card_mib
    )
    assert t == frames
    tokens = t * 120 * 68
    got = skipsr_filter._long_window_streams(window_tokens=tokens, device_mib=card_mib)
    assert got == streams
    # the estimate of what the windows in flight take stays within half the card
    assert got * tokens * 0.14 / 2 <= card_mib * 0.5


def test_default_window_of_another_model_shape_is_its_own(sr_weights: Path) -> None:
    """Only the shipped shape's memory was measured: the test model keeps its window."""
    config = load_sr(sr_weights).config
    assert config.window[0] != 5
    got = skipsr_filter._default_window(
        config, out_w=640, out_h=360, num_frames=1000, device_mib=143771
    )
    assert got == config.window[0]


def _assert_default_window(out: vs.VideoNode, stats: SkipSRStats, t: int) -> None:
    for n in range(out.num_frames):
        assert out.get_frame(n).props["SkipSRWindow"] == n // t
    assert dict(stats.computed) == {k: 1 for k in range(-(-N_FRAMES // t))}


def test_window_defaults_to_the_models_temporal_window(
    make_clip: MakeClip, sr, sr_weights: Path
) -> None:
    t = load_sr(sr_weights).config.window[0]
    stats = SkipSRStats()
    _assert_default_window(sr(make_clip(vs.RGBS), stats=stats, backend="cpu"), stats, t)


def _assert_shuffled_threads_match(
    node: vs.VideoNode, want: list[bytes], *, seed: int, repeats: int, workers: int
) -> int:
    """Every frame ``repeats`` times in a shuffled order from ``workers`` threads must give the
    bytes of the linear pass ``want``; returns how many requests were made."""
    order = list(range(len(want))) * repeats
    random.Random(seed).shuffle(order)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        got = list(pool.map(lambda n: (n, _bytes(node.get_frame(n))), order))
    for n, planes in got:
        assert planes == want[n], f"frame {n} differs from the linear pass"
    return len(order)


def test_cpu_windows_are_computed_on_the_torch_thread_whoever_asks(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU every window runs on the one torch thread (torch_thread.py: a second thread
    opening OpenMP regions slows every small op), whichever of six requesting threads asks
    first, and the frames are the bytes of a linear pass."""
    clip = make_clip(vs.YUV420P8)
    kw = {"window": 4, "skip_ratio": 0.5}
    want = [_bytes(f) for f in sr(clip, **kw).frames()]
    names: list[str] = []
    real = skipsr_filter._SkipSRNode._compute_window

    def spy(self, *a: object, **k: object) -> object:  # type: ignore[no-untyped-def]
        names.append(threading.current_thread().name)
        return real(self, *a, **k)

    monkeypatch.setattr(skipsr_filter._SkipSRNode, "_compute_window", spy)
    _assert_shuffled_threads_match(sr(clip, **kw), want, seed=3, repeats=2, workers=6)
    assert len(names) >= 4  # every window (14 frames, window 4), some again after eviction
    assert len(set(names)) == 1 and names[0].startswith("vs_skipsr-torch")


def test_concurrent_out_of_order_requests_match_a_linear_pass(make_clip: MakeClip, sr) -> None:
    clip = make_clip(vs.YUV420P10)
    kw = {"window": 4, "overlap": 1, "skip_ratio": 0.5}
    linear = sr(clip, **kw)
    want = [_bytes(linear.get_frame(n)) for n in range(N_FRAMES)]

    stats = SkipSRStats()
    shuffled = sr(clip, stats=stats, cache_windows=16, **kw)
    _assert_shuffled_threads_match(shuffled, want, seed=7, repeats=2, workers=6)
    futures = [(n, shuffled.get_frame_async(n)) for n in reversed(range(N_FRAMES))]
    for n, f in futures:
        assert _bytes(f.result()) == want[n], f"frame {n} differs from the linear pass"
    n_windows = 1 + -(-(N_FRAMES - 4) // 3)
    assert dict(stats.computed) == {k: 1 for k in range(n_windows)}, "a window was recomputed"


def test_prefetching_y4m_output_computes_each_window_once(make_clip: MakeClip, sr) -> None:
    """What vspipe --requests 4 does, in process: output() with 4 frames in flight."""
    clip = make_clip(vs.YUV420P8)
    want = io.BytesIO()
    sr(clip, window=3).output(want, y4m=True)
    stats = SkipSRStats()
    got = io.BytesIO()
    sr(clip, window=3, stats=stats).output(got, y4m=True, prefetch=4)
    assert got.getvalue() == want.getvalue()
    assert dict(stats.computed) == {k: 1 for k in range(-(-N_FRAMES // 3))}


def _readahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("skipsr-readahead-")]


def _wait_for(condition: Callable[[], bool], what: str, *, seconds: float = 120.0) -> None:
    """Poll for something a background thread does; the bound only turns a hang into a
    failure (no timing is asserted)."""
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("device_color", [False, True])
def test_readahead_computes_the_next_window_before_any_of_its_frames_is_asked_for(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch, device_color: bool
) -> None:
    """The default on CUDA (here the CPU stands in): after frame 0, windows 1 and 2 are
    computed in the background with no request for their frames, window 3 is not; then a
    prefetching pass gives the bytes of a pass without read ahead, every window computed
    once, and the thread ends when idle.
    With device_color the window reads its colour props from its own first frame."""
    monkeypatch.setattr(skipsr_filter, "_READ_AHEAD_DEVICES", frozenset({"cpu"}))
    monkeypatch.setattr(skipsr_filter, "_DEVICE_COLOR_DEVICES", frozenset({"cpu"}))
    monkeypatch.setattr(skipsr_filter, "_READ_AHEAD_IDLE_S", 0.05)
    clip = vs.core.std.SetFrameProps(make_clip(vs.YUV420P8), _Matrix=6, _Range=0)
    kw = {"window": 3, "skip_ratio": 0.5, "device_color": device_color}
    want = io.BytesIO()
    sr(clip, readahead=0, **kw).output(want, y4m=True)

    stats = SkipSRStats()
    node = sr(clip, stats=stats, **kw)  # readahead=None: 2 on a device that has it
    node.get_frame(0)
    _wait_for(lambda: stats.computed[1] == stats.computed[2] == 1, "windows 1 and 2 read ahead")
    assert stats.read_ahead == 2 and stats.computed[3] == 0  # two windows ahead, not more
    got = io.BytesIO()
    node.output(got, y4m=True, prefetch=4)
    assert got.getvalue() == want.getvalue()
    assert dict(stats.computed) == {k: 1 for k in range(-(-N_FRAMES // 3))}
    _wait_for(lambda: not _readahead_threads(), "the idle read-ahead thread to end")


def test_readahead_asks_for_the_source_frames_of_the_windows_it_queues_at_once(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One network slot, so one read-ahead thread: while it computes window 1, the source
    frames of window 2 (queued with it) are already asked for, not only once the thread
    takes window 2 (then the device idled through their decode after every window)."""
    monkeypatch.setattr(skipsr_filter, "_READ_AHEAD_DEVICES", frozenset({"cpu"}))
    monkeypatch.setattr(skipsr_filter, "_READ_AHEAD_IDLE_S", 0.05)
    asked: set[int] = set()
    base = make_clip(vs.YUV420P8)

    def note(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        asked.add(n)
        return f

    clip = vs.core.std.ModifyFrame(base, base, note)
    compute = skipsr_filter._SkipSRNode._compute
    window_2_asked_for: dict[int, bool] = {}

    def compute_watching(self, window, by_index, layout=None):  # type: ignore[no-untyped-def]
        if window == 1:  # give window 2's frames the time to come in, if asked for
            end = time.monotonic() + 20.0
            while not {6, 7, 8} <= asked and time.monotonic() < end:
                time.sleep(0.01)
            window_2_asked_for[1] = {6, 7, 8} <= asked
        return compute(self, window, by_index, layout)

    monkeypatch.setattr(skipsr_filter._SkipSRNode, "_compute", compute_watching)
    stats = SkipSRStats()
    node = sr(clip, stats=stats, window=3, skip_ratio=0.5, num_streams=1)
    node.get_frame(0)
    _wait_for(lambda: stats.computed[2] == 1, "window 2 read ahead")
    assert window_2_asked_for == {1: True}
    assert stats.read_ahead == 2
    _wait_for(lambda: not _readahead_threads(), "the idle read-ahead thread to end")


@pytest.mark.parametrize(("kw", "dense"), [({"skip_ratio": 0.5}, False), ({"skip_ratio": 0}, True)])
def test_runner_is_prepared_once_for_the_grid_the_windows_use(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch, kw: dict, dense: bool
) -> None:
    """The filter asks the runner to ready the token grid every window then runs on (CUDA
    graphs capture its buckets; a wrong grid would leave every window to capture its own),
    once per clip, and only the all-tokens shape for a run that skips nothing."""
    import vs_skipsr.pipeline as pipeline
    from vs_skipsr.backends.torch_backend import TorchRunner

    prepared: list[tuple[tuple[int, int, int], bool, int | None]] = []
    used: set[tuple[int, int, int]] = set()
    real_prepare, real_padded = TorchRunner.prepare, pipeline.padded_tokens
    real_static = TorchRunner._static_window

    def prepare(self, *, grid, dense=False, steps=None):
        prepared.append((grid, dense, steps))
        return real_prepare(self, grid=grid, dense=dense, steps=steps)

    def padded_tokens(index, *, grid, **rest):
        used.add(grid)
        return real_padded(index, grid=grid, **rest)

    def static_window(self, keep, base, *, grid, **rest):  # the graphs' runner's own way
        used.add(grid)
        return real_static(self, keep, base, grid=grid, **rest)

    monkeypatch.setattr(TorchRunner, "prepare", prepare)
    monkeypatch.setattr(pipeline, "padded_tokens", padded_tokens)
    monkeypatch.setattr(TorchRunner, "_static_window", static_window)
    node = sr(make_clip(vs.YUV420P8), window=3, num_streams=2, steps=2, **kw)
    for n in range(N_FRAMES):
        node.get_frame(n)
    assert len(prepared) == 1 and prepared[0][1] is dense
    assert prepared[0][2] == 2  # graphs of the flow the windows run
    assert used == {prepared[0][0]}


def test_no_window_runs_before_the_prepare_is_done(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests for frames of several windows arrive at once (vspipe -r N): the first
    prepares the runner and the others wait for it instead of running their windows (and
    capturing their own graphs) meanwhile."""
    from vs_skipsr.backends.torch_backend import TorchRunner

    events: list[tuple[str, float]] = []
    real_prepare, real_flow = TorchRunner.prepare, TorchRunner.flow

    def prepare(self, **kw):
        events.append(("prepare", time.perf_counter()))
        time.sleep(0.3)  # a capture of every bucket takes seconds on a GPU
        real_prepare(self, **kw)
        events.append(("prepared", time.perf_counter()))

    def flow(self, *args, **kw):
        events.append(("sr", time.perf_counter()))
        return real_flow(self, *args, **kw)

    monkeypatch.setattr(TorchRunner, "prepare", prepare)
    monkeypatch.setattr(TorchRunner, "flow", flow)
    node = sr(make_clip(vs.YUV420P8), window=2, num_streams=2, skip_ratio=0.5)
    futures = [node.get_frame_async(n) for n in range(0, N_FRAMES, 2)]  # one per window
    for f in futures:
        f.result()
    names = [name for name, _ in events]
    assert names.count("prepare") == 1 and names.count("sr") >= len(futures)
    done = dict(events)["prepared"]
    assert all(t >= done for name, t in events if name == "sr"), names


_SLOTS = skipsr_filter._Slots  # the real one, whatever a test has patched in since


def _default_streams(make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch, **kw) -> int:
    """How many windows the node lets into the network at once (its slots)."""
    made: list[int] = []

    def record(n: int, device: torch.device) -> skipsr_filter._Slots:
        made.append(n)
        return _SLOTS(n, device)

    monkeypatch.setattr(skipsr_filter, "_Slots", record)
    sr(make_clip(vs.YUV420P8), window=3, **kw).get_frame(0)
    assert len(made) == 1
    return made[0]


def test_cpu_default_runs_one_window_at_a_time(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _default_streams(make_clip, sr, monkeypatch) == 1
    assert _default_streams(make_clip, sr, monkeypatch, num_streams=3) == 3


def test_cpu_default_reads_nothing_ahead(make_clip: MakeClip, sr) -> None:
    stats = SkipSRStats()
    node = sr(make_clip(vs.YUV420P8), window=3, stats=stats)
    node.get_frame(0)
    assert stats.read_ahead == 0 and dict(stats.computed) == {0: 1}


def test_frames_of_cached_windows_come_from_one_node_and_leave_nothing_behind(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With overlap (a FrameEval a frame), in a linear pass on the CPU (nothing read ahead) a
    window's first frame computes it through a node made for that frame and its other frames
    come from the one node for cached windows, each frame once, the same bytes as each frame
    asked for alone from a fresh node, and no stash entry outlives its frame."""
    seen: list[tuple[object, int]] = []
    real = skipsr_filter._SkipSRNode._produce_cached

    def produce_cached(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        seen.append((self, n))
        return real(self, n, f)

    monkeypatch.setattr(skipsr_filter._SkipSRNode, "_produce_cached", produce_cached)
    kw = {"window": 3, "overlap": 1, "skip_ratio": 0.5}  # windows start every 2 frames
    node = sr(make_clip(vs.YUV420P8), **kw)
    got = [_planes(node.get_frame(n)) for n in range(N_FRAMES)]
    # an odd frame lies in one window, which its even predecessor computed
    assert [n for _, n in seen] == [n for n in range(N_FRAMES) if n % 2]
    made = seen[0][0]
    assert len(made._stash) == 0
    # a request with no entry (not expected) is made from the cache while it holds the windows
    last = N_FRAMES - 1
    inputs = [made.blank.get_frame(last), made.clip.get_frame(last)]
    again = _planes(made._produce_cached(last, inputs))
    assert all(
        np.array_equal(a, b) for a, b in zip(again, _planes(made.sr.get_frame(last)), strict=True)
    )
    made.cache._entries.clear()
    with pytest.raises(vs.Error, match=f"frame {last}: its windows left the cache"):
        made._produce_cached(last, inputs)
    for n in reversed(range(N_FRAMES)):  # fresh nodes: every frame through its own node
        alone = sr(make_clip(vs.YUV420P8), **kw)
        for a, b in zip(_planes(alone.get_frame(n)), got[n], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"frame {n}")


@pytest.mark.parametrize("threads", [1, 3])
def test_without_overlap_each_window_is_written_once_through_its_tickets(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """Without overlap a linear pass asks Python a few times a window, never once a frame:
    each window's ticket of each part is made once, in order, the first part's by the node
    that computes the window (nothing is read ahead on the CPU), the others' from the
    cache, and writes its frames once; the frames are the bytes of each frame asked for
    alone from a fresh node, the clip's tail window (14 frames, T = 4: two frames) included.
    A ticket asked for again is rebuilt from the window cache, or says the window left it."""
    monkeypatch.setattr(vs.core, "num_threads", threads)
    made: list[tuple[str, int, int]] = []
    node_of: list[skipsr_filter._SkipSRNode] = []
    cls = skipsr_filter._SkipSRNode
    real_computed, real_cached = cls._frames_computed, cls._frames_cached

    def computed(self, n: int, f: list[vs.VideoFrame], *, part: int) -> vs.VideoFrame:
        made.append(("computed", n, part))
        node_of.append(self)
        return real_computed(self, n, f, part=part)

    def cached(self, n: int, f: list[vs.VideoFrame], *, part: int) -> vs.VideoFrame:
        made.append(("cached", n, part))
        return real_cached(self, n, f, part=part)

    def no_frame_callback(self, n: int) -> vs.VideoNode:
        raise AssertionError(f"frame {n}: a FrameEval a frame")

    monkeypatch.setattr(cls, "_frames_computed", computed)
    monkeypatch.setattr(cls, "_frames_cached", cached)
    monkeypatch.setattr(cls, "_select", no_frame_callback)
    t, stats, parts = 4, SkipSRStats(), tickets.PARTS
    assert 0 < N_FRAMES % t < parts, "the clip must end in a window with parts left empty"
    node = sr(make_clip(vs.YUV420P8), window=t, skip_ratio=0.5, stats=stats)
    assert made == [], "a window was computed before any frame was asked for"
    assert (node.num_frames, node.fps) == (N_FRAMES, make_clip(vs.YUV420P8).fps)
    got = [_planes(node.get_frame(n)) for n in range(N_FRAMES)]
    windows = -(-N_FRAMES // t)
    want = [
        ("computed" if part == 0 else "cached", k, part)
        for k in range(windows)
        for part in range(min(parts, N_FRAMES - k * t))
    ]
    assert made == want
    assert dict(stats.computed) == {k: 1 for k in range(windows)}
    this = node_of[0]
    assert len(this._window_stash) == 0 and len(this.tickets) == parts
    last = windows - 1
    tiny = this.tickets[1].get_frame(last)  # still held by VapourSynth: no callback
    assert made == want
    this.tickets[0].get_frame(0)  # long dropped by VapourSynth: made again from the cache
    assert made[-1] == ("cached", 0, 0) and dict(stats.computed) == {k: 1 for k in range(windows)}
    again = this._frames_cached(last, tiny, part=1)  # not stashed: from the cache
    frame = again.props[f"SkipSRFrame{N_FRAMES - 1 - last * t}"]
    for a, b in zip(_planes(frame), _planes(this.sr.get_frame(N_FRAMES - 1)), strict=True):
        np.testing.assert_array_equal(a, b)
    this.cache._entries.clear()
    with pytest.raises(vs.Error, match=f"window {last} left the cache"):
        this._frames_cached(last, tiny, part=1)
    for n in (N_FRAMES - 1, N_FRAMES - 2, t, 1, 0):  # fresh nodes: each frame through its own
        alone = sr(make_clip(vs.YUV420P8), window=t, skip_ratio=0.5)
        for a, b in zip(_planes(alone.get_frame(n)), got[n], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"frame {n}")


def test_linear_pass_computes_each_window_once_with_a_bounded_cache(
    make_clip: MakeClip, sr
) -> None:
    stats = SkipSRStats()
    out = sr(make_clip(vs.RGBS), window=2, cache_windows=2, stats=stats)
    for n in range(N_FRAMES):
        out.get_frame(n)
    assert dict(stats.computed) == {k: 1 for k in range(N_FRAMES // 2)}
    assert stats.max_cached <= 2 and stats.evicted == N_FRAMES // 2 - 2


def test_default_keep_rule_is_the_gradient_threshold(make_clip: MakeClip, sr_weights: Path) -> None:
    from vs_skipsr.filter import DEFAULT_THRESHOLD

    clip = make_clip(vs.RGBS)[:4]
    # no scorer, threshold or skip_ratio; on the CPU like its reference (a GPU's float32
    # differs from it by ~6e-6, H200, nineteenth session)
    out = skipsr(clip, window=4, sr_weights=sr_weights, backend="cpu")
    runner = TorchBackend(device="cpu").load(sr=load_sr(sr_weights), mask=None)
    lr = torch.from_numpy(np.stack([_rgb(clip.get_frame(i)) for i in range(4)]))
    ref = upscale_window(
        lr, scale=4, runner=runner, scorer="gradient", threshold=DEFAULT_THRESHOLD["gradient"]
    )
    assert 0 < ref.stats.kept_ratio < 1, "the test clip must exercise the threshold"
    got = [out.get_frame(i).props["SkipSRKeptRatio"] for i in range(4)]
    want = ref.keep.reshape(4, -1).float().mean(1).tolist()
    np.testing.assert_allclose(got, want, atol=1e-9)
    np.testing.assert_allclose(_rgb(out.get_frame(2)), ref.frames[2].numpy(), atol=1e-6)


def test_seek_back_after_eviction_gives_the_same_bytes(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread: VapourSynth then keeps three windows' tickets, so frame 1's is gone too."""
    monkeypatch.setattr(vs.core, "num_threads", 1)
    clip = make_clip(vs.RGB24)
    want = _bytes(sr(clip, window=2).get_frame(1))
    stats = SkipSRStats()
    out = sr(clip, window=2, cache_windows=1, stats=stats)
    for n in (0, 2, 4, 6):  # window 0 is computed, then evicted
        out.get_frame(n)
    assert _bytes(out.get_frame(1)) == want
    assert stats.computed[0] == 2 and stats.evicted >= 3


def _reference(
    clip: vs.VideoNode,
    frames: list[int],
    *,
    sr_weights: Path,
    mask_weights: Path,
    seed: int,
    skip_ratio: float,
) -> np.ndarray:
    """upscale_window on the given source frames, outside VapourSynth."""
    runner = TorchBackend(device="cpu").load(sr=load_sr(sr_weights), mask=load_mask(mask_weights))
    lr = torch.from_numpy(np.stack([_rgb(clip.get_frame(i)) for i in frames]))
    out = upscale_window(
        lr, scale=4, runner=runner, scorer="learned", skip_ratio=skip_ratio, seed=seed
    )
    return out.frames.numpy()


def test_overlap_frames_blend_both_windows(
    make_clip: MakeClip, sr, sr_weights: Path, mask_weights: Path
) -> None:
    clip = make_clip(vs.RGBS)[:8]
    out = sr(clip, window=4, overlap=2, skip_ratio=0.5)  # windows 0..3, 2..5, 4..7
    ref = {
        s: _reference(
            clip,
            list(range(s, s + 4)),
            sr_weights=sr_weights,
            mask_weights=mask_weights,
            seed=s,
            skip_ratio=0.5,
        )
        for s in (0, 2)
    }
    np.testing.assert_allclose(_rgb(out.get_frame(0)), ref[0][0], atol=1e-6)
    want2 = 2 / 3 * ref[0][2] + 1 / 3 * ref[2][0]
    want3 = 1 / 3 * ref[0][3] + 2 / 3 * ref[2][1]
    np.testing.assert_allclose(_rgb(out.get_frame(2)), want2, atol=1e-5)
    np.testing.assert_allclose(_rgb(out.get_frame(3)), want3, atol=1e-5)


def test_scene_cut_starts_a_new_window(
    make_clip: MakeClip, sr, sr_weights: Path, mask_weights: Path
) -> None:
    base = make_clip(vs.RGBS)[:8]
    clip = base[:5] + vs.core.std.SetFrameProps(base[5], _SceneChangePrev=1) + base[6:]
    out = sr(clip, window=4, skip_ratio=0.5, scene_cuts=True)  # window 1 = 4..7, cut at 5
    kw = {"sr_weights": sr_weights, "mask_weights": mask_weights, "skip_ratio": 0.5}
    before = _reference(base, [4, 4, 4, 4], seed=4, **kw)
    after = _reference(base, [5, 6, 7, 7], seed=5, **kw)
    np.testing.assert_array_equal(_rgb(out.get_frame(4)), before[0])
    for j, n in enumerate((5, 6, 7)):
        np.testing.assert_array_equal(_rgb(out.get_frame(n)), after[j])
    assert out.get_frame(5).props["_SceneChangePrev"] == 1
    # without scene_cuts the window is one pass over 4..7
    whole = _reference(base, [4, 5, 6, 7], seed=4, **kw)
    plain = sr(clip, window=4, skip_ratio=0.5)
    np.testing.assert_array_equal(_rgb(plain.get_frame(6)), whole[2])


# --- the plumbing: host buffers, float16 windows, RGBH frames ---------------------------------


@pytest.fixture()
def half_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """What CUDA does, on the CPU: windows kept on the host as float16 (in pooled buffers) and
    handed to the resize as RGBH frames, wherever the output format allows it."""
    monkeypatch.setattr(skipsr_filter, "_HALF_HOST_DEVICES", frozenset({"cpu", "cuda"}))


@pytest.fixture()
def pools(monkeypatch: pytest.MonkeyPatch) -> list[HostPool]:
    """Every HostPool a skipsr() node makes, to see what it allocated."""
    made: list[HostPool] = []

    class Recorded(HostPool):
        def __init__(self, **kw: object) -> None:
            super().__init__(**kw)  # type: ignore[arg-type]
            self.dtypes: set[torch.dtype] = set()
            made.append(self)

        def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            self.dtypes.add(dtype)
            return super().take(shape, dtype)

    monkeypatch.setattr(skipsr_filter, "HostPool", Recorded)
    return made


@pytest.mark.parametrize(
    ("fmt", "half"),
    [
        (vs.YUV420P8, True),
        (vs.YUV420P10, True),
        (vs.RGB24, True),
        (vs.RGB30, True),
        (vs.RGBH, True),
        (vs.YUV444PH, True),
        (vs.YUV420P12, False),
        (vs.YUV444P16, False),
        (vs.RGB48, False),
        (vs.RGBS, False),
        (vs.YUV444PS, False),
    ],
)
def test_half_precision_only_where_the_format_cannot_tell(fmt: int, half: bool) -> None:
    f = vs.core.get_video_format(fmt)
    want = torch.float16 if half else torch.float32
    assert skipsr_filter._host_dtype(f, torch.device("cuda", 0)) == want
    assert skipsr_filter._host_dtype(f, torch.device("cpu")) == torch.float32


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV420P10, vs.YUV444P8, vs.RGB24])
def test_rgbh_frames_stay_within_one_code_of_rgbs(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch, pools: list[HostPool], fmt: int
) -> None:
    """float16 windows through RGBH give the float32 path's output or one code off, with an
    overlap blend and a scene cut (two passes into one window buffer) on the way."""
    base = make_clip(fmt)[:8]
    clip = base[:5] + vs.core.std.SetFrameProps(base[5], _SceneChangePrev=1) + base[6:]
    kw = {"window": 4, "overlap": 1, "skip_ratio": 0.5, "scene_cuts": True}
    plain = sr(clip, **kw)
    want = [[np.asarray(p, dtype=np.int32) for p in _planes(plain.get_frame(n))] for n in range(8)]
    monkeypatch.setattr(skipsr_filter, "_HALF_HOST_DEVICES", frozenset({"cpu"}))
    half = sr(clip, **kw)
    exact = total = 0
    for n in range(8):
        frame = half.get_frame(n)
        assert frame.format.id == fmt
        for got, ref in zip(_planes(frame), want[n], strict=True):
            diff = np.abs(np.asarray(got, dtype=np.int32) - ref)
            assert diff.max() <= 1, f"frame {n}: {diff.max()} codes off"
            exact += int((diff == 0).sum())
            total += diff.size
    assert exact / total > 0.9  # and mostly the very same codes
    assert [p.dtypes for p in pools] == [{torch.float32}, {torch.float32, torch.float16}]


def _planes(frame: vs.VideoFrame) -> list[np.ndarray]:
    return [np.asarray(frame[p]).copy() for p in range(frame.format.num_planes)]


@pytest.mark.parametrize(
    "fmt", [vs.RGB24, vs.RGBH, vs.RGBS, vs.YUV420P8, vs.YUV420P10, vs.YUV444P16, vs.YUV444PH]
)
def test_half_host_path_keeps_formats_and_props(
    make_clip: MakeClip, sr, half_host: None, fmt: int
) -> None:
    clip = make_clip(fmt, Foo=3)[:3]
    out = sr(clip, scale=2, window=3)
    assert out.format.id == fmt
    frame = out.get_frame(1)
    assert frame.format.id == fmt and (frame.width, frame.height) == (128, 96)
    assert frame.props["Foo"] == 3 and frame.props["SkipSRWindow"] == 0


def test_half_host_requests_in_any_order_give_the_same_bytes(
    make_clip: MakeClip, sr, half_host: None
) -> None:
    clip = make_clip(vs.YUV420P10)
    kw = {"window": 4, "overlap": 1, "skip_ratio": 0.5}
    want = [_bytes(sr(clip, **kw).get_frame(n)) for n in range(N_FRAMES)]
    stats = SkipSRStats()
    shuffled = sr(clip, stats=stats, cache_windows=2, **kw)  # evictions recycle buffers
    _assert_shuffled_threads_match(shuffled, want, seed=3, repeats=2, workers=4)


def test_half_host_show_mask(make_clip: MakeClip, sr, half_host: None) -> None:
    clip = make_clip(vs.RGB24)[:2]
    plain = _rgb(sr(clip, window=2, skip_ratio=0.75).get_frame(0))
    shown = _rgb(sr(clip, window=2, skip_ratio=0.75, show_mask=True).get_frame(0))
    same = np.all(plain == shown, axis=0)
    assert 0.05 < same.mean() < 0.5


def test_window_buffers_come_from_a_pool_and_are_reused(
    make_clip: MakeClip, sr, half_host: None, pools: list[HostPool]
) -> None:
    stats = SkipSRStats()
    out = sr(make_clip(vs.YUV420P8), window=2, cache_windows=2, stats=stats)
    for n in range(N_FRAMES):
        out.get_frame(n)
    (pool,) = pools
    assert not pool.pinned  # pinned only for a CUDA device
    assert stats.passes == N_FRAMES // 2 == 7
    # one LR staging buffer, and window buffers for the cache plus the one being computed
    assert pool.allocated <= 1 + stats.max_cached + 1 < 1 + stats.passes


def test_cpu_windows_are_kept_without_a_copy(
    make_clip: MakeClip, sr, pools: list[HostPool]
) -> None:
    """On the CPU a window's float32 output is cached as it is: the pool holds only the LR
    staging buffer, reused by every window."""
    out = sr(make_clip(vs.YUV420P8), window=2)
    for n in range(N_FRAMES):
        out.get_frame(n)
    assert pools[0].allocated == 1


def test_plane_copies_give_the_source_whatever_the_strides_and_dtypes() -> None:
    """_copy_plane writes the source's values into a contiguous plane, a strided one (a
    VapourSynth plane with padded rows) and, converted, into a float16 one."""
    rng = np.random.default_rng(3)
    src = rng.random((6, 10), dtype=np.float32)
    dst = np.zeros_like(src)
    skipsr_filter._copy_plane(dst, src)
    assert np.array_equal(dst, src)
    strided = np.zeros((6, 24), dtype=np.float32)[:, 2:22:2]
    skipsr_filter._copy_plane(strided, src)
    assert np.array_equal(strided, src)
    half = np.zeros((6, 10), dtype=np.float16)
    skipsr_filter._copy_plane(half, src)
    assert np.array_equal(half, src.astype(np.float16))


def test_host_pool_reuses_returns_and_drops() -> None:
    pool = HostPool(pinned=False, spare=1)
    a = pool.take((2, 3), torch.float16)
    assert a.shape == (2, 3) and a.dtype == torch.float16 and a.is_contiguous()
    pool.give(a)
    assert pool.take((2, 3), torch.float16) is a  # same key: reused
    assert pool.take((2, 3), torch.float32) is not a  # another dtype: another buffer
    assert pool.allocated == 2

    with pool.lease((4,), torch.float32) as b:
        pass
    assert pool.take((4,), torch.float32) is b  # back after a clean exit
    with pytest.raises(RuntimeError), pool.lease((4,), torch.float32) as c:
        raise RuntimeError("a copy may still be queued")
    assert pool.take((4,), torch.float32) is not c  # dropped after an exception

    class Owner:
        pass

    owner, d = Owner(), pool.take((5,), torch.float32)
    pool.bind(owner, d)
    assert pool.take((5,), torch.float32) is not d  # still owned
    del owner
    assert pool.take((5,), torch.float32) is d  # back once the owner is garbage

    e, f = pool.take((6,), torch.float32), pool.take((6,), torch.float32)
    pool.give(e)
    pool.give(f)  # over spare=1: let go
    assert pool.take((6,), torch.float32) is e
    assert pool.take((6,), torch.float32) is not f


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
def test_cuda_default_runs_two_windows_at_once(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two streams on CUDA by default: the configuration every GPU figure was measured in."""
    assert _default_streams(make_clip, sr, monkeypatch, backend="cuda", skip_ratio=0.5) == 2


@needs_cuda
def test_cuda_window_default_is_the_cards(make_clip: MakeClip, sr) -> None:
    """Torch on CUDA with the shipped model takes the longer window _default_window gives for
    this card and clip (on a card of 24 GB or more, three model windows cover the 14-frame
    test clip); an explicit window is left alone."""
    shipped = load_sr(DEFAULT_SR_WEIGHTS).config
    clip = make_clip(vs.RGBS)
    card = torch.cuda.get_device_properties(0).total_memory / 2**20
    t = skipsr_filter._default_window(
        shipped,
        out_w=clip.width * 4,
        out_h=clip.height * 4,
        num_frames=clip.num_frames,
        device_mib=card,
    )
    assert t > shipped.window[0]  # the longer window is what runs here
    kw = {"backend": "cuda", "skip_ratio": 0.5, "sr_weights": DEFAULT_SR_WEIGHTS}
    stats = SkipSRStats()
    _assert_default_window(sr(clip, stats=stats, **kw), stats, t)
    stats = SkipSRStats()
    out = sr(clip, stats=stats, window=shipped.window[0], **kw)
    _assert_default_window(out, stats, shipped.window[0])


@needs_cuda
def test_cuda_window_default_brings_its_streams(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The longer default window comes with the streams _long_window_streams gives for this
    card; a window or a stream count given by the caller is left alone."""
    card = torch.cuda.get_device_properties(0).total_memory / 2**20
    clip = make_clip(vs.YUV420P8)
    shipped = load_sr(DEFAULT_SR_WEIGHTS).config
    t = skipsr_filter._default_window(
        shipped, out_w=clip.width * 4, out_h=clip.height * 4, num_frames=N_FRAMES, device_mib=card
    )
    tokens = t * -(-clip.width * 4 // 16) * -(-clip.height * 4 // 16)
    want = skipsr_filter._long_window_streams(window_tokens=tokens, device_mib=card)
    made: list[int] = []

    def record(n: int, device: torch.device) -> skipsr_filter._Slots:
        made.append(n)
        return _SLOTS(n, device)

    monkeypatch.setattr(skipsr_filter, "_Slots", record)
    kw = {"backend": "cuda", "skip_ratio": 0.5, "sr_weights": DEFAULT_SR_WEIGHTS}
    for extra, streams in [({}, want), ({"window": 5}, 2), ({"num_streams": 1}, 1)]:
        sr(clip, **kw, **extra).get_frame(0)
        assert made.pop() == streams, extra


@needs_cuda
@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV420P10])
def test_cuda_half_host_stays_within_one_code_of_float32_host(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch, pools: list[HostPool], fmt: int
) -> None:
    """On a GPU: windows back as float16 into pinned pooled buffers, RGBH into the resize,
    against the same network with float32 windows and RGBS frames."""
    clip = make_clip(fmt)
    kw = {"backend": "cuda", "window": 4, "overlap": 1, "skip_ratio": 0.5, "num_streams": 2}
    half = sr(clip, **kw)
    got = [_planes(half.get_frame(n)) for n in range(N_FRAMES)]
    assert pools[0].pinned and torch.float16 in pools[0].dtypes
    monkeypatch.setattr(skipsr_filter, "_HALF_HOST_DEVICES", frozenset())
    full = sr(clip, **kw)
    for n in range(N_FRAMES):
        for a, b in zip(got[n], _planes(full.get_frame(n)), strict=True):
            assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 1, f"frame {n}"
    assert torch.float16 not in pools[1].dtypes


@needs_cuda
def test_cuda_pinned_buffers_recycled_under_concurrency_give_the_same_bytes(
    make_clip: MakeClip, sr, pools: list[HostPool]
) -> None:
    """On a GPU, with two streams, a cache of two windows (so evicted windows' pinned buffers
    are reused while other windows are in flight) and requests in random order from several
    threads: every frame as a linear pass gives it. Assumes the network's forward pass is
    deterministic on one GPU, as torch's is."""
    clip = make_clip(vs.YUV420P10)
    kw = {"backend": "cuda", "window": 4, "overlap": 1, "skip_ratio": 0.5, "num_streams": 2}
    want = [_bytes(sr(clip, **kw).get_frame(n)) for n in range(N_FRAMES)]
    shuffled = sr(clip, cache_windows=2, **kw)
    n_requests = _assert_shuffled_threads_match(shuffled, want, seed=11, repeats=3, workers=6)
    assert pools[1].pinned and pools[1].allocated < n_requests


@needs_cuda
def test_cuda_graphs_under_concurrency_match_a_linear_pass_and_eager(
    make_clip: MakeClip, sr
) -> None:
    """CUDA graphs share static buffers and one memory pool across two streams and six
    threads: shuffled requests give the bytes of a linear pass, and the frames stay within
    one code of eager mode."""
    clip = make_clip(vs.YUV420P10)
    kw = {"backend": "cuda", "window": 4, "overlap": 1, "skip_ratio": 0.5, "num_streams": 2}
    eager = [_planes(sr(clip, **kw).get_frame(n)) for n in range(N_FRAMES)]
    graphs = sr(clip, cuda_graphs=True, **kw)
    want = [_bytes(graphs.get_frame(n)) for n in range(N_FRAMES)]
    shuffled = sr(clip, cuda_graphs=True, cache_windows=2, **kw)
    _assert_shuffled_threads_match(shuffled, want, seed=12, repeats=2, workers=6)
    for n in range(N_FRAMES):
        for a, b in zip(_planes(graphs.get_frame(n)), eager[n], strict=True):
            assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 1, f"frame {n}"


@needs_cuda
@pytest.mark.parametrize("skip_ratio", [0.5, 0.0])
def test_cuda_graphed_window_steps_give_the_bytes_of_eager_steps(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch, skip_ratio: float
) -> None:
    """With CUDA graphs the steps around the net (upsample and keep set, device colour) are
    replayed per stream (StaticGraph): the same bytes as running them eagerly, skipping or
    dense, also with requests from several threads in random order over two streams and a
    cache of two windows."""
    clip = make_clip(vs.YUV420P10)
    kw = {"backend": "cuda", "window": 4, "skip_ratio": skip_ratio, "num_streams": 2}
    made: list[skipsr_filter.StaticGraph] = []
    real = skipsr_filter.StaticGraph

    def recording(fn):
        made.append(real(fn))
        return made[-1]

    monkeypatch.setattr(skipsr_filter, "StaticGraph", recording)
    graphed = sr(clip, cache_windows=2, **kw)
    monkeypatch.setattr(skipsr_filter, "StaticGraph", lambda fn: fn)
    want = [_bytes(sr(clip, **kw).get_frame(n)) for n in range(N_FRAMES)]
    _assert_shuffled_threads_match(graphed, want, seed=13, repeats=2, workers=6)
    # two graphs (window inputs, colour), each once per stream: a tail window (2 frames) is
    # padded to the full window's shape, so one shape a stream
    assert [g.fn.__name__ for g in made] == ["rgb_to_yuv", "window_inputs"]
    assert all(1 <= g.captures <= 2 for g in made), [g.captures for g in made]


@needs_cuda
def test_cuda_torch_compile_stays_within_one_code_of_graphs(make_clip: MakeClip, sr) -> None:
    """skipsr(torch_compile=True) reaches the compiled runner and gives the frames of the
    eager kernels' graphs within one code."""
    clip = make_clip(vs.YUV420P8)
    kw = {"backend": "cuda", "window": 4, "skip_ratio": 0.5, "num_streams": 2}
    graphs = [_planes(sr(clip, **kw).get_frame(n)) for n in range(N_FRAMES)]
    compiled = sr(clip, torch_compile=True, **kw)
    for n in range(N_FRAMES):
        for a, b in zip(_planes(compiled.get_frame(n)), graphs[n], strict=True):
            assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 1, f"frame {n}"


needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


@needs_two_gpus
def test_second_gpu_gives_the_first_gpus_bytes_and_leaves_the_first_alone(
    make_clip: MakeClip, sr, recwarn: pytest.WarningsRecorder
) -> None:
    """device_index=1 runs everything on the second card: Triton launches and CUDA graph
    captures go to the current device, not the tensors', so a kernel launched without a
    device guard would reach card 0 (and fail or fall back to torch's attention, which gives
    other bytes), and a capture from a thread whose current device is 0 recorded an empty
    graph, whose replays handed back stale output (1-code differences with the test net,
    whose residual is small; torch warns "The CUDA Graph is empty"). Same model of
    card, same bytes; nothing allocated on card 0 meanwhile."""
    from vs_skipsr.models.attention import triton_attention_works

    clip = make_clip(vs.YUV420P10)
    kw = {"backend": "cuda", "window": 4, "skip_ratio": 0.5, "num_streams": 2}
    on_first = [_bytes(f) for f in sr(clip, **kw).frames()]
    torch.cuda.synchronize(0)
    torch.cuda.reset_peak_memory_stats(0)
    before = torch.cuda.memory_allocated(0)
    on_second = [_bytes(f) for f in sr(clip, device_index=1, **kw).frames()]
    torch.cuda.synchronize(1)
    assert torch.cuda.max_memory_allocated(0) == before
    assert torch.cuda.max_memory_allocated(1) > 0
    assert len(on_second) == N_FRAMES
    assert not [w for w in recwarn if "Graph is empty" in str(w.message)]
    assert on_second == on_first
    if torch.cuda.get_device_capability(1) >= (8, 0):  # (the test nets' heads are 16 wide)
        assert triton_attention_works(torch.device("cuda", 1), torch.float16, head_dim=16)


# --- bad inputs ------------------------------------------------------------------------------


def _bad_cases(missing: Path) -> list[tuple[str, Callable[[MakeClip], tuple[object, dict]], str]]:
    def yuv(mk: MakeClip) -> vs.VideoNode:
        return mk(vs.YUV420P8)

    def blank(fmt: int) -> vs.VideoNode:
        return vs.core.std.BlankClip(format=fmt, width=64, height=48, length=2)

    def yuv_int32() -> int:
        return vs.core.query_video_format(vs.YUV, vs.INTEGER, 32, 0, 0).id

    return [
        ("not a clip", lambda mk: ("clip.mkv", {}), "clip=str"),
        (
            "variable format",
            lambda mk: (vs.core.std.BlankClip(varformat=True), {}),
            "variable format",
        ),
        ("variable size", lambda mk: (vs.core.std.BlankClip(varsize=True), {}), "variable size"),
        ("gray", lambda mk: (blank(vs.GRAY8), {}), "format=Gray8"),
        ("32-bit int", lambda mk: (blank(yuv_int32()), {}), "format=YUV444P32"),
        (
            "too small",
            lambda mk: (vs.core.std.BlankClip(width=6, height=6, format=vs.RGB24), {}),
            "6x6",
        ),
        ("scale", lambda mk: (yuv(mk), {"scale": 5}), "scale=5"),
        ("float scale", lambda mk: (yuv(mk), {"scale": 2.0}), "scale=2.0"),
        ("window", lambda mk: (yuv(mk), {"window": 0}), "window=0"),
        ("overlap too big", lambda mk: (yuv(mk), {"window": 4, "overlap": 4}), "overlap=4"),
        ("overlap vs model window", lambda mk: (yuv(mk), {"overlap": 2}), "overlap=2"),
        ("overlap negative", lambda mk: (yuv(mk), {"overlap": -1}), "overlap=-1"),
        (
            "both",
            lambda mk: (yuv(mk), {"threshold": 0.1, "skip_ratio": 0.5}),
            "threshold=0.1 and skip_ratio=0.5",
        ),
        ("skip_ratio 1", lambda mk: (yuv(mk), {"skip_ratio": 1.0}), "skip_ratio=1.0"),
        ("skip_ratio <0", lambda mk: (yuv(mk), {"skip_ratio": -0.1}), "skip_ratio=-0.1"),
        ("threshold nan", lambda mk: (yuv(mk), {"threshold": float("nan")}), "threshold=nan"),
        ("steps", lambda mk: (yuv(mk), {"steps": 0}), "steps=0"),
        ("dilate", lambda mk: (yuv(mk), {"dilate": -1}), "dilate=-1"),
        ("backend", lambda mk: (yuv(mk), {"backend": "magic"}), "backend='magic'"),
        ("backend cuda", lambda mk: (yuv(mk), {"backend": "cuda"}), "backend='cuda'"),
        ("num_streams", lambda mk: (yuv(mk), {"num_streams": 0}), "num_streams=0"),
        ("readahead", lambda mk: (yuv(mk), {"readahead": -1}), "readahead=-1"),
        ("readahead type", lambda mk: (yuv(mk), {"readahead": 1.5}), "readahead=1.5"),
        ("device_index", lambda mk: (yuv(mk), {"device_index": -1}), "device_index=-1"),
        ("device_index big", lambda mk: (yuv(mk), {"device_index": 9}), "device_index=9"),
        ("scorer", lambda mk: (yuv(mk), {"scorer": "oracle"}), "scorer='oracle'"),
        ("blend", lambda mk: (yuv(mk), {"blend": "cubic"}), "blend='cubic'"),
        ("cache", lambda mk: (yuv(mk), {"cache_windows": 0}), "cache_windows=0"),
        ("cuda_graphs type", lambda mk: (yuv(mk), {"cuda_graphs": 1}), "cuda_graphs=1"),
        (
            "cuda_graphs without cuda",
            lambda mk: (yuv(mk), {"cuda_graphs": True, "backend": "auto"}),
            "no CUDA",
        ),
        (
            "cuda_graphs on cpu",
            lambda mk: (yuv(mk), {"cuda_graphs": True, "backend": "cpu"}),
            "backend='cpu'",
        ),
        ("torch_compile type", lambda mk: (yuv(mk), {"torch_compile": 1}), "torch_compile=1"),
        (
            "torch_compile on cpu",
            lambda mk: (yuv(mk), {"torch_compile": True, "backend": "cpu"}),
            "torch_compile=True with backend='cpu'",
        ),
        (
            "torch_compile with a backend value",
            lambda mk: (yuv(mk), {"torch_compile": True, "backend": TorchBackend()}),
            "a backend value carries its own",
        ),
        (
            "torch_compile without fp16",
            lambda mk: (yuv(mk), {"torch_compile": True, "fp16": False, "backend": "auto"}),
            "torch_compile=True",
        ),
        (
            "torch_compile without graphs",
            lambda mk: (yuv(mk), {"torch_compile": True, "cuda_graphs": False, "backend": "auto"}),
            "torch_compile=True",
        ),
        ("sr weights", lambda mk: (yuv(mk), {"sr_weights": missing}), str(missing)),
        ("mask weights", lambda mk: (yuv(mk), {"mask_weights": missing}), str(missing)),
    ]


BAD = _bad_cases(Path("/nonexistent/sr.safetensors"))


@pytest.mark.parametrize(("name", "build", "needle"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_gives_a_clear_error(
    make_clip: MakeClip, sr, name: str, build, needle: str
) -> None:
    if name in ("backend cuda", "cuda_graphs without cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    clip, kw = build(make_clip)
    with pytest.raises(vs.Error, match=r"^skipsr: ") as err:
        sr(clip, **kw)
    assert needle in str(err.value)


def test_weights_of_the_wrong_kind_are_refused(make_clip: MakeClip, mask_weights: Path) -> None:
    with pytest.raises(vs.Error, match=r"skipsr: .*kind='mask'"):
        skipsr(make_clip(vs.RGB24), sr_weights=mask_weights)


@pytest.mark.skipif(DEFAULT_SR_WEIGHTS.is_file(), reason="the shipped SR weights are present")
def test_missing_shipped_weights_are_explained(make_clip: MakeClip) -> None:
    with pytest.raises(vs.Error, match="skipsr: sr_weights=None: the shipped weights"):
        skipsr(make_clip(vs.RGB24))


@pytest.mark.skipif(DEFAULT_MASK_WEIGHTS.is_file(), reason="the shipped mask weights are present")
def test_learned_scorer_without_mask_weights_is_refused(
    make_clip: MakeClip, sr_weights: Path
) -> None:
    with pytest.raises(vs.Error, match="skipsr: scorer='learned' needs mask weights"):
        skipsr(make_clip(vs.RGB24), sr_weights=sr_weights, scorer="learned")


# --- colour conversion on the device ---------------------------------------------------------


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV420P10, vs.YUV422P8, vs.YUV444P8])
@pytest.mark.parametrize("matrix", [1, 6])
def test_device_color_matches_the_resize_within_one_code(
    make_clip: MakeClip,
    sr,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fmt: int,
    matrix: int,
) -> None:
    """The planes converted in torch (here on the CPU, as on a GPU) against the resize back
    from RGB: every sample within one code, the same props, frames in order."""
    monkeypatch.setattr(skipsr_filter, "_DEVICE_COLOR_DEVICES", frozenset({"cpu"}))
    clip = vs.core.std.SetFrameProps(make_clip(fmt), _Matrix=matrix, _Range=0, _ChromaLocation=0)
    kw = {"window": 4, "skip_ratio": 0.5}
    with caplog.at_level(logging.INFO, logger="vs_skipsr.filter"):
        on_device = sr(clip, **kw)  # auto: chosen because "cpu" counts as a device here
    assert "device_color=True" in caplog.text  # the path under test was taken
    resized = sr(clip, device_color=False, **kw)
    assert on_device.format.id == resized.format.id == fmt
    for n in range(N_FRAMES):
        a, b = on_device.get_frame(n), resized.get_frame(n)
        for pa, pb in zip(_planes(a), _planes(b), strict=True):
            assert np.abs(pa.astype(np.int32) - pb.astype(np.int32)).max() <= 1, f"frame {n}"
        luma = np.asarray(a[0]).astype(np.float64) / ((1 << a.format.bits_per_sample) - 1)
        assert read_index(luma, scale=4) == n
        assert {k: v for k, v in a.props.items() if k != "SkipSRWindowMs"} == {
            k: v for k, v in b.props.items() if k != "SkipSRWindowMs"
        }


def test_device_color_labels_a_frame_with_its_windows_conversion(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window is converted with one layout (here its first frame's, limited range); a frame
    of it whose own props say full range keeps limited-range planes (its black is luma 16,
    not 0), so it must say limited range too, or a player would stretch its levels."""
    monkeypatch.setattr(skipsr_filter, "_DEVICE_COLOR_DEVICES", frozenset({"cpu"}))
    base = vs.core.std.SetFrameProps(make_clip(vs.YUV420P8)[:3], _Matrix=1, _ChromaLocation=0)
    limited = vs.core.std.SetFrameProps(base, _Range=0)
    mixed = limited[:2] + vs.core.std.SetFrameProps(base[2], _Range=1)
    out = sr(mixed, window=3, skip_ratio=0.5, device_color=True)
    for n in range(3):
        frame = out.get_frame(n)
        assert frame.props["_Range"] == vs.RANGE_LIMITED, f"frame {n}"
        assert np.asarray(frame[0]).min() == 16, f"frame {n}"  # the clip's black blocks


def test_device_color_of_frames_short_of_whole_tokens(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output height that is not whole tokens (46 x 4 = 184 = 11.5 tokens): the window is
    converted from its token grid, padding and all, cropped inside the conversion. The planes
    match the resize back within one code, and are exactly the conversion of the RGB frames
    the resize path starts from, so the padded rows reach no sample (the bottom rows included)."""
    monkeypatch.setattr(skipsr_filter, "_DEVICE_COLOR_DEVICES", frozenset({"cpu"}))
    nodes: list[skipsr_filter._SkipSRNode] = []
    real = skipsr_filter._SkipSRNode._write

    def write(self, n: int, *args: object) -> vs.VideoFrame:
        nodes.append(self)
        return real(self, n, *args)

    monkeypatch.setattr(skipsr_filter._SkipSRNode, "_write", write)
    clip = vs.core.std.Crop(make_clip(vs.YUV420P8), bottom=2)
    clip = vs.core.std.SetFrameProps(clip, _Matrix=1, _Range=0, _ChromaLocation=0)
    kw = {"window": 4, "skip_ratio": 0.5}
    on_device = sr(clip, device_color=True, **kw)
    resized = sr(clip, device_color=False, **kw)
    assert (on_device.width, on_device.height) == (256, 184)
    layout = yuv_layout(bits=8, ss_w=1, ss_h=1, matrix=1, full_range=False, chromaloc=0)
    assert layout is not None
    for n in range(N_FRAMES):
        a, b = on_device.get_frame(n), resized.get_frame(n)
        for pa, pb in zip(_planes(a), _planes(b), strict=True):
            assert np.abs(pa.astype(np.int32) - pb.astype(np.int32)).max() <= 1, f"frame {n}"
        rgb_node = next(x for x in nodes if not x.settings.device_color)
        rgb = torch.from_numpy(np.stack(_planes(rgb_node.sr.get_frame(n))))[None]
        want = rgb_to_yuv(rgb, layout)
        for pa, w in zip(_planes(a), want, strict=True):
            np.testing.assert_array_equal(pa, w[0].numpy(), err_msg=f"frame {n}")


def test_rgb_to_yuv_cropped_inside_equals_the_cropped_window() -> None:
    """``size`` crops before converting: the padded window with ``size`` gives the bytes of
    the cropped window (chroma at the bottom and right edge included)."""
    g = torch.Generator().manual_seed(2)
    padded = torch.rand(2, 3, 48, 64, generator=g)
    layout = yuv_layout(bits=8, ss_w=1, ss_h=1, matrix=1, full_range=False, chromaloc=0)
    assert layout is not None
    want = rgb_to_yuv(padded[..., :42, :58].contiguous(), layout)
    got = rgb_to_yuv(padded, layout, size=(42, 58))
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("offset", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("axis", [2, 3])
def test_chroma_downsample_without_zero_taps_gives_the_nine_tap_bytes(offset, axis) -> None:
    """Leaving out the taps of weight 0 changes no bit of the halved plane."""
    import torch.nn.functional as F

    from vs_skipsr import color

    c = torch.rand(2, 2, 20, 24, generator=torch.Generator().manual_seed(1)) - 0.3
    k = color._taps(offset)
    assert 0.0 in k  # there is a tap to leave out
    pad = (4, 4, 0, 0) if axis == 3 else (0, 0, 4, 4)
    win = F.pad(c, pad, mode="replicate").unfold(axis, 9, 2)
    want = win[..., 0] * k[0]
    for i in range(1, 9):
        want.add_(win[..., i], alpha=k[i])
    assert torch.equal(color._downsample(c, axis=axis, offset=offset), want)


@needs_cuda
def test_cuda_device_color_under_concurrency_gives_the_same_bytes(make_clip: MakeClip, sr) -> None:
    """On a GPU (device_color on by default there), two streams, a two-window cache and
    shuffled requests from six threads give the bytes of a linear pass; within one code of
    the resize path."""
    clip = make_clip(vs.YUV420P10)
    kw = {"backend": "cuda", "window": 4, "skip_ratio": 0.5, "num_streams": 2}
    want = [_bytes(sr(clip, **kw).get_frame(n)) for n in range(N_FRAMES)]
    _assert_shuffled_threads_match(
        sr(clip, cache_windows=2, **kw), want, seed=13, repeats=2, workers=6
    )
    resized = sr(clip, device_color=False, **kw)
    on_device = sr(clip, **kw)
    for n in range(N_FRAMES):
        for a, b in zip(
            _planes(on_device.get_frame(n)), _planes(resized.get_frame(n)), strict=True
        ):
            assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max() <= 1, f"frame {n}"


@needs_cuda
@pytest.mark.skipif(color._triton_kernels() is None, reason="needs triton")
@pytest.mark.usefixtures("colour_check_forgotten")
def test_cuda_device_color_by_triton_gives_the_torch_ops_bytes(
    make_clip: MakeClip, sr, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filter's colour graph with the Triton kernels (the default on a GPU) and with
    torch ops: the same bytes, frame by frame (4:2:0 10-bit, a height short of whole tokens,
    so the crop inside the graph is on the path). Without Triton the check at first use
    says no, and the filter converts with torch ops (the check's answer is cached per card,
    so it is asked again with the module gone, and forgotten after by the fixture)."""
    clip = vs.core.std.Crop(make_clip(vs.YUV420P10), bottom=2)
    kw = {"backend": "cuda", "window": 4, "skip_ratio": 0.5}
    by_triton = [_bytes(f) for f in sr(clip, **kw).frames()]
    assert color.triton_color_works(torch.device("cuda"))
    monkeypatch.setattr(color, "_triton_kernels", lambda: None)
    color._triton_color_works_on.cache_clear()  # asked again, with the module gone
    assert not color.triton_color_works(torch.device("cuda"))
    by_torch = [_bytes(f) for f in sr(clip, **kw).frames()]
    assert len(by_triton) == len(by_torch) == N_FRAMES
    assert by_triton == by_torch


def test_device_color_refuses_what_it_cannot_convert(make_clip: MakeClip, sr) -> None:
    with pytest.raises(vs.Error, match="device_color=True: overlap=1"):
        sr(make_clip(vs.YUV420P8), window=4, overlap=1, device_color=True)
    with pytest.raises(vs.Error, match="device_color=True: the clip is RGB24"):
        sr(make_clip(vs.RGB24), device_color=True)
    clip = vs.core.std.SetFrameProps(make_clip(vs.YUV420P8), _Matrix=8)  # YCgCo
    with pytest.raises(vs.Error, match="_Matrix=8"):
        sr(clip, window=4, device_color=True).get_frame(0)
