"""Placement of the scv2 preset and the trained digits model on Loihi 2 and Loihi 1.

    python benchmarks/bench_mapping.py --digits runs/digits/model.nir [--scv2 scv2.nir]

For each graph and target: cores, chips, memory, the busiest core, the estimated time per
step and per inference, each optimisation side by side (``lmuformer.analysis.mapping.map_graph``);
activity from the emulator's fixed-point run (scv2: ``--scv2-samples`` standard-normal
samples, the preset has random weights; digits: the first ``--samples`` test samples).
Times the placement alone (the issue's bar: scv2 in < 10 s) and the whole ``lmuf map``
command without a run, with the load average beside them (the machine is shared).  Writes
benchmarks/results/mapping.json and docs/map_scv2.png, docs/map_digits.png.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.fixed_point import lower  # noqa: E402
from export import read_graph  # noqa: E402
from lmuformer.analysis.mapping import BUILTIN, map_graph, place  # noqa: E402
from lmuformer.analysis.mapping.format import kib, seconds  # noqa: E402
from lmuformer.analysis.mapping.plot import plot_placement  # noqa: E402
from lmuformer.files import write_json  # noqa: E402
from lmuformer.jobs.simulate import samples_for_graph  # noqa: E402


def scv2_graph(path: str | None):
    if path:
        return read_graph(path), path
    from export import model_to_nir
    from lmuformer.jobs.export import load_model

    return model_to_nir(load_model(preset_name="scv2")), "scv2 preset (random weights)"


def summary(report: dict) -> dict:
    t = report["totals"]
    keep = ("cores", "chips", "neurons", "synapses", "memory_bits", "memory_utilisation",
            "neuron_utilisation", "messages_per_step", "sops_per_step", "busiest_core",
            "max_core_memory_bits", "time_per_step_s", "steps_per_inference", "time_per_inference_s")
    busiest = report["cores"][t["busiest_core"]]
    return {**{k: t[k] for k in keep}, "busiest_populations": [p["name"] for p in busiest["populations"]],
            "comparison": report["comparison"], "activity": report["activity"], "notes": report["notes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--digits", help="NIR file of the trained digits model")
    ap.add_argument("--scv2", help="NIR file of the scv2 preset (default: exported here)")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--scv2-samples", type=int, default=2)
    args = ap.parse_args()
    out: dict = {"load_average_before": os.getloadavg(), "graphs": {}}

    graph, name = scv2_graph(args.scv2)
    start = time.perf_counter()
    net = lower(graph)
    lowered = time.perf_counter() - start
    place(net, BUILTIN["loihi2"], steps=133)
    placed = time.perf_counter() - start
    out["scv2_placement_s"] = {"lower": lowered, "lower_and_place": placed, "load_average": os.getloadavg(),
                               "cpu_cores": os.cpu_count()}
    if args.scv2:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        with tempfile.TemporaryDirectory() as tmp:  # lmuf refuses to write into a device such as /dev/null
            subprocess.run([sys.executable, "-m", "lmuformer.cli", "map", args.scv2, "--json", "-o",
                            str(Path(tmp) / "map.json")], check=True, env=env)
        out["scv2_placement_s"]["cli_without_run"] = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["scv2_placement_s"]["cli_without_run_cpu"] = (after.ru_utime + after.ru_stime
                                                          - cpu.ru_utime - cpu.ru_stime)
        out["scv2_placement_s"]["cli_load_average"] = os.getloadavg()

    jobs = [("scv2", graph, name, dict(random=True, samples=args.scv2_samples))]
    if args.digits:
        jobs.append(("digits", read_graph(args.digits), args.digits,
                     dict(dataset="digits", samples=args.samples)))
    for key, g, src, data in jobs:
        x, _ = samples_for_graph(g, data.get("dataset"), None, data["samples"], data.get("random", False), 0)
        out["graphs"][key] = {"source": src, "samples": int(len(x))}
        for target in ("loihi2", "loihi1"):
            report = map_graph(g, target, [], x)
            report["source"] = src
            out["graphs"][key][target] = summary(report)
            if target == "loihi2":
                plot_placement(report, ROOT / "docs" / f"map_{key}.png",
                               title=f"{key} on Loihi 2, as lowered: {report['totals']['cores']} cores "
                                     f"({len(x)} samples' spike rates)")
            t = report["totals"]
            print(f"{key:7s} {target}: {t['cores']} cores, {t['chips']} chip(s), {kib(t['memory_bits'])}, "
                  f"{seconds(t['time_per_step_s'])} per step, "
                  f"{seconds(t['time_per_inference_s'])} per inference")
            for v in report["comparison"][1:]:
                print(f"    {v['variant']:34s} {v['cores']:4d} cores  "
                      f"{seconds(v['time_per_step_s'])} per step")
    out["load_average_after"] = os.getloadavg()
    print(f"scv2 lower + place (loihi2): {placed:.2f} s (lower {lowered:.2f} s); {out['scv2_placement_s']}")
    write_json(ROOT / "benchmarks" / "results" / "mapping.json", out)


if __name__ == "__main__":
    main()
