"""scripts/train_sr.py: fine-tuning from saved weights (--init) and data-parallel training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vs_skipsr.models.weights import load_sr

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / "data" / "pack"
pytest.importorskip("cv2", reason="the sampler needs opencv-python-headless (the 'train' extra)")
pytestmark = pytest.mark.skipif(
    not (PACK / "manifest.json").is_file(),
    reason="no data/pack: run scripts/fetch_data.py --what train && scripts/pack_training_set.py",
)


def _train(
    tmp_path: Path, *args: str, ranks: int = 1, minutes: str = "0.02"
) -> subprocess.CompletedProcess[str]:
    """train_sr.py on the real pack for a few steps, as one process or under torchrun."""
    cmd = [sys.executable]
    if ranks > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    cmd += [str(ROOT / "scripts" / "train_sr.py"), "--pack", str(PACK)]
    cmd += ["--minutes", minutes, "--batch", "1", "--hr-size", "96", "--out", str(tmp_path)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=300)


def test_init_fine_tunes_the_given_weights(tmp_path: Path, sr_weights: Path) -> None:
    start = load_sr(sr_weights)
    out = tmp_path / "tuned.safetensors"
    run = _train(tmp_path, "--init", str(sr_weights), "--weights", str(out))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "x4 held-out at the start" in run.stderr
    tuned = load_sr(out)
    assert tuned.config == start.config  # the weights' own (tiny) config, not the preset's
    moved = [
        name
        for (name, a), (_, b) in zip(
            start.state_dict().items(), tuned.state_dict().items(), strict=True
        )
        if not a.equal(b)
    ]
    assert moved  # it trained
    # and it started from them: a fresh net of that config is far further away
    first = next(iter(start.state_dict()))
    assert (tuned.state_dict()[first] - start.state_dict()[first]).abs().max() < 0.05


def test_init_refuses_a_config_override(tmp_path: Path, sr_weights: Path) -> None:
    run = _train(tmp_path, "--init", str(sr_weights), "--set", "halo=0")
    assert run.returncode != 0
    assert "--init takes the config stored with the weights" in run.stderr


def test_data_parallel_gradients_match_the_buckets(tmp_path: Path, sr_weights: Path) -> None:
    """Two ranks under torchrun (gloo on the CPU): the head's channels-last conv gradients
    must fit DDP's buckets (else torch warns 'Grad strides do not match bucket view strides',
    which may impair performance)."""
    run = _train(tmp_path, "--init", str(sr_weights), ranks=2, minutes="0.05")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "x 2 ranks" in run.stderr
    assert "Grad strides do not match" not in run.stderr
