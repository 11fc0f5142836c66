"""Fast checks of the quality measures in scripts/metrics.py (used by scripts/eval_quality.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "cv2", reason="scripts/metrics.py needs opencv-python-headless (the 'train' extra)"
)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import metrics

P = 16


def _texture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random texture on the 0..255 scale (blurred noise), float32."""
    import cv2

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (h, w)).astype(np.float32)
    return cv2.GaussianBlur(x, (0, 0), 3.0) * 3.0 - 250.0


def test_rgb_to_y_range() -> None:
    rgb = np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8)
    y = metrics.rgb_to_y(rgb)
    assert y[0, 0] == pytest.approx(16.0)
    assert y[0, 1] == pytest.approx(235.0, abs=1e-3)


def test_psnr_identical_is_capped() -> None:
    a = _texture()
    assert metrics.psnr(a, a) == metrics.PSNR_CAP


def test_psnr_known_value() -> None:
    a = np.full((40, 40), 100.0)
    b = a + 5.0  # MSE 25 everywhere
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 25))
    # the border is left out: an error only there does not count
    c = a.copy()
    c[:4] += 50.0
    assert metrics.psnr(a, c, border=4) == metrics.PSNR_CAP


def test_ssim_identical_is_one_and_noise_lowers_it() -> None:
    a = _texture()
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    noisy = a + np.random.default_rng(1).normal(0, 10, a.shape)
    assert metrics.ssim(a, noisy) < 0.95


def test_token_sse_sums_to_psnr_sse() -> None:
    a, b = _texture(seed=0), _texture(seed=1)
    sse = metrics.token_sse(a, b, patch=P, border=4)
    assert sse.shape == (96 // P, 128 // P)
    npix = metrics.border_pixels(96, 128, border=4)
    assert metrics.psnr_from_mse(sse.sum() / npix) == pytest.approx(metrics.psnr(a, b, border=4))


def test_seam_is_zero_for_smooth_and_large_for_block_step() -> None:
    gt = _texture(seed=2)
    keep = (np.indices((96 // P, 128 // P)).sum(0) % 2).astype(bool)  # checkerboard
    smooth = metrics.seam_measure(gt, gt, keep, patch=P)
    assert smooth["mixed"].count > 0
    assert abs(smooth["mixed"].excess) < 1e-9
    # a constant step per 16-px block: every token border jumps, nothing inside a block does
    step = np.kron(np.random.default_rng(3).uniform(-20, 20, keep.shape), np.ones((P, P)))
    blocky = gt + step
    seam = metrics.seam_measure(blocky, gt, keep, patch=P)
    assert seam["mixed"].excess > 5.0
    block = metrics.block_edge_measure(blocky, gt, patch=P)
    assert block["border"].excess > 5.0
    assert abs(block["interior"].excess) < 1e-9
    flat = metrics.block_edge_measure(gt, gt, patch=P)
    assert abs(flat["border"].excess) < 1e-9


def test_warping_error_zero_for_exact_translation() -> None:
    big = _texture(140, 180, seed=4)
    dx, dy = 3, 2
    f0 = big[20:116, 20:148]
    f1 = big[20 - dy : 116 - dy, 20 - dx : 148 - dx]  # content moves by (+dx, +dy)
    flow = np.zeros((*f0.shape, 2), np.float32)
    flow[..., 0], flow[..., 1] = -dx, -dy  # pixel p of frame 1 is p - (dx, dy) in frame 0
    valid = np.zeros(f0.shape, bool)
    valid[dy:, dx:] = True  # where p + flow lands inside frame 0
    err, n = metrics.warping_error(f0, f1, flow, valid)
    assert n == valid.sum()
    assert err < 1e-3
    # a wrong flow gives a clear error
    wrong, _ = metrics.warping_error(f0, f1, np.zeros_like(flow), valid)
    assert wrong > 1.0


def test_gt_flow_recovers_translation() -> None:
    big = _texture(140, 180, seed=5)
    f0 = big[20:116, 20:148]
    f1 = big[18:114, 17:145]  # moved by (+3, +2)
    flow, valid = metrics.gt_flow(f0, f1)
    inner = (slice(16, -16), slice(16, -16))
    assert np.median(flow[inner][..., 0]) == pytest.approx(-3, abs=0.3)
    assert np.median(flow[inner][..., 1]) == pytest.approx(-2, abs=0.3)
    assert valid[inner].mean() > 0.9
    err, _ = metrics.warping_error(f0, f1, flow, valid)
    assert err < 2.0


def test_harm_by_rank_puts_the_harmful_tokens_loss_in_its_score_bins() -> None:
    # 10 tokens, scores 0..9 shuffled; tokens of score 1 and 8 are harmful (loss 1 and 3)
    score = np.array([5.0, 8.0, 0.0, 3.0, 1.0, 9.0, 2.0, 7.0, 4.0, 6.0])
    gain = np.array([2.0, -3.0, 0.5, 1.0, -1.0, 4.0, 0.0, 2.5, 1.5, 3.0])
    shares = metrics.harm_by_rank(gain, score, bins=5)
    # bins by score: {0,1} {2,3} {4,5} {6,7} {8,9}
    assert shares == pytest.approx([0.25, 0.0, 0.0, 0.0, 0.75])
    assert metrics.harm_by_rank(np.abs(gain), score, bins=5) == pytest.approx(np.zeros(5))
    with pytest.raises(ValueError, match="gain has 10 tokens, score 9"):
        metrics.harm_by_rank(gain, score[:9])


def test_ratio_interval_of_paired_means() -> None:
    same = np.array([0.5, 0.5, 0.5, 0.5])
    assert metrics.ratio_interval(same * 0.8, same) == pytest.approx((0.8, 0.8))  # no spread
    # pairs move together: num = 0.8 den everywhere gives exactly 0.8 whatever is drawn
    den = np.array([0.2, 0.4, 0.6, 0.8, 0.9])
    assert metrics.ratio_interval(0.8 * den, den) == pytest.approx((0.8, 0.8))
    # unpaired spread: the interval holds the point estimate and widens as samples shrink
    rng = np.random.default_rng(1)
    num, den = rng.uniform(0.3, 0.9, 40), rng.uniform(0.5, 0.9, 40)
    low, high = metrics.ratio_interval(num, den)
    assert low < num.mean() / den.mean() < high
    low8, high8 = metrics.ratio_interval(num[:8], den[:8])
    assert high8 - low8 > high - low
    wide = metrics.ratio_interval(num, den, level=0.99)
    assert wide[0] < low and wide[1] > high
    assert all(math.isnan(v) for v in metrics.ratio_interval(num[:3], np.zeros(3)))
    with pytest.raises(ValueError, match="3 numerators, 2 denominators"):
        metrics.ratio_interval(num[:3], den[:2])
