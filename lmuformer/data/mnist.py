"""Sequential and permuted-sequential MNIST from local IDX files (nothing is downloaded).

``data_dir`` holds the four standard files, plain or gzipped, under either spelling
(``train-images-idx3-ubyte`` or ``train-images.idx3-ubyte``, optionally ``.gz``; the same for
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``), directly
or under ``MNIST/raw`` (torchvision's layout).

Items: x float32 (784 frames, 1 feature), pixel / 255 in [0, 1], row-major scan; y int64 0..9.
"psmnist" reorders the 784 pixels with the fixed permutation :func:`psmnist_permutation`
(``np.random.default_rng(0).permutation(784)``): frame t holds pixel ``perm[t]``.
Splits: train = the first n - n // 12 images of the training file (55000 of 60000), val = its last
n // 12 (5000), test = the t10k file.
"""

from __future__ import annotations

import gzip
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lmuformer.data.base import SequenceDataset, require_dir
from lmuformer.errors import UserError

ROWS = COLS = 28
FRAMES = ROWS * COLS
IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
PERMUTATION_SEED = 0


def psmnist_permutation() -> np.ndarray:
    """The fixed psMNIST pixel order, int64 (784,): ``np.random.default_rng(0).permutation(784)``."""
    return np.random.default_rng(PERMUTATION_SEED).permutation(FRAMES)


def find_idx_file(data_dir: Path, stem: str) -> Path:
    """The file for ``stem`` (e.g. ``train-images-idx3-ubyte``) in ``data_dir``; UserError if absent."""
    names = [stem, stem.replace("-idx", ".idx")]  # "train-images-idx3-ubyte", "train-images.idx3-ubyte"
    for folder in (data_dir, data_dir / "MNIST" / "raw", data_dir / "raw"):
        for name in names:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    raise UserError(f"data folder {data_dir} is not an MNIST folder: {stem} (or {stem}.gz) missing")


def _read_bytes(path: Path) -> bytes:
    """The (decompressed when ``.gz``) content of ``path``; UserError when unreadable."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read MNIST file {path}: {e}") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file as a uint8 array of its declared shape; UserError on a wrong magic or size."""
    data = _read_bytes(path)
    if len(data) < 4:
        raise UserError(f"MNIST file {path} is truncated or corrupt: {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise UserError(
            f"MNIST file {path} is corrupt or of the wrong kind: magic number 0x{found:08x}, "
            f"expected 0x{magic:08x}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"MNIST file {path} is truncated or corrupt: {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise UserError(
            f"MNIST file {path} is truncated or corrupt: {len(data)} bytes, expected {expected} "
            f"for shape {dims}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


@lru_cache(maxsize=2)
def _load_pair(images: Path, labels: Path, _stamp: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (n, 784) and labels int64 (n,) of one IDX pair, checked (cached per file state)."""
    x = read_idx(images, IMAGE_MAGIC)
    y = read_idx(labels, LABEL_MAGIC)
    if x.shape[1:] != (ROWS, COLS):
        raise UserError(f"MNIST file {images} holds {x.shape[1]}x{x.shape[2]} images, expected 28x28")
    if len(x) != len(y):
        raise UserError(f"MNIST files {images} and {labels} disagree: {len(x)} images, {len(y)} labels")
    if len(y) and int(y.max()) > 9:
        raise UserError(f"MNIST file {labels} is corrupt: label {int(y.max())} > 9")
    return x.reshape(len(x), FRAMES), y.astype(np.int64)


class MNISTSequences(SequenceDataset):
    """MNIST split ``split`` as pixel sequences: x float32 (784, 1) in [0, 1], y int64 0..9.

    ``permuted`` selects psMNIST (fixed permutation). ``augment`` has no effect (none is defined).
    """

    def __init__(
        self, data_dir: str | Path | None, split: str, permuted: bool = False,
        augment: bool = False, seed: int = 0,
    ) -> None:
        super().__init__(split, augment, seed)
        root = require_dir("psmnist" if permuted else "mnist", data_dir)
        prefix = "t10k" if self.split == "test" else "train"
        images = find_idx_file(root, f"{prefix}-images-idx3-ubyte")
        labels = find_idx_file(root, f"{prefix}-labels-idx1-ubyte")
        stamp = (images.stat().st_mtime, labels.stat().st_mtime)
        x, y = _load_pair(images, labels, stamp)
        if self.split != "test":
            n_val = len(y) // 12
            if n_val == 0:
                raise UserError(f"MNIST file {images} holds only {len(y)} images, too few for a val split")
            cut = len(y) - n_val
            x, y = (x[:cut], y[:cut]) if self.split == "train" else (x[cut:], y[cut:])
        self.x = x
        self.y = torch.from_numpy(y.copy())
        self.permutation = torch.from_numpy(psmnist_permutation()) if permuted else None
        self.classes = [str(i) for i in range(10)]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self.x[index].astype(np.float32) / 255.0)
        if self.permutation is not None:
            x = x[self.permutation]
        return x.unsqueeze(1), self.y[index].clone()

    @property
    def targets(self) -> torch.Tensor:
        return self.y.clone()
