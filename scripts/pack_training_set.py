#!/usr/bin/env python3
"""Build data/pack/: a compact training set that fits the GPU machine's 64 MiB per-call upload.

The GPU machine receives code and data together, 64 MiB per call, so the training material is
shrunk to about 40 MB here, once, and read back by ``scripts/train_data.py``:

* photos/: every training photo downscaled by at least 2 (INTER_AREA) with its long side capped
  at 1280 px. Downscaling averages away the JPEG noise of the originals, so the result is a
  cleaner ground truth. Stored as PNG when all of them fit the photo budget, else JPEG q95 with
  4:4:4 chroma (no chroma subsampling, which would blur colour edges of the ground truth).
* clips/: frames of the training clips, downscaled by 2 (720p -> 640x360; the clips are lossy
  and the downscale hides most of it), with frames that merely repeat the previous one dropped
  (frame-rate conversion duplicates) and the clip split at scene cuts. Each clip is cut into
  runs of ``--run-len`` consecutive frames; runs are taken round-robin over the clips, evenly
  spaced inside each, until the budget is spent, so every clip is represented. Runs that turn
  out adjacent are merged back into longer segments by the sampler.
* manifest.json: what is where, with sizes and the settings used.

The pack is rebuilt from scratch on each run (a few seconds) into a temp folder and swapped in.

Usage: python scripts/pack_training_set.py [--data DIR] [--budget-mb 40] [--run-len 8]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("pack")

ROOT = Path(__file__).resolve().parents[1]
PHOTO_EXTS = {".jpg", ".jpeg", ".png"}
CLIP_EXTS = {".mp4", ".mkv", ".avi", ".ogv", ".webm", ".mov"}
JPEG_PARAMS = [
    cv2.IMWRITE_JPEG_QUALITY,
    95,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
    cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
]


@dataclass
class Run:
    """A run of consecutive frames of one clip, encoded and ready to be written."""

    clip: str
    start: int  # index of the first frame among the kept (deduplicated) frames of the clip
    segment: int  # scene segment the run belongs to; runs never straddle a cut
    frames: list[bytes] = field(repr=False)
    size: tuple[int, int] = (0, 0)  # (height, width)

    @property
    def nbytes(self) -> int:
        return sum(len(f) for f in self.frames)


def downscale(img: np.ndarray, *, factor: float) -> np.ndarray:
    """Area-average downscale by ``factor`` (>= 1): anti-aliased, and it averages out noise."""
    h, w = img.shape[:2]
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def encode(img: np.ndarray, *, ext: str) -> bytes:
    params = JPEG_PARAMS if ext == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 6]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise RuntimeError(f"cv2 could not encode {ext}")
    return buf.tobytes()


def load_photo(path: Path, *, max_side: int) -> np.ndarray:
    """A training photo as BGR uint8, downscaled by max(2, long_side / max_side)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # drops alpha, expands grey to 3 channels
    if img is None:
        raise RuntimeError(f"cannot read {path}")
    factor = max(2.0, max(img.shape[:2]) / max_side)
    return downscale(img, factor=factor)


def pack_photos(
    paths: list[Path], *, budget: int, max_side: int, fmt: str
) -> tuple[dict[str, bytes], str]:
    """Encode all photos; PNG if all fit ``budget`` bytes (or fmt forces it), else JPEG q95."""
    imgs = {p.stem: load_photo(p, max_side=max_side) for p in paths}
    if fmt in ("auto", "png"):
        pngs: dict[str, bytes] = {}
        total = 0
        for k, v in imgs.items():  # stops at the first photo over budget: PNG is slow to encode
            pngs[k] = encode(v, ext=".png")
            total += len(pngs[k])
            if fmt == "auto" and total > budget:
                log.info(
                    "photos as PNG: over the %.1f MB photo budget after %d of %d",
                    budget / 1e6,
                    len(pngs),
                    len(imgs),
                )
                break
        else:
            log.info("photos as PNG: %.1f MB", total / 1e6)
            return pngs, ".png"
    jpgs = {k: encode(v, ext=".jpg") for k, v in imgs.items()}
    log.info("photos as JPEG q95 4:4:4: %.1f MB", sum(len(b) for b in jpgs.values()) / 1e6)
    return jpgs, ".jpg"


def read_clip(path: Path, *, factor: int) -> list[np.ndarray]:
    """All frames of a clip, BGR uint8, area-downscaled by ``factor``."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"cv2 cannot open {path}")
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(downscale(frame, factor=factor) if factor > 1 else frame)
    cap.release()
    if not frames:
        raise RuntimeError(f"no frames decoded from {path}")
    return frames


def mean_abs_diffs(frames: list[np.ndarray]) -> np.ndarray:
    """Mean absolute difference of each frame to the previous one (first entry: 0)."""
    d = [0.0]
    for a, b in itertools.pairwise(frames):
        d.append(float(np.abs(b.astype(np.int16) - a.astype(np.int16)).mean()))
    return np.asarray(d)


def drop_repeats(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Drop frames that repeat the previous one inside moving footage.

    Frame-rate conversion leaves near-duplicates (mkv.mkv repeats about one frame in 25); a
    model trained on them learns that motion sometimes stops for a frame. A frame is a repeat
    when its change is < 30 % of both neighbouring changes, so truly static stretches stay.
    """
    d = mean_abs_diffs(frames)
    keep = [0]
    for i in range(1, len(frames)):
        nxt = d[i + 1] if i + 1 < len(frames) else d[i - 1]
        if d[i] < 0.3 * min(d[i - 1] if i > 1 else nxt, nxt) and d[i] < 1.0:
            continue
        keep.append(i)
    return [frames[i] for i in keep]


def split_at_cuts(frames: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Split a clip at scene cuts: a change > max(10 levels, 4x the clip's median change).

    The lab clips open with a title shot (a jump of 21-25 levels where motion gives 2-4); a
    window across it would teach the model to blend unrelated frames.
    """
    d = mean_abs_diffs(frames)
    med = float(np.median(d[1:])) if len(d) > 1 else 0.0
    segments, cur = [], [frames[0]]
    for i in range(1, len(frames)):
        if d[i] > max(10.0, 4.0 * med):
            segments.append(cur)
            cur = []
        cur.append(frames[i])
    segments.append(cur)
    return segments


def clip_runs(path: Path, *, factor: int, run_len: int, min_side: int) -> list[Run]:
    """Cut a clip into encoded runs of ``run_len`` consecutive frames, in time order."""
    frames = read_clip(path, factor=factor)
    n_read = len(frames)
    h, w = frames[0].shape[:2]
    if min(h, w) < min_side:
        log.warning("skipping %s: %dx%d after downscale < %d px", path.name, w, h, min_side)
        return []
    frames = drop_repeats(frames)
    segments = split_at_cuts(frames)
    runs, base = [], 0
    for s, seg in enumerate(segments):
        for k in range(len(seg) // run_len):
            chunk = seg[k * run_len : (k + 1) * run_len]
            enc = [encode(f, ext=".jpg") for f in chunk]
            runs.append(Run(path.stem, base + k * run_len, s, enc, (h, w)))
        base += len(seg)
    log.info(
        "clip %s: %d frames %dx%d, %d repeats dropped, %d segment(s), %d runs",
        path.name,
        n_read,
        w,
        h,
        n_read - len(frames),
        len(segments),
        len(runs),
    )
    return runs


def spread(n: int, k: int) -> list[int]:
    """k indices out of range(n), evenly spread (first-come order favours coverage)."""
    if k >= n:
        return list(range(n))
    return sorted({round(x) for x in np.linspace(0, n - 1, k)})


def choose_runs(per_clip: dict[str, list[Run]], *, budget: int) -> list[Run]:
    """Take runs round-robin over the clips until ``budget`` bytes, evenly spaced per clip.

    Growing every clip's share one run at a time keeps all clips represented when the budget is
    short, and re-spreading the chosen indices keeps each clip's runs spread over its length.
    """
    counts = dict.fromkeys(per_clip, 0)
    chosen_bytes = 0

    def picked(name: str, k: int) -> list[Run]:
        return [per_clip[name][i] for i in spread(len(per_clip[name]), k)]

    grew = True
    while grew:
        grew = False
        for name, runs in per_clip.items():
            k = counts[name]
            if k >= len(runs):
                continue
            delta = sum(r.nbytes for r in picked(name, k + 1)) - sum(
                r.nbytes for r in picked(name, k)
            )
            if chosen_bytes + delta > budget:
                continue
            counts[name] = k + 1
            chosen_bytes += delta
            grew = True
    return [r for name in per_clip for r in picked(name, counts[name])]


def write_pack(
    *,
    out: Path,
    photos: dict[str, bytes],
    photo_ext: str,
    runs: list[Run],
    settings: dict[str, object],
) -> dict[str, object]:
    """Write photos, run frames and manifest.json into a fresh ``out`` folder."""
    (out / "photos").mkdir(parents=True)
    (out / "clips").mkdir()
    photo_entries = []
    for name, data in sorted(photos.items()):
        rel = f"photos/{name}{photo_ext}"
        (out / rel).write_bytes(data)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        photo_entries.append({"file": rel, "height": img.shape[0], "width": img.shape[1]})
    run_entries = []
    for r in runs:
        files = []
        for j, data in enumerate(r.frames):
            rel = f"clips/{r.clip}/f{r.start + j:04d}.jpg"
            (out / rel).parent.mkdir(exist_ok=True)
            (out / rel).write_bytes(data)
            files.append(rel)
        run_entries.append(
            {
                "clip": r.clip,
                "start": r.start,
                "segment": r.segment,
                "height": r.size[0],
                "width": r.size[1],
                "frames": files,
            }
        )
    manifest = {"version": 1, "settings": settings, "photos": photo_entries, "runs": run_entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="data folder (default: data/)")
    ap.add_argument("--budget-mb", type=float, default=40.0, help="total pack size (MB, 1e6 B)")
    ap.add_argument("--run-len", type=int, default=8, help="frames per clip run (default 8)")
    ap.add_argument("--max-side", type=int, default=1280, help="photo long-side cap (px)")
    ap.add_argument("--clip-factor", type=int, default=2, help="clip downscale factor")
    ap.add_argument("--min-side", type=int, default=96, help="skip clips smaller than this")
    ap.add_argument("--photo-format", choices=("auto", "png", "jpg"), default="auto")
    ap.add_argument(
        "--photo-share", type=float, default=0.55, help="budget share offered to PNG photos"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="pack: %(message)s", stream=sys.stderr)
    t0 = time.perf_counter()

    src_photos = args.data / "train/photos"
    src_clips = args.data / "train/clips"
    photo_paths = sorted(p for p in src_photos.glob("*") if p.suffix.lower() in PHOTO_EXTS)
    clip_paths = sorted(p for p in src_clips.glob("*") if p.suffix.lower() in CLIP_EXTS)
    if not photo_paths:
        log.error("no photos in %s: run `python scripts/fetch_data.py --what train`", src_photos)
        return 1

    budget = int(args.budget_mb * 1e6)
    photos, photo_ext = pack_photos(
        photo_paths,
        budget=int(budget * args.photo_share),
        max_side=args.max_side,
        fmt=args.photo_format,
    )
    photo_bytes = sum(len(b) for b in photos.values())
    per_clip = {
        p.stem: clip_runs(p, factor=args.clip_factor, run_len=args.run_len, min_side=args.min_side)
        for p in clip_paths
    }
    per_clip = {k: v for k, v in per_clip.items() if v}
    clip_budget = budget - photo_bytes - 200_000  # room for the manifest and file-system slack
    runs = choose_runs(per_clip, budget=clip_budget)

    out = args.data / "pack"
    tmp = args.data / "pack.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    settings = {
        "photo_downscale": "max(2, long_side/max_side), INTER_AREA",
        "max_side": args.max_side,
        "photo_format": photo_ext,
        "clip_downscale": args.clip_factor,
        "run_len": args.run_len,
        "jpeg": "q95 4:4:4",
    }
    manifest = write_pack(out=tmp, photos=photos, photo_ext=photo_ext, runs=runs, settings=settings)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)

    total = folder_bytes(out)
    lines = [f"pack written to {out} in {time.perf_counter() - t0:.1f} s"]
    lines.append(f"  photos: {len(manifest['photos'])} ({photo_ext}) {photo_bytes / 1e6:.1f} MB")
    for name, all_runs in per_clip.items():
        mine = [r for r in runs if r.clip == name]
        h, w = all_runs[0].size
        lines.append(
            f"  clip {name}: {len(mine)}/{len(all_runs)} runs x {args.run_len} frames "
            f"{w}x{h}, {sum(r.nbytes for r in mine) / 1e6:.1f} MB"
        )
    lines.append(f"  total: {total / 1e6:.1f} MB ({total / 2**20:.1f} MiB)")
    log.info("%s", "\n".join(lines))
    if total > budget:
        log.warning("pack is %.1f MB, over the %.1f MB budget", total / 1e6, args.budget_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
