"""The mask predictor: which tokens are worth the SR transformer.

Both scorers read only the LR frames and give a score map at LR resolution [T, 1, h, w]:
- :class:`MaskNet`, a light CNN trained to rank tokens by the SR net's gain over the base
  upsample (labels come from the trained SR net; see scripts/train_mask.py), on top of the
  LR's Laplacian energy (:func:`laplacian_energy`), which it starts as;
- :func:`gradient_energy`, the no-training fallback and baseline: local gradient energy of
  the LR luma (textured regions gain most from SR).
:func:`token_scores` pools either map onto the token grid; :func:`keep_by_threshold` and
:func:`keep_by_ratio` turn scores into a keep set, optionally dilated by one token so a kept
region carries a margin of context.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MASK_PRESETS",
    "MaskConfig",
    "MaskNet",
    "dilate_keep",
    "gradient_energy",
    "keep_by_ratio",
    "keep_by_threshold",
    "laplacian_energy",
    "token_scores",
]


@dataclass(frozen=True, kw_only=True)
class MaskConfig:
    width: int = 32
    depth: int = 4
    # "gradient": the map is the gradient-energy heuristic times a learned factor,
    # 10 ** (b + convs) * energy ** (a - 1), with a = 1 and b = convs = 0 at initialisation, so
    # a fresh net ranks exactly like the heuristic and training starts from it. The map stays
    # linear (a predicted per-pixel MSE gain) because tokens average it: a mean of logs
    # under-weights a token's few textured pixels and ranked worse than the heuristic.
    # "laplacian": the same on the Laplacian energy (laplacian_energy), which ranks tokens by
    # the SR net's gain better than the gradient energy: on scripts/train_mask.py's 32
    # held-out windows it loses 0.111 of the shipped SR net's gain at skips 0.3/0.5/0.7 where
    # the gradient energy loses 0.129 (the oracle 0.068).
    # "none": the convs alone, in log10 units (weights saved before the prior).
    prior: str = "none"
    # "replicate" keeps frame borders from reading as edges; "zeros" for older weights
    padding_mode: str = "zeros"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> MaskConfig:
        return cls(**d)  # type: ignore[arg-type]


MASK_PRESETS: dict[str, MaskConfig] = {
    # what scripts/train_mask.py trains and ships
    "default": MaskConfig(prior="laplacian", padding_mode="replicate"),
}


class MaskNet(nn.Module):
    """A few 3x3 convs on the LR frame (and its neighbours' difference, for motion), on top
    of an energy prior (``config.prior``: the gradient or the Laplacian energy)."""

    PRIOR_FLOOR = 1e-5  # the energy is floored here (flat areas) before the log
    MAX_LOG_FACTOR = 6.0  # the learned factor stays within 10 ** +-6

    def __init__(self, config: MaskConfig) -> None:
        super().__init__()
        if config.prior not in ("none", "gradient", "laplacian"):
            raise ValueError(
                f"MaskConfig prior={config.prior!r}: expected 'none', 'gradient' or 'laplacian'"
            )
        if config.padding_mode not in ("zeros", "replicate"):
            raise ValueError(
                f"MaskConfig padding_mode={config.padding_mode!r}: expected 'zeros' or 'replicate'"
            )
        self.config = config
        w, pm = config.width, config.padding_mode

        def conv(cin: int, cout: int, dilation: int = 1) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, padding_mode=pm)

        layers: list[nn.Module] = [conv(6, w), nn.SiLU()]
        for i in range(config.depth - 2):
            layers += [conv(w, w, 1 + i % 2), nn.SiLU()]
        layers.append(conv(w, 1))
        self.net = nn.Sequential(*layers)
        if config.prior != "none":
            # score = 10 ** (a * log10(energy) + b + convs); a, b start as the identity
            self.prior_affine = nn.Parameter(torch.tensor([1.0, 0.0]))
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)

    def forward(self, lr: Tensor) -> Tensor:
        """lr [T, 3, h, w] in [0, 1] -> score map [T, 1, h, w] (higher = more SR gain)."""
        prev = torch.cat((lr[:1], lr[:-1]), dim=0)  # [T, 3, h, w], frame 0 repeats itself
        x = torch.cat((lr - 0.5, lr - prev), dim=1)  # [T, 6, h, w]
        out = self.net(x)
        if self.config.prior != "none":
            prior = gradient_energy if self.config.prior == "gradient" else laplacian_energy
            energy = prior(lr.float()).clamp_min(self.PRIOR_FLOOR)
            a, b = self.prior_affine.unbind()
            m = self.MAX_LOG_FACTOR
            log_score = a * torch.log10(energy) + b + out.float().clamp(-m, m)
            out = torch.pow(10.0, log_score).to(out.dtype)
        return out


@lru_cache(maxsize=8)
def _luma_weights(dtype: torch.dtype, device: torch.device) -> Tensor:
    """Made once per device and dtype: built from a list each window it was a pageable copy
    to the device, which a CUDA graph of the window's first steps cannot hold. A normal
    tensor even when first asked for under inference mode, so training can use it too."""
    with torch.inference_mode(False):
        w = torch.tensor([0.299, 0.587, 0.114], dtype=dtype, device=device)
    return w[None, :, None, None]


def _luma(lr: Tensor) -> Tensor:
    """BT.601 luma of RGB frames: [T,3,h,w] -> [T,1,h,w]."""
    return (lr * _luma_weights(lr.dtype, lr.device)).sum(dim=1, keepdim=True)


def _mean3x3(x: Tensor) -> Tensor:
    """Mean over each pixel's 3x3 neighbourhood (inside the frame)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def gradient_energy(lr: Tensor) -> Tensor:
    """Mean squared gradient of BT.601 luma over a 3x3 neighbourhood: [T,3,h,w] -> [T,1,h,w]."""
    yp = F.pad(_luma(lr), (0, 1, 0, 1), mode="replicate")
    gx = yp[..., :-1, 1:] - yp[..., :-1, :-1]
    gy = yp[..., 1:, :-1] - yp[..., :-1, :-1]
    return _mean3x3(gx * gx + gy * gy)


def laplacian_energy(lr: Tensor) -> Tensor:
    """Mean squared 4-neighbour Laplacian of BT.601 luma over a 3x3 neighbourhood:
    [T,3,h,w] -> [T,1,h,w]. Curvature rather than slope: a ramp that bicubic already
    reproduces scores nothing, an edge or a fine line does."""
    lap = _laplacian(_luma(lr))
    return _mean3x3(lap * lap)


def _laplacian(y: Tensor) -> Tensor:
    """4-neighbour Laplacian of [T, 1, h, w], the border replicated."""
    yp = F.pad(y, (1, 1, 1, 1), mode="replicate")
    return yp[..., :-2, 1:-1] + yp[..., 2:, 1:-1] + yp[..., 1:-1, :-2] + yp[..., 1:-1, 2:] - 4 * y


def token_scores(score_map: Tensor, *, scale: int, patch: int, grid: tuple[int, int]) -> Tensor:
    """Average an LR score map over each token's footprint: [T,1,h,w] -> [T, Hp, Wp].

    A token covers patch/scale LR pixels (fractional for scale 3), so the map is first
    repeated to output resolution and padded like the frames, then averaged per p x p patch.
    """
    hp, wp = grid
    hr = F.interpolate(score_map.float(), scale_factor=scale, mode="nearest")  # [T,1,H,W]
    ph, pw = hp * patch - hr.shape[-2], wp * patch - hr.shape[-1]
    if ph or pw:
        hr = F.pad(hr, (0, pw, 0, ph), mode="replicate")
    return F.avg_pool2d(hr, patch)[:, 0]  # [T, Hp, Wp]


def keep_by_threshold(scores: Tensor, *, threshold: float) -> Tensor:
    """Keep tokens scoring above ``threshold``: [T, Hp, Wp] -> bool."""
    return scores > threshold


def keep_by_ratio(scores: Tensor, *, skip_ratio: float) -> Tensor:
    """Skip the ``skip_ratio`` fraction of lowest-scoring tokens of the window (ties by order)."""
    n = scores.numel()
    n_keep = n - round(skip_ratio * n)
    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if n_keep > 0:
        # index_fill_, not keep[i] = True: that copies a CPU scalar, which a CUDA graph of
        # the window's first steps cannot hold
        keep.index_fill_(0, torch.topk(scores.reshape(-1), n_keep, sorted=False).indices, True)
    return keep.reshape(scores.shape)


def dilate_keep(keep: Tensor, *, radius: int = 1) -> Tensor:
    """Grow the kept set by ``radius`` tokens in y and x (per frame)."""
    if radius <= 0:
        return keep
    k = 2 * radius + 1
    grown = F.max_pool2d(keep[:, None].float(), k, stride=1, padding=radius)
    return grown[:, 0] > 0
