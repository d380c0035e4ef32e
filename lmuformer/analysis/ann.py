"""The ANN baseline: dense MACs of the same architecture's non-spiking version.

Counted per frame on :class:`lmuformer.model.LMUFormer` built with ``variant="ann"`` (and, as
the reference's non-spiking model and the ``*-ann`` presets, an LMU memory of order ``dim``):
a kernel-3 convolution costs ``3 x Cin x Cout``, a linear layer ``in x out``, the LMU memory
recurrence ``d x d + d``; BatchNorm (foldable), activations and biases are not counted.  Times
the frames of one sample, times E_MAC of the ``45nm`` profile (4.6 pJ): the paper's convention.
For the SCv2 preset this gives ~215 M MACs per 128-frame sample, as the paper's count.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from lmuformer.analysis.profiles import BUILTIN
from lmuformer.model import ModelConfig, build_model
from lmuformer.model.layers import CausalConv3, LMUMemory


def ann_config(cfg: ModelConfig | dict, memory_size: int | None = None) -> ModelConfig:
    """The non-spiking twin of ``cfg`` (memory order = dim unless given)."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    return replace(cfg, variant="ann", memory_size=memory_size or cfg.dim)


def ann_macs_per_frame(cfg: ModelConfig | dict, memory_size: int | None = None) -> list[dict]:
    """[{name, macs}] per frame, one entry per MAC-bearing module, in model order."""
    model = build_model(ann_config(cfg, memory_size))
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, CausalConv3):
            rows.append({"name": name, "macs": int(m.weight.numel())})
        elif isinstance(m, nn.Linear):
            rows.append({"name": name, "macs": int(m.in_features * m.out_features)})
        elif isinstance(m, LMUMemory):
            d = int(m.A.shape[0])
            rows.append({"name": name, "macs": d * d + d})
    return rows


def ann_baseline(cfg: ModelConfig | dict, frames: int, spiking_energy_j: float | None = None,
                 memory_size: int | None = None) -> dict:
    """MACs and 45 nm energy of the ANN for ``frames`` frames, and its ratio to ``spiking_energy_j``."""
    rows = ann_macs_per_frame(cfg, memory_size)
    per_frame = sum(r["macs"] for r in rows)
    macs = per_frame * frames
    e_mac = BUILTIN["45nm"].mac_j
    energy = macs * e_mac
    ann_cfg = ann_config(cfg, memory_size)
    return {
        "variant": "ann",
        "memory_size": ann_cfg.memory_size,
        "frames": int(frames),
        "macs_per_frame": per_frame,
        "macs": macs,
        "layers": [{**r, "macs": r["macs"] * frames} for r in rows],
        "e_mac_j": e_mac,
        "energy_j": energy,
        "spiking_energy_45nm_j": spiking_energy_j,
        "ratio": energy / spiking_energy_j if spiking_energy_j else None,
        "source": BUILTIN["45nm"].source,
    }
