"""Both LMU memory forms of one model side by side: energy per layer and in total, per profile.

The model is exported twice (``lmu_form`` "recurrent", the reference, and "taps", see
:mod:`export.taps`) with otherwise identical options, both graphs run on the same samples with
the same backend (spike trains recorded where the backend can, so that the taps' SOPs are
counted as they happen), and both reports are merged by layer name.

*LMU memory energy* of a form: the SOP energy of u's spikes (the memory's only input; u's
neuron updates are the same in both forms and left out) plus everything of the memory's own
layers: the integrator (recurrent) or the relay neurons (taps, when a maximum delay is set).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import nir
import numpy as np

from backends import simulate
from export.graph import ExportOptions, model_to_nir
from export.metadata import GraphMetadata
from lmuformer.analysis.counts import build_report
from lmuformer.analysis.format import joules, num
from lmuformer.analysis.profiles import Profile

FORMS = ("recurrent", "taps")


def _memory_layers(report: dict) -> tuple[list[str], list[str]]:
    """(u layers, memory layers) of a report, by the export's names."""
    names = [r["name"] for r in report["layers"]]
    u = [n for n in names if n.endswith(".lmu.u.lif")]
    mem = [n for n in names if n.endswith(".lmu.memory") or ".lmu.taps.relay" in n]
    return u, mem


def memory_energy(report: dict) -> dict[str, float]:
    """Joules per inference of the LMU memory (see the module docstring), per profile."""
    u, mem = _memory_layers(report)
    rows = {r["name"]: r for r in report["layers"]}
    return {p: sum(rows[n]["energy_by_kind_j"][p]["sop"] for n in u)
            + sum(rows[n]["energy_j"][p] for n in mem) for p in report["profiles"]}


def compare_forms(model, x: np.ndarray | Callable, profiles: Sequence[Profile], backend: str = "emulator",
                  precision: str | None = None, source: str | None = None,
                  on_graph: Callable[[nir.NIRGraph], dict | None] | None = None, **export_options) -> dict:
    """Export ``model`` in both forms, run both on x (samples, frames, features) and report.

    ``x`` may be a function of the first graph returning the samples (the CLI's data loader).
    ``on_graph`` is applied to each exported graph before it runs (the export job's current-grid
    calibration); what it returns is the form's ``"current_grids"``.
    ``export_options``: further :class:`export.graph.ExportOptions` fields (e.g. lmu_taps).
    Returns {"forms": {form: report}, "memory_energy_j", "total_energy_j", "ratio_memory",
    "ratio_total" (taps / recurrent per profile), "same_predictions", "layers": merged rows}.
    """
    reports, preds = {}, {}
    for form in FORMS:
        graph = model_to_nir(model, ExportOptions(lmu_form=form, **export_options))
        grids = on_graph(graph) if on_graph is not None else None
        if callable(x):
            x = x(graph)
        extra = {"record": True} if backend in ("emulator", "lava") else {}
        result = simulate(graph, x, backend=backend, precision=precision, progress=False, **extra)
        reports[form] = build_report(graph, result, profiles, source=source)
        reports[form]["lmu"] = GraphMetadata.of(graph).lmu_memory
        if grids is not None:
            reports[form]["current_grids"] = grids
        preds[form] = result.predictions
    mem = {f: memory_energy(r) for f, r in reports.items()}
    tot = {f: dict(r["total"]["energy_j"]) for f, r in reports.items()}

    def ratio(d: dict) -> dict:
        return {p: (d["taps"][p] / d["recurrent"][p] if d["recurrent"][p] else None) for p in d["taps"]}

    order: list[str] = []
    for f in FORMS:
        for r in reports[f]["layers"]:
            if r["name"] not in order:
                order.append(r["name"])
    rows = []
    for name in order:
        row = {"name": name}
        for f in FORMS:
            r = next((r for r in reports[f]["layers"] if r["name"] == name), None)
            row[f] = None if r is None else {"kind": r["kind"], "synapses": r["synapses"], "sops": r["sops"],
                                             "macs": r["macs"], "energy_j": r["energy_j"]}
        rows.append(row)
    return {
        "source": source,
        "backend": reports["recurrent"]["backend"],
        "precision": reports["recurrent"]["precision"],
        "samples": int(len(x)),
        "profiles": list(reports["recurrent"]["profiles"]),
        "forms": reports,
        "layers": rows,
        "memory_energy_j": mem,
        "total_energy_j": tot,
        "ratio_memory": ratio(mem),
        "ratio_total": ratio(tot),
        "same_predictions": float(np.mean(preds["recurrent"] == preds["taps"])),
    }


def to_markdown(c: dict) -> str:
    """Per-layer energy of both forms under every profile, then the memory and total lines."""
    profs = c["profiles"]
    head = ["layer", *(f"{f} {p}" for p in profs for f in FORMS)]
    lines = [f"**LMU memory forms side by side**: {c['source'] or ''} ({c['backend']}, {c['precision']}, "
             f"{c['samples']} samples; energy per inference)", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in c["layers"]:
        cells = [f"`{r['name']}`"]
        for p in profs:
            for f in FORMS:
                cells.append("-" if r[f] is None else joules(r[f]["energy_j"][p]))
        lines.append("| " + " | ".join(cells) + " |")
    for label, key in (("LMU memory", "memory_energy_j"), ("total", "total_energy_j")):
        cells = [f"**{label}**"] + [f"**{joules(c[key][f][p])}**" for p in profs for f in FORMS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for p in profs:
        rm, rt = c["ratio_memory"][p], c["ratio_total"][p]
        lines.append(f"- {p}: taps / recurrent = {_ratio(rm)} (memory), {_ratio(rt)} (total)")
    lines.append(f"- predictions identical on {100 * c['same_predictions']:.1f} % of the samples")
    for f in FORMS:
        t = c["forms"][f]["total"]
        lines.append(f"- {f}: {num(t['synapses'])} synapses, {num(t['sops'])} SOPs, {num(t['macs'])} MACs "
                     "per inference")
    return "\n".join(lines) + "\n"


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.3g}"
