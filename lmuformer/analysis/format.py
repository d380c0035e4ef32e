"""Render a report dict (:func:`lmuformer.analysis.counts.build_report`) as a terminal table,
JSON, CSV or markdown.  The table fits a 100-column terminal."""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap

FORMATS = ("table", "json", "csv", "markdown")
WIDTH = 100
NAME_W = 26
KIND_LABEL = {"sop": "SOP", "mac": "MAC", "neuron_update": "neuron update"}
FIGURE_LABEL = {"sop": "SOP", "mac": "MAC", "neuron_update": "update",
                "neuron_update_active": "active update"}


def render(report: dict, fmt: str) -> str:
    if fmt == "table":
        return to_table(report)
    if fmt == "json":
        return to_json(report)
    if fmt == "csv":
        return to_csv(report)
    if fmt == "markdown":
        return to_markdown(report)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


# ----------------------------------------------------------------------------- numbers


def num(x: float | None) -> str:
    """Compact count: 7, 21.5, 3.01k, 12.6M."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    a = abs(x)
    if a < 1000:
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            v = x / div
            return f"{v:.3g}{suffix}" if abs(v) < 100 else f"{v:.0f}{suffix}"
    return f"{x:.3g}"


ENERGY_UNITS = ((1, "J"), (1e-3, "mJ"), (1e-6, "uJ"), (1e-9, "nJ"), (1e-12, "pJ"), (1e-15, "fJ"))  # (J, name)


def joules(x: float | None) -> str:
    """Energy with an SI prefix: 137.8 nJ, 1.02 uJ."""
    if x is None:
        return "-"
    if x == 0:
        return "0 J"
    a = abs(x)
    for scale, unit in ENERGY_UNITS:
        if a >= scale:
            v = x / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{x:.3g} J"


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _name(name: str, kind: str, width: int = NAME_W) -> str:
    label = name + (" (real)" if kind == "input" else " (graded)" if kind == "graded" else "")
    return label if len(label) <= width else label[: width - 1] + "~"


def _pj(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e12:g} pJ"


def _figures(p: dict) -> str:
    parts = []
    for op, v in p["figures_j"].items():
        if op == "neuron_update_active" and v == p["figures_j"].get("neuron_update"):
            continue
        parts.append(f"{FIGURE_LABEL[op]} {_pj(v)}")
    return ", ".join(parts)


def _header(report: dict) -> list[str]:
    dt = report.get("dt")
    frames = report.get("frames")
    bits = [f"backend {report['backend']} ({report['precision']})", f"{report['samples']} samples",
            f"{report['steps']} steps per sample" + (f" ({frames} input frames)" if frames else "")]
    if dt:
        bits.append(f"dt {dt * 1e3:g} ms")
    head = f"lmuf report: {report['source']}" if report.get("source") else "lmuf report"
    return [head, ", ".join(bits),
            "Per inference: mean over samples (std = spread over samples); "
            "rate = spikes per neuron per step."]


def _ann_line(report: dict) -> str:
    a = report.get("ann_baseline")
    if not a:
        return "ANN baseline: not available (the graph records no model config)."
    line = (f"ANN baseline (non-spiking twin, memory {a['memory_size']}, {a['frames']} frames): "
            f"{num(a['macs'])} MACs x {joules(a['e_mac_j'])} = {joules(a['energy_j'])}; "
            f"spiking under 45nm {joules(a['spiking_energy_45nm_j'])}")
    if a.get("ratio"):
        line += f"; ratio ANN/SNN {a['ratio']:.3g}x"
    return line


# ----------------------------------------------------------------------------- table

_COUNT_COLS = (("neurons", 7), ("synapses", 8), ("fan-out", 7), ("spikes", 7), ("std", 6), ("rate", 6),
               ("SOPs", 7), ("MACs", 7), ("updates", 7))


def _count_cells(r: dict) -> list[str]:
    spiking = r["kind"] in ("spiking", "total")
    return [
        num(r["neurons"]), num(r["synapses"]), f"{r['fan_out']:.1f}",
        num(r["spikes"]) if spiking else "-", num(r["spikes_std"]) if spiking else "-",
        _rate(r["firing_rate"]), num(r["sops"]) if spiking else "-",
        num(r["macs"]), num(r["neuron_updates"]),
    ]


def to_table(report: dict) -> str:
    lines = _header(report) + [""]
    head = f"{'layer':<{NAME_W}}" + "".join(f" {c:>{w}}" for c, w in _COUNT_COLS)
    lines += [head, "-" * len(head)]
    rows = report["layers"] + [report["total"]]
    for r in rows:
        if r is report["total"]:
            lines.append("-" * len(head))
        cells = _count_cells(r)
        lines.append(f"{_name(r['name'], r['kind']):<{NAME_W}}"
                     + "".join(f" {c:>{w}}" for c, (_, w) in zip(cells, _COUNT_COLS, strict=True)))
    names = list(report["profiles"])
    per = max(1, (WIDTH - NAME_W) // 19)
    for i in range(0, len(names), per):
        group = names[i : i + per]
        lines += ["", f"{'energy per inference':<{NAME_W}}" + "".join(f" {n[:18]:>18}" for n in group)]
        lines.append("-" * (NAME_W + 19 * len(group)))
        for r in rows:
            if r is report["total"]:
                lines.append("-" * (NAME_W + 19 * len(group)))
            lines.append(f"{_name(r['name'], r['kind']):<{NAME_W}}"
                         + "".join(f" {joules(r['energy_j'][n]):>18}" for n in group))
        t = report["total"]
        lines.append(f"{'std over samples':<{NAME_W}}" + "".join(f" {joules(t['energy_j_std'][n]):>18}"
                                                                 for n in group))
        for kind in ("sop", "mac", "neuron_update"):
            lines.append(f"{'  of which ' + KIND_LABEL[kind]:<{NAME_W}}"
                         + "".join(f" {joules(t['energy_by_kind_j'][n][kind]):>18}" for n in group))
    lines += ["", "Profiles (joules per operation; '-' = not priced):"]
    for n, p in report["profiles"].items():
        lines += textwrap.wrap(f"{n}: {_figures(p)}. Source: {p['source']}.", WIDTH,
                               initial_indent="  ", subsequent_indent="    ")
        if p.get("notes"):
            lines += textwrap.wrap(p["notes"], WIDTH, initial_indent="    ", subsequent_indent="    ")
    lines += [""] + textwrap.wrap(_ann_line(report), WIDTH, subsequent_indent="  ")
    lines += textwrap.wrap("Not included: memory access, routing/interconnect, static (leakage) power, "
                           "biases, input/output transfer.", WIDTH)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- json / csv


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


_CSV_FIELDS = ("name", "kind", "neurons", "synapses", "fan_out", "steps", "spikes", "spikes_std",
               "firing_rate", "sops", "sops_std", "macs", "neuron_updates", "active_neuron_updates")


def csv_header(report: dict) -> list[str]:
    cols = list(_CSV_FIELDS)
    for n in report["profiles"]:
        cols += [f"energy_j_{n}", f"energy_j_std_{n}"] + [f"energy_j_{n}_{k}" for k in KIND_LABEL]
    return cols


def to_csv(report: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(csv_header(report))
    for r in report["layers"] + [report["total"]]:
        row = ["" if r[f] is None else r[f] for f in _CSV_FIELDS]
        for n in report["profiles"]:
            row += [r["energy_j"][n], r["energy_j_std"][n]]
            row += [r["energy_by_kind_j"][n][k] for k in KIND_LABEL]
        w.writerow(row)
    return buf.getvalue()


# ----------------------------------------------------------------------------- markdown


def to_markdown(report: dict) -> str:
    names = list(report["profiles"])
    lines = ["**" + _header(report)[0] + "**", "", *_header(report)[1:], ""]
    cols = ["layer", "kind", *(c for c, _ in _COUNT_COLS), *(f"energy {n}" for n in names)]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" + "---:|" * (len(cols) - 1)]
    for r in report["layers"] + [report["total"]]:
        name = f"**{r['name']}**" if r["kind"] == "total" else f"`{r['name']}`"
        cells = [name, r["kind"], *_count_cells(r), *(joules(r["energy_j"][n]) for n in names)]
        lines.append("| " + " | ".join(cells) + " |")
    t = report["total"]
    lines += ["", "Total energy per inference by kind of operation:", "",
              "| profile | SOP | MAC | neuron update | total | std |", "|---|---:|---:|---:|---:|---:|"]
    for n in names:
        k = t["energy_by_kind_j"][n]
        lines.append(f"| {n} | {joules(k['sop'])} | {joules(k['mac'])} | {joules(k['neuron_update'])} "
                     f"| {joules(t['energy_j'][n])} | {joules(t['energy_j_std'][n])} |")
    lines += ["", "Profiles:", ""]
    for n, p in report["profiles"].items():
        notes = f" {p['notes']}" if p["notes"] else ""
        lines.append(f"- `{n}`: {_figures(p)}. Source: {p['source']}.{notes}")
    lines += ["", _ann_line(report), "",
              "Not included: memory access, routing/interconnect, static (leakage) power, biases, "
              "input/output transfer."]
    return "\n".join(lines) + "\n"

