"""lmuformer: train, export to NIR, simulate on Lava and report the Spiking LMUFormer."""

from lmuformer.model import PRESETS, LMUFormer, ModelConfig, build_model, preset

__all__ = ["PRESETS", "LMUFormer", "ModelConfig", "build_model", "preset"]
__version__ = "0.1.0"
