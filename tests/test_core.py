"""The SkipSR core: skipping must be exact where it promises to be, and equal to the dense
model restricted to kept tokens everywhere else."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import vs_skipsr.tokens as tokens_module
from vs_skipsr.backends import TorchBackend
from vs_skipsr.models import MaskConfig, MaskNet, SRTransformer, random_sr
from vs_skipsr.models.attention import masked_dense_attention, padded_window_attention
from vs_skipsr.pipeline import token_noise, upsample, upscale_window, window_inputs
from vs_skipsr.tokens import (
    add_to_tokens,
    build_partition,
    gather_patches,
    pad_to_grid,
    padded_tokens,
    patchify,
    token_coords,
    unpatchify,
)

torch.set_num_threads(2)


def _random_sr(seed: int = 0, preset: str = "tiny") -> SRTransformer:
    """A tiny SR net with every weight random (a fresh net is the identity by design)."""
    return random_sr(preset, seed=seed, std=0.05)


@pytest.fixture(scope="module")
def runner():
    return TorchBackend(device="cpu").load(sr=_random_sr(), mask=MaskNet(MaskConfig(width=8)))


def _lr(t: int = 3, h: int = 21, w: int = 29, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, h, w, generator=g)


def _random_keep(grid, frac: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(grid, generator=g) < frac


def _grid(lr: torch.Tensor, scale: int, patch: int) -> tuple[int, int, int]:
    t, _, h, w = lr.shape
    return (t, -(-h * scale // patch), -(-w * scale // patch))


def test_patchify_round_trips_odd_sizes():
    x = torch.rand(2, 3, 48, 80)
    tok = patchify(x, patch=16)
    assert tok.shape == (2 * 3 * 5, 3 * 256)
    assert torch.equal(unpatchify(tok, grid=(2, 3, 5), patch=16), x)
    odd = pad_to_grid(torch.rand(2, 3, 37, 51), patch=16)
    assert odd.shape[-2:] == (48, 64)


def test_token_coords_follow_raster_order():
    grid = (2, 3, 5)
    c = token_coords(torch.arange(30), grid=grid)
    assert c[0].tolist() == [0, 0, 0]
    assert c[7].tolist() == [0, 1, 2]
    assert c[29].tolist() == [1, 2, 4]


@pytest.mark.parametrize("shift", [(0, 0, 0), (1, 2, 2)])
def test_partition_puts_each_kept_token_in_exactly_one_window(shift):
    grid = (3, 7, 9)
    keep = _random_keep(grid, 0.4, seed=3).reshape(-1)
    coords = token_coords(torch.nonzero(keep).squeeze(1), grid=grid)
    p = build_partition(coords, grid=grid, window=(2, 4, 4), shift=shift)
    members = p.part[p.part >= 0]
    assert sorted(members.tolist()) == list(range(coords.shape[0]))
    for row in p.part:
        idx = row[row >= 0]
        win = (coords[idx] + torch.tensor(shift)) // torch.tensor([2, 4, 4])
        assert (win == win[0]).all(), "a window mixes tokens of different 3D windows"
    assert int(p.cu_seqlens[-1]) == coords.shape[0]
    assert p.max_len == int((p.part >= 0).sum(1).max())


def test_partition_shapes_depend_on_the_grid_only():
    """Every window of the grid has a segment (empty ones too), so two keep sets of one grid
    give packed forms of one shape: what lets one CUDA graph serve both. Segments still hold
    exactly the tokens of their window, and static_len bounds max_len by the window volume."""
    grid, window, shift = (3, 7, 9), (2, 4, 4), (1, 2, 2)
    shapes = set()
    for frac, seed in ((0.1, 1), (0.5, 2), (1.0, 3)):
        keep = _random_keep(grid, frac, seed).reshape(-1)
        coords = token_coords(torch.nonzero(keep).squeeze(1), grid=grid)
        p = build_partition(coords, grid=grid, window=window, shift=shift, static_len=True)
        shapes.add(tuple(p.cu_seqlens.shape))
        assert p.max_len == 32
        cu = p.cu_seqlens.long()
        for w in range(cu.shape[0] - 1):
            members = p.order[cu[w] : cu[w + 1]]
            win = (coords[members] + torch.tensor(shift)) // torch.tensor(window)
            assert (win == win[:1]).all(), "a segment mixes windows"
        assert sorted(p.order.tolist()) == list(range(coords.shape[0]))
    n_windows = 2 * 3 * 3  # (3+1)/2, (7+2)/4 and (9+2)/4 windows, rounded up
    assert shapes == {(n_windows + 1,)}


def test_geometric_buckets_pad_little_and_stay_few():
    from vs_skipsr.tokens import BUCKET_GROWTH, bucket_size

    sizes = [bucket_size(k, growth=BUCKET_GROWTH) for k in range(1, 40_801)]
    assert all(b >= k for k, b in zip(range(1, 40_801), sizes, strict=True))
    assert all(b % 64 == 0 for b in sizes)
    for k, b in zip(range(257, 40_801), sizes[256:], strict=True):  # below 256: 256
        assert (b - k) / k <= BUCKET_GROWTH - 1 + 64 * BUCKET_GROWTH / k, (k, b)
    assert len(set(sizes)) <= 60  # multiples of 256 would give 160 shapes


def test_kept_buckets_list_every_count_kept_bucket_gives():
    """What a runner captures up front for a grid is exactly the set of buckets the pipeline
    can ask for: every kept count maps into it, it holds nothing else, and a bucket grows
    with the count."""
    from vs_skipsr.tokens import kept_bucket, kept_buckets

    for total in (40_800, 280, 7):
        listed = kept_buckets(total)
        assert listed == sorted(set(listed)) and listed[-1] == total
        got = [kept_bucket(k, total=total) for k in range(1, total + 1)]
        assert set(listed) == set(got)
        assert got == sorted(got)
    assert len(kept_buckets(40_800)) == 56
    assert kept_buckets(0) == [] and kept_bucket(0, total=7) == 0


def test_cpu_runner_gets_no_bucket_padding(runner):
    """Only CUDA pays for new shapes (graph captures, cuDNN plans): on the CPU the kept count
    is not padded."""
    lr = _lr(seed=4)
    out = upscale_window(lr, scale=2, runner=runner, skip_ratio=0.5)
    assert not runner.wants_buckets
    assert out.stats.bucket == out.stats.kept


def test_keep_all_equals_dense_path(runner):
    lr = _lr()
    dense = upscale_window(lr, scale=2, runner=runner)
    keep_all = upscale_window(lr, scale=2, runner=runner, skip_ratio=0.0)
    assert keep_all.stats.kept == keep_all.stats.total
    assert torch.equal(dense.frames, keep_all.frames)


@pytest.mark.parametrize("mode", [{"threshold": 0.004766}, {"skip_ratio": 0.5}, {}])
def test_window_inputs_given_to_upscale_window_give_its_own_output(runner, mode):
    """The filter's graphed path hands upscale_window the base and keep set that
    window_inputs made: the same frames, keep set and kept count as upscale_window making
    them itself, skipping by threshold or ratio, or dense (no keep set, no mask)."""
    lr = _lr(seed=6)
    own = upscale_window(lr, scale=2, runner=runner, steps=2, **mode)
    base, *keep = window_inputs(lr, scale=2, runner=runner, **mode)
    assert len(keep) == (1 if mode else 0)
    given = upscale_window(
        lr, scale=2, runner=runner, steps=2, base=base, keep=keep[0] if keep else None
    )
    assert torch.equal(given.frames, own.frames)
    assert torch.equal(given.keep, own.keep) and given.stats.kept == own.stats.kept
    assert 0 < own.stats.kept <= own.stats.total


def _reference_kept_velocity(net, lr, keep, scale, seed=0):
    """Dense model over ALL tokens with attention explicitly masked to kept tokens of the same
    window (one [N, N] mask per partition); returns velocities of the kept tokens."""
    cfg = net.config
    base = pad_to_grid(upsample(lr, scale=scale), patch=cfg.patch)
    grid = (lr.shape[0], base.shape[-2] // cfg.patch, base.shape[-1] // cfg.patch)
    n = grid[0] * grid[1] * grid[2]
    all_idx = torch.arange(n)
    coords = token_coords(all_idx, grid=grid)
    kept = keep.reshape(-1)
    attends = []
    for shift in ((0, 0, 0), cfg.shift):
        win = (coords + torch.tensor(shift)) // torch.tensor(cfg.window)  # [N, 3]
        same = (win[:, None, :] == win[None, :, :]).all(-1)  # [N, N]
        allowed = same & kept[:, None] & kept[None, :]
        attends.append(lambda q, k, v, a=allowed: masked_dense_attention(q, k, v, a))
    tokens = gather_patches(base, coords, patch=cfg.patch, halo=cfg.halo)
    state = token_noise(all_idx, dim=cfg.token_dim, seed=seed) * cfg.noise_std
    v = net.forward_attend(tokens, state, coords, torch.ones(1), attends)
    return base, grid, v[kept], state[kept]


@pytest.mark.parametrize("way", ["public", "flat", "rows"])
def test_gather_patches_reads_each_token_with_its_replicated_halo(way):
    """Each token's patch and halo, the border replicated, by either way of reading them
    (the GPU's flat index, the CPU's padded rows), and nothing for no token."""
    g = torch.Generator().manual_seed(3)
    frames = torch.rand(2, 3, 32, 48, generator=g)  # grid (2, 2, 3)
    index = torch.tensor([0, 2, 3, 5, 6, 11])
    coords = token_coords(index, grid=(2, 2, 3))
    gather = {
        "public": gather_patches,
        "flat": tokens_module._gather_flat,
        "rows": tokens_module._gather_rows,
    }[way]
    assert torch.equal(gather_patches(frames, coords, patch=16), patchify(frames, patch=16)[index])
    got = gather(frames, coords, patch=16, halo=8).reshape(-1, 3, 32, 32)
    for row, i in enumerate(index.tolist()):
        t, y, x = i // 6, (i % 6) // 3, i % 3
        ys = torch.arange(y * 16 - 8, y * 16 + 24).clamp(0, 31)  # replicate = clamped rows
        xs = torch.arange(x * 16 - 8, x * 16 + 24).clamp(0, 47)
        assert torch.equal(got[row], frames[t][:, ys][:, :, xs]), f"token {i}"
    none = gather_patches(frames, coords[:0], patch=16, halo=8)
    assert none.shape == (0, 3 * 32 * 32)


@pytest.mark.parametrize("frac", [0.0, 0.3, 1.0])
def test_add_to_tokens_equals_a_residual_scattered_over_the_whole_window(frac):
    """Kept tokens brought back in place give the bytes of the whole-window sum they replace
    (residuals scattered into zeros, unpatchified, added, clamped), with none kept, some, or
    all; residuals large enough that the clamp bites."""
    g = torch.Generator().manual_seed(4)
    grid, patch = (2, 3, 5), 16
    base = torch.rand(2, 3, 48, 80, generator=g)
    index = torch.nonzero((torch.rand(grid, generator=g) < frac).reshape(-1)).squeeze(1)
    values = torch.randn(index.numel(), 3 * patch * patch, generator=g)
    whole = torch.zeros(math.prod(grid), 3 * patch * patch)
    whole[index] = values
    want = (base + unpatchify(whole, grid=grid, patch=patch)).clamp(0, 1)
    got = base.clone()
    add_to_tokens(got, values, token_coords(index, grid=grid), patch=patch)
    assert torch.equal(got, want)
    assert frac == 0.0 or not torch.equal(got, base)


def test_add_to_tokens_writes_through_any_strides_and_refuses_partial_tokens():
    """A crop of a wider window (the filter's padded grid) is written in place like a
    contiguous copy, the columns outside it untouched; frames that are not whole tokens are
    refused with their shape named."""
    g = torch.Generator().manual_seed(5)
    coords = token_coords(torch.tensor([1, 3]), grid=(1, 2, 2))
    values = torch.randn(2, 3 * 16 * 16, generator=g)
    wide = torch.rand(1, 3, 32, 48, generator=g)
    want = wide[..., :32].contiguous()
    add_to_tokens(want, values, coords, patch=16)
    got = wide.clone()
    add_to_tokens(got[..., :32], values, coords, patch=16)
    assert torch.equal(got[..., :32], want)
    assert torch.equal(got[..., 32:], wide[..., 32:])
    with pytest.raises(ValueError, match=r"\(1, 3, 40, 32\) are not whole 16-px tokens"):
        add_to_tokens(torch.zeros(1, 3, 40, 32), values, coords, patch=16)


@pytest.mark.parametrize("frac,seed", [(0.15, 0), (0.5, 1), (0.85, 2)])
def test_fast_path_equals_masked_dense_reference(runner, frac, seed):
    lr = _lr(h=24, w=40, seed=seed + 10)  # x2 -> 48 x 80: whole tokens, nothing cropped
    net = runner.sr_net
    grid = _grid(lr, 2, net.config.patch)
    keep = _random_keep(grid, frac, seed)
    out = upscale_window(lr, scale=2, runner=runner, keep=keep, buckets=False)
    base, grid, v_ref, state_ref = _reference_kept_velocity(net, lr, keep, 2)
    assert v_ref.abs().max() > 1e-3, "the reference must not be trivially zero"
    kept = keep.reshape(-1)
    got = patchify(out.frames, patch=16)[kept]
    want = (patchify(base, patch=16)[kept] + state_ref - v_ref).clamp(0, 1)  # one Euler step
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)


def test_padded_attention_equals_masked_dense_on_random_windows():
    g = torch.Generator().manual_seed(5)
    grid = (3, 6, 7)
    keep = torch.rand(grid, generator=g).reshape(-1) < 0.6
    coords = token_coords(torch.nonzero(keep).squeeze(1), grid=grid)
    k = coords.shape[0]
    q, kk, v = (torch.randn(k, 2, 8, generator=g) for _ in range(3))
    p = build_partition(coords, grid=grid, window=(2, 3, 3), shift=(1, 1, 1))
    win = (coords + 1) // torch.tensor([2, 3, 3])
    allowed = (win[:, None] == win[None]).all(-1)
    torch.testing.assert_close(
        padded_window_attention(q, kk, v, p.part),
        masked_dense_attention(q, kk, v, allowed),
        atol=1e-6,
        rtol=1e-5,
    )


def _net_inputs(net: SRTransformer, grid, seed: int):
    """A full grid's inputs for the net: smooth base patches, noise, coords, partitions."""
    cfg = net.config
    n = grid[0] * grid[1] * grid[2]
    _, coords, parts = padded_tokens(
        torch.arange(n), bucket=n, grid=grid, window=cfg.window, shift=cfg.shift
    )
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, cfg.channels, 4, 4, generator=g)
    base = torch.nn.functional.interpolate(coarse, size=cfg.base_patch, mode="bicubic")
    state = torch.randn(n, cfg.token_dim, generator=g) * cfg.noise_std
    attends = tuple((lambda q, k, v, p=p: padded_window_attention(q, k, v, p.part)) for p in parts)
    return base.clamp(0, 1).reshape(n, -1), state, coords, attends


@pytest.mark.parametrize(
    "config",
    [
        "default",  # conv head with a halo
        {"dim": 32, "depth": 2, "heads": 2, "window": (2, 4, 4), "head": "conv", "head_width": 8},
        {"dim": 32, "depth": 2, "heads": 2, "window": (2, 4, 4)},  # linear head
    ],
)
def test_lean_inference_kernels_give_the_plain_forms_numbers(config):
    """Inference takes in-place forms of the rotary positions, the embedding input, norm +
    modulation and the velocity (fewer bytes moved); training (grad on) and export take the
    plain ones. fp32: the same numbers to rounding. bf16: as close to the fp32 net as the
    plain forms are (they differ from them by where a value is rounded to bf16)."""
    from vs_skipsr.models.sr import PRESETS, SRConfig, _lean_kernels

    cfg = PRESETS[config] if isinstance(config, str) else SRConfig(**config)
    torch.manual_seed(0)
    net = SRTransformer(cfg).eval()
    for p in net.parameters():  # random everywhere: the zero-initialised gates would hide it
        p.data.normal_(0, 0.1)
    base, state, coords, attends = _net_inputs(net, (cfg.window[0], 4, 6), seed=7)
    t = torch.tensor([0.6])
    plain = net.forward_attend(base, state, coords, t, attends).detach()  # grad mode: plain forms
    with torch.inference_mode():
        lean = net.forward_attend(base, state, coords, t, attends)
    assert plain.abs().mean() > 1e-2
    with torch.inference_mode():
        assert _lean_kernels()
    assert not _lean_kernels()  # grad mode: what training runs
    scale = float(plain.abs().max())
    torch.testing.assert_close(lean, plain, atol=1e-6 * scale, rtol=1e-5)  # fp32 rounding

    half = SRTransformer(cfg).eval()
    half.load_state_dict(net.state_dict())
    half = half.to(torch.bfloat16)
    for base_dtype in (torch.bfloat16, torch.float32):  # the runner's cast, and without it
        b = base.to(base_dtype)
        err_plain = (
            (half.forward_attend(b, state, coords, t, attends).detach() - plain).pow(2).mean()
        )
        with torch.inference_mode():
            err_lean = (half.forward_attend(b, state, coords, t, attends) - plain).pow(2).mean()
        assert err_plain > 0
        assert err_lean.sqrt() < 1.1 * err_plain.sqrt(), (base_dtype, err_lean, err_plain)


@pytest.mark.parametrize("halo", [8, 0])
def test_head_reads_the_same_pixels_channels_last_as_in_the_exported_layout(monkeypatch, halo):
    """The head's space-to-depth written straight into channels-last (eager) and
    pixel_unshuffle (what an export traces) hand the convs the same cells."""
    import vs_skipsr.models.sr as sr

    cfg = sr.SRConfig(dim=32, depth=1, heads=2, window=(2, 4, 4), head="conv", halo=halo)
    torch.manual_seed(1)
    net = SRTransformer(cfg).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    base, state, coords, attends = _net_inputs(net, (2, 4, 6), seed=3)
    t = torch.tensor([1.0])
    with torch.inference_mode():
        eager = net.forward_attend(base, state, coords, t, attends)
        monkeypatch.setattr(sr, "_channels_last", lambda: False)
        exported_layout = net.forward_attend(base, state, coords, t, attends)
    scale = float(eager.abs().max())
    assert scale > 1e-2
    torch.testing.assert_close(eager, exported_layout, atol=1e-6 * scale, rtol=1e-5)


@pytest.mark.parametrize("frac", [0.15, 0.6, 1.0])
def test_grouped_attention_equals_masked_dense_on_uneven_windows(frac):
    """The CPU's length-grouped form: windows cut from clustered keep sets (some full, some
    nearly empty) and from a full grid give the masked reference's numbers."""
    from vs_skipsr.benchmark import clustered_keep
    from vs_skipsr.models.attention import grouped_window_attention

    g = torch.Generator().manual_seed(6)
    grid = (4, 16, 16)
    keep = clustered_keep(grid, frac, seed=3).reshape(-1)
    coords = token_coords(torch.nonzero(keep).squeeze(1), grid=grid)
    k = coords.shape[0]
    q, kk, v = (torch.randn(k, 2, 8, generator=g) for _ in range(3))
    p = build_partition(coords, grid=grid, window=(2, 8, 8), shift=(1, 4, 4))
    win = (coords + torch.tensor([1, 4, 4])) // torch.tensor([2, 8, 8])
    allowed = (win[:, None] == win[None]).all(-1)
    torch.testing.assert_close(
        grouped_window_attention(q, kk, v, p),
        masked_dense_attention(q, kk, v, allowed),
        atol=1e-6,
        rtol=1e-5,
    )
    # the next block's call with the same partition reuses its groups: other tokens' values,
    # still the reference's numbers
    q, kk, v = (torch.randn(k, 2, 8, generator=g) for _ in range(3))
    torch.testing.assert_close(
        grouped_window_attention(q, kk, v, p),
        masked_dense_attention(q, kk, v, allowed),
        atol=1e-6,
        rtol=1e-5,
    )


@pytest.mark.parametrize("steps", [1, 3])
def test_skipped_tokens_equal_base_bit_for_bit(runner, steps):
    lr = _lr(seed=7)
    out = upscale_window(lr, scale=3, runner=runner, skip_ratio=0.6, steps=steps)
    base = upsample(lr, scale=3)
    pad = pad_to_grid(base, patch=16)
    skipped = ~out.keep.reshape(-1)
    assert 0 < skipped.sum() < skipped.numel()
    got = patchify(pad_to_grid(out.frames, patch=16), patch=16)[skipped]
    want = patchify(pad, patch=16)[skipped]
    assert torch.equal(got, want)
    kept = ~skipped
    got_k = patchify(pad_to_grid(out.frames, patch=16), patch=16)[kept]
    assert not torch.equal(got_k, patchify(pad, patch=16)[kept]), "kept tokens must change"


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("size", [(17, 23), (32, 48), (9, 41)])
def test_odd_sizes_and_scales_round_trip(runner, scale, size):
    lr = _lr(t=2, h=size[0], w=size[1], seed=scale)
    out = upscale_window(lr, scale=scale, runner=runner, skip_ratio=0.5)
    assert out.frames.shape == (2, 3, size[0] * scale, size[1] * scale)
    assert torch.isfinite(out.frames).all()
    assert out.frames.min() >= 0 and out.frames.max() <= 1
    # nothing kept -> the base upsample exactly
    none = upscale_window(lr, scale=scale, runner=runner, keep=torch.zeros_like(out.keep))
    assert torch.equal(none.frames, upsample(lr, scale=scale))


def test_bucket_padding_changes_nothing(runner):
    lr = _lr(seed=11)
    grid = _grid(lr, 2, 16)
    keep = _random_keep(grid, 0.4, seed=4)
    exact = upscale_window(lr, scale=2, runner=runner, keep=keep, buckets=False)
    padded = upscale_window(lr, scale=2, runner=runner, keep=keep, buckets=(64, 128, 4096))
    assert exact.stats.bucket == exact.stats.kept < padded.stats.bucket
    torch.testing.assert_close(exact.frames, padded.frames, atol=1e-6, rtol=0)


def test_steps_reuse_one_keep_set_and_change_the_result(runner):
    lr = _lr(seed=12)
    one = upscale_window(lr, scale=2, runner=runner, skip_ratio=0.5, steps=1)
    four = upscale_window(lr, scale=2, runner=runner, skip_ratio=0.5, steps=4)
    assert torch.equal(one.keep, four.keep)
    assert not torch.equal(one.frames, four.frames)


@pytest.mark.parametrize("steps", [1, 3])
def test_flow_computes_the_base_features_once_and_gives_the_per_step_numbers(runner, steps):
    """The runner's flow runs the base's share of the net (base half's embedding, head stem,
    rotary tables) once for all steps: bit for bit what one full net call per step gives,
    with one base_features call per window instead of one per step."""
    from vs_skipsr.backends.base import euler_flow

    net = runner.sr_net
    base, noise, coords, parts = _flow_inputs(net.config)
    calls = []
    real = net.base_features

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    net.base_features = counted
    try:
        flowed = runner.flow(base, noise, coords, parts, steps=steps)
        assert len(calls) == 1
        per_step = euler_flow(runner.sr, base, noise, coords, parts, steps=steps)
        assert len(calls) == 1 + steps
    finally:
        del net.base_features
    assert torch.equal(flowed, per_step)
    assert not torch.equal(flowed, noise)


def _flow_inputs(cfg):
    """base, noise, coords, partitions of a small keep set for one flow."""
    grid = (3, 4, 6)
    keep = _random_keep(grid, 0.6, 4).reshape(-1)
    index = torch.nonzero(keep).squeeze(1)
    _, coords, parts = padded_tokens(
        index, bucket=index.numel(), grid=grid, window=cfg.window, shift=cfg.shift
    )
    g = torch.Generator().manual_seed(9)
    base = torch.rand(index.numel(), cfg.base_dim, generator=g)
    noise = torch.randn(index.numel(), cfg.token_dim, generator=g)
    return base, noise, coords, parts


def test_flow_makes_the_timestep_modulation_once_per_step_count():
    """The modulation (timestep embedding through every adaLN) depends on t alone: the
    runner makes it for a step count's times once and reuses it in every later window."""
    runner = TorchBackend(device="cpu").load(sr=_random_sr(), mask=None)
    net = runner.sr_net
    base, noise, coords, parts = _flow_inputs(net.config)
    times: list[float] = []
    real = net.modulation

    def counted(t):
        times.append(float(t))
        return real(t)

    net.modulation = counted
    try:
        first = runner.flow(base, noise, coords, parts, steps=3)
        assert times == pytest.approx([1.0, 2 / 3, 1 / 3])
        again = runner.flow(base, noise, coords, parts, steps=3)
        assert len(times) == 3
        runner.flow(base, noise, coords, parts, steps=2)
        assert times[3:] == [1.0, 0.5]
    finally:
        del net.modulation
    assert torch.equal(first, again)


def test_same_seed_same_output_other_seed_other_noise(runner):
    lr = _lr(seed=13)
    a = upscale_window(lr, scale=2, runner=runner, skip_ratio=0.3, seed=5)
    b = upscale_window(lr, scale=2, runner=runner, skip_ratio=0.3, seed=5)
    c = upscale_window(lr, scale=2, runner=runner, skip_ratio=0.3, seed=6)
    assert torch.equal(a.frames, b.frames)
    assert not torch.equal(a.frames, c.frames)


def test_learned_scorer_runs_mask_net(runner):
    lr = _lr(seed=14)
    out = upscale_window(lr, scale=2, runner=runner, scorer="learned", skip_ratio=0.7)
    assert out.stats.kept == out.stats.total - round(0.7 * out.stats.total)


def test_keep_with_wrong_shape_is_refused(runner):
    with pytest.raises(ValueError, match="token grid"):
        upscale_window(_lr(), scale=2, runner=runner, keep=torch.ones(1, 2, 3, dtype=torch.bool))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="varlen attention needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_varlen_attention_equals_padded_on_cuda(dtype):
    from vs_skipsr.models.attention import varlen_available, varlen_window_attention

    dev = torch.device("cuda")
    if not varlen_available(dev):
        pytest.skip("this torch has no torch.nn.attention.varlen")
    g = torch.Generator().manual_seed(8)
    grid = (5, 20, 30)
    keep = torch.rand(grid, generator=g).reshape(-1) < 0.5
    coords = token_coords(torch.nonzero(keep).squeeze(1), grid=grid).to(dev)
    p = build_partition(coords, grid=grid, window=(5, 8, 8), shift=(2, 4, 4))
    q, k, v = (torch.randn(coords.shape[0], 6, 32, generator=g).to(dev, dtype) for _ in range(3))
    ref = padded_window_attention(q.float(), k.float(), v.float(), p.part)
    got = varlen_window_attention(q, k, v, p).float()
    err = (got - ref).norm() / ref.norm()
    assert err < 1e-2, f"relative error {err:.2e}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_half_pipeline_matches_cpu_fp32():
    net = _random_sr(seed=3)
    cpu = TorchBackend(device="cpu").load(sr=net, mask=None)
    lr = _lr(seed=21)
    ref = upscale_window(lr, scale=2, runner=cpu, skip_ratio=0.5)
    gpu = TorchBackend(device="cuda", dtype="bf16").load(sr=_random_sr(seed=3), mask=None)
    got = upscale_window(lr.cuda(), scale=2, runner=gpu, skip_ratio=0.5)
    assert torch.equal(got.keep.cpu(), ref.keep)
    err = (got.frames.cpu() - ref.frames).norm() / ref.frames.norm()
    assert err < 1e-2, f"relative error {err:.2e}"


def _kept_partition(frac: float, *, seed: int, shift: tuple[int, int, int]):
    """A partition of a random keep set of a (3, 7, 9) grid in (2, 4, 4) windows, and K."""
    grid = (3, 7, 9)
    keep = _random_keep(grid, frac, seed=seed).reshape(-1)
    coords = token_coords(torch.nonzero(keep).squeeze(1), grid=grid)
    p = build_partition(coords, grid=grid, window=(2, 4, 4), shift=shift)
    return p, coords.shape[0]


def test_pad_partition_keeps_real_windows_and_covers_every_row():
    from vs_skipsr.tokens import pad_partition

    p, k = _kept_partition(0.5, seed=9, shift=(1, 2, 2))
    padded = pad_partition(p, tokens=k + 45, windows=p.part.shape[0] + 8, window_volume=32)
    assert sorted(padded.order.tolist()) == list(range(k + 45))
    assert padded.part.shape == (p.part.shape[0] + 8, 32)
    assert int(padded.cu_seqlens[-1]) == k + 45
    g = torch.Generator().manual_seed(0)
    q, kk, v = (torch.randn(k + 45, 2, 8, generator=g) for _ in range(3))
    torch.testing.assert_close(
        padded_window_attention(q, kk, v, padded.part)[:k],
        padded_window_attention(q[:k], kk[:k], v[:k], p.part),
    )
    with pytest.raises(ValueError, match="does not fit"):
        pad_partition(p, tokens=k, windows=1, window_volume=32)


@pytest.mark.parametrize(
    ("grid", "frac", "extra"),
    [((3, 7, 9), 0.3, 0), ((3, 7, 9), 0.3, 70), ((5, 11, 6), 0.8, 5), ((2, 4, 4), 1.0, 0)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_bucket_tokens_are_padded_tokens_padded_for_the_graphs(grid, frac, extra, seed):
    """The graph-friendly tokens (the keep set in, static shapes, the kept count never on the
    host) are the same values as the indices' path: padded_tokens, then each partition padded
    as GraphCache pads it; padding them again changes nothing (no launches either)."""
    from vs_skipsr.tokens import bucket_partitions, bucket_tokens, padded_windows

    window, shift, multiple = (2, 4, 4), (1, 2, 2), 8
    keep = _random_keep(grid, frac, seed=seed).reshape(grid)
    index = torch.nonzero(keep.reshape(-1)).squeeze(1)
    k = index.numel()
    bucket = k + extra
    padded, coords, parts = padded_tokens(
        index, bucket=bucket, grid=grid, window=window, shift=shift
    )
    flat = bucket_tokens(
        keep, bucket=bucket, grid=grid, window=window, shift=shift, window_multiple=multiple
    )
    assert torch.equal(flat[0], padded) and torch.equal(flat[1], coords)
    made = bucket_partitions(flat, grid=grid, window=window, shift=shift)
    for p, q in zip(parts, made, strict=True):
        windows = padded_windows(p.windows, tokens=bucket, window_volume=32, multiple=multiple)
        want = p.padded_to(tokens=bucket, windows=windows, window_volume=32, with_part=False)
        assert q.windows == p.windows  # the grid's, not the padded segments'
        assert torch.equal(q.order, want.order)
        assert torch.equal(q.cu_seqlens, want.cu_seqlens) and q.max_len == want.max_len == 32
        assert q.padded_to(tokens=bucket, windows=windows, window_volume=32, with_part=False) is q


@pytest.mark.parametrize("grid", [(3, 7, 9), (5, 11, 6)])
@pytest.mark.parametrize("seed", [0, 7])
def test_window_feed_writes_the_indices_paths_tokens_and_noise(grid, seed):
    """What one graph replay writes into the flow graph's static inputs before the gather:
    coords, both partitions padded for the graph, and the noise at the padded index with
    the seed as a device tensor, each the value the indices' path hands the flow (padded_tokens,
    the partitions padded as GraphCache pads them, token_noise); the base patches and the
    flow's time input are left alone."""
    from vs_skipsr.backends.cuda_graphs import feed_window
    from vs_skipsr.tokens import padded_windows

    window, shift, multiple, volume, dim = (2, 4, 4), (1, 2, 2), 4, 32, 12
    keep = _random_keep(grid, 0.4, seed=3).reshape(grid)
    index = torch.nonzero(keep.reshape(-1)).squeeze(1)
    bucket = index.numel() + 9
    padded, coords, parts = padded_tokens(
        index, bucket=bucket, grid=grid, window=window, shift=shift
    )
    want = [
        p.padded_to(
            tokens=bucket,
            windows=padded_windows(
                p.windows, tokens=bucket, window_volume=volume, multiple=multiple
            ),
            window_volume=volume,
            with_part=False,
        )
        for p in parts
    ]
    inputs = [
        torch.full((bucket, 5), 7.0),  # the base patches: the gather's, not the feed's
        torch.zeros(bucket, dim),
        torch.zeros(bucket, 3, dtype=torch.long),
        torch.full((1,), 3.0),  # the flow's time input, which it does not read
        *(x for p in want for x in (torch.zeros_like(p.order), torch.zeros_like(p.cu_seqlens))),
    ]

    def noise(idx, s):
        return token_noise(idx, dim=dim, seed=s) * 0.25

    feed_window(
        keep,
        torch.tensor([seed]),
        inputs=inputs,
        bucket=bucket,
        grid=grid,
        window=window,
        shift=shift,
        window_multiple=multiple,
        noise=noise,
    )
    assert torch.equal(inputs[2], coords)
    assert torch.equal(inputs[1], token_noise(padded, dim=dim, seed=seed) * 0.25)
    for got, p in zip((inputs[4:6], inputs[6:8]), want, strict=True):
        assert torch.equal(got[0], p.order) and torch.equal(got[1], p.cu_seqlens)
    assert bool((inputs[0] == 7.0).all()) and float(inputs[3]) == 3.0
    if grid == (5, 11, 6):  # the two partitions' segment counts differ here
        assert inputs[5].shape != inputs[7].shape


@pytest.mark.parametrize("grid", [(3, 7, 9), (5, 11, 6), (2, 4, 4)])
def test_window_feed_finds_the_flow_graph_prepare_captured(grid):
    """run_window finds its bucket's flow graph by a key made from the shapes alone; it must
    be the key prepare() captured that graph under (from padded_tokens' example inputs), or
    every window would capture a graph of its own mid-run."""
    from vs_skipsr.backends.cuda_graphs import GraphCache
    from vs_skipsr.tokens import kept_buckets

    window, shift = (2, 4, 4), (1, 2, 2)
    cache = object.__new__(GraphCache)  # the key's arithmetic only: no CUDA needed
    cache.window_volume, cache.window_multiple, cache.with_part = 32, 8, False
    for bucket in kept_buckets(math.prod(grid)):
        _, coords, parts = padded_tokens(
            torch.arange(bucket), bucket=bucket, grid=grid, window=window, shift=shift
        )
        call = (torch.zeros(bucket, 4), torch.zeros(bucket, 4), coords, torch.ones(1), parts)
        want, _ = cache._inputs(call, steps=8)
        got = cache._flow_key(bucket, (grid, window, shift), steps=8)
        assert got == want


@pytest.mark.parametrize("ratio", [0.0, 0.6])
def test_a_runner_that_runs_its_windows_gives_the_same_window(ratio):
    """upscale_window with a runner's own window after the sync (what the CUDA graphs'
    runner does: GraphCache.run_window's feed, gather into the flow's inputs, flow and
    scatter, here the same steps run eagerly on the CPU with the runner's WindowOps): it
    reads only the kept count and gives the frames the indices' path gives, bucket padding
    and all."""
    from vs_skipsr.backends.cuda_graphs import feed_window
    from vs_skipsr.tokens import bucket_partitions, bucket_tokens

    lr = _lr(seed=5)
    plain = TorchBackend(device="cpu").load(sr=_random_sr(seed=6), mask=None)
    own = TorchBackend(device="cpu").load(sr=_random_sr(seed=6), mask=None)
    cfg, ops, made = own.sr_config, own._window_ops(), []

    def static_window(keep, base, *, kept, bucket, grid, steps, seed):
        made.append(bucket)
        kw = dict(grid=grid, window=cfg.window, shift=cfg.shift)
        flat = bucket_tokens(keep, bucket=bucket, window_multiple=8, **kw)  # shapes only
        inputs = [
            torch.empty(bucket, cfg.base_dim, dtype=own.base_dtype),
            torch.empty(bucket, cfg.token_dim),
            torch.empty_like(flat[1]),
            torch.ones(1),
            *(torch.empty_like(x) for x in flat[2:]),
        ]
        seed_t = torch.tensor([seed])
        feed_window(
            keep, seed_t, inputs=inputs, bucket=bucket, window_multiple=8, noise=ops.noise, **kw
        )
        ops.gather(base, inputs[2], inputs[0])
        parts = bucket_partitions((None, None, *inputs[4:8]), **kw)
        rows = own.flow(inputs[0], inputs[1], inputs[2], parts, steps=steps)
        ops.scatter(base, rows[:kept], inputs[2][:kept])

    own.static_window = static_window
    a = upscale_window(lr, scale=2, runner=plain, skip_ratio=ratio, buckets=True, steps=2, seed=3)
    b = upscale_window(lr, scale=2, runner=own, skip_ratio=ratio, buckets=True, steps=2, seed=3)
    assert made == [a.stats.bucket] and b.stats.kept == a.stats.kept
    if ratio:
        assert a.stats.bucket > a.stats.kept  # padded: the padding's own segments in play
    torch.testing.assert_close(b.frames, a.frames, rtol=0, atol=1e-6)


def test_gather_patches_into_a_given_buffer():
    """gather_patches writes into ``out`` (a captured graph's static input) the patches it
    returns without it, and names a buffer of the wrong shape or dtype."""
    frames = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(4))
    coords = token_coords(torch.tensor([0, 5, 9, 13]), grid=(2, 5, 7))
    for halo in (0, 2):
        want = gather_patches(frames, coords, patch=8, halo=halo, dtype=torch.bfloat16)
        out = torch.empty_like(want)
        assert (
            gather_patches(frames, coords, patch=8, halo=halo, dtype=torch.bfloat16, out=out) is out
        )
        assert torch.equal(out, want)
    with pytest.raises(ValueError, match=r"out is torch\.float32"):
        gather_patches(
            frames, coords, patch=8, halo=2, dtype=torch.bfloat16, out=torch.empty(4, 3 * 12 * 12)
        )


def test_padded_to_reuses_the_padding_for_the_same_arguments_only():
    p, k = _kept_partition(0.4, seed=2, shift=(0, 0, 0))
    kw = dict(windows=p.part.shape[0] + 8, window_volume=32, with_part=False)
    first = p.padded_to(tokens=k + 10, **kw)
    assert p.padded_to(tokens=k + 10, **kw) is first  # a later flow step: no new padding
    assert first.padded is None  # with_part=False builds no padded form
    assert torch.equal(first.order, torch.cat((p.order, torch.arange(k, k + 10))))
    other = p.padded_to(tokens=k + 40, **kw)  # another bucket: padded anew
    assert other is not first and other.order.shape[0] == k + 40
    assert int(other.cu_seqlens[-1]) == k + 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_equal_eager_and_are_reused():
    eager = TorchBackend(device="cuda", dtype="bf16").load(sr=_random_sr(seed=4), mask=None)
    graphed = TorchBackend(device="cuda", dtype="bf16", cuda_graphs=True).load(
        sr=_random_sr(seed=4), mask=None
    )
    lr = _lr(t=2, h=80, w=112, seed=22).cuda()  # 280 tokens: 30% -> bucket 128, 60% -> 256
    for ratio in (0.7, 0.4, 0.7):
        a = upscale_window(lr, scale=2, runner=eager, skip_ratio=ratio, buckets=(128, 256))
        b = upscale_window(lr, scale=2, runner=graphed, skip_ratio=ratio, buckets=(128, 256))
        err = (a.frames - b.frames).abs().max()
        assert err < 2e-2, f"graph differs from eager by {err}"
    assert graphed.graphs.captures == 2
    # keep sets that fill different windows but land in a captured bucket reuse its graph
    grid = _grid(lr, 2, 16)
    for seed in (1, 2, 3):
        keep = _random_keep(grid, 0.3, seed).cuda()
        a = upscale_window(lr, scale=2, runner=eager, keep=keep, buckets=(128, 256))
        b = upscale_window(lr, scale=2, runner=graphed, keep=keep, buckets=(128, 256))
        assert (a.frames - b.frames).abs().max() < 2e-2
    assert graphed.graphs.captures == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_runner_runs_its_windows_by_one_feed_a_bucket_for_every_stream():
    """The graphs' runner takes a window after its sync by replaying one feed graph per
    bucket into the flow graph, from the default stream and a side one alike (as the
    filter's slots run windows): the frames are those of the same runner through the
    indices' path into the same flow graph, bit for bit."""

    def graphed():
        return TorchBackend(device="cuda", dtype="bf16", cuda_graphs=True).load(
            sr=_random_sr(seed=4), mask=None
        )

    own, plain = graphed(), graphed()
    assert own.static_window is not None
    plain.static_window = None  # the indices' path, into the same SR graphs
    lr = _lr(t=2, h=80, w=112, seed=22).cuda()  # 280 tokens; 30% kept -> bucket 128
    grid = _grid(lr, 2, 16)
    side = torch.cuda.Stream()
    for seed in (1, 2, 3):
        keep = _random_keep(grid, 0.3, seed).cuda()
        a = upscale_window(lr, scale=2, runner=plain, keep=keep, buckets=(128, 256))
        b = upscale_window(lr, scale=2, runner=own, keep=keep, buckets=(128, 256))
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            c = upscale_window(lr, scale=2, runner=own, keep=keep, buckets=(128, 256))
        side.synchronize()
        assert a.stats.bucket == b.stats.bucket == c.stats.bucket == 128
        assert torch.equal(a.frames, b.frames) and torch.equal(a.frames, c.frames)
    feeds = [f for g in own.graphs.graphs.values() for f in g.feeds.values()]
    assert len(feeds) == 1  # one bucket: one feed for both streams
    assert own.graphs.captures == plain.graphs.captures == 1  # and one flow graph each


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_window_feed_that_cannot_be_captured_feeds_eagerly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    """A window feed whose capture fails (a torch or driver that refuses one of its ops) is
    said once and the feed runs eagerly, with the same frames."""
    import vs_skipsr.backends.cuda_graphs as cuda_graphs

    def graphed():
        return TorchBackend(device="cuda", dtype="bf16", cuda_graphs=True).load(
            sr=_random_sr(seed=4), mask=None
        )

    plain, own = graphed(), graphed()
    plain.static_window = None
    real_graph = cuda_graphs._Graph

    def refusing(fn, inputs, **kw):
        if isinstance(fn, functools.partial) and fn.func is cuda_graphs.feed_window:
            raise RuntimeError("operation not permitted when stream is capturing")
        return real_graph(fn, inputs, **kw)

    monkeypatch.setattr(cuda_graphs, "_Graph", refusing)
    lr = _lr(t=2, h=80, w=112, seed=22).cuda()
    grid = _grid(lr, 2, 16)
    for seed in (1, 2):
        keep = _random_keep(grid, 0.3, seed).cuda()
        a = upscale_window(lr, scale=2, runner=plain, keep=keep, buckets=(128, 256))
        b = upscale_window(lr, scale=2, runner=own, keep=keep, buckets=(128, 256))
        assert torch.equal(a.frames, b.frames)
    said = [r for r in caplog.records if "could not capture the window feed's graph" in r.message]
    assert len(said) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_prepared_for_a_grid_serve_every_keep_set():
    """prepare() captures each bucket of the grid once, largest first, and keeps them all
    even past the cache's size; windows of any keep set then replay those graphs (no capture
    mid-run) and match eager mode, and preparing the same grid again captures nothing."""
    from vs_skipsr.tokens import kept_buckets

    eager = TorchBackend(device="cuda", dtype="bf16").load(sr=_random_sr(seed=4), mask=None)
    graphed = TorchBackend(device="cuda", dtype="bf16", cuda_graphs=True).load(
        sr=_random_sr(seed=4), mask=None
    )
    lr = _lr(t=2, h=160, w=224, seed=22).cuda()  # 1120 tokens: 14 buckets
    grid = _grid(lr, 2, 16)
    buckets = kept_buckets(math.prod(grid))
    graphed.graphs.max_graphs = 4  # fewer than the grid's buckets: none may be evicted
    graphed.prepare(grid=grid, steps=1)  # what upscale_window runs: one-step flows
    assert graphed.graphs.captures == len(buckets) > 2
    assert [k[0] for k in graphed.graphs.graphs] == buckets[::-1]
    feeds = [f for g in graphed.graphs.graphs.values() for f in g.feeds.values()]
    assert len(feeds) == len(buckets)  # a window feed into each flow graph too
    graphed.prepare(grid=grid, steps=1)
    for ratio in (0.9, 0.5, 0.1, 0.0):
        a = upscale_window(lr, scale=2, runner=eager, skip_ratio=ratio, buckets=True)
        b = upscale_window(lr, scale=2, runner=graphed, skip_ratio=ratio, buckets=True)
        assert (a.frames - b.frames).abs().max() < 2e-2, ratio
    assert graphed.graphs.captures == len(buckets)
    assert sum(len(g.feeds) for g in graphed.graphs.graphs.values()) == len(buckets)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_flow_gives_the_step_by_step_numbers():
    """Several steps through one graph (inputs loaded once, state updated in place) give
    bit for bit what a replay per step gives, and eager's numbers within bf16."""
    from vs_skipsr.backends.base import euler_flow

    eager = TorchBackend(device="cuda", dtype="bf16").load(sr=_random_sr(seed=4), mask=None)
    graphed = TorchBackend(device="cuda", dtype="bf16", cuda_graphs=True).load(
        sr=_random_sr(seed=4), mask=None
    )
    lr = _lr(t=2, h=80, w=112, seed=22).cuda()
    for steps in (1, 3, 8):
        a = upscale_window(lr, scale=2, runner=eager, skip_ratio=0.6, steps=steps, buckets=True)
        b = upscale_window(lr, scale=2, runner=graphed, skip_ratio=0.6, steps=steps, buckets=True)
        err = (a.frames - b.frames).abs().max()
        assert err < 2e-2, f"{steps} steps: graphs differ from eager by {err}"
    grid = _grid(lr, 2, 16)
    keep = _random_keep(grid, 0.4, 5).cuda().reshape(-1)
    index = torch.nonzero(keep).squeeze(1)
    cfg = graphed.sr_config
    _, coords, parts = padded_tokens(
        index, bucket=256, grid=grid, window=cfg.window, shift=cfg.shift, static_len=True
    )
    g = torch.Generator(device="cuda").manual_seed(3)
    base = torch.randn(256, cfg.base_dim, device="cuda", generator=g).to(torch.bfloat16)
    noise = torch.randn(256, cfg.token_dim, device="cuda", generator=g)
    with torch.inference_mode():
        one_graph = graphed.flow(base, noise.clone(), coords, parts, steps=5)
        per_step = euler_flow(graphed.sr, base, noise.clone(), coords, parts, steps=5)
    assert torch.equal(one_graph, per_step)
    assert not torch.equal(one_graph, noise)


def test_compile_needs_cuda_graphs_and_says_so():
    with pytest.raises(ValueError, match="compile=True needs cuda_graphs=True"):
        TorchBackend(device="cpu", compile=True).load(sr=_random_sr(seed=4), mask=None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_compiled_graphs_match_eager():
    """torch.compile's fused kernels, captured per bucket, give eager's numbers for any keep
    set (one compile with dynamic shapes serves every bucket)."""
    eager = TorchBackend(device="cuda", dtype="bf16").load(sr=_random_sr(seed=4), mask=None)
    compiled = TorchBackend(device="cuda", dtype="bf16", cuda_graphs=True, compile=True).load(
        sr=_random_sr(seed=4), mask=None
    )
    lr = _lr(t=2, h=80, w=112, seed=22).cuda()
    compiled.prepare(grid=_grid(lr, 2, 16))
    for ratio in (0.7, 0.3, 0.0):
        a = upscale_window(lr, scale=2, runner=eager, skip_ratio=ratio, buckets=True)
        b = upscale_window(lr, scale=2, runner=compiled, skip_ratio=ratio, buckets=True)
        assert (a.frames - b.frames).abs().max() < 2e-2, ratio


def test_linear_head_weights_still_load(tmp_path):
    """Weights saved before the conv head (config without 'head') load as the linear head and
    give the same output after a round trip."""
    import dataclasses
    import json

    from safetensors.torch import load_file, save_file

    from vs_skipsr.models import PRESETS
    from vs_skipsr.models.weights import load_sr, save_weights

    cfg = dataclasses.replace(PRESETS["tiny"], head="linear", halo=0)
    net = random_sr("tiny", seed=3)  # conv head: a different state dict
    old = SRTransformer(cfg)
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0, 0.05)
    path = tmp_path / "old.safetensors"
    save_weights(old.eval(), path)
    # rewrite the metadata as an old file had it: no head fields
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    conf = json.loads(meta["config"])
    for k in ("head", "head_width", "head_cell", "halo"):
        conf.pop(k)
    meta["config"] = json.dumps(conf)
    save_file(load_file(str(path)), str(path), metadata=meta)
    loaded = load_sr(path)
    assert loaded.config.head == "linear"
    assert set(loaded.state_dict()) != set(net.state_dict())
    lr = _lr(t=2, h=8, w=8)
    out_old = upscale_window(lr, scale=4, runner=TorchBackend().load(sr=old.eval(), mask=None))
    out_new = upscale_window(lr, scale=4, runner=TorchBackend().load(sr=loaded, mask=None))
    assert torch.equal(out_old.frames, out_new.frames)
    assert not torch.equal(out_old.frames, upsample(lr, scale=4).clamp(0, 1))


def test_unknown_head_is_refused_by_name():
    import dataclasses

    from vs_skipsr.models import PRESETS

    with pytest.raises(ValueError, match="head='mlp'"):
        SRTransformer(dataclasses.replace(PRESETS["tiny"], head="mlp"))
    with pytest.raises(ValueError, match="halo=8 needs head='conv'"):
        SRTransformer(dataclasses.replace(PRESETS["tiny"], head="linear", halo=8))
    with pytest.raises(ValueError, match="head_cell=4 must divide patch=16 and halo=6"):
        SRTransformer(dataclasses.replace(PRESETS["tiny"], halo=6))


@pytest.mark.parametrize("prior", ["gradient", "laplacian"])
def test_fresh_mask_net_ranks_like_its_prior(prior):
    """A mask config with a prior starts as that energy itself (its convs' output is zero),
    so training starts from the heuristic's ranking, not from noise."""
    from vs_skipsr.models.mask import gradient_energy, laplacian_energy

    lr = _lr(t=3, h=24, w=32)
    lr[:, :, :12] = 0.5  # a flat region: the energy floor
    net = MaskNet(MaskConfig(prior=prior, padding_mode="replicate")).eval()
    with torch.no_grad():
        out = net(lr)
    energy = gradient_energy if prior == "gradient" else laplacian_energy
    expect = energy(lr).clamp_min(MaskNet.PRIOR_FLOOR)
    assert torch.allclose(out, expect, rtol=1e-4, atol=0)
    assert torch.allclose(out[:, :, :8], torch.full_like(out[:, :, :8], 1e-5))  # the floor
    with torch.no_grad():
        net.net[-1].weight.normal_(0, 0.1)  # trained convs move it away from the prior
        assert not torch.allclose(net(lr), expect, rtol=1e-2, atol=0)


def test_laplacian_energy_is_the_pooled_squared_laplacian_of_luma():
    """Zero on a linear ramp (bicubic reproduces it), positive on a line, and the 3x3-pooled
    square of the 4-neighbour Laplacian of BT.601 luma in between."""
    import torch.nn.functional as F

    from vs_skipsr.models.mask import laplacian_energy

    ramp = torch.linspace(0, 1, 16).expand(1, 3, 16, 16).clone()
    assert laplacian_energy(ramp)[..., 2:-2, 2:-2].abs().max() < 1e-10
    line = torch.zeros(1, 3, 16, 16)
    line[..., 8, :] = 1.0
    e = laplacian_energy(line)
    assert e[0, 0, 8, 8] > 1.0 and e[0, 0, 2, 8] == 0
    lr = _lr(t=2, h=12, w=10, seed=3)
    y = (lr * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1, keepdim=True)
    k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])[None, None]
    lap = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k)
    want = F.avg_pool2d(lap**2, 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(laplacian_energy(lr), want)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_cpu_upsample_through_opencv_equals_torch_bicubic(scale):
    """The CPU base comes from OpenCV (a dependency): the same Keys a = -0.75 interpolation as
    torch's, borders included, to float rounding."""
    import torch.nn.functional as F

    from vs_skipsr.optional import optional_module

    assert optional_module("cv2") is not None
    lr = _lr(t=2, h=21, w=29, seed=scale)
    want = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    got = upsample(lr, scale=scale)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 5e-6


def test_a_triton_module_that_cannot_be_imported_is_named():
    """Where a Triton kernel module is run without its check (asked for by name), a missing
    module is a RuntimeError naming it, not a None met later."""
    from vs_skipsr.optional import triton_module

    with pytest.raises(RuntimeError, match=r"vs_skipsr\.no_such_kernels needs Triton"):
        triton_module("vs_skipsr.no_such_kernels")


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"prior": "edges"}, "prior='edges'"),
        ({"padding_mode": "reflect"}, "padding_mode='reflect'"),
    ],
)
def test_unknown_mask_config_is_refused_by_name(kw, needle):
    with pytest.raises(ValueError, match=needle):
        MaskNet(MaskConfig(**kw))


def test_half_weights_load_as_float32_close_to_the_original(tmp_path):
    from vs_skipsr.models.weights import load_sr, save_weights

    net = random_sr("tiny", seed=5, std=0.05)
    save_weights(net, tmp_path / "full.safetensors")
    save_weights(net, tmp_path / "half.safetensors", half=True)
    full, half = (tmp_path / n for n in ("full.safetensors", "half.safetensors"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_sr(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    lr = _lr(t=2, h=24, w=24, seed=6)
    a = upscale_window(lr, scale=2, runner=TorchBackend().load(sr=net, mask=None))
    b = upscale_window(lr, scale=2, runner=TorchBackend().load(sr=loaded, mask=None))
    err = (a.frames - b.frames).abs().max()
    assert 0 < err < 2e-3, f"half storage moved the output by {err}"


def test_shipped_weights_load_and_fit_the_repo_budget():
    """The defaults every user gets: both files load against their configs, together
    at most 25 MB (the issue's budget for the repo)."""
    from vs_skipsr.models.weights import (
        DEFAULT_MASK_WEIGHTS,
        DEFAULT_SR_WEIGHTS,
        load_mask,
        load_sr,
    )

    if not (DEFAULT_SR_WEIGHTS.is_file() and DEFAULT_MASK_WEIGHTS.is_file()):
        pytest.skip("the shipped weights are not in this checkout")
    total = DEFAULT_SR_WEIGHTS.stat().st_size + DEFAULT_MASK_WEIGHTS.stat().st_size
    assert total <= 25_000_000, f"shipped weights take {total / 1e6:.1f} MB"
    assert load_sr().config.head == "conv"
    load_mask()
