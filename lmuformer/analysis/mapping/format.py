"""Render a placement report (:func:`lmuformer.analysis.mapping.map_graph`) as a table, JSON or markdown."""

from __future__ import annotations

import json
import textwrap

from lmuformer.analysis.format import num

FORMATS = ("table", "json", "markdown")
WIDTH = 100
LABELS = {
    "cores_per_chip": "cores per chip", "neurons_per_core": "neurons per core",
    "synaptic_memory_bits": "synaptic memory per core", "weight_bits": "weight bits",
    "fan_in_axons": "input axons per core", "max_delay": "max delay (steps)", "delay_bits": "delay bits",
    "graded_bits": "graded payload bits", "t_synop_ns": "time per synaptic op",
    "t_neuron_ns": "time per neuron update", "t_neuron_active_ns": "time per spiking update",
    "t_barrier_ns": "barrier sync per step",
}


def render(report: dict, fmt: str) -> str:
    if fmt == "table":
        return to_table(report)
    if fmt == "json":
        return json.dumps(report, indent=2, allow_nan=False) + "\n"
    if fmt == "markdown":
        return to_markdown(report)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def seconds(x: float | None) -> str:
    """1.23 us, 45.6 ms; '-' for None."""
    if x is None:
        return "-"
    for scale, unit in ((1, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x * 1e9:.3g} ns" if x else "0 s"


def kib(bits: float) -> str:
    return f"{bits / 8192:.1f} KiB"


def _pops(row: dict, width: int = 29) -> str:
    parts = [f"{p['name']}[{p['start']}:{p['stop']}]" for p in row["populations"]]
    text = ", ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "~"


def _figure(key: str, f: dict) -> str:
    v = f["value"]
    if key == "synaptic_memory_bits":
        v = f"{num(v)} bits ({kib(v)})"
    elif key.startswith("t_"):
        v = f"{v:g} ns"
    else:
        v = f"{v:,}" if isinstance(v, int) else f"{v:g}"
    return f"{LABELS.get(key, key)}: {v}{' [assumption]' if f['assumption'] else ''} -- {f['source']}"


_COLS = (("core", 4), ("chip", 4), ("populations", 29), ("neurons", 7), ("synapses", 8), ("memory", 10),
         ("used", 5), ("fan-in", 6), ("msgs/step", 9), ("time/step", 9))


def _cells(r: dict, mem_bits: int) -> list[str]:
    return [str(r["core"]), str(r["chip"]), _pops(r), num(r["neurons"]), num(r["synapses"]),
            kib(r["memory_bits"]), f"{100 * r['memory_used']:.0f}%", num(r["fan_in"]),
            num(r["messages_per_step"]), seconds(r["time_per_step_s"])]


def _totals_lines(report: dict) -> list[str]:
    t, hw = report["totals"], report["hardware"]
    busiest = report["cores"][t["busiest_core"]] if t["busiest_core"] is not None else None
    lines = [
        f"cores {t['cores']}, chips {t['chips']} ({hw['figures']['cores_per_chip']['value']} cores per chip; "
        f"{100 * t['chip_core_utilisation']:.0f}% of the chips' cores used)",
        f"neurons {num(t['neurons'])} ({100 * t['neuron_utilisation']:.1f}% of the cores' neuron slots), "
        f"stored synapses {num(t['synapses'])}, synaptic memory {kib(t['memory_bits'])} "
        f"({100 * t['memory_utilisation']:.1f}% of the cores' memory; "
        f"fullest core {kib(t['max_core_memory_bits'])})",
        f"activity, {report['activity']}: {num(t['messages_per_step'])} messages and "
        f"{num(t['sops_per_step'])} synaptic ops per step",
    ]
    if busiest:
        lines.append(f"busiest core {busiest['core']} ({_pops(busiest, 60)}): "
                     f"{num(busiest['sops_per_step'])} synaptic ops, "
                     f"{num(busiest['messages_per_step'])} messages per step")
    if t["time_per_step_s"] is not None:
        per_inf = (f", {seconds(t['time_per_inference_s'])} per inference ({t['steps_per_inference']} steps)"
                   if t["time_per_inference_s"] is not None else "")
        lines.append(f"estimated time: {seconds(t['time_per_step_s'])} per step (busiest core + barrier)"
                     + per_inf)
    else:
        lines.append("estimated time: none (no published per-operation timing for this target)")
    return lines


def _comparison_table(report: dict) -> list[str]:
    head = (f"{'variant':<34} {'cores':>5} {'chips':>5} {'synapses':>8} {'memory':>11} {'msgs/step':>9} "
            f"{'time/step':>9} {'per inf.':>9}")
    lines = [head, "-" * len(head)]
    for v in report["comparison"]:
        name = v["variant"] if len(v["variant"]) <= 34 else v["variant"][:33] + "~"
        lines.append(f"{name:<34} {v['cores']:>5} {v['chips']:>5} {num(v['synapses']):>8} "
                     f"{kib(v['memory_bits']):>11} {num(v['messages_per_step']):>9} "
                     f"{seconds(v['time_per_step_s']):>9} {seconds(v['time_per_inference_s']):>9}")
    return lines


def to_table(report: dict) -> str:
    hw = report["hardware"]
    opts = ", ".join(report.get("optimisations") or []) or "none (as lowered)"
    head = [f"lmuf map: {report.get('source') or 'graph'} on {hw['name']} ({hw['description']})",
            f"optimisations: {opts}; encoding {report['options']['encoding']}, terms "
            f"{report['options']['terms']}, delays per {report['options']['delays']}"]
    lines = [w for h in head for w in textwrap.wrap(h, WIDTH, subsequent_indent="  ")] + [""]
    head = " ".join(f"{c:>{w}}" if c != "populations" else f"{c:<{w}}" for c, w in _COLS)
    lines += [head, "-" * len(head)]
    mem = hw["figures"]["synaptic_memory_bits"]["value"]
    for r in report["cores"]:
        cells = _cells(r, mem)
        lines.append(" ".join(f"{c:>{w}}" if n != "populations" else f"{c:<{w}}"
                              for c, (n, w) in zip(cells, _COLS, strict=True)))
    lines += ["", "Totals:"]
    for x in _totals_lines(report):
        lines += textwrap.wrap(x, WIDTH, initial_indent="  ", subsequent_indent="    ")
    lines += ["", "Optimisations side by side (each alone, then all):"] + _comparison_table(report)
    lines += ["", f"Target figures ({hw['name']}):"]
    for k, f in hw["figures"].items():
        lines += textwrap.wrap(_figure(k, f), WIDTH, initial_indent="  ", subsequent_indent="      ")
    lines += ["", "Notes:"]
    for n in report["notes"]:
        lines += textwrap.wrap(n, WIDTH, initial_indent="  - ", subsequent_indent="    ")
    return "\n".join(lines) + "\n"


def to_markdown(report: dict) -> str:
    hw = report["hardware"]
    lines = [f"**lmuf map: {report.get('source') or 'graph'} on {hw['name']}** ({hw['description']})", ""]
    lines += ["| " + " | ".join(c for c, _ in _COLS) + " |", "|" + "---:|" * 2 + "---|" + "---:|" * 7]
    mem = hw["figures"]["synaptic_memory_bits"]["value"]
    for r in report["cores"]:
        lines.append("| " + " | ".join(_cells(r, mem)) + " |")
    lines += [""] + [f"- {x}" for x in _totals_lines(report)]
    lines += ["", "| variant | cores | chips | synapses | memory | msgs/step | time/step | per inference |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for v in report["comparison"]:
        lines.append(f"| {v['variant']} | {v['cores']} | {v['chips']} | {num(v['synapses'])} | "
                     f"{kib(v['memory_bits'])} | {num(v['messages_per_step'])} | "
                     f"{seconds(v['time_per_step_s'])} | {seconds(v['time_per_inference_s'])} |")
    lines += ["", "Target figures:", ""] + [f"- {_figure(k, f)}" for k, f in hw["figures"].items()]
    lines += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"
