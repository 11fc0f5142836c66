"""The two networks of SkipSR: the SR transformer and the mask predictor."""

from .mask import MASK_PRESETS, MaskConfig, MaskNet
from .sr import PRESETS, SRConfig, SRTransformer, random_sr

__all__ = [
    "MASK_PRESETS",
    "PRESETS",
    "MaskConfig",
    "MaskNet",
    "SRConfig",
    "SRTransformer",
    "random_sr",
]
