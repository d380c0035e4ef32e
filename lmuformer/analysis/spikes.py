"""Spike summaries of simulation runs: spikes per population, and whether two runs' spike
trains are identical (and where they first diverge)."""

from __future__ import annotations

import nir
import numpy as np

from backends.base import SimulationResult, simulate
from lmuformer.errors import UserError


def layer_spikes(result: SimulationResult) -> list[dict]:
    """Per spiking population: name, neurons, spikes summed over the samples."""
    return [
        {"name": name, "neurons": int(result.neurons[name]), "spikes": int(round(float(counts.sum())))}
        for name, counts in result.spikes.items()
    ]


def spike_identity(trains: dict[str, np.ndarray], reference: dict[str, np.ndarray], order: list[str]) -> dict:
    """Compare per-population spike trains (name -> (samples, steps, neurons) bool) with a
    reference run's.  ``order``: the populations in graph (evaluation) order.

    Returns ``identical`` (fraction of samples whose every train equals the reference's),
    ``identical_samples``, ``first_divergence`` (the first population in ``order`` that differs
    in any sample, None if none) and ``first_divergence_samples`` (population -> number of
    samples whose first differing population, in ``order``, is that one)."""
    names = [n for n in order if n in trains and n in reference]
    if set(names) != set(trains) or set(names) != set(reference):
        raise UserError("the two runs record different spiking populations")
    samples = next(iter(trains.values())).shape[0] if trains else 0
    first = np.full(samples, -1)
    for i, n in enumerate(names):
        if trains[n].shape != reference[n].shape:
            raise UserError(f"{n}: spike trains of shape {trains[n].shape} and {reference[n].shape}")
        differs = (trains[n] != reference[n]).reshape(samples, -1).any(axis=1)
        first[(first < 0) & differs] = i
    same = int(np.sum(first < 0))
    counts = {names[i]: int(np.sum(first == i)) for i in sorted(set(first[first >= 0].tolist()))}
    return {
        "identical": same / samples if samples else 1.0,
        "identical_samples": same,
        "samples": int(samples),
        "first_divergence": names[int(first[first >= 0].min())] if np.any(first >= 0) else None,
        "first_divergence_samples": counts,
        "reference": "emulator float run of the same graph",
    }


def fixed_vs_float(graph: nir.NIRGraph, x: np.ndarray, y: np.ndarray | None = None,
                   input_frac_bits: int | None = None) -> tuple[dict, SimulationResult, SimulationResult]:
    """The emulator's fixed-point and float runs of ``graph`` on x (samples, frames, features)
    with labels y (None: no accuracies): ``deployed_accuracy`` (fixed), ``float_graph_accuracy``, prediction
    ``agreement`` (the bar of issue 9: ``agreement_bar_met`` at >= 99.5 %), the fixed run's
    ``spike_identity`` against the float run and its ``a_in_overflow``; and the two results.
    ``input_frac_bits``: the fixed run's input grid 2**-q (None: the finest x fits)."""
    fx = simulate(graph, x, backend="emulator", precision="fixed", progress=False, record=True,
                  input_frac_bits=input_frac_bits)
    fl = simulate(graph, x, backend="emulator", precision="float", progress=False, record=True)
    agree = float(np.mean(fx.predictions == fl.predictions))
    return {"deployed_accuracy": None if y is None else float(np.mean(fx.predictions == y)),
            "float_graph_accuracy": None if y is None else float(np.mean(fl.predictions == y)),
            "agreement": agree, "agreement_bar_met": agree >= 0.995,
            "spike_identity": spike_identity(fx.extra["spike_trains"], fl.extra["spike_trains"],
                                             list(fx.neurons)),
            "a_in_overflow": fx.extra["a_in_overflow"]}, fx, fl
