"""Speed of the simulation backends: Lava (fixed_pt, floating_pt) and the NumPy emulator.

For the digits and scv2 presets (activated random models, random inputs of the preset's size):
Lava per-sample wall time (with and without building/compiling the process network), Lava ms
per Lava step, steps/s; emulator (batch 64) per-sample time, steps/s and peak traced memory;
the emulator/Lava per-sample speed ratio.  Prints a table and writes
``benchmarks/results/backends.json`` (temporary file, then rename).

``--peer`` runs instead two peer-like standard NIR graphs built here (the shapes Norse and
snnTorch export: an MLP of LIF layers with a spiking output; a conv net of CubaLIF layers with
SumPool2d, Flatten and an LI readout), with ``dt`` = 1 ms and 50 frames, and writes
``benchmarks/results/backends_peer.json``.  The load average is recorded beside every figure.

    .venv/bin/python benchmarks/bench_backends.py [--lava-samples 2] [--presets digits scv2]
    .venv/bin/python benchmarks/bench_backends.py --peer
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import nir
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
PEER_RESULTS = RESULTS.with_name("backends_peer.json")
PEER_DT, PEER_FRAMES = 1e-3, 50


def _full(shape, v) -> np.ndarray:
    return np.full(shape, v, np.float64)


def peer_mlp(rng: np.random.Generator):
    """snnTorch-like: Input(20) -> Affine -> LIF(64) -> Affine -> LIF(32) -> Affine -> LIF(10) -> Output."""
    sizes, edges, prev = [20, 64, 32, 10], [], "input"
    nodes: dict = {"input": nir.Input(input_type={"input": np.array([20])})}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w = rng.normal(0.5 / np.sqrt(a), 4 / np.sqrt(a), (b, a))
        nodes[f"fc{i}"] = nir.Affine(weight=w, bias=rng.normal(0, 0.05, b))
        nodes[f"lif{i}"] = nir.LIF(tau=_full(b, 5 * PEER_DT), r=_full(b, 1.0), v_leak=_full(b, 0.0),
                                   v_threshold=_full(b, 1.0), v_reset=_full(b, 0.0))
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev = f"lif{i}"
    nodes["output"] = nir.Output(output_type={"output": np.array([10])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": PEER_DT}), (PEER_FRAMES, 20)


def peer_conv(rng: np.random.Generator):
    """Norse-like: Input(2, 8, 8) -> Conv2d 3x3 (8 ch) -> CubaLIF -> SumPool2d 2 -> Flatten -> Linear
    -> CubaLIF(10) -> Linear -> LI(10) -> Output."""
    c = (8, 8, 8)
    cuba = dict(tau_syn=5 * PEER_DT, tau_mem=10 * PEER_DT, r=1.0, v_leak=0.0, v_threshold=1.0, w_in=1.0)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "conv": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0.1, 0.8, (8, 2, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=np.zeros(8)),
        "cuba0": nir.CubaLIF(**{k: _full(c, v) for k, v in cuba.items()}),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                              padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([8, 4, 4])}, start_dim=0, end_dim=-1),
        "fc": nir.Linear(weight=rng.normal(0.2, 1.0, (10, 128))),
        "cuba1": nir.CubaLIF(**{k: _full(10, v) for k, v in cuba.items()}),
        "out_w": nir.Linear(weight=rng.normal(0, 1.0, (10, 10))),
        "li": nir.LI(tau=_full(10, 10 * PEER_DT), r=_full(10, 1.0), v_leak=_full(10, 0.0)),
        "output": nir.Output(output_type={"output": np.array([10])}),
    }
    names = list(nodes)
    edges = list(zip(names, names[1:], strict=False))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": PEER_DT}), (PEER_FRAMES, 128)


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
    ap.add_argument("--peer", action="store_true", help="the peer-like standard NIR graphs instead")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    out = args.out or (PEER_RESULTS if args.peer else RESULTS)
    rng = np.random.default_rng(0)
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
        },
        "presets": {},
    }
    peers = {"peer_mlp": peer_mlp, "peer_conv": peer_conv}
    makers = peers if args.peer else {p: graph_for for p in args.presets}
    for preset, make in makers.items():
        graph, (frames, features) = make(np.random.default_rng(1)) if args.peer else make(preset)
        x = rng.standard_normal((args.batch, frames, features)).astype(np.float32)
        if args.peer:
            x = np.abs(x)
        row: dict = {"frames": frames, "features": features, "loadavg_before": os.getloadavg()}
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
        row["loadavg_after"] = os.getloadavg()
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
    write_json(out, results)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
