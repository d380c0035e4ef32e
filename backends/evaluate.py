"""Simulate an exported graph on the first N test samples of a dataset (the ``lmuf
simulate`` job as one Python call)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from backends.base import SimulationResult, simulate
from export.interpret import graph_config
from export.io import read_graph
from lmuformer.errors import UserError


def load_samples(graph, dataset: str | None, data_dir: str | None, samples: int | None,
                 random_seed: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """x (n, frames, features) and labels y (None for random input) for a graph."""
    if random_seed is not None:
        cfg = graph_config(graph)
        if not cfg:
            raise UserError("random input needs the model config in the graph's metadata")
        rng = np.random.default_rng(random_seed)
        return rng.random((samples or 8, cfg["frames"], cfg["in_features"])).astype(np.float32), None
    if dataset is None:
        raise UserError("give --dataset NAME (or --random)")
    from export.api import test_arrays

    x, y = test_arrays(dataset, data_dir, samples)
    cfg = graph_config(graph)
    if cfg and x.shape[2] != cfg["in_features"]:
        raise UserError(
            f"dataset {dataset!r} has {x.shape[2]} features per frame, the model expects {cfg['in_features']}"
        )
    return x, y


def layer_spikes(result: SimulationResult) -> list[dict]:
    """Per spiking population: name, neurons, spikes summed over the samples."""
    return [
        {"name": name, "neurons": int(result.neurons[name]), "spikes": int(round(float(counts.sum())))}
        for name, counts in result.spikes.items()
    ]


def simulate_file(
    path: str | Path,
    backend: str = "emulator",
    precision: str = "fixed",
    dataset: str | None = "digits",
    data_dir: str | None = None,
    samples: int | None = None,
    random_seed: int | None = None,
    compare: bool = True,
    progress: bool = True,
) -> dict:
    """Run a NIR file on a backend; accuracy, agreement with the float re-import, spikes."""
    graph = read_graph(path)
    x, y = load_samples(graph, dataset, data_dir, samples, random_seed)
    result = simulate(graph, x, backend=backend, precision=precision, progress=progress)
    out: dict = {
        "backend": backend,
        "precision": precision,
        "samples": int(result.samples),
        "steps": int(result.steps),
        "accuracy": float(np.mean(result.predictions == y)) if y is not None else None,
        "predictions": [int(p) for p in result.predictions],
        "layers": layer_spikes(result),
        "steps_per_second": float(result.steps_per_second),
        "wall_s": float(result.wall_s),
    }
    if compare and backend != "torch":
        ref = simulate(graph, x, backend="torch", precision="float", progress=False)
        out["agreement"] = float(np.mean(ref.predictions == result.predictions))
        out["reference"] = "torch float re-import of the same graph"
    return out


def write_json(obj: dict, path: str | Path) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
