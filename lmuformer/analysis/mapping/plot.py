"""Per-core load of a placement as a PNG: synaptic memory and neuron slots used per core, and
the synaptic operations per step, stacked by the population slices a core holds."""

from __future__ import annotations

from pathlib import Path

from lmuformer.analysis.plot import save_png


def plot_placement(report: dict, path: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cores = report["cores"]
    names = list(report["populations"])
    cmap = plt.get_cmap("tab20")
    colour = {n: cmap(i % 20) for i, n in enumerate(names)}

    x = [r["core"] for r in cores]
    fig, axes = plt.subplots(3, 1, figsize=(max(7.0, 0.12 * len(cores) + 3), 7.5), sharex=True)
    mem = report["hardware"]["figures"]["synaptic_memory_bits"]["value"]
    n_max = report["hardware"]["figures"]["neurons_per_core"]["value"]
    bottom = {k: [0.0] * len(cores) for k in range(3)}
    for i, r in enumerate(cores):  # stacked per population slice on the core
        for p in r["populations"]:
            parts = (100 * p["memory_bits"] / mem, 100 * (p["stop"] - p["start"]) / n_max, p["sops_per_step"])
            for k, v in enumerate(parts):
                axes[k].bar(x[i], v, bottom=bottom[k][i], color=colour[p["name"]], width=0.8)
                bottom[k][i] += v
    axes[0].set_ylabel("synaptic memory\n(% of core)")
    axes[0].set_ylim(0, 105)
    axes[1].set_ylabel("neurons\n(% of core)")
    axes[2].set_ylabel("synaptic ops\nper step")
    axes[2].set_xlabel("core")
    t = report["totals"]
    busiest = t["busiest_core"]
    if busiest is not None:
        axes[2].annotate("busiest", (busiest, cores[busiest]["sops_per_step"]), ha="center", va="bottom",
                         fontsize=7)
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[n]) for n in names]
    fig.legend(handles, names, loc="center right", fontsize=7, frameon=False)
    opts = ", ".join(report.get("optimisations") or []) or "as lowered"
    src = report.get("source") or "graph"
    fig.suptitle(title or f"{src} on {report['target']} ({opts}): {t['cores']} cores, {t['chips']} chip(s)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    return save_png(fig, path, dpi=110)
