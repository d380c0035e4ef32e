"""Shared pieces of the dataset classes: split names, folder checks, seeded per-item randomness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lmuformer.errors import UserError

SPLITS = ("train", "val", "test")


def check_split(split: str) -> str:
    """``split`` itself if it is one of :data:`SPLITS`, else :class:`UserError`."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    return split


def require_dir(dataset: str, data_dir: str | Path | None) -> Path:
    """The data folder of ``dataset`` as a Path; :class:`UserError` if None, missing or not a folder."""
    if data_dir is None or str(data_dir) == "":
        raise UserError(f"dataset {dataset!r} needs a data folder (data_dir); none was given")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise UserError(f"data folder {path} does not exist")
    if not path.is_dir():
        raise UserError(f"data folder {path} is not a folder")
    return path


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch generator seeded from (seed, epoch, index): the same draws for the same triple.

    Used by the augmentations so that an item's augmentation is reproducible whatever the
    DataLoader worker or order, and changes from epoch to epoch (see ``set_epoch``).
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class SequenceDataset(Dataset):
    """Base class: items are ``(x, y)``, x float32 ``(frames, features)``, y an int64 scalar.

    Subclasses set ``classes`` (class names, index = label) and implement ``__len__`` and
    ``__getitem__``. ``augment`` only takes effect on the train split.
    """

    classes: list[str]

    def __init__(self, split: str, augment: bool = False, seed: int = 0) -> None:
        self.split = check_split(split)
        self.augment = bool(augment) and split == "train"
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws are used (call once per epoch when training)."""
        self.epoch = int(epoch)

    def generator(self, index: int) -> torch.Generator:
        """The seeded generator of item ``index`` in the current epoch."""
        return item_generator(self.seed, self.epoch, index)

    @property
    def targets(self) -> torch.Tensor:
        """All labels, int64 ``(len,)`` (without reading the inputs)."""
        raise NotImplementedError
