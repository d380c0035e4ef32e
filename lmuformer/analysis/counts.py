"""Per-layer counts (neurons, synapses, spikes, SOPs, MACs, neuron updates) and energy.

A *layer* is a population of the graph: every LIF/IF/CubaLIF/Threshold population (binary
spikes), every graded population (I/LI/CubaLI: the LMU memory, the readout) and the Input node
(real-valued); a population with 0-d (shared) parameters is as large as what feeds it.  What
the fixed-point lowering adds is no layer: the Output's memoryless readout (in front of an
Output fed by a synapse node; the SOPs into it are its source's) and the constant population
behind current biases (biases are not counted, below).
Its *synapses* are what the emulator and Lava execute: where the fixed-point lowering takes
the graph's structure (node types, shapes, delays; parameters it may refuse, e.g. v_reset != 0,
do not matter here), the nonzero entries of every composed synapse leaving it
(``backends.fixed_point.composed_synapses``: each chain of linear nodes and Delays between two
populations, e.g. Conv2d -> SumPool2d -> Flatten -> Affine, is one matrix per source, delay and
target, as one Lava Dense; a direct population -> population edge is an identity matrix); each
delayed tap is its own synapse, and each term of a quantised multi-term matrix too (one node
each).  The fan-out of neuron j is the number of nonzero entries in column j of all those
matrices (the float composed weight: ``lmuf map`` stores the nonzeros of each 8-bit term, the
same wherever no entry quantises to 0).  Graphs the lowering refuses (torch backend only) count
the synapse nodes (Affine/Linear/Scale/Conv/pool) a population feeds directly or through
Delay/Flatten nodes; synapse nodes after another one are then listed as ``uncounted_synapses``.

Per sample and per layer (then the mean and the standard deviation over samples):

- spiking layers: SOPs as they happen when the backend reports spike trains
  (``result.extra["spike_trains"]``, the emulator and Lava with ``record``): a spike of neuron
  j at step t through a synapse delayed d steps counts ``nnz_j`` of that synapse if it
  arrives within the sample (``t + d < steps``; the LMU's delay taps, the conv taps);
  otherwise ``sops = sum_j spikes_j x fanout_j`` (per-neuron spike counts when the backend
  reports them in ``result.extra["neuron_spikes"]``, otherwise ``spikes x mean fan-out``,
  exact in the mean when the fan-out is uniform), which also counts deliveries that would
  land after the sample ends;
- graded layers send a value every step: ``macs = synapses x steps``;
- the input layer: dense ``macs = synapses x frames`` (the real-valued frames of the sample;
  the ``latency`` flush steps carry zeros);
- ``neuron_updates = neurons x steps`` for spiking and graded layers (none for the input);
  ``active`` updates are the spikes of a spiking layer (a neuron-step that fired), and every
  update of a graded layer that sends messages; the rest are inactive.

Energy per profile: ``sops x E_sop + macs x E_mac + inactive x E_update + active x
E_update_active``, unpriced figures counting 0.  Biases are neuron parameters, not
operations, and are not counted.  The counts come from the run's spike counts, never from
the weights alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import nir
import numpy as np
import torch
import torch.nn.functional as F

from backends.base import SimulationResult
from backends.fixed_point import composed_synapses
from export.interpret import GraphRunner, input_shape
from export.metadata import GraphMetadata
from export.normalize import output_shape, topological_order
from lmuformer.analysis.ann import ann_baseline
from lmuformer.analysis.profiles import BUILTIN, Profile
from lmuformer.errors import UserError

SPIKING = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold)  # Threshold: a memoryless spiking population
GRADED = (nir.I, nir.LI, nir.CubaLI)
SYNAPSES = (nir.Affine, nir.Linear, nir.Scale, nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)
PASS_THROUGH = (nir.Delay, nir.Flatten)  # carry a population's spikes unchanged (Delay: later)
KINDS = ("sop", "mac", "neuron_update")

ASSUMPTIONS = (
    "Counts are per inference (one sample), mean over samples; std is the spread over samples.",
    "SOP: one binary spike through one nonzero synapse (each delayed tap and each quantised term counts); "
    "with spike trains (emulator, Lava) counted when delivered within the sample, else spikes x fan-out.",
    "MAC: one graded or real-valued message through one nonzero synapse; graded layers send every step; "
    "the input layer sends its real-valued frames (not the zero flush steps).",
    "Neuron update: one neuron advanced one step; active = it spiked (spiking) or it sent (graded).",
    "Not included: memory access, routing/interconnect, static (leakage) power, biases, I/O.",
)


@dataclass
class Layer:
    """Counts of one layer; per-sample arrays have shape (samples,)."""

    name: str
    kind: str  # "input", "spiking" or "graded"
    neurons: int
    synapses: int
    fan_out: np.ndarray  # (neurons,) nonzero weights per source neuron
    steps: int
    spikes: np.ndarray
    sops: np.ndarray
    macs: np.ndarray
    neuron_updates: np.ndarray
    active_updates: np.ndarray
    outgoing: list[str] = field(default_factory=list)

    def energy_by_kind(self, profile: Profile) -> dict[str, np.ndarray]:
        """Joules per sample for each kind of operation."""

        def f(op: str) -> float:
            v = profile.figure(op)
            return 0.0 if v is None else v

        inactive = self.neuron_updates - self.active_updates
        return {
            "sop": self.sops * f("sop"),
            "mac": self.macs * f("mac"),
            "neuron_update": inactive * f("neuron_update") + self.active_updates * f("neuron_update_active"),
        }

    def energy(self, profile: Profile) -> np.ndarray:
        return sum(self.energy_by_kind(profile).values())


def _size(graph: nir.NIRGraph, name: str) -> int:
    """Neurons of a population (or the Input): the product of :func:`_shape_of`."""
    shape = _shape_of(graph, name)
    if shape is None:
        raise UserError(f"cannot tell the size of the {type(graph.nodes[name]).__name__} node {name!r}")
    return int(np.prod(shape))


def _column_nnz(node: nir.NIRNode, in_shape: tuple[int, ...] | None = None) -> np.ndarray:
    if isinstance(node, (nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)):
        return conv_fan_out(node, in_shape)
    if isinstance(node, nir.Scale):
        return (np.asarray(node.scale) != 0).astype(np.int64).ravel()
    w = np.asarray(node.weight)
    if w.ndim != 2:
        raise UserError(f"synapse weights must be 2-D (out, in), got shape {w.shape}")
    return (w != 0).sum(axis=0).astype(np.int64)


def conv_fan_out(node: nir.NIRNode, in_shape: tuple[int, ...] | None) -> np.ndarray:
    """Nonzero synapses per input neuron (flattened, C x H x W order) of a convolution or
    pooling node: the adjoint (transposed) convolution of an all-ones output with the kernel's
    nonzero pattern, i.e. the number of (output neuron, kernel tap) pairs reading each input."""
    if not isinstance(node, (nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)):
        raise UserError(f"not a convolution or pooling node: {type(node).__name__}")
    shape = in_shape
    types = getattr(node, "input_type", None) or {}
    declared = next(iter(types.values()), None) if types else None
    if declared is not None and np.asarray(declared).ndim == 1 and np.asarray(declared).size >= 2:
        shape = tuple(int(v) for v in np.asarray(declared))
    if shape is None:
        raise UserError(f"cannot tell the input shape of a {type(node).__name__} node")
    runner = GraphRunner.__new__(GraphRunner)
    runner.dtype, runner.dt = torch.float64, 1.0
    p = runner._params(type(node).__name__, node)
    x = torch.zeros(1, *shape, dtype=torch.float64)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        mask = (p["w"] != 0).to(torch.float64)
        conv, tconv = (F.conv1d, F.conv_transpose1d) if isinstance(node, nir.Conv1d) else \
            (F.conv2d, F.conv_transpose2d)
        pad = p["padding"]
        if isinstance(pad, str):  # "same"/"valid": stride 1; pad explicitly for the adjoint
            k = np.asarray(mask.shape[2:]) - 1
            dil = np.asarray(p["dilation"])
            pad = tuple(int(v) for v in (k * dil) // 2) if pad == "same" else (0,) * len(k)
        out = conv(x, mask, None, p["stride"], pad, p["dilation"], p["groups"])
        counts = tconv(torch.ones_like(out), mask, None, p["stride"], pad, 0, p["groups"], p["dilation"])
    else:
        channels = shape[0]
        mask = torch.ones(channels, 1, *p["kernel"], dtype=torch.float64)
        out = F.avg_pool2d(x, p["kernel"], p["stride"], p["padding"])
        counts = F.conv_transpose2d(torch.ones_like(out), mask, None, p["stride"], p["padding"], 0, channels)
    full = torch.zeros_like(x)  # inputs beyond the last window (stride remainder) have none
    idx = tuple(slice(0, min(a, b)) for a, b in zip(full.shape, counts.shape, strict=True))
    full[idx] = counts[idx]
    return full.reshape(-1).round().to(torch.int64).numpy()


def _shape_of(graph: nir.NIRGraph, name: str, seen: tuple[str, ...] = ()) -> tuple[int, ...] | None:
    """The per-step shape a population (or the Input) emits: its type or parameters, else (0-d
    shared parameters, as Norse writes them) the shape of what feeds it, as the lowering reads it."""
    node = graph.nodes[name]
    if isinstance(node, nir.Input):
        return input_shape(node)
    shape = output_shape(node)
    if shape is not None:
        return shape
    preds = [a for a, b in graph.edges if b == name and a not in seen and a != name]
    return _shape_of(graph, preds[0], (*seen, name)) if preds else None


def outgoing_synapses(graph: nir.NIRGraph, source: str) -> list[str]:
    """Synapse nodes fed by ``source`` directly or through (chains of) Delay nodes."""
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    found: list[str] = []
    stack, seen = [source], {source}
    while stack:
        n = stack.pop()
        for m in succ.get(n, []):
            node = graph.nodes[m]
            if isinstance(node, PASS_THROUGH) and m not in seen:
                seen.add(m)
                stack.append(m)
            elif isinstance(node, SYNAPSES) and m not in found:
                found.append(m)
    return found


def outgoing_delays(graph: nir.NIRGraph, source: str) -> dict[str, int]:
    """Synapse node -> its delay in steps from ``source`` (the sum of the Delay nodes on the way)."""
    dt = GraphMetadata.of(graph).dt or 1.0
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    found: dict[str, int] = {}
    stack = [(source, 0)]
    seen = {source}
    while stack:
        n, d = stack.pop()
        for m in succ.get(n, []):
            node = graph.nodes[m]
            if isinstance(node, PASS_THROUGH) and m not in seen:
                seen.add(m)
                extra = float(np.asarray(node.delay).flat[0]) / dt if isinstance(node, nir.Delay) else 0.0
                stack.append((m, d + int(round(extra))))
            elif isinstance(node, SYNAPSES) and m not in found:
                found[m] = d
    return found


def delivered_sops(graph: nir.NIRGraph, source: str, trains: np.ndarray) -> np.ndarray:
    """SOPs per sample of ``source``'s spike trains (samples, steps, neurons) that reach their
    synapse within the run: a spike at step t through a node delayed d counts if t + d < steps.
    UserError if a synapse takes another number of inputs than the trains have neurons."""
    shape, n = _shape_of(graph, source), trains.shape[2]
    return _delivered(trains, [(d, _checked(_column_nnz(graph.nodes[syn], shape), syn, source, n))
                               for syn, d in outgoing_delays(graph, source).items()])


def _checked(nnz: np.ndarray, synapse: str, source: str, neurons: int) -> np.ndarray:
    """``nnz`` (nonzero weights per input) if it has one entry per neuron of ``source``, else UserError."""
    if nnz.shape != (neurons,):
        raise UserError(f"synapse {synapse!r} takes {nnz.size} inputs but {source!r} has {neurons} neurons")
    return nnz


def fan_out(graph: nir.NIRGraph, source: str, neurons: int) -> tuple[np.ndarray, list[str]]:
    """Nonzero outgoing weights per neuron of ``source``, and the synapse nodes counted."""
    syn = outgoing_synapses(graph, source)
    total = np.zeros(neurons, dtype=np.int64)
    for s in syn:
        total += _checked(_column_nnz(graph.nodes[s], _shape_of(graph, source)), s, source, neurons)
    return total, syn


@dataclass(frozen=True)
class Outgoing:
    """One composed synapse leaving a population: its name, delay (steps) and nonzero entries per
    source neuron (column)."""

    name: str
    delay: int
    nnz: np.ndarray  # (source neurons,) int64


def composed_outgoing(graph: nir.NIRGraph) -> dict[str, list[Outgoing]] | None:
    """Per source population the composed synapses the fixed-point backends execute (the constant
    population behind current biases left out: biases are not counted); None where the lowering
    refuses the graph."""
    try:
        pops, synapses = composed_synapses(graph)
    except UserError:
        return None
    out: dict[str, list[Outgoing]] = {n: [] for n, p in pops.items() if p.kind != "const"}
    for s in synapses:
        if s.source in out:
            out[s.source].append(Outgoing(s.name, s.delay, (s.weight != 0).sum(axis=0).astype(np.int64)))
    return out


def _composed_fan_out(outgoing: list[Outgoing], source: str, neurons: int) -> tuple[np.ndarray, list[str]]:
    total = np.zeros(neurons, dtype=np.int64)
    for o in outgoing:
        total += _checked(o.nnz, o.name, source, neurons)
    return total, [o.name for o in outgoing]


def _delivered(trains: np.ndarray, taps: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """SOPs per sample of spike trains (samples, steps, neurons) through synapses (delay, nnz per
    neuron): a spike at step t through a synapse delayed d counts if t + d < steps."""
    samples, steps, n = trains.shape
    cum = np.concatenate([np.zeros((samples, 1, n)), np.cumsum(trains, axis=1, dtype=np.float64)], axis=1)
    sops = np.zeros(samples)
    for d, nnz in taps:
        if d < steps:
            sops += cum[:, steps - d] @ nnz.astype(np.float64)
    return sops


def uncounted_synapses(graph: nir.NIRGraph) -> list[str]:
    """Synapse nodes that no population or Input feeds (directly or through Delay/Flatten
    nodes), e.g. an Affine after a pooling node: their operations are not in the counts."""
    counted: set[str] = set()
    for name, node in graph.nodes.items():
        if isinstance(node, (nir.Input, *SPIKING, *GRADED)):
            counted.update(outgoing_synapses(graph, name))
    return [n for n, node in graph.nodes.items() if isinstance(node, SYNAPSES) and n not in counted]


def _order(graph: nir.NIRGraph) -> list[str]:
    try:
        return topological_order(graph)
    except UserError:
        return list(graph.nodes)


_UNSET: dict = {}


def layer_counts(graph: nir.NIRGraph, result: SimulationResult,
                 composed: dict[str, list[Outgoing]] | None = _UNSET) -> list[Layer]:
    """The layers of ``graph`` in evaluation order, with the counts of ``result``; ``composed``:
    :func:`composed_outgoing` of the graph when already computed."""
    samples, steps = result.samples, int(result.steps)
    latency = GraphMetadata.of(graph).latency_frames
    frames = max(steps - latency, 0)
    per_neuron = result.extra.get("neuron_spikes", {}) if isinstance(result.extra, dict) else {}
    trains = result.extra.get("spike_trains", {}) if isinstance(result.extra, dict) else {}
    zeros = np.zeros(samples)
    composed = composed_outgoing(graph) if composed is _UNSET else composed
    layers: list[Layer] = []
    for name in _order(graph):
        node = graph.nodes[name]
        if isinstance(node, nir.Input):
            kind = "input"
        elif isinstance(node, SPIKING):
            kind = "spiking"
        elif isinstance(node, GRADED):
            kind = "graded"
        else:
            continue
        n = _size(graph, name)
        out = composed.get(name) if composed is not None else None
        fo, syn = fan_out(graph, name, n) if out is None else _composed_fan_out(out, name, n)
        synapses = int(fo.sum())
        if kind == "input":
            macs = np.full(samples, float(synapses * frames))
            layers.append(Layer(name, kind, n, synapses, fo, frames, zeros.copy(), zeros.copy(), macs,
                                zeros.copy(), zeros.copy(), syn))
            continue
        updates = np.full(samples, float(n * steps))
        if kind == "graded":
            sends = synapses > 0
            macs = np.full(samples, float(synapses * steps))
            layers.append(Layer(name, kind, n, synapses, fo, steps, zeros.copy(), zeros.copy(), macs,
                                updates, updates.copy() if sends else zeros.copy(), syn))
            continue
        if name not in result.spikes:
            raise UserError(f"the {result.backend} backend reported no spike counts for population {name!r}")
        spikes = np.asarray(result.spikes[name], dtype=np.float64).reshape(-1)
        if spikes.shape != (samples,):
            raise UserError(f"spike counts of {name!r} have shape {spikes.shape}, expected ({samples},)")
        if name in trains:
            tr = np.asarray(trains[name], dtype=bool).reshape(samples, steps, n)
            sops = delivered_sops(graph, name, tr) if out is None else _delivered(tr, [(o.delay, o.nnz)
                                                                                        for o in out])
        elif name in per_neuron:
            counts = np.asarray(per_neuron[name], dtype=np.float64).reshape(samples, n)
            sops = counts @ fo.astype(np.float64)
        else:
            sops = spikes * (synapses / n if n else 0.0)
        layers.append(Layer(name, kind, n, synapses, fo, steps, spikes, sops, zeros.copy(),
                            updates, spikes.copy(), syn))
    return layers


def _stat(a: np.ndarray) -> tuple[float, float]:
    a = np.asarray(a, dtype=np.float64)
    return float(a.mean()), float(a.std()) if a.size > 1 else 0.0


def _row(name: str, kind: str, neurons: int, synapses: int, steps: int, spikes, sops, macs, updates,
         active, spiking_neurons: int, energy: dict, fan_out_value: float | None = None) -> dict:
    spk, spk_sd = _stat(spikes)
    sop, sop_sd = _stat(sops)
    rate = spk / (spiking_neurons * steps) if spiking_neurons and steps and kind != "input" else None
    row = {
        "name": name,
        "kind": kind,
        "neurons": neurons,
        "synapses": synapses,
        "fan_out": fan_out_value if fan_out_value is not None else (synapses / neurons if neurons else 0.0),
        "steps": steps,
        "spikes": spk,
        "spikes_std": spk_sd,
        "firing_rate": rate if kind in ("spiking", "total") else None,
        "sops": sop,
        "sops_std": sop_sd,
        "macs": _stat(macs)[0],
        "neuron_updates": _stat(updates)[0],
        "active_neuron_updates": _stat(active)[0],
    }
    row["energy_j"] = {p: _stat(e["total"])[0] for p, e in energy.items()}
    row["energy_j_std"] = {p: _stat(e["total"])[1] for p, e in energy.items()}
    row["energy_by_kind_j"] = {p: {k: _stat(e[k])[0] for k in KINDS} for p, e in energy.items()}
    return row


def build_report(
    graph: nir.NIRGraph,
    result: SimulationResult,
    profiles: Sequence[Profile],
    ann: bool = True,
    source: str | None = None,
) -> dict:
    """The whole report as one JSON-ready dict (see ``lmuformer/analysis/README.md``)."""
    if not profiles:
        raise UserError("select at least one energy profile")
    if result.samples < 1:
        raise UserError(f"the {result.backend} result has no samples to report")
    composed = composed_outgoing(graph)
    layers = layer_counts(graph, result, composed)
    rows: list[dict] = []
    totals = {p.name: {k: 0.0 for k in (*KINDS, "total")} for p in profiles}
    for layer in layers:
        energy = {}
        for p in profiles:
            by_kind = layer.energy_by_kind(p)
            energy[p.name] = {**by_kind, "total": sum(by_kind.values())}
            for k, v in energy[p.name].items():
                totals[p.name][k] = totals[p.name][k] + v
        rows.append(_row(layer.name, layer.kind, layer.neurons, layer.synapses, layer.steps, layer.spikes,
                         layer.sops, layer.macs, layer.neuron_updates, layer.active_updates,
                         layer.neurons if layer.kind == "spiking" else 0, energy))
    spiking_neurons = sum(la.neurons for la in layers if la.kind == "spiking")
    neurons = sum(la.neurons for la in layers if la.kind != "input")
    synapses = sum(la.synapses for la in layers)
    sources = sum(la.neurons for la in layers if la.synapses)
    total = _row(
        "total", "total", neurons, synapses, int(result.steps),
        sum(la.spikes for la in layers), sum(la.sops for la in layers), sum(la.macs for la in layers),
        sum(la.neuron_updates for la in layers), sum(la.active_updates for la in layers),
        spiking_neurons, totals, fan_out_value=synapses / sources if sources else 0.0,
    )
    report = {
        "source": source,
        "backend": result.backend,
        "precision": result.precision,
        "samples": int(result.samples),
        "steps": int(result.steps),
        "frames": next((la.steps for la in layers if la.kind == "input"), None),
        "dt": GraphMetadata.of(graph).dt,
        "layers": rows,
        "total": total,
        "profiles": {p.name: p.to_dict() for p in profiles},
        "ann_baseline": None,
        "assumptions": list(ASSUMPTIONS),
    }
    missed = [] if composed is not None else uncounted_synapses(graph)
    if missed:  # only graphs the fixed-point lowering refuses (e.g. an Affine after a pooling node)
        report["uncounted_synapses"] = missed
    if ann:
        report["ann_baseline"] = _ann(graph, layers, report["frames"])
    return report


def _ann(graph: nir.NIRGraph, layers: list[Layer], frames: int | None) -> dict | None:
    config = GraphMetadata.of(graph).model_config
    if not config or frames is None:
        return None
    e45 = BUILTIN["45nm"]
    spiking_j = float(np.mean(sum(la.energy(e45) for la in layers)))
    return ann_baseline(config, frames, spiking_j)
