"""The example scripts run end to end (one epoch, so that the API they show stays real)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmuformer.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_end_to_end_example(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "end_to_end.py"), "--out", str(tmp_path), "--epochs", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "model.nir").is_file() and (tmp_path / "best.pt").is_file()
    text = out.stdout
    trained = float(re.search(r"test accuracy \(float model\): ([0-9.]+)", text)[1])
    assert trained == pytest.approx(load_checkpoint(tmp_path / "best.pt").metrics["test_accuracy"], abs=5e-5)
    num = "([0-9.]+)"
    m = re.search(rf"emulator \(fixed point\): {num}; float re-import: {num}; agreement {num}", text)
    emu, ref, agree = (float(v) for v in m.groups())
    assert abs(emu - ref) <= 1 - agree + 1e-4  # agreeing on a fraction a: accuracies within 1 - a
    curve = re.search(r"accuracy after n frames: \[([^]]*)\] final ([0-9.]+)", text)
    assert len(curve[1].split(",")) == 8  # digits: 8 frames
    # the streaming curve's final (flushed) running-mean prediction is the emulator's readout prediction
    assert float(curve[2]) == pytest.approx(emu, abs=6e-4)
    assert "loihi" in text and "45nm" in text  # the report table with both profiles
