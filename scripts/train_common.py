"""Pieces the training and evaluation scripts share: a batch of windows as one token set.

B windows of T frames are packed into one token set by offsetting each window's frame
coordinate by ``FRAME_GAP`` * b: no attention window (regular or shifted) can then span two
samples, rotary positions only see differences, and the model runs exactly as at inference.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vs_skipsr.models.mask import gradient_energy, laplacian_energy, token_scores
from vs_skipsr.models.sr import SRConfig
from vs_skipsr.pipeline import upsample
from vs_skipsr.tokens import Partition, gather_patches, patchify, token_coords, window_partitions

FRAME_GAP = 64


@dataclass
class TokenBatch:
    base: Tensor  # [K, 3(p+2 halo)²] kept tokens of the bicubic base, with their halo
    target: Tensor  # [K, 3p²] HR - base on kept tokens
    coords: Tensor  # [K, 3]
    sample: Tensor  # [K] which window each token came from
    parts: tuple[Partition, Partition]
    keep: Tensor  # [B, T, Hp, Wp] bool
    base_frames: Tensor  # [B, T, 3, H, W]


def make_batch(
    lr: Tensor, hr: Tensor, *, scale: int, cfg: SRConfig, keep: Tensor | None
) -> TokenBatch:
    """lr [B,T,3,h,w], hr [B,T,3,H,W] (H, W multiples of the patch) -> kept tokens of all B."""
    b, t = lr.shape[:2]
    p = cfg.patch
    base = upsample(lr.flatten(0, 1), scale=scale)  # [B*T, 3, H, W]
    assert base.shape[-2] % p == 0 and base.shape[-1] % p == 0, "crop HR to whole tokens"
    hp, wp = base.shape[-2] // p, base.shape[-1] // p
    grid = (b * FRAME_GAP, hp, wp)
    base_tok = patchify(base, patch=p).reshape(b, t * hp * wp, -1)  # [B, N, 3p²]
    hr_tok = patchify(hr.flatten(0, 1), patch=p).reshape(b, t * hp * wp, -1)
    if keep is None:
        keep = torch.ones(b, t, hp, wp, dtype=torch.bool, device=lr.device)
    flat = keep.reshape(b, -1)
    bi, ni = torch.nonzero(flat, as_tuple=True)  # [K] each
    local = token_coords(ni, grid=(t, hp, wp))  # [K, 3]
    coords = local.clone()
    coords[:, 0] += bi * FRAME_GAP
    parts = window_partitions(coords, grid=grid, window=cfg.window, shift=cfg.shift)
    base_k = base_tok[bi, ni]
    net_base = base_k
    if cfg.halo:
        at = local.clone()
        at[:, 0] += bi * t  # the frame of base [B*T]
        net_base = gather_patches(base, at, patch=p, halo=cfg.halo)
    return TokenBatch(
        base=net_base,
        target=hr_tok[bi, ni] - base_k,
        coords=coords,
        sample=bi,
        parts=parts,  # type: ignore[arg-type]
        keep=keep,
        base_frames=base.reshape(b, t, *base.shape[1:]),
    )


@torch.no_grad()
def one_step_all_tokens(model, lr: Tensor, hr: Tensor, *, scale: int) -> tuple[TokenBatch, Tensor]:
    """The SR net's one-step residual estimate [K, 3p²] on every token of a batch (fixed noise
    seed, bf16 autocast on CUDA), with the batch it ran on."""
    cfg = model.config
    batch = make_batch(lr, hr, scale=scale, cfg=cfg, keep=None)
    g = torch.Generator(device=lr.device).manual_seed(0)
    noise = torch.randn(batch.target.shape, generator=g, device=lr.device) * cfg.noise_std
    t = torch.ones(1, device=lr.device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=lr.is_cuda):
        v = model(batch.base, noise, batch.coords, t, batch.parts[0].part, batch.parts[1].part)
    return batch, noise - v.float()  # one Euler step from t = 1


def training_keep(
    lr: Tensor,
    *,
    scale: int,
    patch: int,
    generator: torch.Generator,
    rankings: Literal["gradient", "both"] = "gradient",
) -> Tensor:
    """Keep sets like the ones inference makes: for each window either all tokens (30%) or the
    top fraction f ~ U(0.15, 0.9) of a jittered score, so the SR net learns to work with
    textured regions whose flat neighbours were dropped.

    ``rankings``: "gradient" scores every window by the gradient energy (the default scorer;
    the shipped weights were trained so, and this draws the same random numbers as then);
    "both" picks the gradient or the Laplacian energy (the shipped learned mask) at equal odds
    per window, so the net also meets the learned mask's keep sets, whose real runs lose
    quality in partly skipped attention windows (reports/MEASUREMENTS.md, mask gap). The one
    fine-tune with "both" (twelfth session) did not close that gap."""
    if rankings not in ("gradient", "both"):
        raise ValueError(f"rankings={rankings!r}: expected 'gradient' or 'both'")
    b, t, _, h, w = lr.shape
    hp, wp = h * scale // patch, w * scale // patch
    frames = lr.flatten(0, 1)
    dev = lr.device
    if rankings == "both":
        use_lap = torch.rand(b, generator=generator, device=dev) < 0.5
        emaps = torch.where(
            use_lap.repeat_interleave(t)[:, None, None, None],
            laplacian_energy(frames),
            gradient_energy(frames),
        )  # [B*T, 1, h, w]
    else:
        emaps = gradient_energy(frames)
    scores = token_scores(emaps, scale=scale, patch=patch, grid=(hp, wp)).reshape(b, -1)
    u = torch.rand(b, 2, generator=generator, device=dev)
    jitter = torch.rand(scores.shape, generator=generator, device=dev)
    ranks = scores.argsort(dim=1).argsort(dim=1).float() / scores.shape[1]  # [B, N] in [0, 1)
    mixed = 0.7 * ranks + 0.3 * jitter
    keep = torch.ones_like(scores, dtype=torch.bool)
    for i in range(b):
        if u[i, 0] < 0.3:
            continue
        frac = 0.15 + 0.75 * float(u[i, 1])
        n_keep = max(1, round(frac * scores.shape[1]))
        keep[i] = False
        keep[i, torch.topk(mixed[i], n_keep).indices] = True
    return keep.reshape(b, t, hp, wp)


@dataclass
class Distributed:
    """Data-parallel training under torchrun (NCCL on GPUs, gloo on the CPU), or one
    process. Only what the training loop needs: the device, a wrapped model, and one clock."""

    rank: int
    world: int
    device: torch.device

    @classmethod
    def from_env(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        if world > 1:
            cuda = device.type == "cuda"
            torch.distributed.init_process_group(
                "nccl" if cuda else "gloo", device_id=device if cuda else None
            )
        return cls(rank=rank, world=world, device=device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, net: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return net
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # the head's convs run channels-last, so their weight gradients come out so: weights
        # in that layout let DDP's buckets match them (else torch warns that the mismatch may
        # impair performance)
        net = net.to(memory_format=torch.channels_last)
        return DistributedDataParallel(net, device_ids=ids)

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks (each rank's own where there is one)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return float(t)

    def close(self) -> None:
        if self.world > 1:
            torch.distributed.destroy_process_group()


def cosine_lr(base_lr: float, progress: float, warmup: float = 0.03) -> float:
    """Linear warm-up then cosine decay to 5%, on the fraction of the (time) budget spent."""
    if progress < warmup:
        return base_lr * progress / warmup
    q = (progress - warmup) / (1 - warmup)
    return base_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(q, 1.0))))


def psnr(a: Tensor, b: Tensor) -> float:
    mse = torch.mean((a.float() - b.float()) ** 2).clamp_min(1e-12)
    return float(10 * torch.log10(1.0 / mse))


class CurveLog:
    """Loss curve as JSON lines (survives interruption), plus a PNG at the end."""

    def __init__(self, path: Path, *, append: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.f = path.open("a" if append else "w")
        self.t0 = time.time()

    def log(self, **row: float) -> None:
        row["wall_s"] = round(time.time() - self.t0, 2)
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()

    def plot(self, png: Path, keys: tuple[str, ...]) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        rows = [json.loads(x) for x in self.path.read_text().splitlines() if x.strip()]
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5))
        for ax, k in zip(axes if len(keys) > 1 else [axes], keys, strict=True):
            pts = [(r["step"], r[k]) for r in rows if k in r]
            if pts:
                ax.plot(*zip(*pts, strict=True))
            ax.set_xlabel("step")
            ax.set_title(k)
            if k.startswith("loss"):
                ax.set_yscale("log")
        fig.tight_layout()
        fig.savefig(png, dpi=90)
        plt.close(fig)


class StageTimer:
    """Where a training step's time goes, over a few steps (syncing CUDA only then)."""

    def __init__(self, device: torch.device, *, steps: range) -> None:
        self.device, self.steps = device, steps
        self.totals: dict[str, float] = {}
        self.active = False
        self.t = 0.0

    def start(self, step: int) -> None:
        was = self.active
        self.active = step in self.steps
        if was and not self.active:
            n = len(self.steps)
            parts = ", ".join(f"{k} {1e3 * v / n:.1f} ms" for k, v in self.totals.items())
            print(f"step time over {n} steps: {parts}", file=sys.stderr, flush=True)
        if self.active:
            self._sync()
            self.t = time.perf_counter()

    def mark(self, name: str) -> None:
        if self.active:
            self._sync()
            now = time.perf_counter()
            self.totals[name] = self.totals.get(name, 0.0) + now - self.t
            self.t = now

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
