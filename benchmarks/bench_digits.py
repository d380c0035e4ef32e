"""The main job's accuracy and wall time over seeds: ``lmuf train --dataset digits --seed N``.

Runs the command line (a fresh process per seed, one after the other, so each timing includes
start-up, data loading, training and the test evaluation) for each seed and records the test
accuracy (best validation epoch), the training time the trainer reports, the wall time of the
whole command and the 1-minute load average before and after each run (the machine may be shared:
a high load slows the runs; results do not depend on it, times do).

Writes ``benchmarks/results/digits.json`` (tmp + rename): per seed and the summary (median, min,
max accuracy; median and max wall time) against the bar of issue 12: median >= 97 %, every seed
>= 96 %, every run < 120 s.

Usage: ``python benchmarks/bench_digits.py [--seeds 0 1 2] [--out DIR] [-- extra train flags]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lmuformer.files import write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "digits.json"
BAR = {"median_accuracy": 0.97, "min_accuracy": 0.96, "max_wall_seconds": 120.0}


def run_seed(seed: int, out: Path, extra: list[str]) -> dict[str, Any]:
    """One ``lmuf train --dataset digits --seed seed`` in a fresh process; its metrics and timing."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "lmuformer.cli", "train", "--dataset", "digits", "--seed", str(seed),
           "--out", str(out), "--no-progress", *extra]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "seed": seed,
        "test_accuracy": metrics["test_accuracy"],
        "val_accuracy": metrics["val_accuracy"],
        "best_epoch": metrics["best_epoch"],
        "epochs": metrics["epochs"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": round(wall, 2),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(load_after, 2),
        "options": {k: v for k, v in metrics["options"].items() if k not in ("out_dir", "seed", "data_dir")},
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median/min/max accuracy and wall time of ``runs``, and whether each bar is met."""
    acc = [r["test_accuracy"] for r in runs]
    wall = [r["wall_seconds"] for r in runs]
    summary = {
        "median_accuracy": statistics.median(acc), "min_accuracy": min(acc), "max_accuracy": max(acc),
        "median_wall_seconds": statistics.median(wall), "max_wall_seconds": max(wall),
    }
    summary["meets_bar"] = {
        "median_accuracy": summary["median_accuracy"] >= BAR["median_accuracy"],
        "min_accuracy": summary["min_accuracy"] >= BAR["min_accuracy"],
        "max_wall_seconds": summary["max_wall_seconds"] < BAR["max_wall_seconds"],
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="Folder for the runs (default: a temporary one).")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to write.")
    parser.add_argument("extra", nargs="*", help="Extra flags for lmuf train (after --).")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        for seed in args.seeds:
            r = run_seed(seed, base / f"seed{seed}", args.extra)
            runs.append(r)
            print(f"seed {seed}: test {100 * r['test_accuracy']:.2f} % (best epoch {r['best_epoch']}/"
                  f"{r['epochs']}), train {r['train_seconds']:.1f} s, wall {r['wall_seconds']:.1f} s, "
                  f"load {r['loadavg_1min_before']:.2f} -> {r['loadavg_1min_after']:.2f}", flush=True)
    summary = summarize(runs)
    print(f"median {100 * summary['median_accuracy']:.2f} %, min {100 * summary['min_accuracy']:.2f} %, "
          f"max {100 * summary['max_accuracy']:.2f} %; wall median {summary['median_wall_seconds']:.1f} s, "
          f"max {summary['max_wall_seconds']:.1f} s; bar met: {summary['meets_bar']}")
    write_json(args.results, {
        "command": " ".join(["lmuf train --dataset digits --seed N", *args.extra]),
        "bar": BAR, "recipe": runs[0]["options"],
        "runs": [{k: v for k, v in r.items() if k != "options"} for r in runs], "summary": summary,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    })
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
