"""The ``torch`` backend: the NIR re-import (:class:`export.GraphRunner`), float64."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from backends.base import SimulationResult
from export.interpret import GraphRunner
from lmuformer.errors import UserError


def run(graph, x: np.ndarray, precision: str = "float", progress: bool = True,
        batch_size: int = 64) -> SimulationResult:
    """Run the graph with its stored (float or quantised) weights in float64."""
    if precision != "float":
        raise UserError("the torch backend runs in floating point only: use --precision float")
    runner = GraphRunner(graph)
    readouts, traces, spikes = [], [], {}
    neurons: dict[str, int] = {}
    steps = 0
    with tqdm(total=len(x), desc="torch", unit="sample", disable=not progress) as bar:
        for i in range(0, len(x), batch_size):
            r = runner.run(torch.as_tensor(x[i : i + batch_size]))
            readouts.append(r.readout.numpy())
            traces.append(r.trace.numpy())
            for k, v in r.spikes.items():
                spikes.setdefault(k, []).append(v.numpy())
            neurons, steps = r.neurons, r.steps
            bar.update(len(r.readout))
    return SimulationResult(
        backend="torch", precision="float",
        readout=np.concatenate(readouts), trace=np.concatenate(traces),
        spikes={k: np.concatenate(v) for k, v in spikes.items()},
        neurons=neurons, steps=steps, wall_s=0.0,
    )
