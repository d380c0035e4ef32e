"""Data: digits split, MNIST IDX parsing, Speech Commands layout, Kaldi filterbank, augmentation."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmuformer.data import DATASETS, dataset_info, load_dataset, mixup
from lmuformer.data.audio import (
    EPS,
    LOW_HZ,
    NUM_MEL_BINS,
    SAMPLE_RATE,
    TARGET_FRAMES,
    _mel_edges,
    frame_sizes,
    log_mel,
    mel_scale,
    normalize,
    pad_or_cut,
    read_wav,
)
from lmuformer.data.mixup import MixDraw, draw_mix, mix_labels, mix_waveforms
from lmuformer.data.mnist import IMAGE_MAGIC, LABEL_MAGIC, psmnist_permutation
from lmuformer.data.speech_commands import add_noise, random_roll, spec_augment
from lmuformer.errors import UserError
from tests.helpers import WORDS, make_scv2, write_wav

# ---------------------------------------------------------------- audio test tools


def inverse_mel_scale(mel: np.ndarray | float) -> np.ndarray | float:
    """Hz of a Kaldi mel value: 700 (exp(mel / 1127) - 1)."""
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


def num_frames(num_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Frames Kaldi (snip_edges) makes of ``num_samples`` samples: 98 for 16000 at 16 kHz."""
    win, hop, _ = frame_sizes(sample_rate)
    return 0 if num_samples < win else 1 + (num_samples - win) // hop


def mel_center_hz(num_bins: int = NUM_MEL_BINS, sample_rate: int = SAMPLE_RATE,
                  low_hz: float = LOW_HZ) -> np.ndarray:
    """Centre frequencies in Hz of the mel filters, (num_bins,)."""
    return np.asarray(inverse_mel_scale(_mel_edges(num_bins, sample_rate, low_hz)[1:-1]))


def wav_features(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, frames: int = TARGET_FRAMES,
                 window: str = "povey") -> torch.Tensor:
    """Model input of a waveform (samples,): mean removed, log-mel, padded/cut, normalised.

    Returns float32 (frames, 128), frame period 10 ms.
    """
    x = torch.as_tensor(wave, dtype=torch.float32)
    return normalize(pad_or_cut(log_mel(x - x.mean(), sample_rate, window=window), frames))


def sine(freq_hz: float, seconds: float = 1.0, sample_rate: int = SAMPLE_RATE,
         amplitude: float = 0.5) -> torch.Tensor:
    """A test tone, float32 (round(seconds x sample_rate),), amplitude in [-1, 1] units."""
    t = torch.arange(int(round(seconds * sample_rate)), dtype=torch.float64) / sample_rate
    return (amplitude * torch.sin(2 * math.pi * freq_hz * t)).to(torch.float32)


# ---------------------------------------------------------------- registry


def test_registry_and_info() -> None:
    assert DATASETS == ("digits", "mnist", "psmnist", "scv2")
    assert dataset_info("scv2") == {"frames": 128, "features": 128, "classes": 35, "preset": "scv2",
                                    "frame_period_s": 0.01, "needs_data_dir": True}
    assert dataset_info("mnist")["preset"] == "psmnist"
    assert dataset_info("digits")["frames"] == 8
    with pytest.raises(UserError, match="choose from digits, mnist, psmnist, scv2"):
        dataset_info("cifar")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("cifar", "train")
    with pytest.raises(UserError, match="unknown split"):
        load_dataset("digits", "dev")


@pytest.mark.parametrize("name", ["mnist", "psmnist", "scv2"])
def test_data_dir_required(name: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs a data folder"):
        load_dataset(name, "train")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(name, "train", str(tmp_path / "nope"))


# ---------------------------------------------------------------- digits


def test_digits_shapes_split_and_determinism() -> None:
    sizes = {s: len(load_dataset("digits", s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 1293, "val": 144, "test": 360}
    ds = load_dataset("digits", "train")
    x, y = ds[0]
    assert x.shape == (8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.dim() == 0
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0
    again = load_dataset("digits", "train", seed=5)
    assert torch.equal(ds.x, again.x) and torch.equal(ds.y, again.y)
    test = load_dataset("digits", "test")
    assert set(test.targets.tolist()) == set(range(10))
    # splits are disjoint: no test image also in train
    train_rows = {tuple(r) for r in ds.x.reshape(len(ds), -1).tolist()}
    assert not any(tuple(r) in train_rows for r in test.x.reshape(len(test), -1).tolist())


def test_digits_augment_is_seeded_and_train_only() -> None:
    a = load_dataset("digits", "train", augment=True, seed=1)
    b = load_dataset("digits", "train", augment=True, seed=1)
    plain = load_dataset("digits", "train")
    xs = [a[i][0] for i in range(20)]
    assert all(torch.equal(x, b[i][0]) for i, x in enumerate(xs))
    assert all(x.shape == (8, 8) for x in xs)
    assert any(not torch.equal(x, plain[i][0]) for i, x in enumerate(xs))
    a.set_epoch(1)
    assert any(not torch.equal(x, a[i][0]) for i, x in enumerate(xs))
    val = load_dataset("digits", "val", augment=True)
    assert torch.equal(val[3][0], load_dataset("digits", "val")[3][0])


# ---------------------------------------------------------------- MNIST


def _idx(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(root: Path, n_train: int = 24, n_test: int = 6, gz: bool = False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    arrays = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for stem, magic, arr in ((f"{prefix}-images-idx3-ubyte", IMAGE_MAGIC, images),
                                 (f"{prefix}-labels-idx1-ubyte", LABEL_MAGIC, labels)):
            data = _idx(magic, arr)
            if gz:
                (root / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (root / stem).write_bytes(data)
        arrays += [images, labels]
    return tuple(arrays)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_idx(tmp_path: Path, gz: bool) -> None:
    tr_x, tr_y, te_x, te_y = _write_mnist(tmp_path, gz=gz)
    train = load_dataset("mnist", "train", str(tmp_path))
    val = load_dataset("mnist", "val", str(tmp_path))
    test = load_dataset("mnist", "test", str(tmp_path))
    assert (len(train), len(val), len(test)) == (22, 2, 6)  # val = last n // 12 (5000 of 60000)
    x, y = train[3]
    assert x.shape == (784, 1) and x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_allclose(x[:, 0].numpy(), tr_x[3].reshape(-1) / 255.0, rtol=1e-6)
    assert int(y) == tr_y[3]
    assert int(val[1][1]) == tr_y[23]
    assert int(test[5][1]) == te_y[5]
    ps = load_dataset("psmnist", "test", str(tmp_path))
    perm = psmnist_permutation()
    assert np.array_equal(perm, np.random.default_rng(0).permutation(784))
    np.testing.assert_allclose(ps[2][0][:, 0].numpy(), te_x[2].reshape(-1)[perm] / 255.0, rtol=1e-6)


def test_mnist_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not an MNIST folder: train-images-idx3-ubyte"):
        load_dataset("mnist", "train", str(tmp_path))
    _write_mnist(tmp_path)
    truncated = tmp_path / "train-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_dataset("mnist", "train", str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(UserError, match="magic number"):
        load_dataset("mnist", "test", str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="cannot read MNIST file"):
        load_dataset("mnist", "test", str(tmp_path))


# ---------------------------------------------------------------- audio


def test_filterbank_sine_peak_and_frames() -> None:
    centers = mel_center_hz()
    for freq in (250.0, 1000.0, 3000.0, 7500.0):
        fb = log_mel(sine(freq))
        assert fb.shape == (98, 128) and fb.dtype == torch.float32
        peak = int(fb.mean(0).argmax())
        nearest = int(np.argmin(np.abs(mel_scale(centers) - mel_scale(freq))))  # filter centred nearest
        assert peak == nearest, (freq, peak, nearest)
    assert num_frames(16000) == 98 and num_frames(399) == 0 and num_frames(400) == 1
    assert log_mel(sine(440.0, seconds=0.5)).shape == (48, 128)
    assert log_mel(torch.zeros(300)).shape == (0, 128)
    silent = log_mel(torch.zeros(16000))
    assert torch.allclose(silent, torch.full_like(silent, math.log(EPS)))


def test_wav_features_shape_and_normalisation() -> None:
    x = wav_features(sine(1000.0))
    assert x.shape == (128, 128)
    # frames 98..127 are padding: zeros before normalisation
    assert torch.allclose(x[98:], normalize(torch.zeros(30, 128)))
    assert wav_features(sine(1000.0, seconds=1.5)).shape == (128, 128)


def test_read_wav(tmp_path: Path) -> None:
    samples = (np.sin(np.arange(800) / 5.0) * 20000).astype("<i2")
    write_wav(tmp_path / "ok.wav", samples)
    w, rate = read_wav(tmp_path / "ok.wav")
    assert rate == 16000 and w.shape == (800,) and w.dtype == torch.float32
    np.testing.assert_allclose(w.numpy(), samples / 32768.0, rtol=1e-6)
    write_wav(tmp_path / "stereo.wav", np.zeros(1600, "<i2"), channels=2)
    with pytest.raises(UserError, match="stereo.wav is not 16-bit PCM mono"):
        read_wav(tmp_path / "stereo.wav")
    write_wav(tmp_path / "byte.wav", np.zeros(800, np.uint8), width=1)
    with pytest.raises(UserError, match="not 16-bit PCM mono"):
        read_wav(tmp_path / "byte.wav")
    (tmp_path / "junk.wav").write_bytes(b"this is not a wav")
    with pytest.raises(UserError, match="cannot read wav file .*junk.wav"):
        read_wav(tmp_path / "junk.wav")
    with pytest.raises(UserError, match="cannot read wav file"):
        read_wav(tmp_path / "absent.wav")


# ---------------------------------------------------------------- Speech Commands

def test_speech_commands_splits_and_items(tmp_path: Path) -> None:
    root = str(make_scv2(tmp_path / "sc"))
    train, val, test = (load_dataset("scv2", s, root) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (6, 3, 3)
    assert train.classes == ["no", "yes", "go"]
    assert sorted(train.files) == sorted(f"{w}/spk{k}_nohash_0.wav" for w in WORDS for k in (2, 3))
    assert val.targets.tolist() == [1, 0, 2]  # yes, no, go in list order
    for f, y in zip(train.files, train.targets.tolist(), strict=True):
        assert train.classes[y] == f.split("/")[0]
    x, y = test[0]
    assert x.shape == (128, 128) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.dim() == 0 and int(y) == 1


def test_speech_commands_bad_layouts(tmp_path: Path) -> None:
    root = make_scv2(tmp_path / "sc")
    (root / "validation_list.txt").unlink()
    with pytest.raises(UserError, match=r"not a Speech Commands V2 folder: validation_list.txt missing"):
        load_dataset("scv2", "train", str(root))
    (root / "validation_list.txt").write_text("yes/spk0_nohash_0.wav\nyes/ghost.wav\n")
    with pytest.raises(UserError, match="missing file"):
        load_dataset("scv2", "val", str(root))
    (root / "validation_list.txt").write_text("_background_noise_/white.wav\n")
    with pytest.raises(UserError, match="not in a word folder"):
        load_dataset("scv2", "val", str(root))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "validation_list.txt").write_text("")
    (empty / "testing_list.txt").write_text("")
    with pytest.raises(UserError, match="no word folders"):
        load_dataset("scv2", "train", str(empty))


def test_speech_commands_unreadable_wav(tmp_path: Path) -> None:
    root = make_scv2(tmp_path / "sc")
    (root / "go" / "spk2_nohash_0.wav").write_bytes(b"RIFF\x00\x00broken")
    train = load_dataset("scv2", "train", str(root))
    index = train.files.index("go/spk2_nohash_0.wav")
    with pytest.raises(UserError, match="cannot read wav file .*spk2_nohash_0.wav"):
        train[index]
    write_wav(root / "go" / "spk3_nohash_0.wav", np.zeros(8000, "<i2"), rate=8000)
    with pytest.raises(UserError, match="8000 Hz, expected 16000 Hz"):
        train[train.files.index("go/spk3_nohash_0.wav")]


def test_speech_commands_augment_seeded(tmp_path: Path) -> None:
    root = str(make_scv2(tmp_path / "sc"))
    plain = load_dataset("scv2", "train", root)
    a = load_dataset("scv2", "train", root, augment=True, seed=3)
    b = load_dataset("scv2", "train", root, augment=True, seed=3)
    xa, xb = a[1][0], b[1][0]
    assert xa.shape == (128, 128) and torch.equal(xa, xb)
    assert not torch.equal(xa, plain[1][0])
    a.set_epoch(1)
    assert not torch.equal(a[1][0], xb)
    c = load_dataset("scv2", "train", root, augment=True, seed=4)
    assert not torch.equal(c[1][0], xb)
    test_aug = load_dataset("scv2", "test", root, augment=True)
    assert torch.equal(test_aug[0][0], load_dataset("scv2", "test", root)[0][0])


def test_augmentation_functions() -> None:
    x = torch.randn(128, 128)
    g = torch.Generator().manual_seed(0)
    masked = spec_augment(x, g)
    zero_cols = (masked == 0).all(dim=0).sum()
    zero_rows = (masked == 0).all(dim=1).sum()
    assert masked.shape == x.shape and zero_cols < 48 and zero_rows < 48
    assert torch.equal(masked, spec_augment(x, torch.Generator().manual_seed(0)))
    noisy = add_noise(x, torch.Generator().manual_seed(1))
    assert noisy.shape == x.shape and bool(((noisy - x) >= 0).all()) and float((noisy - x).max()) < 0.1
    rolled = random_roll(x, torch.Generator().manual_seed(2))
    shift = next(s for s in range(-10, 11) if torch.equal(torch.roll(x, s, 0), rolled))
    assert -10 <= shift <= 10


def test_mixup() -> None:
    x = torch.randn(16, 128, 128)
    y = torch.nn.functional.one_hot(torch.arange(16) % 5, 5).float()
    mx, my = mixup(x, y, 0.6, torch.Generator().manual_seed(0))
    mx2, my2 = mixup(x, y, 0.6, torch.Generator().manual_seed(0))
    assert mx.shape == x.shape and my.shape == y.shape
    assert torch.equal(mx, mx2) and torch.equal(my, my2)
    assert torch.allclose(my.sum(1), torch.ones(16))
    changed = (my != y).any(1)
    assert 0 < int(changed.sum()) < 16  # about 60 % mixed (partners may be themselves)
    same = mixup(x, y, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(same[0], x) and torch.equal(same[1], y)


# ---------------------------------------------------------------- the reference's waveform mixup


def test_mix_waveforms_as_the_reference() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3
    short = torch.tensor([5.0, 7.0])  # mean 6: centred [-1, 1], zero-padded to 4
    mixed = mix_waveforms(a, short, 0.25)
    expect = 0.25 * torch.tensor([-2.0, -1.0, 0.0, 3.0]) + 0.75 * torch.tensor([-1.0, 1.0, 0.0, 0.0])
    assert torch.allclose(mixed, expect - expect.mean(), atol=1e-6) and mixed.shape == (4,)
    long = torch.tensor([1.0, 3.0, 2.0, 2.0, 100.0, -50.0])  # mean 9.67, cut to 4 AFTER centring
    cut = mix_waveforms(a, long, 0.5)
    b = long - long.mean()
    expect = 0.5 * torch.tensor([-2.0, -1.0, 0.0, 3.0]) + 0.5 * b[:4]
    assert torch.allclose(cut, expect - expect.mean(), atol=1e-5)
    assert torch.allclose(mix_waveforms(a, long, 1.0), a - a.mean())
    with pytest.raises(ValueError, match="1-D"):
        mix_waveforms(a[None], a, 0.5)


def test_draw_mix_rate_partner_and_lambda() -> None:
    g = torch.Generator().manual_seed(0)
    before = g.get_state()
    assert draw_mix(g, 10, 0.0) == MixDraw() and torch.equal(g.get_state(), before)  # no draw at rate 0
    draws = [draw_mix(g, 50, 0.6) for _ in range(2000)]
    mixed = [d for d in draws if d.mixed]
    assert 0.55 < len(mixed) / 2000 < 0.65  # 3.6 standard deviations either side of 0.6
    assert all(not d.mixed and d.lam == 1.0 for d in draws if not d.mixed)
    assert {d.partner for d in mixed} == set(range(50))  # partners come from the whole set
    lam = np.array([d.lam for d in mixed])
    assert lam.min() > 0.05 and lam.max() < 0.95  # Beta(10, 10): mean 0.5, std 0.109
    assert abs(lam.mean() - 0.5) < 0.02 and abs(lam.std() - 0.109) < 0.015
    again = [draw_mix(torch.Generator().manual_seed(7), 50, 0.6) for _ in range(2)]
    assert again[0] == again[1]


def test_mix_labels() -> None:
    y = mix_labels(2, 4, 0.3, 6)
    assert y.dtype == torch.float32 and y.tolist() == pytest.approx([0, 0, 0.3, 0, 0.7, 0])
    assert mix_labels(1, 1, 0.3, 3).tolist() == pytest.approx([0, 1, 0])


def test_speech_commands_waveform_mixup(tmp_path: Path) -> None:
    """Items mix raw waveforms with a partner drawn from the whole training set, before the features
    and the augmentation; labels are soft over the model's 35 outputs; val/test are untouched."""
    from lmuformer.data.base import item_generator

    root = str(make_scv2(tmp_path / "sc"))
    ds = load_dataset("scv2", "train", root, augment=True, seed=5, mixup=1.0)
    ds.set_epoch(3)
    for index in range(len(ds)):
        x, y = ds[index]
        g = item_generator(5, 3, index)
        d = draw_mix(g, len(ds), 1.0)
        assert d.mixed
        wave = mix_waveforms(ds.waveform(index), ds.waveform(d.partner), d.lam)
        expect = random_roll(add_noise(normalize(spec_augment(ds.features(wave), g)), g), g)
        assert torch.equal(x, expect)
        assert y.shape == (35,) and y.dtype == torch.float32 and float(y.sum()) == pytest.approx(1.0)
        assert float(y[int(ds.labels[index])]) >= d.lam - 1e-6
    partners = {draw_mix(item_generator(5, e, 0), len(ds), 1.0).partner for e in range(60)}
    assert partners == set(range(len(ds)))  # item 0's partner ranges over the whole train split
    plain = load_dataset("scv2", "train", root, mixup=0.0)
    assert plain[0][1].dim() == 0 and torch.equal(plain[0][0], normalize(plain.log_mel(0)))
    val = load_dataset("scv2", "val", root, mixup=0.6)
    assert val[0][1].dim() == 0 and torch.equal(val[0][0], load_dataset("scv2", "val", root)[0][0])
    # rate 0.6: some items mixed, others one-hot; the same seed and epoch give the same items
    a, b = (load_dataset("scv2", "train", root, seed=1, mixup=0.6) for _ in range(2))
    ya = torch.stack([a[i][1] for i in range(len(a))])
    assert torch.equal(ya, torch.stack([b[i][1] for i in range(len(b))]))
    assert torch.equal(a[2][0], b[2][0])
    digits = load_dataset("digits", "train", mixup=0.6)  # no waveforms: the trainer mixes batches
    assert digits[0][1].dim() == 0
