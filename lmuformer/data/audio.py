"""Kaldi-style log-mel filterbank and a 16-bit PCM wav reader (no torchaudio, no librosa).

The filterbank follows Kaldi ``compute-fbank-feats`` (as ``torchaudio.compliance.kaldi.fbank``)
with: 25 ms window, 10 ms hop, snip_edges (a frame only where the whole window fits:
1 + (n - 400) // 160 frames, 98 for 1 s at 16 kHz), dither 0, per-frame DC removal, pre-emphasis
0.97, a window function (Kaldi's default "povey" = Hann^0.85, or "hanning"), zero padding to a
power of two (512 points at 16 kHz), power spectrum, triangular mel filters on the Kaldi mel scale
1127 ln(1 + f / 700) between 20 Hz and the Nyquist frequency (8 kHz at 16 kHz), natural log of
max(energy, float32 eps). Input waveforms are floats in [-1, 1] (int16 / 32768).

The model input (the reference's AST-style recipe): the waveform minus its mean, log-mel
(frames, 128), zero-padded or cut to 128 frames, then normalised (x - mean) / (2 std) with the
reference's dataset statistics mean = -6.845978, std = 5.5654526.
"""

from __future__ import annotations

import wave
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from lmuformer.errors import UserError

SAMPLE_RATE = 16000  # Hz
FRAME_LENGTH_S = 0.025
FRAME_SHIFT_S = 0.010
PREEMPHASIS = 0.97
LOW_HZ = 20.0
NUM_MEL_BINS = 128
TARGET_FRAMES = 128
NORM_MEAN = -6.845978
NORM_STD = 5.5654526
EPS = float(torch.finfo(torch.float32).eps)  # Kaldi's log floor, 1.19e-7
WINDOWS = ("povey", "hanning")


def mel_scale(freq_hz: np.ndarray | float) -> np.ndarray | float:
    """Kaldi mel scale: 1127 ln(1 + f / 700), f in Hz."""
    return 1127.0 * np.log1p(np.asarray(freq_hz, dtype=np.float64) / 700.0)


def frame_sizes(sample_rate: int) -> tuple[int, int, int]:
    """(window, hop, n_fft) in samples for a sample rate in Hz: (400, 160, 512) at 16 kHz."""
    win = int(sample_rate * FRAME_LENGTH_S)
    hop = int(sample_rate * FRAME_SHIFT_S)
    return win, hop, 1 << (win - 1).bit_length()


def _mel_edges(num_bins: int, sample_rate: int, low_hz: float) -> np.ndarray:
    """Mel values of the filter edges, (num_bins + 2,): filter k spans edges k..k+2, peak at k+1."""
    lo, hi = float(mel_scale(low_hz)), float(mel_scale(sample_rate / 2.0))
    return lo + np.arange(num_bins + 2) * (hi - lo) / (num_bins + 1)


@lru_cache(maxsize=8)
def mel_banks(num_bins: int = NUM_MEL_BINS, sample_rate: int = SAMPLE_RATE,
              low_hz: float = LOW_HZ) -> torch.Tensor:
    """Triangular mel filters, float64 (num_bins, n_fft // 2 + 1); the Nyquist column is zero as Kaldi.

    Shared and cached: do not modify the returned tensor.
    """
    _, _, n_fft = frame_sizes(sample_rate)
    edges = _mel_edges(num_bins, sample_rate, low_hz)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    mel = np.asarray(mel_scale(sample_rate / n_fft * np.arange(n_fft // 2)))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return torch.from_numpy(np.pad(banks, ((0, 0), (0, 1))))


def window_function(name: str, size: int) -> torch.Tensor:
    """The analysis window, float64 (size,): "povey" (Hann^0.85, Kaldi default) or "hanning"."""
    hann = torch.hann_window(size, periodic=False, dtype=torch.float64)
    if name == "povey":
        return hann.pow(0.85)
    if name == "hanning":
        return hann
    raise ValueError(f"unknown window {name!r}; choose from {', '.join(WINDOWS)}")


def log_mel(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, num_mel_bins: int = NUM_MEL_BINS,
            window: str = "povey") -> torch.Tensor:
    """Kaldi log-mel filterbank of a mono waveform.

    wave: (samples,) or (1, samples), floats in [-1, 1]; sample_rate in Hz.
    Returns float32 (frames, num_mel_bins), frames = 1 + (samples - 400) // 160 at 16 kHz
    (0 frames when shorter than one window). Computed in float64.
    """
    x = torch.as_tensor(wave).detach().to("cpu", torch.float64)
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1:
        raise ValueError(f"log_mel expects a mono waveform (samples,), got shape {tuple(x.shape)}")
    win, hop, n_fft = frame_sizes(sample_rate)
    if x.numel() < win:
        return torch.zeros(0, num_mel_bins)
    frames = x.unfold(0, win, hop)  # (frames, win)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - PREEMPHASIS * previous) * window_function(window, win)
    power = torch.fft.rfft(frames, n=n_fft).abs().pow(2)  # (frames, n_fft // 2 + 1)
    mel = power @ mel_banks(num_mel_bins, sample_rate).T
    return mel.clamp_min(EPS).log().to(torch.float32)


def pad_or_cut(features: torch.Tensor, frames: int = TARGET_FRAMES) -> torch.Tensor:
    """``features`` (n, bins) zero-padded at the end or cut to (frames, bins)."""
    n = features.shape[0]
    if n >= frames:
        return features[:frames]
    pad = features.new_zeros(frames - n, features.shape[1])
    return torch.cat([features, pad], dim=0)


def normalize(features: torch.Tensor) -> torch.Tensor:
    """The reference normalisation (x - (-6.845978)) / (2 x 5.5654526), any shape."""
    return (features - NORM_MEAN) / (2.0 * NORM_STD)


def read_wav(path: str | Path) -> tuple[torch.Tensor, int]:
    """A 16-bit PCM mono wav as (float32 (samples,) in [-1, 1), sample rate in Hz).

    Anything else (other sample widths, several channels, compressed or broken files) raises
    :class:`UserError` naming the file.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            if channels != 1 or width != 2:
                raise UserError(
                    f"wav file {path} is not 16-bit PCM mono ({channels} channels, {8 * width}-bit samples)"
                )
            raw = f.readframes(f.getnframes())
    except UserError:
        raise
    except (wave.Error, EOFError, OSError, ValueError) as e:
        raise UserError(f"cannot read wav file {path}: {e or type(e).__name__}") from None
    samples = np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2")
    return torch.from_numpy(samples.astype(np.float32) / 32768.0), rate
