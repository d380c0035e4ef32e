"""Random number state of a training run: seeding, and the state a resumed run restores."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """torch, python and numpy global states and ``gen``'s, storable in a checkpoint."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "generator": gen.get_state(),
    }


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    """Restore what :func:`rng_state` returned (resuming continues the same draws)."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    gen.set_state(state["generator"])


def seed_everything(seed: int, rank: int) -> torch.Generator:
    """Seed torch/python/numpy (same on every rank: identical initial weights); return the
    generator for mixup, distinct per rank."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed + 1 + 7919 * rank)
