"""Seeded, batch-norm-calibrated presets: reproducible exports that spike in every layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lmuformer.model.calibrate import calibrated_preset
from lmuformer.model.layers import LIF


def _rates(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Spike rate (spikes per neuron per step) of every LIF population of ``model`` on ``x``."""
    rates: dict[str, float] = {}
    def hook(name: str):
        return lambda mod, inp, out: rates.__setitem__(name, float(out.mean()))

    hooks = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if isinstance(m, LIF)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rates


def test_calibrated_preset_spikes_in_every_layer() -> None:
    model = calibrated_preset("digits", seed=0)
    x = torch.randn(32, 8, 8, generator=torch.Generator().manual_seed(123))  # not the calibration batch
    rates = _rates(model, x)
    assert len(rates) == 11  # patch embedding 4, LMU mixer 4 (pre, u, m, h), channel mixer 2, head 1
    quiet = {k: r for k, r in rates.items() if not 0.005 <= r <= 0.5}  # uncalibrated: 0 beyond stage 0
    assert not quiet, f"layers outside 0.5..50 % spikes per step: {quiet}"
    assert model.calibration["seed"] == 0 and not model.training


def test_calibrated_preset_is_reproducible() -> None:
    a, b, c = (calibrated_preset("tiny", seed=s).state_dict() for s in (5, 5, 6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    rng_before = torch.get_rng_state()
    calibrated_preset("tiny", seed=5)
    assert torch.equal(torch.get_rng_state(), rng_before), "the global RNG is left alone"


def test_export_preset_seeded(tmp_path: Path) -> None:
    from export.io import read_graph
    from lmuformer.jobs.export import export_model

    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        export_model(preset_name="tiny", output=str(tmp_path / f"{name}.nir"), seed=seed)
    a, b, c = (read_graph(tmp_path / f"{n}.nir") for n in "abc")
    assert json.loads(a.metadata["calibration"])["seed"] == 1
    same = all(np.array_equal(getattr(a.nodes[k], "weight", 0), getattr(b.nodes[k], "weight", 0))
               for k in a.nodes)
    differ = any(not np.array_equal(getattr(a.nodes[k], "weight", 0), getattr(c.nodes[k], "weight", 0))
                 for k in a.nodes)
    assert same and differ
