"""The README's main job, end to end, and the figures drawn from it.

    python benchmarks/bench_main_job.py [--checkpoint runs/digits/best.pt] [--out DIR] [--seed 0]

Runs the command line (a fresh process per step, so each wall time includes start-up):

1. ``lmuf train --dataset digits --seed N`` (skipped with ``--checkpoint``: a trained best.pt);
2. ``lmuf export --to nir CKPT -o model.nir --eval digits --json`` (the default export);
3. ``lmuf simulate model.nir --backend emulator --dataset digits`` (the whole test split); the
   same two steps with ``--weight-terms 2`` (two 8-bit terms per learned weight);
4. ``lmuf simulate model.nir --backend lava --precision fixed --dataset digits --samples 40``;
5. ``lmuf report model.nir --dataset digits --profile 45nm --profile loihi --profile spinnaker2
   --plot docs/energy_digits.png`` (JSON: ``benchmarks/results/energy_digits.json``);
6. ``lmuf stream CKPT --dataset digits --plot docs/stream_digits_torch.png`` and the same from
   the NIR graph on the emulator (``docs/stream_digits_emulator.png``; JSON beside main_job.json).

Writes ``benchmarks/results/main_job.json``: float / quantised / emulator / Lava accuracies, the
emulator's agreement with the float graph and its identical-spike-train fraction, synapses, and
each step's wall time with the load averages before and after (the machine may be shared).
``--no-lava`` skips step 4 (Lava not installed).  The run folder is temporary unless ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lmuformer.files import write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"


def lmuf(args: list[str], steps: dict[str, Any], name: str) -> str:
    """Run ``lmuf ARGS`` in a fresh process (this checkout first on the path); its stdout.

    Records the wall time (s) and the 1/5/15-minute load averages before and after in ``steps[name]``.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "lmuformer.cli", *args]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}): lmuf {' '.join(args)}\n{proc.stderr[-3000:]}")
    steps[name] = {"command": "lmuf " + " ".join(args), "wall_s": round(wall, 2),
                   "loadavg_before": [round(v, 2) for v in load_before],
                   "loadavg_after": [round(v, 2) for v in os.getloadavg()]}
    print(f"{name}: {wall:.1f} s wall (load {load_before[0]:.1f})", flush=True)
    return proc.stdout


def sim_summary(path: Path) -> dict[str, Any]:
    """Accuracy, agreement, spike identity and spikes per sample per layer of a ``lmuf simulate --json``."""
    d = json.loads(path.read_text())
    out = {k: d[k] for k in ("backend", "precision", "samples", "steps", "accuracy", "agreement")}
    ident = d.get("spike_identity")
    if ident:
        out["identical_spike_trains"] = ident["identical"]
        out["identical_samples"] = ident["identical_samples"]
        out["first_divergence"] = ident.get("first_divergence")
    out["spikes_per_sample"] = {layer["name"]: layer["spikes"] / d["samples"] for layer in d["layers"]}
    out["predictions"] = d["predictions"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="a trained best.pt to reuse instead of training")
    ap.add_argument("--seed", type=int, default=0, help="training seed [0]")
    ap.add_argument("--out", type=Path, help="folder for the run (default: a temporary one)")
    ap.add_argument("--lava-samples", type=int, default=40)
    ap.add_argument("--no-lava", action="store_true", help="skip the Lava run")
    args = ap.parse_args()
    steps: dict[str, Any] = {}
    result: dict[str, Any] = {"steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        run = args.out or Path(tmp)
        run.mkdir(parents=True, exist_ok=True)
        if args.checkpoint:
            ckpt = args.checkpoint
            result["checkpoint"] = str(ckpt)
            metrics_file = ckpt.parent / "metrics.json"
        else:
            lmuf(["train", "--dataset", "digits", "--seed", str(args.seed), "--out", str(run / "digits"),
                  "--no-progress"], steps, "train")
            ckpt = run / "digits" / "best.pt"
            result["checkpoint"] = f"trained here (seed {args.seed})"
            metrics_file = run / "digits" / "metrics.json"
        if metrics_file.exists():
            m = json.loads(metrics_file.read_text())
            result["training"] = {k: m.get(k) for k in ("seed", "epochs", "best_epoch", "val_accuracy",
                                                        "test_accuracy", "train_seconds")}
        nir = run / "model.nir"
        export = json.loads(lmuf(["export", "--to", "nir", str(ckpt), "-o", str(nir), "--eval", "digits",
                                  "--json"], steps, "export"))
        result["export"] = {k: export[k] for k in ("synapses", "lmu_synapses", "neurons", "graded_units",
                                                   "weight_bits", "weight_terms", "lmu_bits", "lmu_terms",
                                                   "accuracy_float", "accuracy_quantized", "eval_samples")}
        drop = export["accuracy_float"] - export["accuracy_quantized"]
        result["export"]["drop_pp"] = round(100 * drop, 2)
        lmuf(["simulate", str(nir), "--backend", "emulator", "--dataset", "digits", "--json",
              str(run / "emulator.json")], steps, "simulate_emulator")
        emu = sim_summary(run / "emulator.json")
        result["emulator"] = {k: v for k, v in emu.items() if k != "predictions"}
        if not args.no_lava:
            lmuf(["simulate", str(nir), "--backend", "lava", "--precision", "fixed", "--dataset", "digits",
                  "--samples", str(args.lava_samples), "--json", str(run / "lava.json")],
                 steps, "simulate_lava")
            lava = sim_summary(run / "lava.json")
            n = lava["samples"]
            lava["same_predictions_as_emulator"] = lava["predictions"] == emu["predictions"][:n]
            result["lava"] = {k: v for k, v in lava.items() if k != "predictions"}
        nir2 = run / "model_2terms.nir"
        export2 = json.loads(lmuf(["export", "--to", "nir", str(ckpt), "-o", str(nir2), "--eval", "digits",
                                   "--weight-terms", "2", "--json"], steps, "export_2terms"))
        lmuf(["simulate", str(nir2), "--backend", "emulator", "--dataset", "digits", "--json",
              str(run / "emulator_2terms.json")], steps, "simulate_emulator_2terms")
        emu2 = sim_summary(run / "emulator_2terms.json")
        result["weight_terms_2"] = {
            "synapses": export2["synapses"], "accuracy_quantized": export2["accuracy_quantized"],
            "drop_pp": round(100 * (export2["accuracy_float"] - export2["accuracy_quantized"]), 2),
            "emulator": {k: v for k, v in emu2.items() if k != "predictions"}}
        energy = RESULTS / "energy_digits.json"
        lmuf(["report", str(nir), "--dataset", "digits", "--profile", "45nm", "--profile", "loihi",
              "--profile", "spinnaker2", "--format", "json", "-o", str(energy), "--plot",
              str(DOCS / "energy_digits.png")], steps, "report")
        result["energy_report"] = str(energy.relative_to(ROOT))
        for backend, src in (("torch", ckpt), ("emulator", nir)):
            curve = RESULTS / f"stream_digits_{backend}.json"
            lmuf(["stream", str(src), "--dataset", "digits", "--backend", backend, "--quiet", "--plot",
                  str(DOCS / f"stream_digits_{backend}.png"), "--json", str(curve)],
                 steps, f"stream_{backend}")
            result[f"stream_{backend}"] = str(curve.relative_to(ROOT))
        if args.out and not args.checkpoint:
            shutil.copy(ckpt, run / "best.pt")
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "platform": platform.platform()}
    write_json(RESULTS / "main_job.json", result)
    e, s = result["export"], result["emulator"]
    print(f"float {100 * e['accuracy_float']:.2f} %, quantised {100 * e['accuracy_quantized']:.2f} % "
          f"({e['synapses']} synapses); emulator {100 * s['accuracy']:.2f} %, agreement "
          f"{100 * s['agreement']:.2f} %, identical spike trains {s.get('identical_samples')}/{s['samples']}")
    if "lava" in result:
        v = result["lava"]
        print(f"lava fixed: {100 * v['accuracy']:.2f} % on {v['samples']}, "
              f"agreement {100 * v['agreement']:.2f} %, "
              f"same predictions as the emulator: {v['same_predictions_as_emulator']}")
    print(f"wrote {RESULTS / 'main_job.json'}")


if __name__ == "__main__":
    main()
