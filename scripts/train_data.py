"""Training windows and validation material for the SR model, read from data/.

``WindowSampler`` loads ``data/pack/`` (built by ``scripts/pack_training_set.py``) into memory
once, on the training device, and cuts batches of T-frame windows from it:

* photos become short "videos" through a smooth sub-pixel camera motion (pan, zoom, rotation)
  resampled with ``grid_sample``, so the model sees the aliasing changes that real motion gives
  without the codec noise of real clips; crop positions favour textured regions because many
  wallpapers are mostly bokeh, with a uniform share kept so flat regions are still learnt;
* clip runs give real motion (occlusion, non-rigid movement) that a global warp cannot.

LR frames are the antialiased bicubic downscale of the HR frames, optionally degraded (blur,
noise, JPEG) so the model does not learn to sharpen only pristine input.

``load_val_photos`` and ``load_val_clip_frames`` give the validation material in the same
convention (downscale by 2 first: the sources are lossy). Import this file from training
scripts with ``sys.path.insert(0, "scripts")`` or by path.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "WindowSampler",
    "bicubic_down",
    "list_val_photos",
    "load_val_clip_frames",
    "load_val_photos",
]

log = logging.getLogger(__name__)

_GRAD_CELL = 8  # texture map resolution: mean gradient per 8x8 cell


@dataclass
class _Photo:
    name: str
    pixels: Tensor  # [3, H, W] uint8 RGB, on the sampler's device
    grad_integral: np.ndarray  # [(H//cell)+1, (W//cell)+1] integral of per-cell mean gradient


@dataclass
class _Segment:
    clip: str
    frames: Tensor  # [N, 3, H, W] uint8 RGB, consecutive frames, on the sampler's device
    weight: float


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _grad_integral(rgb: np.ndarray, *, cell: int = _GRAD_CELL) -> np.ndarray:
    """Integral image of the per-cell mean gradient magnitude of the luma.

    Cell averages keep the table small (an 8x coarser grid) while a crop's mean gradient is
    still four look-ups.
    """
    y = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.sqrt(gx * gx + gy * gy)
    hc, wc = mag.shape[0] // cell, mag.shape[1] // cell
    cells = mag[: hc * cell, : wc * cell].reshape(hc, cell, wc, cell).mean(axis=(1, 3))
    integral = np.zeros((hc + 1, wc + 1), np.float64)
    integral[1:, 1:] = cells.cumsum(0).cumsum(1)
    return integral


def _crop_scores(
    integral: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int, *, cell: int = _GRAD_CELL
) -> np.ndarray:
    """Mean gradient of size x size crops at (ys, xs), on the cell grid (cell-rounded)."""
    y0, x0 = ys // cell, xs // cell
    n = max(1, size // cell)
    y1 = np.minimum(y0 + n, integral.shape[0] - 1)
    x1 = np.minimum(x0 + n, integral.shape[1] - 1)
    tot = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return tot / np.maximum((y1 - y0) * (x1 - x0), 1)


def _dihedral(x: Tensor, k: int) -> Tensor:
    """One of the 8 flips/transposes of the last two dims (x's spatial dims must be square)."""
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    if k & 4:
        x = x.transpose(-1, -2)
    return x


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable gaussian blur of [N, C, H, W] with reflect padding."""
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _jpeg(frames: Tensor, quality: int) -> Tensor:
    """JPEG round trip of [N, 3, h, w] RGB in [0,1] through OpenCV (on CPU)."""
    arr = (frames.detach().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
    arr = arr.permute(0, 2, 3, 1).numpy()
    out = np.empty_like(arr)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    for i, f in enumerate(arr):
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]), params)
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    res = torch.from_numpy(out).permute(0, 3, 1, 2).to(frames.device, frames.dtype)
    return res / 255.0


def bicubic_down(hr: Tensor, *, scale: int) -> Tensor:
    """The LR of an HR batch [..., 3, H, W]: antialiased bicubic by 1/scale, clamped to [0,1].

    Antialias matters: without it bicubic downscaling aliases, and the model would learn to
    undo an aliasing that real cameras' optics do not produce.
    """
    lead, (c, h, w) = hr.shape[:-3], hr.shape[-3:]
    x = hr.reshape(-1, c, h, w)
    lr = F.interpolate(
        x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False
    )
    return lr.clamp(0.0, 1.0).reshape(*lead, c, h // scale, w // scale)


class WindowSampler:
    """Batches of (LR, HR) T-frame windows cut from data/pack/, on any device.

    Deterministic for a given seed (all random choices come from one numpy Generator; noise from
    torch Generators seeded from it), given the same pack, batch sizes and call order.
    ``clip_fraction`` and ``degrade`` are plain attributes: change them between calls to switch
    the mix (e.g. a curriculum) without reloading the pack.

    Args (keyword-only):
        pack_dir: the folder written by scripts/pack_training_set.py (data/pack).
        frames: T, frames per window.
        hr_size: HR crop side. For a scale s the HR side is (hr_size // s) * s, so it is exactly
            hr_size when hr_size is divisible by every scale (48, 96, 144, 192 for 2/3/4).
        scales: SR factors to draw from when ``sample`` is not given one.
        device: where the pack and the batches live ("cpu", "cuda", ...).
        seed: random seed.
        degrade: add mild blur (before the downscale), gaussian noise and JPEG to the LR, each
            with probability 1/2 and the same strength over a window; LR is then 8-bit quantized.
        clip_fraction: share of windows taken from real clips (the rest from moving photos).
        max_pan: largest pan speed, HR pixels per frame, per axis.
        max_zoom: largest zoom rate per frame (0.01 = 1 %/frame).
        max_rot_deg: largest rotation rate, degrees per frame.
        uniform_fraction: share of photo crops placed uniformly rather than by texture.
        candidates: crop positions scored per texture-weighted photo crop.
    """

    def __init__(
        self,
        *,
        pack_dir: Path,
        frames: int,
        hr_size: int,
        scales: tuple[int, ...] = (2, 3, 4),
        device: str = "cpu",
        seed: int = 0,
        degrade: bool = False,
        clip_fraction: float = 0.3,
        max_pan: float = 2.0,
        max_zoom: float = 0.01,
        max_rot_deg: float = 0.3,
        uniform_fraction: float = 0.2,
        candidates: int = 8,
    ) -> None:
        if frames < 1 or hr_size < max(scales):
            raise ValueError(
                f"need frames >= 1 and hr_size >= max(scales); got {frames}, {hr_size}"
            )
        self.pack_dir = Path(pack_dir)
        self.frames = frames
        self.hr_size = hr_size
        self.scales = tuple(scales)
        self.device = torch.device(device)
        self.degrade = degrade
        self.clip_fraction = clip_fraction
        self.max_pan = max_pan
        self.max_zoom = max_zoom
        self.max_rot = math.radians(max_rot_deg)
        self.uniform_fraction = uniform_fraction
        self.candidates = candidates
        self.rng = np.random.default_rng(seed)
        self.crop_size = self._photo_crop_size()
        manifest_path = self.pack_dir / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{manifest_path} not found: run scripts/fetch_data.py --what train, then "
                "scripts/pack_training_set.py"
            )
        manifest = json.loads(manifest_path.read_text())
        self.photos = self._load_photos(manifest)
        self.segments = self._load_segments(manifest)
        if not self.photos:
            raise ValueError(f"no photo of {self.pack_dir} holds a {self.crop_size}px crop")
        if clip_fraction > 0 and not self.segments:
            log.warning("no clip segment holds %d frames of %dpx: photos only", frames, hr_size)
        seg_w = np.array([s.weight for s in self.segments], np.float64)
        self._seg_p = seg_w / seg_w.sum() if len(seg_w) else seg_w

    # ---- loading -------------------------------------------------------------------------

    def _photo_crop_size(self) -> int:
        """Side of the square photo crop that every frame's warped view stays inside.

        Frame t (centred so the middle frame, t = 0, is the identity and thus exact) maps its
        output corners to at most s_max * (H/2) * (|cos| + |sin|) + pan_max from the centre;
        +2 px covers the bicubic support. S - H is even so the identity frame samples exactly
        on source pixel centres.
        """
        t_max = self.frames // 2
        pan = self.max_pan * t_max  # |vel * t + acc * t^2 / 2| <= 0.9 * max_pan * t_max
        s_max = (1.0 + self.max_zoom) ** t_max
        rot = min(self.max_rot * t_max, math.pi / 4)
        half = s_max * (self.hr_size / 2) * (math.cos(rot) + math.sin(rot)) + pan + 2.0
        margin = max(0, math.ceil(half - self.hr_size / 2))
        return self.hr_size + 2 * margin

    def _load_photos(self, manifest: dict) -> list[_Photo]:
        photos = []
        for entry in manifest["photos"]:
            rgb = _read_rgb(self.pack_dir / entry["file"])
            if min(rgb.shape[:2]) < self.crop_size:
                log.warning(
                    "photo %s smaller than the %dpx crop: skipped", entry["file"], self.crop_size
                )
                continue
            pixels = torch.from_numpy(rgb).permute(2, 0, 1).contiguous().to(self.device)
            photos.append(_Photo(Path(entry["file"]).stem, pixels, _grad_integral(rgb)))
        return photos

    def _load_segments(self, manifest: dict) -> list[_Segment]:
        """Clip runs, with runs adjacent in time merged back into longer segments."""
        groups: dict[tuple[str, int], list[dict]] = {}
        for run in manifest["runs"]:
            groups.setdefault((run["clip"], run["segment"]), []).append(run)
        segments = []
        for (clip, _), runs in sorted(groups.items()):
            runs.sort(key=lambda r: r["start"])
            merged: list[list[str]] = []
            end = None
            for r in runs:
                if end is not None and r["start"] == end:
                    merged[-1].extend(r["frames"])
                else:
                    merged.append(list(r["frames"]))
                end = r["start"] + len(r["frames"])
            h, w = runs[0]["height"], runs[0]["width"]
            for files in merged:
                if len(files) < self.frames or min(h, w) < self.hr_size:
                    continue
                arr = np.stack([_read_rgb(self.pack_dir / f) for f in files])
                pixels = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous().to(self.device)
                # sqrt(pixels x frames): big clips count more, but do not drown the small ones.
                weight = math.sqrt(h * w * len(files))
                segments.append(_Segment(clip, pixels, weight))
        return segments

    def reseed(self, seed: int) -> None:
        """Restart the random stream: the next batches are those a fresh sampler would give."""
        self.rng = np.random.default_rng(seed)

    def describe(self) -> str:
        """One line on what was loaded, for training logs."""
        n_frames = sum(s.frames.shape[0] for s in self.segments)
        return (
            f"{len(self.photos)} photos, {len(self.segments)} clip segments ({n_frames} frames), "
            f"T={self.frames}, hr={self.hr_size}, photo crop {self.crop_size}px, "
            f"degrade={self.degrade}, on {self.device}"
        )

    # ---- sampling ------------------------------------------------------------------------

    def sample(self, batch: int, *, scale: int | None = None) -> tuple[Tensor, Tensor, int]:
        """A batch ``(lr [B,T,3,h,w], hr [B,T,3,H,W], scale)``, float32 RGB in [0, 1].

        H = (hr_size // scale) * scale and h = H // scale. ``scale`` defaults to a random
        choice among ``scales``.
        """
        if scale is None:
            scale = int(self.rng.choice(self.scales))
        side = (self.hr_size // scale) * scale
        use_clip = (
            self.rng.random(batch) < self.clip_fraction if self.segments else np.zeros(batch, bool)
        )
        hr = torch.empty(batch, self.frames, 3, side, side, device=self.device)
        photo_idx = np.flatnonzero(~use_clip)
        if len(photo_idx):
            hr[torch.as_tensor(photo_idx, device=self.device)] = self._photo_windows(
                len(photo_idx), side
            )
        for b in np.flatnonzero(use_clip):
            hr[b] = self._clip_window(side)
        lr = self._make_lr(hr, scale)
        return lr, hr, scale

    def _photo_windows(self, n: int, side: int) -> Tensor:
        """n photo windows [n, T, 3, side, side] via one grid_sample over all frames."""
        s = self.crop_size - (self.hr_size - side)  # keep S - side even and the margin the same
        crops = torch.stack([self._photo_crop(s) for _ in range(n)]).float() / 255.0
        params = np.stack([self._motion_params() for _ in range(n)])
        grid = self._motion_grid(params, side, s)
        # All T frames stacked vertically in one grid: the crop is not copied T times.
        out = F.grid_sample(
            crops, grid, mode="bicubic", padding_mode="border", align_corners=False
        )  # [n, 3, T*side, side]
        out = out.view(n, 3, self.frames, side, side).permute(0, 2, 1, 3, 4)
        return out.clamp(0.0, 1.0)

    def _photo_crop(self, s: int) -> Tensor:
        """An s x s uint8 crop of a random photo, randomly flipped/transposed.

        Placed uniformly with probability ``uniform_fraction``; otherwise the best-textured of
        ``candidates`` random positions is favoured (probability ~ mean gradient squared), since
        many wallpapers are mostly smooth and would otherwise fill batches with flat patches.
        """
        photo = self.photos[int(self.rng.integers(len(self.photos)))]
        _, h, w = photo.pixels.shape
        if self.rng.random() < self.uniform_fraction:
            y, x = int(self.rng.integers(h - s + 1)), int(self.rng.integers(w - s + 1))
        else:
            ys = self.rng.integers(h - s + 1, size=self.candidates)
            xs = self.rng.integers(w - s + 1, size=self.candidates)
            # Squared: with a linear weight a third of the crops still came out flat.
            score = _crop_scores(photo.grad_integral, ys, xs, s) ** 2 + 1e-3
            k = int(self.rng.choice(self.candidates, p=score / score.sum()))
            y, x = int(ys[k]), int(xs[k])
        crop = photo.pixels[:, y : y + s, x : x + s]
        return _dihedral(crop, int(self.rng.integers(8)))

    def _motion_params(self) -> np.ndarray:
        """[T, 4] per-frame (zoom*cos, zoom*sin, pan_x, pan_y) of a smooth random camera motion.

        Frame t (centred on the middle frame) samples the crop at
        ``zoom(t) * R(angle(t)) @ p + pan(t)``: constant zoom and rotation rates and a pan with a
        velocity plus a small acceleration (speed stays <= max_pan), all sub-pixel and smooth.
        """
        rng = self.rng
        t_max = max(1, self.frames // 2)
        t = np.arange(self.frames, dtype=np.float64) - self.frames // 2
        vel = rng.uniform(-0.8, 0.8, 2) * self.max_pan
        acc = rng.uniform(-0.2, 0.2, 2) * self.max_pan / t_max
        pan = vel[None] * t[:, None] + 0.5 * acc[None] * t[:, None] ** 2  # [T, 2] (x, y)
        zoom = (1.0 + rng.uniform(-self.max_zoom, self.max_zoom)) ** t
        ang = rng.uniform(-self.max_rot, self.max_rot) * t
        return np.stack([zoom * np.cos(ang), zoom * np.sin(ang), pan[:, 0], pan[:, 1]], axis=1)

    def _motion_grid(self, params: np.ndarray, side: int, s: int) -> Tensor:
        """grid_sample grid [n, T*side, side, 2], built on the device from [n, T, 4] params."""
        n = params.shape[0]
        prm = torch.from_numpy(params).to(self.device, torch.float32)[..., None, None]
        c = torch.arange(side, device=self.device, dtype=torch.float32) - (side - 1) / 2
        v, u = torch.meshgrid(c, c, indexing="ij")  # output pixel offsets from the centre
        a, b, px, py = prm.unbind(2)  # each [n, T, 1, 1]
        x = a * u - b * v + px
        y = b * u + a * v + py
        # align_corners=False: normalised = 2 * (offset from crop centre) / s.
        grid = torch.stack([x * (2.0 / s), y * (2.0 / s)], dim=-1)  # [n, T, side, side, 2]
        return grid.reshape(n, self.frames * side, side, 2)

    def _clip_window(self, side: int) -> Tensor:
        """T consecutive frames of a real clip, random crop, flips and time direction."""
        seg = self.segments[int(self.rng.choice(len(self.segments), p=self._seg_p))]
        n, _, h, w = seg.frames.shape
        t0 = int(self.rng.integers(n - self.frames + 1))
        y, x = int(self.rng.integers(h - side + 1)), int(self.rng.integers(w - side + 1))
        win = seg.frames[t0 : t0 + self.frames, :, y : y + side, x : x + side]
        if self.rng.random() < 0.5:
            win = win.flip(0)
        return _dihedral(win, int(self.rng.integers(8))).float() / 255.0

    def _make_lr(self, hr: Tensor, scale: int) -> Tensor:
        """LR of each window; with ``degrade``, per-window blur/noise/JPEG and 8-bit output."""
        if not self.degrade:
            return bicubic_down(hr, scale=scale)
        out = []
        for win in hr:  # [T, 3, H, W]; one strength per window, as a camera/codec would give
            x = win
            if self.rng.random() < 0.5:
                x = _gaussian_blur(x, float(self.rng.uniform(0.3, 1.0)))
            x = bicubic_down(x, scale=scale)
            if self.rng.random() < 0.5:
                gen = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
                sigma = float(self.rng.uniform(0.002, 0.015))
                noise = torch.randn(x.shape, generator=gen) * sigma
                x = (x + noise.to(x.device)).clamp(0.0, 1.0)
            if self.rng.random() < 0.5:
                x = _jpeg(x, int(self.rng.integers(60, 96)))
            else:
                x = (x * 255.0).round() / 255.0
            out.append(x)
        return torch.stack(out)


# ---- validation material -------------------------------------------------------------------


def list_val_photos(root: Path) -> list[Path]:
    """The validation photos under ``root`` (data/val/photos), sorted by name."""
    paths = sorted(p for p in Path(root).iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not paths:
        raise FileNotFoundError(f"no photos in {root}: run scripts/fetch_data.py --what val")
    return paths


def load_val_photos(root: Path, *, crop: int = 512) -> list[np.ndarray]:
    """Validation photos as uint8 HxWx3 RGB: downscaled by 2 (INTER_AREA), centre crop x crop.

    The downscale averages out the JPEG noise of the originals, as for the training photos, so
    the ground truth is clean. Order is that of ``list_val_photos``.
    """
    out = []
    for path in list_val_photos(root):
        rgb = _read_rgb(path)
        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        out.append(_center_crop(small, crop, crop, name=path.name))
    return out


def _center_crop(img: np.ndarray, ch: int, cw: int, *, name: str) -> np.ndarray:
    h, w = img.shape[:2]
    if h < ch or w < cw:
        raise ValueError(f"{name}: {w}x{h} is smaller than the {cw}x{ch} crop")
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y : y + ch, x : x + cw])


def load_val_clip_frames(
    path: Path, *, max_frames: int, downscale: int = 2, multiple: int = 48
) -> np.ndarray:
    """Up to ``max_frames`` frames of a clip as [N, H, W, 3] uint8 RGB.

    Frames are area-downscaled by ``downscale`` (the clips are lossy: the downscale gives a
    cleaner ground truth), then centre-cropped so H and W are multiples of ``multiple`` (48 =
    lcm of the x2/x3/x4 scales and 8/16-pixel token grids), e.g. cockatoo 1280x720 -> 624x336.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open clip {path}")
    frames = []
    while len(frames) < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        if downscale > 1:
            h, w = bgr.shape[:2]
            bgr = cv2.resize(bgr, (w // downscale, h // downscale), interpolation=cv2.INTER_AREA)
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise ValueError(f"no frames decoded from {path}")
    h, w = frames[0].shape[:2]
    ch, cw = (h // multiple) * multiple, (w // multiple) * multiple
    if ch == 0 or cw == 0:
        raise ValueError(f"{path.name}: {w}x{h} frames are smaller than {multiple} px")
    return np.stack([_center_crop(f, ch, cw, name=path.name) for f in frames])
