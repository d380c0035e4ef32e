"""Model configurations and named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

Variant = Literal["spiking", "ann"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one LMUFormer (reference: ``slmu_rnn_ms_conv1d`` / ``lmu_rnn_conv1d``).

    in_features: features per frame (mel bins, pixels per row); frames: nominal sequence
    length in frames (steps); dim: embedding channels; memory_size: LMU order d;
    theta: LMU window in frames; mlp_ratio: channel-mixer expansion; depth: LMU blocks.
    """

    variant: Variant = "spiking"
    in_features: int = 128
    frames: int = 128
    num_classes: int = 35
    dim: int = 256
    memory_size: int = 512
    theta: float = 128.0
    mlp_ratio: int = 4
    depth: int = 1
    u_threshold: float = 0.5  # threshold of the neuron before the LMU cell

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)

    def with_overrides(self, **overrides: Any) -> ModelConfig:
        return replace(self, **overrides)


def _pair(name: str, spiking: ModelConfig) -> dict[str, ModelConfig]:
    """A spiking preset and its non-spiking twin (memory = dim, as the reference)."""
    ann = replace(spiking, variant="ann", memory_size=spiking.dim)
    return {name: spiking, f"{name}-ann": ann}


PRESETS: dict[str, ModelConfig] = {
    # Speech Commands V2: 128 mel bins x 128 frames, 35 classes (the paper's model).
    **_pair("scv2", ModelConfig()),
    # Permuted sequential MNIST: one pixel per step, 784 steps.
    **_pair(
        "psmnist",
        ModelConfig(in_features=1, frames=784, num_classes=10, dim=128, memory_size=256,
                    theta=784.0),
    ),
    # The embedded default: scikit-learn digits, one 8-pixel row per step.
    **_pair(
        "digits",
        ModelConfig(in_features=8, frames=8, num_classes=10, dim=64, memory_size=128, theta=8.0),
    ),
    # Smallest model, for tests.
    **_pair(
        "tiny",
        ModelConfig(in_features=8, frames=8, num_classes=10, dim=16, memory_size=32, theta=8.0,
                    mlp_ratio=2),
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset, with field overrides (e.g. ``num_classes=12``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}")
    return PRESETS[name].with_overrides(**overrides)
