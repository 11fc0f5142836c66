"""scripts/eval_window_length.py: window length against picture quality on the real clips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT / "data" / "val" / "clips"
pytest.importorskip("cv2", reason="the script needs opencv-python-headless (the 'train' extra)")
sys.path.insert(0, str(ROOT / "scripts"))

import eval_window_length as ewl  # noqa: E402


@pytest.mark.skipif(not (CLIPS / "bikes.mp4").is_file(), reason="no data/val: fetch_data.py")
def test_window_length_keeps_every_frame_and_the_threshold_keep_set() -> None:
    """Cut into windows of 3 or 8, 8 real frames come out as 8 frames; a threshold keeps the
    same tokens (its scores are per frame), and the dense pictures stay within 0.1 dB."""
    eq = ewl.eq
    wins = eq.clip_windows(CLIPS, {"bikes.mp4": 10}, [])
    lr = np.concatenate([w.lr for w in wins])[:8]
    gt_y = eq.rgb_to_y(np.concatenate([w.gt for w in wins])[:8])
    runner = eq.TorchBackend(device="cpu", dtype="fp32", attention="padded").load(
        sr=eq.load_sr(), mask=None
    )
    rule = {"threshold": ewl.DEFAULT_THRESHOLD["gradient"], "scorer": "gradient"}
    out3, kept3 = ewl.run_clip(runner, lr, window=3, keep_rule=rule)
    out8, kept8 = ewl.run_clip(runner, lr, window=8, keep_rule=rule)
    assert out3.shape == out8.shape == (8, *gt_y.shape[1:], 3)
    assert kept3 == kept8 and 0.0 < kept3 < 1.0
    dense = [ewl.run_clip(runner, lr, window=w, keep_rule={})[0] for w in (3, 8)]
    psnr = [np.mean(eq.score_frames(d, gt_y, with_ssim=False)[0].psnr) for d in dense]
    assert abs(psnr[0] - psnr[1]) < 0.1
    assert not np.array_equal(dense[0], dense[1])  # the windows really differ


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--windows", "5,x"], "--windows '5,x': accepted comma-separated ints"),
        (["--windows", "0,20"], "--windows '0,20' / --frames 20: accepted values >= 1"),
        (["--frames", "0"], "--windows '5,20' / --frames 0: accepted values >= 1"),
    ],
)
def test_bad_arguments_are_refused_naming_them(args: list[str], needle: str) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "eval_window_length.py"), *args]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and not run.stdout
    assert needle in run.stderr
