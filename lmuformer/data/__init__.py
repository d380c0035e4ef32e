"""Datasets as sequences: every item is ``(x, y)``, x float32 ``(frames, features)``, y int64 scalar.

Names (:data:`DATASETS`):

- ``digits``: scikit-learn's bundled 8x8 digits, 8 frames (rows) x 8 features; no data folder.
- ``mnist``: sequential MNIST from local IDX files, 784 frames x 1 feature.
- ``psmnist``: the same with a fixed pixel permutation.
- ``scv2``: Speech Commands V2 (35 words), 128 frames of 10 ms x 128 log-mel bins.

Nothing is ever downloaded: ``mnist``, ``psmnist`` and ``scv2`` read ``data_dir``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lmuformer.data.base import SPLITS, check_split, require_dir
from lmuformer.data.digits import Digits
from lmuformer.data.mixup import mixup
from lmuformer.data.mnist import MNISTSequences
from lmuformer.data.speech_commands import SpeechCommands
from lmuformer.errors import UserError

__all__ = [
    "load_test_split","DATASETS", "SPLITS", "dataset_info", "load_dataset", "mixup"]

DATASETS: tuple[str, ...] = ("digits", "mnist", "psmnist", "scv2")

# frame_period_s: seconds per frame (SNN time step). For the image datasets there is no physical
# time; 1 ms is a nominal value, used only where a time unit is needed (e.g. latency in seconds).
_INFO: dict[str, dict[str, Any]] = {
    "digits": {"frames": 8, "features": 8, "classes": 10, "preset": "digits", "frame_period_s": 0.001,
               "needs_data_dir": False},
    "mnist": {"frames": 784, "features": 1, "classes": 10, "preset": "psmnist", "frame_period_s": 0.001,
              "needs_data_dir": True},
    "psmnist": {"frames": 784, "features": 1, "classes": 10, "preset": "psmnist", "frame_period_s": 0.001,
                "needs_data_dir": True},
    "scv2": {"frames": 128, "features": 128, "classes": 35, "preset": "scv2", "frame_period_s": 0.01,
             "needs_data_dir": True},
}


def _check_name(name: str) -> str:
    if name not in _INFO:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return name


def dataset_info(name: str) -> dict[str, Any]:
    """Shape facts of dataset ``name``.

    Keys: ``frames`` (sequence length), ``features`` (per frame), ``classes`` (count; 35 for scv2,
    the actual folder may hold fewer), ``preset`` (model preset name), ``frame_period_s`` (seconds
    per frame: 0.01 for scv2, a nominal 0.001 for the image datasets), ``needs_data_dir``.
    """
    return dict(_INFO[_check_name(name)])


def load_dataset(name: str, split: str, data_dir: str | None = None, augment: bool = False,
                 seed: int = 0, mixup: float = 0.0) -> Dataset:
    """Dataset ``name``'s ``split`` ("train", "val" or "test").

    ``data_dir`` is required for mnist, psmnist and scv2. ``augment`` applies to the train split
    only (digits: random 1-pixel shifts; scv2: SpecAugment, noise, time roll; MNIST: none); its
    draws come from (seed, epoch, index), so call ``dataset.set_epoch(epoch)`` each epoch.
    ``mixup`` (rate, train split, scv2 only): the reference's waveform mixup in the dataset
    (:mod:`lmuformer.data.mixup`; its items' y are then soft labels (classes,)); the other datasets
    have no waveforms and ignore it (the trainer mixes their batches: :func:`mixup`).
    Bad names, folders or files raise :class:`UserError`.
    """
    _check_name(name)
    check_split(split)
    if name == "digits":
        return Digits(split, augment=augment, seed=seed)
    root = require_dir(name, data_dir)
    if name in ("mnist", "psmnist"):
        return MNISTSequences(root, split, permuted=name == "psmnist", augment=augment, seed=seed)
    return SpeechCommands(root, split, augment=augment, seed=seed, mixup=mixup)


def load_test_split(name: str, data_dir: str | None = None, samples: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The first ``samples`` items (all if None) of ``name``'s test split, the samples every
    evaluation and simulator uses: x float32 (n, frames, features), y int64 (n,)."""
    ds = load_dataset(name, "test", data_dir)
    n = len(ds) if samples is None else min(int(samples), len(ds))
    if n < 1:
        raise UserError(f"no samples to evaluate ({name} test split has {len(ds)}, asked for {samples})")
    items = [ds[i] for i in range(n)]
    x = np.stack([np.asarray(item[0], dtype=np.float32) for item in items])
    y = np.asarray([int(item[1]) for item in items], dtype=np.int64)
    return x, y
