"""Placement of a lowered network on neuromorphic cores and chips (``lmuf map``).

- :mod:`lmuformer.analysis.mapping.hardware`: targets as data (built-in ``loihi2``, ``loihi1``; files);
- :mod:`lmuformer.analysis.mapping.placement`: the split / pack algorithm, per-core loads, timings;
- :mod:`lmuformer.analysis.mapping.format`: table, JSON and markdown;
  :mod:`lmuformer.analysis.mapping.plot`: PNG.
"""

from backends import simulate
from backends.fixed_point import lower
from export.metadata import GraphMetadata
from lmuformer.analysis.mapping.hardware import BUILTIN, Figure, Hardware, get_hardware, load_hardware_file
from lmuformer.analysis.mapping.placement import (
    OPTIMISATIONS,
    Options,
    compare,
    place,
    source_rates,
    with_optimisations,
)

__all__ = ["BUILTIN", "OPTIMISATIONS", "Figure", "Hardware", "Options", "compare", "get_hardware",
           "load_hardware_file", "map_graph", "place", "source_rates"]


def map_graph(graph, target: str = "loihi2", optimisations=(), x=None, base: Options | None = None) -> dict:
    """Lower a NIR graph and place it on ``target`` (a name or a file) with the chosen
    optimisations; with ``x`` (samples, frames, features) the emulator's fixed-point run gives
    the per-neuron spike rates, else the activity is the worst case.  The report dict has
    ``comparison`` (as lowered, each optimisation, all) beside the placement."""
    hw = get_hardware(target) if isinstance(target, str) else target
    base = base or Options()
    rates, samples = None, 0
    if x is not None:
        result = simulate(graph, x, backend="emulator", precision="fixed", progress=False, record=True)
        net = lower(graph, steps=int(result.steps))
        rates, steps, samples = source_rates(net, result.extra["spike_trains"]), int(result.steps), len(x)
    else:
        meta = GraphMetadata.of(graph)
        steps = meta.frames + meta.latency_frames if meta.frames else None
        net = lower(graph, steps=steps)
    report = place(net, hw, with_optimisations(base, list(optimisations)), rates, steps)
    report["optimisations"] = list(optimisations)
    report["samples"] = samples
    report["comparison"] = compare(net, hw, base, list(optimisations) or list(OPTIMISATIONS), rates, steps)
    return report
