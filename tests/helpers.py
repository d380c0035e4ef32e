"""Helpers shared by several test modules (no tests here): running ``lmuf`` in this process and
a tiny Speech Commands folder."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import wave
from pathlib import Path

import numpy as np


def run_main(*args: str) -> tuple[int, str, str]:
    """Run ``lmuf ARGS`` through the entry point ``main()`` in this process (its signal
    handlers restored afterwards); (exit code, stdout, stderr)."""
    from lmuformer.cli import main

    out, err = io.StringIO(), io.StringIO()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    argv = sys.argv
    sys.argv = ["lmuf", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        for s, h in handlers.items():
            signal.signal(s, h)
    return code, out.getvalue(), err.getvalue()


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000, width: int = 2, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())


WORDS = ("yes", "no", "go")  # reference class order: no (22), yes (28), go (33)


def make_scv2(root: Path) -> Path:
    """A tiny SCv2 folder: 3 words x 4 one-second wavs (1 val, 1 test, 2 train) + background noise."""
    rng = np.random.default_rng(0)
    val, test = [], []
    for w, word in enumerate(WORDS):
        (root / word).mkdir(parents=True)
        for k in range(4):
            t = np.arange(16000) / 16000.0
            tone = 0.3 * np.sin(2 * np.pi * (300 + 400 * w + 50 * k) * t) + 0.01 * rng.standard_normal(16000)
            write_wav(root / word / f"spk{k}_nohash_0.wav", (tone * 32767).astype("<i2"))
        val.append(f"{word}/spk0_nohash_0.wav")
        test.append(f"{word}/spk1_nohash_0.wav")
    (root / "_background_noise_").mkdir()
    write_wav(root / "_background_noise_" / "white.wav", (rng.standard_normal(32000) * 3000).astype("<i2"))
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    (root / "README.md").write_text("tiny")
    return root


# Hypothesis examples run per fuzz target (printed by tests/test_fuzz.py).
RUNS: dict[str, int] = {}


def check_property(target: str, folder: Path, inputs: dict[Path, bytes], code: int, err: str) -> None:
    RUNS[target] = RUNS.get(target, 0) + 1
    assert "Traceback" not in err, err
    if code != 0:
        assert code == 2, (code, err)
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, err
    left = [n for n in os.listdir(folder) if n.startswith(".lmuf-")]
    assert not left, left
    for path, data in inputs.items():
        assert path.read_bytes() == data, f"{path} changed"
