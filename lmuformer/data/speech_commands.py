"""Google Speech Commands V2 (35 words) from its standard folder, features computed on the fly.

Layout of ``data_dir`` (the extracted ``speech_commands_v0.02`` archive): ``validation_list.txt``
and ``testing_list.txt`` (one ``word/file.wav`` per line), one folder of 16 kHz 16-bit mono wavs
per word, and ``_background_noise_/`` (like every folder starting with "_", not a class).
Classes: the word folders in the reference's order (:data:`REFERENCE_CLASSES`, the order of its
label CSV ``speechcommands_class_labels_indices.csv``: backward, follow, five, bed, ...), words
outside that list after them, sorted; label = index. On the full data set label k is the
reference's class k, so its checkpoints' heads need no permutation. val / test = the files of
the two lists, train = every other wav of the word folders.

Items: x float32 (128 frames of 10 ms, 128 log-mel bins), normalised as the reference (see
:mod:`lmuformer.data.audio`); y int64 class index.

Train augmentation (``augment=True``), in the reference's order, each item drawn from
(seed, epoch, index): SpecAugment on the un-normalised log-mel (one frequency mask of up to 48
bins, one time mask of up to 48 frames, filled with 0 as torchaudio's masking), normalisation,
additive noise ``x + U[0,1)^(frames x bins) * u / 10`` with one u ~ U[0,1) per item (the reference
uses uniform, not Gaussian, noise), and a roll in time by -10..10 frames.

Mixup (``mixup`` = rate > 0, train split only) as the reference: before the filterbank and the
augmentation, the item's waveform is mixed with a partner drawn from the whole training set
(:mod:`lmuformer.data.mixup`); every train item's y is then a float32 soft label (classes,), one-hot
when the item was not mixed.  The draws come first from the item's generator, then augmentation's.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmuformer.data.audio import (
    SAMPLE_RATE,
    TARGET_FRAMES,
    log_mel,
    normalize,
    pad_or_cut,
    read_wav,
)
from lmuformer.data.base import SequenceDataset, require_dir
from lmuformer.data.mixup import MIXUP_BETA, MIXUP_RATE, draw_mix, mix_labels, mix_waveforms
from lmuformer.errors import UserError

VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
FREQ_MASK = 48  # bins
TIME_MASK = 48  # frames
MAX_ROLL = 10  # frames
NOISE_SCALE = 0.1

# The reference's class indices 0..34 (its label CSV, from the AST recipe it builds on).
REFERENCE_CLASSES: tuple[str, ...] = (
    "backward", "follow", "five", "bed", "zero", "on", "learn", "two", "house", "tree",
    "dog", "stop", "seven", "eight", "down", "six", "forward", "cat", "right", "visual",
    "four", "wow", "no", "nine", "off", "three", "left", "marvin", "yes", "up",
    "sheila", "happy", "bird", "go", "one",
)


def class_order(words: set[str] | list[str]) -> list[str]:
    """``words`` in the reference's class order; words it does not know after them, sorted."""
    known = [w for w in REFERENCE_CLASSES if w in set(words)]
    return known + sorted(set(words) - set(REFERENCE_CLASSES))


def _read_list(root: Path, name: str, classes: set[str]) -> list[str]:
    """The relative paths (``word/file.wav``) of a split list, checked against the folder."""
    path = root / name
    if not path.is_file():
        raise UserError(f"data folder {root} is not a Speech Commands V2 folder: {name} missing")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    entries = [ln.strip().replace("\\", "/") for ln in lines if ln.strip()]
    for entry in entries:
        if entry.split("/", 1)[0] not in classes:
            raise UserError(f"{path} lists {entry!r}, which is not in a word folder of {root}")
    missing = [e for e in entries if not (root / e).is_file()]
    if missing:
        raise UserError(f"{path} lists {len(missing)} missing file(s), e.g. {missing[0]}")
    return entries


def scan_folder(root: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Classes (word folders, :func:`class_order`) and the relative wav paths of each split of a
    SCv2 folder."""
    for name in (VALIDATION_LIST, TESTING_LIST):
        if not (root / name).is_file():
            raise UserError(f"data folder {root} is not a Speech Commands V2 folder: {name} missing")
    classes = class_order([p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")])
    if not classes:
        raise UserError(f"data folder {root} is not a Speech Commands V2 folder: no word folders")
    names = set(classes)
    val = _read_list(root, VALIDATION_LIST, names)
    test = _read_list(root, TESTING_LIST, names)
    held_out = set(val) | set(test)
    train = [
        f"{word}/{p.name}"
        for word in classes
        for p in sorted((root / word).iterdir())
        if p.suffix.lower() == ".wav" and f"{word}/{p.name}" not in held_out
    ]
    if not train:
        raise UserError(f"data folder {root} has no training wavs (every wav is in a list file)")
    return classes, {"train": train, "val": val, "test": test}


def spec_augment(features: torch.Tensor, generator: torch.Generator, freq_mask: int = FREQ_MASK,
                 time_mask: int = TIME_MASK, value: float = 0.0) -> torch.Tensor:
    """One frequency and one time mask on ``features`` (frames, bins), as torchaudio's masking.

    A mask of width floor(U x max) starts at floor(U x (size - width)); widths are 0..max-1.
    Returns a new tensor.
    """
    out = features.clone()
    for dim, max_width in ((1, freq_mask), (0, time_mask)):
        if max_width <= 0:
            continue
        u = torch.rand(2, generator=generator, dtype=torch.float64)
        width = float(u[0]) * max_width
        start = int(float(u[1]) * (out.shape[dim] - width))
        stop = start + int(width)
        if dim == 1:
            out[:, start:stop] = value
        else:
            out[start:stop, :] = value
    return out


def add_noise(features: torch.Tensor, generator: torch.Generator, scale: float = NOISE_SCALE) -> torch.Tensor:
    """``features + U[0,1)^shape x u x scale`` with one u ~ U[0,1) (the reference's noise)."""
    u = float(torch.rand((), generator=generator))
    return features + torch.rand(features.shape, generator=generator) * (u * scale)


def random_roll(features: torch.Tensor, generator: torch.Generator,
                max_shift: int = MAX_ROLL) -> torch.Tensor:
    """``features`` (frames, bins) rolled in time by a uniform -max_shift..max_shift frames."""
    shift = int(torch.randint(-max_shift, max_shift + 1, (), generator=generator))
    return torch.roll(features, shift, dims=0)


class SpeechCommands(SequenceDataset):
    """Speech Commands V2 split ``split``: x float32 (128, 128) normalised log-mel, y int64 scalar
    (with ``mixup`` on the train split: float32 soft label (num_labels,), num_labels = max(35, classes)).

    ``window`` is the filterbank window: "hanning" as the reference code (whose normalisation
    constants were measured with it); "povey" is Kaldi's default (log-mel within ~0.1).
    ``mixup``: the reference's waveform mixup rate (0: off; 0.6 in the paper's recipe).
    """

    def __init__(self, data_dir: str | Path | None, split: str, augment: bool = False, seed: int = 0,
                 window: str = "hanning", mixup: float = 0.0) -> None:
        super().__init__(split, augment, seed)
        self.root = require_dir("scv2", data_dir)
        self.classes, splits = scan_folder(self.root)
        self.files = splits[self.split]
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = torch.tensor([index[f.split("/", 1)[0]] for f in self.files], dtype=torch.int64)
        self.window = window
        self.mixup = float(mixup) if split == "train" else 0.0
        # soft labels span the model's 35 outputs even when the folder holds fewer words
        self.num_labels = max(len(self.classes), len(REFERENCE_CLASSES))

    def __len__(self) -> int:
        return len(self.files)

    def waveform(self, index: int) -> torch.Tensor:
        """Item ``index``'s waveform, float32 (samples,) in [-1, 1), checked to be 16 kHz."""
        path = self.root / self.files[index]
        wave, rate = read_wav(path)
        if rate != SAMPLE_RATE:
            raise UserError(f"wav file {path} is sampled at {rate} Hz, expected {SAMPLE_RATE} Hz")
        return wave

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """Un-normalised log-mel of a waveform (mean removed here), float32 (128, 128), padded/cut."""
        return pad_or_cut(log_mel(wave - wave.mean(), SAMPLE_RATE, window=self.window), TARGET_FRAMES)

    def log_mel(self, index: int) -> torch.Tensor:
        """Un-normalised log-mel of item ``index``, float32 (128, 128), zero-padded/cut to 128 frames."""
        return self.features(self.waveform(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator(index) if (self.augment or self.mixup > 0) else None
        y = self.labels[index].clone()
        if self.mixup > 0:
            draw = draw_mix(g, len(self), self.mixup)
            wave = self.waveform(index)
            if draw.mixed:
                wave = mix_waveforms(wave, self.waveform(draw.partner), draw.lam)
            x = self.features(wave)
            y = mix_labels(int(y), int(self.labels[draw.partner if draw.mixed else index]), draw.lam,
                           self.num_labels)
        else:
            x = self.log_mel(index)
        if self.augment:
            x = random_roll(add_noise(normalize(spec_augment(x, g)), g), g)
        else:
            x = normalize(x)
        return x, y

    @property
    def targets(self) -> torch.Tensor:
        return self.labels.clone()


__all__ = ["MIXUP_BETA", "MIXUP_RATE", "REFERENCE_CLASSES", "SpeechCommands", "add_noise", "class_order",
           "random_roll", "scan_folder", "spec_augment"]
