"""Image and video quality measures for the quality report (scripts/eval_quality.py).

All measures work on luma: BT.601 Y in [16, 235] (``rgb_to_y``, the 'rgb2ycbcr' Y used by SR
papers), peak 255, with a border of ``border`` pixels left out where the measure says so.

* :func:`psnr`, :func:`ssim`: Y-PSNR and Gaussian-window SSIM (Wang et al. 2004, 11x11, sigma
  1.5), as SR benchmarks compute them.
* :func:`token_sse`: squared error summed per p x p token inside the evaluated region; with it
  the PSNR of any per-token composite of two outputs is a sum, not a new image.
* :func:`seam_measure`, :func:`block_edge_measure`: jumps across token borders, against the
  ground truth's jumps at the same places.
* :func:`gt_flow`, :func:`warping_error`: temporal consistency as the flow-warping error, flow
  from the ground truth (OpenCV Farneback) with a forward-backward occlusion check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "PSNR_CAP",
    "BorderJumps",
    "block_edge_measure",
    "gt_flow",
    "harm_by_rank",
    "psnr",
    "psnr_from_mse",
    "rgb_to_y",
    "seam_measure",
    "ssim",
    "token_sse",
    "warp",
    "warping_error",
]

PSNR_CAP = 100.0  # dB reported for identical images (JSON has no inf)
PEAK = 255.0


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB in [0, 255] (uint8 or float), [..., 3] -> [...] float32 in [16, 235]."""
    x = rgb.astype(np.float32)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def _crop(img: np.ndarray, border: int) -> np.ndarray:
    return img[border:-border, border:-border] if border > 0 else img


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for peak 255, capped at ``PSNR_CAP`` (identical images)."""
    if mse <= PEAK**2 * 10 ** (-PSNR_CAP / 10):
        return PSNR_CAP
    return 10.0 * math.log10(PEAK**2 / mse)


def psnr(a: np.ndarray, b: np.ndarray, *, border: int = 4) -> float:
    """PSNR of two luma images [H, W] (values on the 0..255 scale), border cropped."""
    d = _crop(a.astype(np.float64), border) - _crop(b.astype(np.float64), border)
    return psnr_from_mse(float(np.mean(d * d)))


def _ssim_window() -> np.ndarray:
    g = cv2.getGaussianKernel(11, 1.5)
    return g @ g.T


def ssim(a: np.ndarray, b: np.ndarray, *, border: int = 4) -> float:
    """SSIM of two luma images [H, W] on the 0..255 scale: 11x11 Gaussian window (sigma 1.5),
    statistics over the valid region only (as BasicSR's ``calculate_ssim``), border cropped."""
    x = _crop(a.astype(np.float64), border)
    y = _crop(b.astype(np.float64), border)
    c1, c2 = (0.01 * PEAK) ** 2, (0.03 * PEAK) ** 2
    win = _ssim_window()

    def f(img: np.ndarray) -> np.ndarray:
        return cv2.filter2D(img, -1, win)[5:-5, 5:-5]

    mu_x, mu_y = f(x), f(y)
    sxx = f(x * x) - mu_x**2
    syy = f(y * y) - mu_y**2
    sxy = f(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def token_sse(a: np.ndarray, b: np.ndarray, *, patch: int, border: int = 4) -> np.ndarray:
    """Squared error of luma [H, W] pairs summed per token, counting only pixels inside the
    border crop: [Hp, Wp] float64 (H, W multiples of ``patch``). Summing it over all tokens
    gives the SSE behind :func:`psnr` with the same ``border``."""
    h, w = a.shape
    if h % patch or w % patch:
        raise ValueError(f"token_sse: {w}x{h} is not a whole number of {patch}-px tokens")
    d = a.astype(np.float64) - b.astype(np.float64)
    d2 = d * d
    if border > 0:
        inside = np.zeros_like(d2)
        inside[border:-border, border:-border] = 1.0
        d2 = d2 * inside
    return d2.reshape(h // patch, patch, w // patch, patch).sum(axis=(1, 3))


def harm_by_rank(gain: np.ndarray, score: np.ndarray, *, bins: int = 10) -> np.ndarray:
    """Where a ranking puts the tokens the SR net makes worse: of the summed loss of the
    tokens with ``gain`` < 0 (per-token SSE of the base minus that of the SR output), the
    share in each of ``bins`` equal-count bins of ``score`` (lowest scores first) [bins].

    The oracle skips harmful tokens first and so runs ahead of any ranking that puts them
    among the high scores; this says how much of that lead a ranking gives away. All zeros
    when no token is harmful."""
    g, s = np.asarray(gain, np.float64).ravel(), np.asarray(score, np.float64).ravel()
    if g.shape != s.shape:
        raise ValueError(f"harm_by_rank: gain has {g.size} tokens, score {s.size}")
    order = np.argsort(s, kind="stable")
    harm = np.maximum(-g[order], 0.0)
    total = harm.sum()
    if total == 0.0:
        return np.zeros(bins)
    edges = np.linspace(0, g.size, bins + 1).round().astype(int)
    return np.add.reduceat(harm, edges[:-1]) / total


def ratio_interval(
    num: np.ndarray, den: np.ndarray, *, level: float = 0.9, resamples: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(num) / mean(den) over paired samples (images):
    each resample draws the images with replacement and keeps each one's pair together.

    With 14 validation photos a ratio of largest skips moves by several hundredths when one
    photo is swapped; this says how far from a target a figure is before calling it met."""
    a, b = np.asarray(num, np.float64).ravel(), np.asarray(den, np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"ratio_interval: {a.size} numerators, {b.size} denominators")
    if not 0.0 < level < 1.0:
        raise ValueError(f"ratio_interval: level={level}, expected 0 < level < 1")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a[idx].mean(axis=1) / b[idx].mean(axis=1)
    r = r[np.isfinite(r)]
    if r.size == 0:  # every denominator zero: no ratio to bound
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(r, [tail, 1.0 - tail])
    return float(low), float(high)


def border_pixels(h: int, w: int, *, border: int = 4) -> int:
    """How many pixels :func:`psnr` averages over."""
    return max(h - 2 * border, 0) * max(w - 2 * border, 0)


# --- token borders -------------------------------------------------------------------------


@dataclass
class BorderJumps:
    """Sums of |p(x) - p(x-1)| across a set of border positions, for an output and its GT."""

    out_sum: float = 0.0
    gt_sum: float = 0.0
    count: int = 0

    def add(self, other: BorderJumps) -> None:
        self.out_sum += other.out_sum
        self.gt_sum += other.gt_sum
        self.count += other.count

    @property
    def out_mean(self) -> float:
        return self.out_sum / self.count if self.count else float("nan")

    @property
    def gt_mean(self) -> float:
        return self.gt_sum / self.count if self.count else float("nan")

    @property
    def excess(self) -> float:
        """Mean output jump minus mean GT jump at the same positions (luma levels)."""
        return self.out_mean - self.gt_mean


def _jumps(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|y[:, x] - y[:, x-1]| [H, W-1] and |y[r] - y[r-1]| [H-1, W]."""
    y = y.astype(np.float64)
    return np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))


def seam_measure(
    out: np.ndarray, gt: np.ndarray, keep: np.ndarray, *, patch: int
) -> dict[str, BorderJumps]:
    """Jumps across the token borders of luma ``out`` [H, W] and ``gt``, split by the kinds of
    tokens on the two sides (``keep`` [Hp, Wp] bool): 'mixed' (a kept token beside a skipped
    one: the seam), 'kept' (both kept) and 'skipped' (both skipped)."""
    jx_o, jy_o = _jumps(out)
    jx_g, jy_g = _jumps(gt)
    hp, wp = keep.shape
    res = {k: BorderJumps() for k in ("mixed", "kept", "skipped")}
    # vertical borders between token columns j-1 and j: pixel column x = j*patch (jump index x-1)
    for j in range(1, wp):
        x = j * patch - 1
        a, b = keep[:, j - 1], keep[:, j]
        kinds = np.where(a != b, 0, np.where(a, 1, 2))  # [Hp]
        col_o = jx_o[:, x].reshape(hp, patch).sum(1)
        col_g = jx_g[:, x].reshape(hp, patch).sum(1)
        for kind, name in enumerate(("mixed", "kept", "skipped")):
            sel = kinds == kind
            res[name].add(
                BorderJumps(
                    float(col_o[sel].sum()), float(col_g[sel].sum()), int(sel.sum()) * patch
                )
            )
    for i in range(1, hp):
        r = i * patch - 1
        a, b = keep[i - 1], keep[i]
        kinds = np.where(a != b, 0, np.where(a, 1, 2))  # [Wp]
        row_o = jy_o[r].reshape(wp, patch).sum(1)
        row_g = jy_g[r].reshape(wp, patch).sum(1)
        for kind, name in enumerate(("mixed", "kept", "skipped")):
            sel = kinds == kind
            res[name].add(
                BorderJumps(
                    float(row_o[sel].sum()), float(row_g[sel].sum()), int(sel.sum()) * patch
                )
            )
    return res


def block_edge_measure(out: np.ndarray, gt: np.ndarray, *, patch: int) -> dict[str, BorderJumps]:
    """Jumps of luma ``out`` [H, W] and ``gt`` at every token border ('border': between pixel
    x-1 and x with x a multiple of ``patch``, both axes) and everywhere else ('interior'). A
    patch model with block artifacts has a border excess well above its interior excess."""
    jx_o, jy_o = _jumps(out)
    jx_g, jy_g = _jumps(gt)
    h, w = out.shape
    on_x = (np.arange(1, w) % patch) == 0  # jump index x-1 crosses into column x
    on_y = (np.arange(1, h) % patch) == 0
    res = {}
    for name, sx, sy in (("border", on_x, on_y), ("interior", ~on_x, ~on_y)):
        res[name] = BorderJumps(
            float(jx_o[:, sx].sum() + jy_o[sy].sum()),
            float(jx_g[:, sx].sum() + jy_g[sy].sum()),
            int(jx_o[:, sx].size + jy_o[sy].size),
        )
    return res


# --- temporal consistency --------------------------------------------------------------------


def _farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from luma ``a`` to ``b``: a(p) ~ b(p + flow(p)); [H, W, 2] float32 (dx, dy)."""
    a8 = np.clip(np.round(a), 0, 255).astype(np.uint8)
    b8 = np.clip(np.round(b), 0, 255).astype(np.uint8)
    return cv2.calcOpticalFlowFarneback(a8, b8, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``img`` [H, W] at p + flow(p) (bilinear, border replicated): [H, W] float32."""
    h, w = img.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(
        img.astype(np.float32),
        gx + flow[..., 0],
        gy + flow[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def gt_flow(y_t: np.ndarray, y_t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flow to warp frame t onto frame t+1, from the ground-truth luma of both, and where it is
    trusted: (flow [H, W, 2], valid [H, W] bool).

    ``flow`` maps each pixel p of frame t+1 to p + flow(p) in frame t. Valid pixels land inside
    frame t and pass the forward-backward check |b + f(p + b)|^2 < 0.01 (|b|^2 + |f|^2) + 0.5
    (Sundaram et al. 2010), which drops occlusions and unreliable flow.
    """
    back = _farneback(y_t1, y_t)  # t+1 -> t
    fwd = _farneback(y_t, y_t1)  # t -> t+1
    fwd_at = np.stack([warp(fwd[..., 0], back), warp(fwd[..., 1], back)], axis=-1)
    s = back + fwd_at
    lim = 0.01 * ((back**2).sum(-1) + (fwd_at**2).sum(-1)) + 0.5
    h, w = y_t.shape
    gx, gy = np.meshgrid(np.arange(w), np.arange(h))
    tx, ty = gx + back[..., 0], gy + back[..., 1]
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return back, ((s**2).sum(-1) < lim) & inside


def warping_error(
    y_t: np.ndarray, y_t1: np.ndarray, flow: np.ndarray, valid: np.ndarray | None = None
) -> tuple[float, int]:
    """Mean |y_t1 - warp(y_t, flow)| over ``valid`` pixels, and their count (for pooling)."""
    d = np.abs(y_t1.astype(np.float32) - warp(y_t, flow))
    if valid is None:
        return float(d.mean()), int(d.size)
    n = int(valid.sum())
    return (float(d[valid].mean()) if n else float("nan")), n
