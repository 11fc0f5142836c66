"""The two networks of SkipSR: the SR transformer and the mask predictor."""

from .mask import MaskConfig, MaskNet
from .sr import PRESETS, SRConfig, SRTransformer, random_sr

__all__ = ["PRESETS", "MaskConfig", "MaskNet", "SRConfig", "SRTransformer", "random_sr"]
