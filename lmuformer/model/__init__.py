"""LMUFormer models (spiking and non-spiking) and their presets."""

from lmuformer.model.config import PRESETS, ModelConfig, preset
from lmuformer.model.lmuformer import LMUFormer

__all__ = ["PRESETS", "LMUFormer", "ModelConfig", "build_model", "preset"]


def build_model(name: str | ModelConfig, **overrides) -> LMUFormer:
    """A randomly initialised LMUFormer from a preset name (or a config) and overrides."""
    cfg = name.with_overrides(**overrides) if isinstance(name, ModelConfig) else preset(name, **overrides)
    return LMUFormer(cfg)
