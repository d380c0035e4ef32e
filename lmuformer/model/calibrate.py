"""Seeded presets whose batch norms are calibrated, so that a fresh (untrained) model spikes.

A fresh preset's batch norms hold mean 0 / variance 1, but the convolutions in front of them
shrink the signal (PyTorch's default init gives outputs of about a third of the input's
variance), so the LIF neurons after them stay below threshold: an exported random preset is
nearly silent.  :func:`calibrate_batchnorm` sets every batch norm's running statistics to those
of its own input on a calibration batch (one forward pass in training mode with a cumulative
average, each norm seeing the normalised output of the ones before it, as in training), so each
LIF receives unit-variance input and fires at a realistic rate in every layer.

:func:`calibrated_preset` builds preset ``name`` with the weights drawn from ``seed`` and
calibrates it on a batch of standard-normal input (batch, frames, features) drawn from the same
seed: the same (name, seed) gives the same model on every run.  The record of what was done is
``model.calibration`` (a dict: method, seed, samples, input), meant for a graph's metadata.
"""

from __future__ import annotations

import torch
from torch import nn

from lmuformer.model.config import ModelConfig, preset
from lmuformer.model.layers import SeqBatchNorm
from lmuformer.model.lmuformer import LMUFormer

CALIBRATION_SAMPLES = 16


@torch.no_grad()
def calibrate_batchnorm(model: LMUFormer, x: torch.Tensor) -> LMUFormer:
    """Set every batch norm's running mean/variance to the statistics of its input on ``x``.

    x: (batch, frames, features), the model's input.  Only the running statistics change
    (affine weights and all other parameters are untouched); ``num_batches_tracked`` becomes 1.
    Returns ``model`` in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    model.train()
    try:
        model(x)
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        model.eval()
    return model


def calibrated_preset(name: str | ModelConfig, seed: int = 0, samples: int = CALIBRATION_SAMPLES
                      ) -> LMUFormer:
    """Preset ``name`` (or a config) with weights from ``seed``, batch norms calibrated on
    ``samples`` standard-normal sequences drawn from ``seed``; in eval mode, with
    ``model.calibration`` describing the calibration."""
    cfg = name if isinstance(name, ModelConfig) else preset(name)
    g = torch.Generator().manual_seed(int(seed))
    state = torch.get_rng_state()
    torch.manual_seed(int(seed))
    try:
        model = LMUFormer(cfg)
    finally:
        torch.set_rng_state(state)
    x = torch.randn(samples, cfg.frames, cfg.in_features, generator=g)
    calibrate_batchnorm(model, x)
    model.calibration = {
        "method": "batch-norm running statistics set to those of a calibration batch",
        "seed": int(seed), "samples": int(samples),
        "input": f"standard normal, ({samples}, {cfg.frames}, {cfg.in_features}), from the seed",
    }
    return model


def activate(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give a fresh model's BatchNorms random statistics (seeded) so that its neurons spike; in
    eval mode.  A randomly initialised spiking LMUFormer is nearly silent; the tests and the
    benchmarks' "activated" workloads need activity (:func:`calibrated_preset` is the milder,
    data-driven alternative)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, SeqBatchNorm):
            n = m.num_features
            m.weight.data = 0.5 + 1.5 * torch.rand(n, generator=g)
            m.bias.data = 0.2 + 0.5 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.05 + 0.2 * torch.rand(n, generator=g)
    return model.eval()
