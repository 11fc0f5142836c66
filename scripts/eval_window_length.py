#!/usr/bin/env python3
"""Does the window length change the picture? The validation clips' first frames cut into
windows of each length, dense and at the default threshold: Y-PSNR and flicker.

    .venv/bin/python scripts/eval_window_length.py              # windows 5 and 20, 20 frames

Why: on CUDA skipsr() runs windows of four model windows (20 frames) by default, because
fewer, fuller windows are faster there; the model's attention windows are 5 frames either
way, but the shifted ones and the flow noise see different neighbours. Protocol of
scripts/eval_quality.py (clip frames /2, LR = PIL bicubic /4, torch on the CPU, fp32, one step,
seed 0); "flicker" is its residual warping error (the error image's change from frame to frame
beyond the ground truth's motion, lower is steadier), here the plain mean over consecutive
frame pairs, where eval_quality.py weights each pair by its valid pixels. Prints a table;
writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import eval_quality as eq  # noqa: E402
from metrics import gt_flow, warping_error  # noqa: E402

from vs_skipsr.filter import DEFAULT_THRESHOLD  # noqa: E402


def run_clip(
    runner: eq.TorchRunner, lr: np.ndarray, *, window: int, keep_rule: dict[str, object]
) -> tuple[np.ndarray, float]:
    """The clip's frames through windows of ``window`` (the last one shorter): uint8 frames
    and the kept fraction over all tokens."""
    outs, kept, total = [], 0.0, 0
    for s in range(0, len(lr), window):
        res = eq.upscale_window(
            eq.to_tensor(lr[s : s + window]), scale=eq.SCALE, runner=runner, steps=1, seed=eq.SEED,
            **keep_rule,
        )  # fmt: skip
        outs.append(eq.to_uint8(res.frames))
        kept += float(res.keep.sum())
        total += res.keep.numel()
    return np.concatenate(outs), kept / total


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=ROOT / "data")
    ap.add_argument("--windows", default="5,20", help="comma-separated window lengths")
    ap.add_argument("--frames", type=int, default=20, help="frames of each clip")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        windows = [int(w) for w in args.windows.split(",")]
    except ValueError:
        ap.error(f"--windows {args.windows!r}: accepted comma-separated ints, e.g. 5,20")
    if any(w < 1 for w in windows) or args.frames < 1:
        ap.error(f"--windows {args.windows!r} / --frames {args.frames}: accepted values >= 1")
    runner = eq.TorchBackend(device="cpu", dtype="fp32", attention="padded").load(
        sr=eq.load_sr(), mask=eq.load_mask()
    )
    rules = {
        "dense": {},
        "default threshold": {"threshold": DEFAULT_THRESHOLD["gradient"], "scorer": "gradient"},
    }
    clips = dict.fromkeys(eq.CLIP_FRAMES, args.frames)
    notes: list[str] = []
    by_clip: dict[str, list[eq.Window]] = {}
    for win in eq.clip_windows(args.data / "val" / "clips", clips, notes):
        by_clip.setdefault(win.group, []).append(win)
    for note in notes:
        print(note, file=sys.stderr)
    print("| clip | keep rule | window | kept | Y-PSNR (dB) | flicker |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    pooled: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for clip, wins in by_clip.items():
        gt_y = eq.rgb_to_y(np.concatenate([w.gt for w in wins]))
        lr = np.concatenate([w.lr for w in wins])
        flows = [gt_flow(gt_y[t], gt_y[t + 1]) for t in range(len(gt_y) - 1)]
        for rule, kw in rules.items():
            for window in windows:
                out, kept = run_clip(runner, lr, window=window, keep_rule=kw)
                scores, y = eq.score_frames(out, gt_y, with_ssim=False)
                res = y.astype(np.float32) - gt_y
                flicker = np.mean(
                    [warping_error(res[t], res[t + 1], *flows[t])[0] for t in range(len(y) - 1)]
                )
                psnr = float(np.mean(scores.psnr))
                pooled.setdefault((rule, window), []).append((psnr, float(flicker)))
                print(f"| {clip} | {rule} | {window} | {kept:.3f} | {psnr:.3f} | {flicker:.4f} |")
    for (rule, window), vals in pooled.items():
        psnr, flicker = np.mean(vals, axis=0)
        print(f"| mean of {len(vals)} | {rule} | {window} | | {psnr:.3f} | {flicker:.4f} |")


if __name__ == "__main__":
    main()
