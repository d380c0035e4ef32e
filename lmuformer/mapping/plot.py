"""Per-core load of a placement as a PNG: synaptic memory and neuron slots used per core, and
the synaptic operations per step, coloured by the population that holds most of the core."""

from __future__ import annotations

from pathlib import Path

from lmuformer.errors import UserError
from lmuformer.files import atomic_write


def plot_placement(report: dict, path: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cores = report["cores"]
    names = list(report["populations"])
    cmap = plt.get_cmap("tab20")
    colour = {n: cmap(i % 20) for i, n in enumerate(names)}

    def main(r):
        return max(r["populations"], key=lambda p: p["stop"] - p["start"])["name"]

    x = [r["core"] for r in cores]
    cols = [colour[main(r)] for r in cores]
    fig, axes = plt.subplots(3, 1, figsize=(max(7.0, 0.12 * len(cores) + 3), 7.5), sharex=True)
    axes[0].bar(x, [100 * r["memory_used"] for r in cores], color=cols)
    axes[0].set_ylabel("synaptic memory\n(% of core)")
    axes[0].set_ylim(0, 105)
    axes[1].bar(x, [100 * r["neurons_used"] for r in cores], color=cols)
    axes[1].set_ylabel("neurons\n(% of core)")
    axes[2].bar(x, [r["sops_per_step"] for r in cores], color=cols)
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
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    except OSError as e:
        raise UserError(f"cannot write the plot {path}: {e}") from None
    finally:
        plt.close(fig)
    return Path(path)
