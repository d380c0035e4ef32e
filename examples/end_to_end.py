"""The whole path through the Python API, as a notebook would call it.

    .venv/bin/python examples/end_to_end.py [--out runs/example]

train (digits) -> checkpoint -> NIR export (quantised) -> emulator and torch re-import ->
per-layer energy report -> streaming accuracy curve.  About a minute on two cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import backends
import export
from lmuformer.analysis import streaming
from lmuformer.analysis.counts import build_report
from lmuformer.analysis.format import render
from lmuformer.analysis.profiles import resolve_profiles
from lmuformer.checkpoint import load_checkpoint
from lmuformer.data import load_test_split
from lmuformer.training import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/example")
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    out = Path(args.out)

    # 1. train the spiking LMUFormer on scikit-learn's digits (8 frames x 8 pixels)
    metrics = train(dataset="digits", epochs=args.epochs, out_dir=out)
    print(f"test accuracy (float model): {metrics['test_accuracy']:.4f}")
    model = load_checkpoint(out / "best.pt").model

    # 2. export to NIR with 8-bit weights and the LMU matrices quantised
    graph = export.model_to_nir(model, export.ExportOptions(weight_bits=8, lmu_bits=8))
    export.write_graph(graph, out / "model.nir")
    graph = export.read_graph(out / "model.nir")

    # 3. simulate the test split: bit-accurate emulator (fixed point) and the float re-import
    x, y = load_test_split("digits")
    fixed = backends.simulate(graph, x, backend="emulator", precision="fixed")
    ref = backends.simulate(graph, x, backend="torch", precision="float")
    print(f"emulator (fixed point): {np.mean(fixed.predictions == y):.4f}; "
          f"float re-import: {np.mean(ref.predictions == y):.4f}; "
          f"agreement {np.mean(fixed.predictions == ref.predictions):.4f}")

    # 4. spikes, synaptic operations and energy per layer
    report = build_report(graph, fixed, resolve_profiles(["45nm", "loihi"]), source=str(out / "model.nir"))
    print(render(report, "table"))

    # 5. accuracy against frames seen, from the emulator's per-step readout
    curve = streaming.summarize(streaming.per_step_outputs(fixed.trace), y, frames=x.shape[1],
                                latency=int(graph.metadata["latency_frames"]))
    print("accuracy after n frames:", [round(a, 3) for a in curve.accuracy_by_frames],
          f"final {curve.final_accuracy:.3f}")


if __name__ == "__main__":
    main()
