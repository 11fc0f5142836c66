"""Saving and loading model weights as safetensors, with the config in the file's metadata.

A weights file is self-describing (kind + config JSON), so a user can point ``skipsr()`` at
any trained file; loading checks names and shapes and says exactly what does not match
instead of failing later inside a matmul.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .mask import MaskConfig, MaskNet
from .sr import SRConfig, SRTransformer

__all__ = [
    "DEFAULT_MASK_WEIGHTS",
    "DEFAULT_SR_WEIGHTS",
    "WeightsError",
    "load_mask",
    "load_sr",
    "save_weights",
]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_SR_WEIGHTS = WEIGHTS_DIR / "sr_default.safetensors"
DEFAULT_MASK_WEIGHTS = WEIGHTS_DIR / "mask_default.safetensors"


class WeightsError(ValueError):
    """A weights file that is missing, of the wrong kind, or does not fit its config."""


def save_weights(
    model: SRTransformer | MaskNet,
    path: Path,
    *,
    extra: dict[str, str] | None = None,
    half: bool = False,
) -> None:
    """Write the weights plus {kind, config, extra} metadata; atomic via a temp file.

    ``half`` stores float16 (half the bytes, what lets the shipped pair stay under the repo's
    25 MB); loading always gives float32. fp16 rather than bf16: weights are small numbers,
    where fp16's 10 mantissa bits beat bf16's 7."""
    kind = "sr" if isinstance(model, SRTransformer) else "mask"
    meta = {"kind": kind, "config": json.dumps(model.config.to_dict())}
    meta.update(extra or {})
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to(dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def _read(path: Path, kind: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise WeightsError(f"{kind} weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except Exception as e:  # safetensors raises its own error types for truncated files
        raise WeightsError(f"{path} is not a readable safetensors file: {e}") from e
    if meta.get("kind") != kind:
        raise WeightsError(f"{path} holds kind={meta.get('kind')!r} weights, expected {kind!r}")
    if "config" not in meta:
        raise WeightsError(f"{path} has no 'config' in its metadata")
    return meta, tensors


def _fill(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    want = model.state_dict()
    missing = sorted(set(want) - set(tensors))
    unexpected = sorted(set(tensors) - set(want))
    wrong = sorted(
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(want[k].shape)}"
        for k in set(want) & set(tensors)
        if tensors[k].shape != want[k].shape
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:5]}")
        raise WeightsError(f"{path} does not fit its config: " + "; ".join(parts))
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)


def load_sr(path: Path | None = None) -> SRTransformer:
    """The SR net from ``path`` (default: the shipped weights), in eval mode, fp32, on CPU."""
    path = DEFAULT_SR_WEIGHTS if path is None else Path(path)
    meta, tensors = _read(path, "sr")
    model = SRTransformer(SRConfig.from_dict(json.loads(meta["config"])))
    _fill(model, tensors, path)
    return model.eval()


def load_mask(path: Path | None = None) -> MaskNet:
    """The mask net from ``path`` (default: the shipped weights), in eval mode, fp32, on CPU."""
    path = DEFAULT_MASK_WEIGHTS if path is None else Path(path)
    meta, tensors = _read(path, "mask")
    model = MaskNet(MaskConfig.from_dict(json.loads(meta["config"])))
    _fill(model, tensors, path)
    return model.eval()
