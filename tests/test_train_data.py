"""Tests of scripts/train_data.py on the real pack (data/pack, from scripts/pack_training_set.py).

They need the fetched data, which is not in git: without it they skip, saying how to get it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2", reason="train_data needs opencv-python-headless (the 'train' extra)")
F = torch.nn.functional

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "data" / "pack"
VAL = ROOT / "data" / "val"

pytestmark = pytest.mark.skipif(
    not (PACK / "manifest.json").is_file(),
    reason="no data/pack: run scripts/fetch_data.py --what train && scripts/pack_training_set.py",
)

T = 4
HR = 48  # divisible by 2, 3 and 4


def _load_module():
    """Import scripts/train_data.py by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("train_data", ROOT / "scripts" / "train_data.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_data"] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def td():
    return _load_module()


@pytest.fixture(scope="module")
def sampler(td):
    torch.set_num_threads(2)
    return td.WindowSampler(pack_dir=PACK, frames=T, hr_size=HR, seed=0, clip_fraction=0.5)


def _sample(s, batch: int, *, scale: int | None = None, clip_fraction: float, seed: int = 0):
    s.clip_fraction = clip_fraction
    s.reseed(seed)
    return s.sample(batch, scale=scale)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shapes_and_range(sampler, scale):
    lr, hr, k = _sample(sampler, 6, scale=scale, clip_fraction=0.5)
    assert k == scale
    assert hr.shape == (6, T, 3, HR, HR)
    assert lr.shape == (6, T, 3, HR // scale, HR // scale)
    for x in (lr, hr):
        assert x.dtype == torch.float32
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_random_scale_comes_from_scales(sampler):
    sampler.reseed(1)
    for _ in range(4):
        lr, hr, k = sampler.sample(1)
        assert k in (2, 3, 4)
        assert lr.shape[-1] * k == hr.shape[-1] == HR


def test_deterministic_by_seed(sampler):
    a = _sample(sampler, 4, clip_fraction=0.5, seed=7)
    b = _sample(sampler, 4, clip_fraction=0.5, seed=7)
    c = _sample(sampler, 4, clip_fraction=0.5, seed=8)
    assert a[2] == b[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[1].shape != c[1].shape or not torch.equal(a[1], c[1])


def _frame_stats(hr):
    """Per window: min mean-abs change between consecutive frames and their mean correlation."""
    a, b = hr[:, :-1].flatten(2), hr[:, 1:].flatten(2)
    change = (b - a).abs().mean(-1).amin(1)
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    corr = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-12)
    return change, corr.mean(1)


def test_photo_windows_move_but_stay_correlated(sampler):
    _, hr, _ = _sample(sampler, 16, scale=2, clip_fraction=0.0)
    change, corr = _frame_stats(hr)
    assert bool((change > 0).all()), "every photo window must move from frame to frame"
    assert float(corr.median()) > 0.9, "a small sub-pixel motion keeps frames highly correlated"


def test_photo_middle_frame_is_unresampled(sampler):
    """The middle frame is the identity warp: exact source pixels, so the cleanest target."""
    _, hr, _ = _sample(sampler, 8, scale=2, clip_fraction=0.0)
    mid = hr[:, T // 2] * 255.0
    assert float((mid - mid.round()).abs().max()) < 1e-2
    first = hr[:, 0] * 255.0
    assert float((first - first.round()).abs().max()) > 1e-2


def test_clip_windows(sampler):
    lr, hr, _ = _sample(sampler, 8, scale=4, clip_fraction=1.0)
    assert hr.shape == (8, T, 3, HR, HR) and lr.shape == (8, T, 3, HR // 4, HR // 4)
    _, corr = _frame_stats(hr)
    assert float(corr.median()) > 0.5


def test_lr_is_bicubic_antialias_downscale(sampler):
    lr, hr, k = _sample(sampler, 6, scale=3, clip_fraction=0.5)
    flat = hr.reshape(-1, 3, HR, HR)
    ref = F.interpolate(
        flat, size=(HR // k, HR // k), mode="bicubic", antialias=True, align_corners=False
    ).clamp(0, 1)
    torch.testing.assert_close(lr, ref.reshape(lr.shape), rtol=0, atol=1e-6)


def test_degrade_gives_8bit_lr_that_differs(sampler):
    sampler.degrade = True
    try:
        lr, hr, k = _sample(sampler, 8, scale=2, clip_fraction=0.5, seed=3)
    finally:
        sampler.degrade = False
    assert float(lr.min()) >= 0.0 and float(lr.max()) <= 1.0
    q = lr * 255.0
    assert float((q - q.round()).abs().max()) < 1e-3
    clean = F.interpolate(
        hr.reshape(-1, 3, HR, HR), scale_factor=1 / k, mode="bicubic", antialias=True
    ).clamp(0, 1)
    assert float((lr.reshape(clean.shape) - clean).abs().mean()) > 1e-3


@pytest.mark.skipif(not (VAL / "photos").is_dir(), reason="no data/val: fetch_data.py --what val")
def test_load_val_photos(td):
    photos = td.load_val_photos(VAL / "photos", crop=256)
    assert len(photos) == 14
    for p in photos:
        assert p.shape == (256, 256, 3) and p.dtype == np.uint8


@pytest.mark.skipif(
    not (VAL / "clips" / "cockatoo.mp4").is_file(), reason="no cockatoo.mp4: fetch --what sample"
)
def test_load_val_clip_frames(td):
    frames = td.load_val_clip_frames(VAL / "clips" / "cockatoo.mp4", max_frames=3)
    assert frames.shape == (3, 336, 624, 3) and frames.dtype == np.uint8
