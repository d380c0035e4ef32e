"""Speed of the simulation backends: Lava (fixed_pt, floating_pt) and the NumPy emulator.

For the digits and scv2 presets (activated random models, random inputs of the preset's size):
Lava per-sample wall time (with and without building/compiling the process network), Lava ms
per Lava step, steps/s; emulator (batch 64) per-sample time, steps/s and peak traced memory;
the emulator/Lava per-sample speed ratio.  Prints a table and writes
``benchmarks/results/backends.json`` (temporary file, then rename).

    .venv/bin/python benchmarks/bench_backends.py [--lava-samples 2] [--presets digits scv2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.base import simulate  # noqa: E402
from export import model_to_nir  # noqa: E402
from export.graph import ExportOptions  # noqa: E402
from lmuformer import build_model  # noqa: E402
from lmuformer.files import write_json  # noqa: E402
from lmuformer.model.calibrate import activate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "backends.json"


def graph_for(preset: str):
    torch.manual_seed(0)
    model = activate(build_model(preset))
    for lmu, _ in model.blocks:  # make the LMU input neuron spike too
        lmu.to_u[1].bias.data += 1.0
    cfg = model.config
    return model_to_nir(model, ExportOptions(quantize=True)), (cfg.frames, cfg.in_features)


def bench_lava(graph, x, precision: str) -> dict:
    r = simulate(graph, x, backend="lava", precision=precision, progress=False)
    n = len(x)
    return {
        "samples": n,
        "steps_per_sample": r.steps,
        "wall_s": r.wall_s,
        "s_per_sample": r.wall_s / n,
        "run_s_per_sample": r.extra["lava_run_s"] / n,
        "ms_per_lava_step": r.extra["ms_per_lava_step"],
        "lava_steps": r.extra["lava_steps"],
        "period": r.extra["period"],
        "lava_processes": r.extra["lava_processes"],
        "nir_steps_per_s": n * r.steps / r.wall_s,
    }


def bench_emulator(graph, x, precision: str) -> dict:
    simulate(graph, x[:2], backend="emulator", precision=precision, progress=False)  # warm-up
    r = simulate(graph, x, backend="emulator", precision=precision, progress=False, batch_size=len(x))
    tracemalloc.start()
    simulate(graph, x, backend="emulator", precision=precision, progress=False, batch_size=len(x))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n = len(x)
    return {
        "samples": n,
        "batch_size": n,
        "wall_s": r.wall_s,
        "s_per_sample": r.wall_s / n,
        "nir_steps_per_s": n * r.steps / r.wall_s,
        "peak_traced_mib": peak / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["digits", "scv2"])
    ap.add_argument("--lava-samples", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-lava-float", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        },
        "presets": {},
    }
    for preset in args.presets:
        graph, (frames, features) = graph_for(preset)
        x = rng.standard_normal((args.batch, frames, features)).astype(np.float32)
        row: dict = {"frames": frames, "features": features}
        t0 = time.perf_counter()
        row["emulator_fixed"] = bench_emulator(graph, x, "fixed")
        row["emulator_float"] = bench_emulator(graph, x, "float")
        row["lava_fixed"] = bench_lava(graph, x[: args.lava_samples], "fixed")
        if not args.no_lava_float:
            row["lava_float"] = bench_lava(graph, x[: args.lava_samples], "float")
        row["speedup_emulator_vs_lava_fixed"] = (
            row["lava_fixed"]["s_per_sample"] / row["emulator_fixed"]["s_per_sample"]
        )
        row["speedup_emulator_vs_lava_fixed_run_only"] = (
            row["lava_fixed"]["run_s_per_sample"] / row["emulator_fixed"]["s_per_sample"]
        )
        row["bench_s"] = time.perf_counter() - t0
        results["presets"][preset] = row
        lf, ef = row["lava_fixed"], row["emulator_fixed"]
        line = (
            f"{preset:7s} lava fixed {lf['s_per_sample']:7.2f} s/sample "
            f"({lf['run_s_per_sample']:.2f} s running, {lf['ms_per_lava_step']:.1f} ms/Lava step)"
        )
        if "lava_float" in row:
            line += f"  lava float {row['lava_float']['s_per_sample']:.2f} s/sample"
        line += (
            f"  emulator fixed {1000 * ef['s_per_sample']:.1f} ms/sample"
            f" ({ef['nir_steps_per_s']:.0f} steps/s,"
            f" peak {ef['peak_traced_mib']:.0f} MiB at batch {ef['batch_size']})"
            f"  speed-up x{row['speedup_emulator_vs_lava_fixed']:.0f}"
        )
        print(line, flush=True)
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
