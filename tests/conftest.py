"""Shared test helpers."""

from __future__ import annotations

import torch
from torch import nn

from lmuformer.model.layers import SeqBatchNorm


def activate(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give a fresh model's BatchNorms random statistics so that its neurons spike.

    A randomly initialised spiking LMUFormer is nearly silent; tests need activity.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, SeqBatchNorm):
            n = m.num_features
            m.weight.data = 0.5 + 1.5 * torch.rand(n, generator=g)
            m.bias.data = 0.2 + 0.5 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.05 + 0.2 * torch.rand(n, generator=g)
    return model.eval()


def skip_without_lava(module_level: bool = False) -> None:
    """Skip where Lava cannot run (Python != 3.10); fail instead when LMUF_REQUIRE_LAVA is set,
    as .ci/run sets it, so that the Lava tests can never be skipped in CI."""
    import os

    import pytest

    from backends.lava.backend import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("LMUF_REQUIRE_LAVA"):
        pytest.fail(f"LMUF_REQUIRE_LAVA is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)
