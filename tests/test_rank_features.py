"""scripts/rank_features.py, the bench of LR features against the oracle ranking (#6)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT / "data" / "val" / "photos"
pytest.importorskip("cv2", reason="the script needs opencv-python-headless (the 'train' extra)")
sys.path.insert(0, str(ROOT / "scripts"))

import rank_features  # noqa: E402


def test_auc_counts_helpful_tokens_ranked_above_harmful_ones() -> None:
    gain = np.array([1.0] * 6 + [-1.0] * 6)
    top = np.ones(12, dtype=bool)
    auc = rank_features.auc_helpful_over_harmful
    assert auc(gain, np.arange(12.0)[::-1], top) == 1.0  # every helpful token above
    assert auc(gain, np.arange(12.0), top) == 0.0
    assert auc(gain, np.ones(12), top) == 0.5  # ties count one half
    # one harmful token (score 7.5) above 2 of the 6 helpful ones (5, 6 .. 10 shifted)
    score = np.array([5.0, 6.0, 8.0, 9.0, 10.0, 11.0, 7.5, 0.0, 1.0, 2.0, 3.0, 4.0])
    assert auc(gain, score, top) == pytest.approx(1 - 2 / 36)
    assert np.isnan(auc(gain, score, np.arange(12) < 8))  # only 2 harmful tokens in the top


@pytest.mark.skipif(not VAL.is_dir(), reason="no data/val: fetch_data.py --what val")
def test_no_feature_skips_more_than_the_oracle_on_real_photos() -> None:
    """The oracle keeps the tokens of largest true gain, so at every skip its composite drop
    is the smallest and no ranking can reach a larger skip within the tolerance."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "rank_features.py"),
            "--sets",
            "val",
            "--photos",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = {
        m.group(1): (float(m.group(2)), float(m.group(3)), float(m.group(4)))
        for m in re.finditer(
            r"^\| ([^|]+?) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.na]+) \|$", out, re.M
        )
    }
    expected = {
        "oracle",
        "learned mask (shipped)",
        *rank_features.MAPS,
        *rank_features.TOKEN_TRANSFORMS,
    }
    assert set(rows) == expected, out
    oracle_skip = rows["oracle"][0]
    assert rows["oracle"][1] == 1.0 and rows["oracle"][2] == 1.0
    for name, (skip, ratio, auc) in rows.items():
        assert skip <= oracle_skip + 1e-9 and ratio <= 1.0, (name, out)
        assert np.isnan(auc) or 0.0 <= auc <= 1.0, (name, out)
    assert rows["laplacian"][0] > 0.0, out  # the prior does skip something on real photos
