"""scikit-learn's bundled 8x8 digits (no download) as sequences of 8 frames x 8 features.

Each frame is one image row (top to bottom), each feature one pixel of that row, scaled
from 0..16 to [0, 1]. The split is fixed (stratified, random_state 0) whatever ``seed``:
test 360 samples (20 %), val 144 (10 % of the rest), train 1293.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from lmuformer.data.base import SequenceDataset

FRAMES = 8
SPLIT_SEED = 0
TEST_SIZE = 360
VAL_FRACTION = 0.1
MAX_SHIFT = 1  # pixels, train augmentation


@lru_cache(maxsize=1)
def _splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The three fixed splits: name -> (images float32 (n, 8, 8) in [0, 1], labels int64 (n,))."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=VAL_FRACTION, stratify=y_rest, random_state=SPLIT_SEED
    )
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def shift_image(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (rows, cols) moved down by ``dy`` and right by ``dx`` pixels, zero filled."""
    out = torch.zeros_like(x)
    rows, cols = x.shape
    src_r = slice(max(0, -dy), rows - max(0, dy))
    dst_r = slice(max(0, dy), rows - max(0, -dy))
    src_c = slice(max(0, -dx), cols - max(0, dx))
    dst_c = slice(max(0, dx), cols - max(0, -dx))
    out[dst_r, dst_c] = x[src_r, src_c]
    return out


class Digits(SequenceDataset):
    """The digits split ``split``: x float32 (8 frames, 8 features) in [0, 1], y int64 in 0..9.

    With ``augment`` (train only) each item is shifted by a random -1..1 pixels in each
    direction, drawn from (seed, epoch, index).
    """

    def __init__(self, split: str, augment: bool = False, seed: int = 0) -> None:
        super().__init__(split, augment, seed)
        x, y = _splits()[self.split]
        self.x = torch.from_numpy(x.copy())
        self.y = torch.from_numpy(y.copy())
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[index]
        if self.augment:
            dy, dx = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2,), generator=self.generator(index)).tolist()
            x = shift_image(x, dy, dx)
        return x.clone(), self.y[index].clone()

    @property
    def targets(self) -> torch.Tensor:
        return self.y.clone()
