"""Simulate an exported graph on the first N test samples of a data set (the ``lmuf simulate``
job as one Python call), and the input of a graph from a data set or random frames."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np

from backends.base import simulate
from export.io import read_graph
from export.metadata import graph_input_shape
from export.normalize import prepare
from lmuformer.analysis.spikes import layer_spikes, spike_identity
from lmuformer.data import load_test_split
from lmuformer.errors import UserError
from lmuformer.validation import check_input_size, number


def samples_for_graph(graph: nir.NIRGraph, dataset: str | None, data_dir: str | None = None,
                      samples: int | None = None, random: bool = False, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """Input for a graph: the first ``samples`` of ``dataset``'s test split, x (n, frames,
    features) float32 and labels y (n,); or, with ``random``, standard-normal frames of the
    graph's shape (``samples`` of them, 8 by default) and y None."""
    frames, features = graph_input_shape(graph)
    if random:
        if frames is None:
            raise UserError("random input needs the frame count: the graph records none; pass --frames N")
        number(seed, "--seed", int, 0, 2**63 - 1)
        outputs = sum(int(np.prod(np.asarray(t))) for n in graph.nodes.values() if isinstance(n, nir.Output)
                      for t in n.output_type.values())
        check_input_size(samples or 8, frames, features, "the --random input", outputs)
        x = np.random.default_rng(seed).standard_normal((samples or 8, frames, features))
        return x.astype(np.float32), None
    if dataset is None:
        raise UserError("give --dataset NAME (or --random)")
    x, y = load_test_split(dataset, data_dir, samples)
    if x.shape[2] != features:
        raise UserError(
            f"the {dataset} dataset has {x.shape[2]} features per frame, the graph takes {features}"
        )
    return x, y



def simulate_file(
    path: str | Path,
    backend: str = "emulator",
    precision: str | None = None,
    dataset: str | None = "digits",
    data_dir: str | None = None,
    samples: int | None = None,
    random: bool = False,
    seed: int = 0,
    compare: bool = True,
    progress: bool = True,
    dt: float | None = None,
    frames: int | None = None,
) -> dict:
    """Run a NIR file on a backend; accuracy, agreement with the float re-import, spikes.
    Lava in fixed point also gets the emulator's count of a_in beyond 16 bits (Lava exposes no
    a_in; the emulator runs the same integers) and the fraction of samples on which the two
    backends predict alike (``emulator_predictions_equal``: 1.0 unless one of them is wrong).
    ``dt`` (s) and ``frames`` (of the ``random`` input) where the graph records none;
    ``notes``: what :func:`export.normalize.prepare` did, one line each."""
    graph = prepare(read_graph(path), dt=dt, frames=frames, where=str(path))
    x, y = samples_for_graph(graph, dataset, data_dir, samples, random, seed)
    record = compare and backend != "torch"
    options = {"record": True} if record else {}
    result = simulate(graph, x, backend=backend, precision=precision, progress=progress, **options)
    out: dict = {
        "backend": backend,
        "precision": result.precision,
        "samples": int(result.samples),
        "steps": int(result.steps),
        "accuracy": float(np.mean(result.predictions == y)) if y is not None else None,
        "predictions": [int(p) for p in result.predictions],
        "layers": layer_spikes(result),
        "steps_per_second": float(result.steps_per_second),
        "wall_s": float(result.wall_s),
        "dt": float(graph.metadata["dt"]),
        "notes": list(graph.metadata.get("notes", [])),
    }
    for key in ("input_clipped", "a_in_overflow"):  # fixed point beyond its encodable / calibrated range
        if key in result.extra:
            out[key] = result.extra[key]
    if backend == "lava" and result.precision == "fixed":
        # Lava exposes no a_in: the emulator runs the same integers (bit for bit, tests/test_lava.py),
        # counts them, and cross-checks Lava's predictions on the way (a fraction of Lava's time)
        emu = simulate(graph, x, backend="emulator", precision="fixed", progress=False)
        out["a_in_overflow"] = emu.extra["a_in_overflow"]
        out["emulator_predictions_equal"] = float(np.mean(emu.predictions == result.predictions))
    if compare and backend != "torch":
        ref = simulate(graph, x, backend="torch", precision="float", progress=False)
        out["agreement"] = float(np.mean(ref.predictions == result.predictions))
        out["reference"] = "torch float re-import of the same graph"
        float_run = simulate(graph, x, backend="emulator", precision="float", progress=False, record=True)
        out["spike_identity"] = spike_identity(result.extra["spike_trains"], float_run.extra["spike_trains"],
                                               list(result.neurons))
    return out
