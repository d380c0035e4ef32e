"""Static vs calibrated current grids (issue 9): fixed vs float-graph fidelity of the default export.

    python benchmarks/bench_current_grid.py --checkpoint /tmp/recipe2/final/seed{0,1,2}/best.pt

For each trained checkpoint, the default export (one 8-bit term per learned weight, two per LMU
matrix) with the static current grid (2**-10 for every LIF) and with the grids the export job
calibrates on the training split (``lmuformer.jobs.export.calibrate_export``, headroom x2), run on
the emulator in fixed point and in float (the graph's own float arithmetic) on the whole test
split: prediction agreement (bar >= 99.5 %; digits: stays 100 %), identical spike trains, the first
diverging population, a_in values beyond 16 bits.  Wall seconds with the load average (the machine
is shared).  Writes benchmarks/results/current_grid_digits.json (``--out``).

``--finer N`` also runs the calibrated grids made 1..N bits finer (each at most 2**-15; the
lowering still coarsens a grid where u, v, vth or a bias would not fit, so the grids recorded are
the ones run): where ``a_in_overflow`` is not empty this is beyond Loihi's 16-bit a_in, i.e.
what a wider a_in would give, the limit of the calibrated grid.

    python benchmarks/bench_current_grid.py --checkpoint big.pt small.pt weak.pt \
        --data-dir /tmp/fake_scv2_100 /tmp/fake_scv2 /tmp/fake_scv2 --finer 2 \
        --out benchmarks/results/current_grid_scv2.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.graph import ExportOptions, model_to_nir  # noqa: E402
from export.metadata import with_current_frac  # noqa: E402
from lmuformer.analysis.spikes import fixed_vs_float  # noqa: E402
from lmuformer.checkpoint import load_checkpoint  # noqa: E402
from lmuformer.data import load_test_split  # noqa: E402
from lmuformer.files import write_json  # noqa: E402
from lmuformer.jobs.export import calibrate_export  # noqa: E402


def fidelity(graph, x: np.ndarray, y: np.ndarray) -> dict:
    """Fixed vs float emulator runs of ``graph`` on x: accuracies, agreement, spike identity, the
    grids run and the peak a_in."""
    r, fx, _ = fixed_vs_float(graph, x, y)
    return {**r, "current_frac": {k: v for k, v in fx.extra["network"]["frac"].items() if k in fx.neurons},
            "peak_abs_a_in": fx.extra["peak_abs_a_in"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", nargs="+", required=True)
    ap.add_argument("--data-dir", nargs="+", default=[None],
                    help="the data set's folder (digits: none): one for all checkpoints or one each")
    ap.add_argument("--finer", type=int, default=0, help="also run the calibrated grids 1..N bits finer")
    ap.add_argument("--out", default="benchmarks/results/current_grid_digits.json")
    args = ap.parse_args()
    if len(args.data_dir) not in (1, len(args.checkpoint)):
        ap.error("give one --data-dir for all checkpoints or one per checkpoint")
    dirs = args.data_dir * len(args.checkpoint) if len(args.data_dir) == 1 else args.data_dir
    result = {"command": " ".join(sys.argv), "export": "default (weight terms 1, LMU terms 2)",
              "checkpoints": []}
    for path, data_dir in zip(args.checkpoint, dirs, strict=True):
        ck = load_checkpoint(path)
        model, dataset = ck.model.eval(), ck.metrics["dataset"]
        x, y = load_test_split(dataset, data_dir)
        load0, t0 = os.getloadavg(), time.perf_counter()
        graph = model_to_nir(model, ExportOptions())
        frac, info = calibrate_export(graph, dataset, data_dir)
        t_cal = time.perf_counter() - t0
        static = fidelity(graph, x, y)
        calibrated = fidelity(with_current_frac(graph, frac, info), x, y)
        finer = {f"finer_{d}": fidelity(with_current_frac(graph, {n: min(k + d, 15) for n, k in frac.items()},
                                                          {**info, "finer_bits": d}), x, y)
                 for d in range(1, args.finer + 1)}
        entry = {"checkpoint": path, "dataset": dataset, "data_dir": data_dir, "test_samples": len(y),
                 "calibration": info, "calibration_wall_s": t_cal, "static": static, "calibrated": calibrated,
                 **finer,
                 "wall_s": time.perf_counter() - t0, "loadavg_before": load0,
                 "loadavg_after": os.getloadavg()}
        result["checkpoints"].append(entry)
        for name, r in (("static", static), ("calibrated", calibrated), *finer.items()):
            s = r["spike_identity"]
            print(f"{path} {name}: fixed {r['deployed_accuracy']:.4f}, "
                  f"float graph {r['float_graph_accuracy']:.4f}, agreement {r['agreement']:.4f}, "
                  f"identical spike trains {s['identical_samples']}/{s['samples']} "
                  f"(first divergence {s['first_divergence_samples']}), a_in > 16 bits {r['a_in_overflow']}, "
                  f"grids {sorted(r['current_frac'].values())}", flush=True)
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
