"""Mixup: the reference's waveform mixup (Speech Commands) and a batch mixup (other datasets).

Waveform mixup, as the reference (``src/dataloader.py`` of zeyuliu1037/LMUFormer, from the AST
recipe), per training item, before the filterbank and before any augmentation:

1. with probability ``rate`` (0.6) the item is mixed; its partner is drawn uniformly from the
   WHOLE training set (the item itself may be drawn);
2. both waveforms lose their mean; the partner is zero-padded or cut to the item's length;
3. mixed = lam x item + (1 - lam) x partner with lam ~ Beta(10, 10), then its mean is removed;
4. the label: lam on the item's class plus (1 - lam) on the partner's (1.0 if they are the same
   class); an unmixed item has its one-hot label.

The filterbank, SpecAugment, normalisation, noise and roll then apply to the mixed waveform's
features (:class:`lmuformer.data.speech_commands.SpeechCommands` with ``mixup``).

Batch mixup (:func:`mixup`) mixes the features of a batch with partners from the same batch; the
trainer uses it for the datasets without waveforms (digits: the documented recipe choice).

:func:`recompute_batchnorm` gives a model trained with mixup the BatchNorm statistics of clean
items (the trainer's ``clean_bn`` option, after every epoch).

Randomness: every draw comes from a ``torch.Generator`` (lam through a NumPy generator seeded from
it), so a seeded generator gives the same draws everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

MIXUP_RATE = 0.6  # probability that a sample is mixed (the reference's "mixup" setting)
MIXUP_BETA = 10.0  # lam ~ Beta(10, 10), as the reference


@dataclass(frozen=True)
class MixDraw:
    """One item's mixup draw: ``partner`` index into the training set (-1: not mixed) and ``lam``,
    the weight of the item itself (1.0 when not mixed)."""

    partner: int = -1
    lam: float = 1.0

    @property
    def mixed(self) -> bool:
        return self.partner >= 0


def _beta(generator: torch.Generator | None, a: float, size: int | None = None) -> np.ndarray:
    """Beta(a, a) draws (float64) from a NumPy generator seeded by ``generator``."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    return np.random.default_rng(seed).beta(a, a, size=size)


def draw_mix(generator: torch.Generator | None, size: int, rate: float = MIXUP_RATE,
             beta: float = MIXUP_BETA) -> MixDraw:
    """The reference's draw for one item of a training set of ``size`` items: mixed with probability
    ``rate``, partner uniform over 0..size-1, lam ~ Beta(beta, beta).  Draws nothing if rate <= 0."""
    if rate <= 0 or size < 1:
        return MixDraw()
    if float(torch.rand((), generator=generator, dtype=torch.float64)) >= rate:
        return MixDraw()
    partner = int(torch.randint(0, size, (), generator=generator))
    return MixDraw(partner, float(_beta(generator, beta)))


def mix_waveforms(first: torch.Tensor, second: torch.Tensor, lam: float) -> torch.Tensor:
    """lam x first + (1 - lam) x second of two mono waveforms (samples,), as the reference: each
    loses its mean, ``second`` is zero-padded or cut to len(first), the mix loses its mean.
    Returns float32 (len(first),)."""
    a = torch.as_tensor(first, dtype=torch.float32)
    b = torch.as_tensor(second, dtype=torch.float32)
    if a.dim() != 1 or b.dim() != 1:
        raise ValueError(f"mix_waveforms expects 1-D waveforms, got {tuple(a.shape)} and {tuple(b.shape)}")
    a = a - a.mean() if a.numel() else a
    b = b - b.mean() if b.numel() else b
    if b.numel() >= a.numel():
        b = b[: a.numel()]
    else:
        b = torch.cat([b, b.new_zeros(a.numel() - b.numel())])
    mixed = lam * a + (1.0 - lam) * b
    return mixed - mixed.mean() if mixed.numel() else mixed


def mix_labels(label: int, partner_label: int, lam: float, classes: int) -> torch.Tensor:
    """Soft label float32 (classes,): lam at ``label`` plus (1 - lam) at ``partner_label``."""
    y = torch.zeros(classes, dtype=torch.float32)
    y[int(label)] += lam
    y[int(partner_label)] += 1.0 - lam
    return y


def mixup(
    x: torch.Tensor, y_onehot: torch.Tensor, alpha: float = MIXUP_RATE,
    generator: torch.Generator | None = None, beta: float = MIXUP_BETA,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mixup: each sample, with probability ``alpha``, is mixed with a random sample of the batch.

    x: (batch, frames, features); y_onehot: (batch, classes) float (one-hot or soft labels).
    ``alpha`` is the reference's mixup rate (0.6): the probability that a sample is mixed, not a
    Beta parameter; a mixed sample becomes lam x + (1 - lam) x_other (labels alike) with
    lam ~ Beta(beta, beta), beta = 10 as the reference.  Unlike the reference (waveforms, partner from
    the whole training set: :func:`draw_mix`, :func:`mix_waveforms`) this mixes features within the
    batch.  Returns new (x, y) of the same shapes.
    """
    if x.shape[0] != y_onehot.shape[0]:
        raise ValueError(f"mixup: {x.shape[0]} inputs but {y_onehot.shape[0]} labels")
    n = x.shape[0]
    if n == 0 or alpha <= 0:
        return x.clone(), y_onehot.clone()
    mixed = torch.rand(n, generator=generator) < alpha
    other = torch.randint(0, n, (n,), generator=generator)
    lam = torch.from_numpy(_beta(generator, beta, size=n)).to(x.dtype)
    lam = torch.where(mixed, lam, torch.ones_like(lam)).to(x.device)
    other = other.to(x.device)
    lx = lam.view(n, *([1] * (x.dim() - 1)))
    ly = lam.view(n, *([1] * (y_onehot.dim() - 1))).to(y_onehot.dtype)
    return lx * x + (1 - lx) * x[other], ly * y_onehot + (1 - ly) * y_onehot[other]


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, dataset: Any, batch_size: int = 256,
                        device: torch.device | str | None = None) -> None:
    """Set every BatchNorm's running mean and variance to the average of its batch statistics over
    ``dataset`` in batches of ``batch_size`` (equal weight per batch: ``torch.optim.swa_utils.update_bn``).

    Mixup's companion: trained on mixed (blurred) items, the running statistics describe mixed
    inputs, while the model is evaluated on clean ones.  Pass the clean (un-mixed, un-augmented)
    training split; the forward passes run in train mode (batch statistics), so nothing but the
    BatchNorm buffers changes (the weights, and hence the training, are untouched).  The model's
    train/eval mode is restored.
    """
    from torch.optim.swa_utils import update_bn
    from torch.utils.data import DataLoader

    update_bn(DataLoader(dataset, batch_size=batch_size, shuffle=False), model, device)


__all__ = ["MIXUP_BETA", "MIXUP_RATE", "MixDraw", "draw_mix", "mix_labels", "mix_waveforms", "mixup",
           "recompute_batchnorm"]
