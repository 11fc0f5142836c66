"""scripts/train_common.training_keep: the keep sets the SR net is trained with (#6)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "data" / "val" / "photos" / "Dragonfly_by_Bolly.jpg"
cv2 = pytest.importorskip("cv2", reason="reading the photo needs opencv-python-headless")
sys.path.insert(0, str(ROOT / "scripts"))

from train_common import training_keep  # noqa: E402

from vs_skipsr.models.mask import gradient_energy, laplacian_energy, token_scores  # noqa: E402

SCALE, PATCH, T, WINDOWS = 4, 16, 2, 240


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    """WINDOWS copies of one real T-frame window, 64x64 LR (a 16x16 token grid at x4)."""
    if not PHOTO.is_file():
        pytest.skip("no data/val: fetch_data.py --what val")
    bgr = cv2.imread(str(PHOTO))
    h, w = bgr.shape[:2]
    crop = bgr[h // 2 - 128 : h // 2 + 128, w // 2 - 128 : w // 2 + 128, ::-1]
    lr = cv2.resize(np.ascontiguousarray(crop), (64, 64), interpolation=cv2.INTER_AREA)
    frame = torch.from_numpy(lr.astype(np.float32) / 255).permute(2, 0, 1)
    return frame.expand(WINDOWS, T, *frame.shape).contiguous()


def _top(score_map: torch.Tensor, n: int) -> set[int]:
    scores = token_scores(score_map, scale=SCALE, patch=PATCH, grid=(16, 16)).reshape(-1)
    return set(torch.topk(scores, n).indices.tolist())


@pytest.mark.parametrize("rankings", ["gradient", "both"])
def test_keep_fractions_and_dense_share(windows: torch.Tensor, rankings: str) -> None:
    g = torch.Generator().manual_seed(0)
    keep = training_keep(windows, scale=SCALE, patch=PATCH, generator=g, rankings=rankings)
    assert keep.shape == (WINDOWS, T, 16, 16)
    frac = keep.reshape(WINDOWS, -1).float().mean(dim=1)
    dense = frac == 1.0
    assert 0.2 < dense.float().mean() < 0.4  # 30% of windows keep every token
    assert frac[~dense].min() >= 0.15 - 1 / (T * 256)
    assert frac[~dense].max() <= 0.9 + 1 / (T * 256)


def _nearer(keep: torch.Tensor, first: torch.Tensor) -> tuple[int, int]:
    """How many partly kept windows are nearer the Laplacian ranking's top set of their size
    than the gradient ranking's, and the other way round (ties count for neither)."""
    lap_map, grad_map = laplacian_energy(first), gradient_energy(first)
    nearer_lap, nearer_grad = 0, 0
    for row in keep:
        n = int(row.sum())
        if n == row.numel():
            continue
        kept = set(torch.nonzero(row).flatten().tolist())
        lap, grad = _top(lap_map, n), _top(grad_map, n)
        nearer_lap += len(kept & lap) > len(kept & grad)
        nearer_grad += len(kept & grad) > len(kept & lap)
    return nearer_lap, nearer_grad


def test_both_follows_each_shipped_ranking_in_a_fair_share(windows: torch.Tensor) -> None:
    """With rankings='both' each partly kept window follows the Laplacian ranking (the learned
    mask's) or the gradient ranking (the default scorer's), and each serves a fair share."""
    g = torch.Generator().manual_seed(1)
    keep = training_keep(windows, scale=SCALE, patch=PATCH, generator=g, rankings="both")
    nearer_lap, nearer_grad = _nearer(keep.reshape(WINDOWS, -1), windows[0])
    assert nearer_lap + nearer_grad > 100
    assert 0.3 < nearer_lap / (nearer_lap + nearer_grad) < 0.7


def test_default_follows_the_gradient_ranking(windows: torch.Tensor) -> None:
    """The default (the shipped weights' recipe) ranks every window by the gradient energy."""
    g = torch.Generator().manual_seed(1)
    keep = training_keep(windows, scale=SCALE, patch=PATCH, generator=g)
    nearer_lap, nearer_grad = _nearer(keep.reshape(WINDOWS, -1), windows[0])
    assert nearer_lap + nearer_grad > 100
    assert nearer_lap / (nearer_lap + nearer_grad) < 0.15


def test_rankings_is_checked(windows: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="rankings='laplacian'"):
        training_keep(windows[:2], scale=SCALE, patch=PATCH, generator=g, rankings="laplacian")
