"""Window planning: every frame covered, weights summing to 1, tail padded, scene cuts."""

from __future__ import annotations

import itertools
import math

import pytest

from vs_skipsr.windows import Piece, WindowPlan, longer_window

SHAPES = [(n, t, o) for n, t in itertools.product(range(1, 23), range(1, 7)) for o in range(t)]


def _reassemble(plan: WindowPlan) -> list[float]:
    """Blend windows whose output at each position is the source frame's index: a faithful
    plan gives back 0, 1, ..., N-1 (nothing dropped, duplicated or reordered)."""
    outputs = {k: plan.frames(k) for k in range(plan.num_windows)}
    return [
        math.fsum(c.weight * outputs[c.window][c.position] for c in plan.contributions(n))
        for n in range(plan.num_frames)
    ]


@pytest.mark.parametrize("blend", ["linear", "smooth"])
def test_every_frame_is_covered_with_weights_summing_to_one(blend: str) -> None:
    for n_frames, size, overlap in SHAPES:
        plan = WindowPlan(num_frames=n_frames, size=size, overlap=overlap, blend=blend)
        for n in range(n_frames):
            contribs = plan.contributions(n)
            assert contribs, (n_frames, size, overlap, n)
            assert math.isclose(sum(c.weight for c in contribs), 1.0, abs_tol=1e-12)
            assert all(c.weight > 0 for c in contribs)
            for c in contribs:
                assert plan.frames(c.window)[c.position] == n
                assert c.position < plan.real_length(c.window)


def test_no_frame_dropped_duplicated_or_reordered() -> None:
    for n_frames, size, overlap in SHAPES:
        plan = WindowPlan(num_frames=n_frames, size=size, overlap=overlap)
        got = _reassemble(plan)
        assert got == pytest.approx(list(range(n_frames)), abs=1e-9), (n_frames, size, overlap)


def test_windows_hold_t_consecutive_frames_starting_a_stride_apart() -> None:
    plan = WindowPlan(num_frames=20, size=5, overlap=2)
    assert plan.stride == 3
    for k in range(plan.num_windows):
        frames = plan.frames(k)
        assert len(frames) == 5
        assert frames[0] == 3 * k
        assert all(b - a in (0, 1) for a, b in itertools.pairwise(frames))


def test_tail_is_padded_by_repeating_the_last_frame() -> None:
    plan = WindowPlan(num_frames=12, size=5)
    assert plan.num_windows == 3
    assert plan.frames(2) == (10, 11, 11, 11, 11)
    assert plan.real_length(2) == 2
    assert [c.window for c in plan.contributions(11)] == [2]


def test_clip_shorter_than_a_window_is_one_padded_window() -> None:
    plan = WindowPlan(num_frames=2, size=5, overlap=3)
    assert plan.num_windows == 1
    assert plan.frames(0) == (0, 1, 1, 1, 1)


def test_no_window_made_past_the_last_frame() -> None:
    """The last window is needed: the one before it does not reach the last frame."""
    for n_frames, size, overlap in SHAPES:
        plan = WindowPlan(num_frames=n_frames, size=size, overlap=overlap)
        last = plan.num_windows - 1
        assert plan.start(last) + size >= n_frames
        if last > 0:
            assert plan.start(last - 1) + size < n_frames


def test_frames_in_one_window_get_weight_exactly_one() -> None:
    plan = WindowPlan(num_frames=10, size=4)
    for n in range(10):
        (c,) = plan.contributions(n)
        assert c.weight == 1.0 and c.window == n // 4 and c.position == n % 4


def test_linear_overlap_crossfades_across_the_border() -> None:
    plan = WindowPlan(num_frames=20, size=6, overlap=2)  # windows 0..5, 4..9, ...
    assert [(c.window, c.weight) for c in plan.contributions(3)] == [(0, 1.0)]
    w4 = {c.window: c.weight for c in plan.contributions(4)}
    w5 = {c.window: c.weight for c in plan.contributions(5)}
    assert w4 == pytest.approx({0: 2 / 3, 1: 1 / 3})
    assert w5 == pytest.approx({0: 1 / 3, 1: 2 / 3})


def test_smooth_overlap_is_a_raised_cosine() -> None:
    plan = WindowPlan(num_frames=20, size=6, overlap=2, blend="smooth")
    w4 = {c.window: c.weight for c in plan.contributions(4)}
    assert w4[1] == pytest.approx(math.sin(math.pi / 6) ** 2)
    assert w4[0] + w4[1] == pytest.approx(1.0)


def test_wide_overlap_blends_three_windows() -> None:
    plan = WindowPlan(num_frames=20, size=5, overlap=3)  # stride 2
    contribs = plan.contributions(6)
    assert [c.window for c in contribs] == [1, 2, 3]
    assert sum(c.weight for c in contribs) == pytest.approx(1.0)


def test_scene_cut_splits_a_window_into_padded_pieces() -> None:
    plan = WindowPlan(num_frames=20, size=5)
    assert plan.pieces(1, cuts={7}) == (
        Piece(start=0, length=2, frames=(5, 6, 6, 6, 6)),
        Piece(start=2, length=3, frames=(7, 8, 9, 9, 9)),
    )


def test_scene_cut_at_a_window_start_or_outside_changes_nothing() -> None:
    plan = WindowPlan(num_frames=20, size=5)
    whole = (Piece(start=0, length=5, frames=(5, 6, 7, 8, 9)),)
    assert plan.pieces(1) == whole
    assert plan.pieces(1, cuts={5}) == whole
    assert plan.pieces(1, cuts={3, 10, 17}) == whole


def test_pieces_cover_the_window_exactly_once() -> None:
    plan = WindowPlan(num_frames=23, size=6, overlap=2)
    cuts = {3, 4, 9, 15, 22}
    for k in range(plan.num_windows):
        pieces = plan.pieces(k, cuts)
        covered = [p.start + j for p in pieces for j in range(p.length)]
        assert covered == list(range(plan.real_length(k)))
        for p in pieces:
            assert len(p.frames) == 6
            real = p.frames[: p.length]
            assert real == tuple(plan.start(k) + p.start + j for j in range(p.length))
            assert set(p.frames[p.length :]) <= {real[-1]}
            # no piece reaches across a cut
            assert not any(c in cuts for c in real[1:])


def test_scene_cut_in_tail_padding_is_ignored() -> None:
    plan = WindowPlan(num_frames=12, size=5)
    assert plan.pieces(2, cuts={12, 13}) == (Piece(start=0, length=2, frames=(10, 11, 11, 11, 11)),)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_frames": 0, "size": 5}, "num_frames=0"),
        ({"num_frames": 5, "size": 0}, "size=0"),
        ({"num_frames": 5, "size": 3, "overlap": 3}, "overlap=3"),
        ({"num_frames": 5, "size": 3, "overlap": -1}, "overlap=-1"),
        ({"num_frames": 5, "size": 3, "blend": "cubic"}, "blend='cubic'"),
    ],
)
def test_bad_plan_is_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WindowPlan(**kwargs)  # type: ignore[arg-type]


def test_out_of_range_frame_or_window_raises() -> None:
    plan = WindowPlan(num_frames=10, size=4)
    with pytest.raises(IndexError):
        plan.contributions(10)
    with pytest.raises(IndexError):
        plan.frames(plan.num_windows)


GPU_CAP = 20 * 120 * 68  # the filter's cap: 20 frames of 1080p output, in 16-px tokens


@pytest.mark.parametrize(
    ("out_w", "out_h", "frames"),
    [
        (1920, 1080, 20),  # the cap is exactly four model windows of 1080p
        (1280, 720, 20),  # smaller frames still stop at four times the model's window
        (2560, 1440, 10),  # two model windows fit
        (3840, 2160, 5),  # 4K: not even two fit, the model's own window
        (7680, 4320, 5),  # over the cap at one model window: never below the model's
    ],
)
def test_longer_window_is_a_multiple_of_the_model_window_within_the_token_cap(
    out_w: int, out_h: int, frames: int
) -> None:
    per_frame = -(-out_w // 16) * -(-out_h // 16)
    got = longer_window(model_frames=5, tokens_per_frame=per_frame, multiple=4, max_tokens=GPU_CAP)
    assert got == frames
    assert got % 5 == 0
    assert got == 5 or got * per_frame <= GPU_CAP


@pytest.mark.parametrize("bad", ["model_frames", "tokens_per_frame", "multiple"])
def test_longer_window_refuses_a_non_positive_size(bad: str) -> None:
    kw = {"model_frames": 5, "tokens_per_frame": 100, "multiple": 4, "max_tokens": GPU_CAP}
    kw[bad] = 0
    with pytest.raises(ValueError, match=f"{bad}=0"):
        longer_window(**kw)
