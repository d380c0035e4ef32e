"""Evaluation: accuracy and cross entropy of a model on a data loader or (over DDP ranks) on a
whole data set, in eval mode."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lmuformer.checkpoint import unwrap
from lmuformer.training.distributed import Dist, all_sum, shard


@torch.no_grad()
def _eval_counts(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[int, int, float]:
    """(correct, total, summed cross-entropy) of ``model`` over ``loader``, eval mode."""
    was_training = model.training
    model.eval()
    correct, total, loss = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        correct += int((logits.argmax(1) == y).sum())
        total += int(y.numel())
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
    model.train(was_training)
    return correct, total, loss


def evaluate(model: nn.Module, loader: DataLoader, device: str | torch.device | None = None) -> float:
    """Top-1 accuracy (fraction 0..1) of ``model`` on ``loader`` (batches of x (B, T, F), y (B,)).

    Runs in eval mode under no_grad and restores the model's mode afterwards.
    """
    if device is None:
        device = next(unwrap(model).parameters()).device
    correct, total, _ = _eval_counts(model, loader, torch.device(device))
    return correct / max(total, 1)


def evaluate_dist(model: nn.Module, dataset: Any, batch_size: int, device: torch.device,
                   d: Dist) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the whole ``dataset``, summed over ranks."""
    loader = DataLoader(shard(dataset, d), batch_size=batch_size, shuffle=False)
    correct, total, loss = all_sum(list(map(float, _eval_counts(model, loader, device))), d)
    return correct / max(total, 1), loss / max(total, 1)
