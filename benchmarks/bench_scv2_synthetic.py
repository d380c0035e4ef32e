"""Speech Commands recipes on a small synthetic folder: the paper's collapses, ``--recipe small`` learns.

The folder is Speech-Commands-shaped synthetic words (``shared/tools/make_fake_scv2.py --per-word 30
--seed 0``: 35 words, 840 train / 105 val / 105 test clips).  Each run is ``lmuf train --dataset scv2``
in a fresh process (one torch thread, dim 64, memory 128, batch 32, seed 0):

- ``paper``: the shipped (paper) recipe, BCE on mixup-softened labels, mixup 0.6 (the reference's
  waveform mixup: partner from the whole training set, before the filterbank), SpecAugment, noise,
  roll, for ``--short-epochs`` epochs;
- ``paper_bce_only``: the same with mixup and augmentation off (BCE on one-hot labels), to tell which
  part stalls;
- ``small``: ``--recipe small`` as shipped (plain cross-entropy, no mixup/augmentation, 30 epochs);
- ``small_mixup``: ``--recipe small`` with the reference's waveform mixup 0.6 (cross-entropy on the
  soft labels), to tell what the mixup does where the model learns.

``paper_batch_mixup`` (kept from an earlier run of this script, not re-run: the code no longer has it)
is ``paper`` measured with the former batch mixup (features mixed within the batch, after augmenting).
``--only NAME ...`` re-runs some probes and keeps the others' records from the results file.

Records per run the test accuracy (best validation epoch), the per-epoch train loss, the training
time, the command's wall time and the 1-minute load average around it; the BCE of predicting the
uniform prior (p = 1/35 everywhere: 0.1298) for comparison with the stalled loss; and a 1-nearest-
neighbour baseline (Euclidean, on the normalised log-mel features the model sees, train -> test).

Writes ``benchmarks/results/scv2_synthetic.json`` (tmp + rename).

Usage: ``python benchmarks/bench_scv2_synthetic.py --data-dir /tmp/fake_scv2 [--short-epochs 8]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from lmuformer.files import write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scv2_synthetic.json"
SMALL_MODEL = "[model]\ndim = 64\nmemory_size = 128\n"


def run(name: str, data_dir: str, out: Path, flags: list[str], config: str) -> dict[str, Any]:
    """One ``lmuf train --dataset scv2`` in a fresh process; its metrics and timing."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "run.toml"
    cfg.write_text(config)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["train", "--dataset", "scv2", "--data-dir", data_dir, "--seed", "0", "--threads", "1",
            "--config", str(cfg), "--out", str(out / "run"), "--no-progress", *flags]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lmuformer.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    m = json.loads((out / "run" / "metrics.json").read_text())
    o = m["options"]
    return {
        "command": "lmuf " + " ".join(a for a in args if a not in (str(cfg), "--config"))
                   .replace(str(out / "run"), "OUT") + ("  # config: " + config.replace("\n", " ").strip()),
        "recipe": o.get("recipe", "default"), "loss": o["loss"], "mixup": o["mixup"], "augment": o["augment"],
        "mixup_kind": "waveform (reference: in the dataset, partner from the whole train split)"
                      if o["mixup"] else None,
        "epochs": m["epochs"], "batch_size": o["batch_size"], "lr": o["lr"],
        "test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"], "best_epoch": m["best_epoch"],
        "train_loss": [round(h["train_loss"], 4) for h in m["history"]],
        "val_accuracy_per_epoch": [round(h["val_accuracy"], 4) for h in m["history"]],
        "train_seconds": round(m["train_seconds"], 1), "wall_seconds": round(wall, 1),
        "loadavg_1min_before": round(load_before, 2), "loadavg_1min_after": round(load_after, 2),
    }


def nearest_neighbour(data_dir: str) -> float:
    """Test accuracy of 1-NN (Euclidean) on the flattened normalised log-mel features."""
    from lmuformer.data import load_dataset

    def stack(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        ds = load_dataset("scv2", split, data_dir)
        items = [ds[i] for i in range(len(ds))]
        return torch.stack([x for x, _ in items]).flatten(1), torch.as_tensor([int(y) for _, y in items])

    (xtr, ytr), (xte, yte) = stack("train"), stack("test")
    pred = ytr[torch.cdist(xte, xtr).argmin(1)]
    return float((pred == yte).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="The synthetic Speech-Commands folder.")
    parser.add_argument("--short-epochs", type=int, default=8, help="Epochs of the paper-recipe runs.")
    parser.add_argument("--out", type=Path, help="Folder for the runs (default: a temporary one).")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file to write.")
    parser.add_argument("--only", nargs="+", help="Probes to run; the others keep their recorded results.")
    args = parser.parse_args()
    short = ["--epochs", str(args.short_epochs), "--batch-size", "32"]
    plan = [
        ("paper", short, SMALL_MODEL),
        ("paper_bce_only", short, "mixup = 0.0\naugment = false\n" + SMALL_MODEL),
        ("small", ["--recipe", "small"], ""),
        ("small_mixup", ["--recipe", "small"], "mixup = 0.6\n"),
    ]
    runs: dict[str, Any] = {}
    previous = json.loads(args.results.read_text()) if args.results.is_file() else {}
    if args.only:
        unknown = set(args.only) - {name for name, _, _ in plan}
        if unknown:
            raise SystemExit(f"unknown probe(s): {', '.join(sorted(unknown))}")
        runs = dict(previous.get("runs", {}))
        plan = [p for p in plan if p[0] in args.only]
    elif "paper_batch_mixup" in previous.get("runs", {}):
        runs["paper_batch_mixup"] = previous["runs"]["paper_batch_mixup"]
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        for name, flags, config in plan:
            r = runs[name] = run(name, args.data_dir, base / name, flags, config)
            print(f"{name}: test {100 * r['test_accuracy']:.2f} % "
                  f"(best epoch {r['best_epoch']}/{r['epochs']}), "
                  f"last train loss {r['train_loss'][-1]}, train {r['train_seconds']} s, wall "
                  f"{r['wall_seconds']} s, load {r['loadavg_1min_before']} -> {r['loadavg_1min_after']}",
                  flush=True)
    nn_acc = previous["nearest_neighbour_test_accuracy"] if args.only else nearest_neighbour(args.data_dir)
    print(f"1-nearest neighbour: test {100 * nn_acc:.2f} %")
    classes = 35
    prior_bce = -(math.log(1 / classes) / classes + (1 - 1 / classes) * math.log(1 - 1 / classes))
    write_json(args.results, {
        "data": "shared/tools/make_fake_scv2.py --per-word 30 --seed 0 (840 train / 105 val / 105 test)",
        "uniform_prior_bce": round(prior_bce, 4),
        "nearest_neighbour_test_accuracy": nn_acc,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    })
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
