"""The example scripts run end to end (one epoch, so that the API they show stays real)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_end_to_end_example(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "end_to_end.py"), "--out", str(tmp_path), "--epochs", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "emulator (fixed point)" in out.stdout and "accuracy after n frames" in out.stdout
    assert (tmp_path / "model.nir").is_file() and (tmp_path / "best.pt").is_file()
