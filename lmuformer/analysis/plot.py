"""Energy per layer, stacked by kind of operation (SOP / MAC / neuron update), as a PNG."""

from __future__ import annotations

from pathlib import Path

from lmuformer.analysis.format import ENERGY_UNITS
from lmuformer.errors import UserError
from lmuformer.files import atomic_write

COLORS = {"sop": "#1f77b4", "mac": "#ff7f0e", "neuron_update": "#2ca02c"}
LABELS = {"sop": "synaptic ops (binary spikes)", "mac": "MACs (real-valued / graded)",
          "neuron_update": "neuron updates"}


def _unit(peak: float) -> tuple[float, str]:
    for scale, unit in ENERGY_UNITS:
        if peak >= scale:
            return scale, unit
    return ENERGY_UNITS[-1]


def plot_report(report: dict, path: str | Path, profiles: list[str] | None = None) -> Path:
    """One horizontal stacked-bar panel per profile: energy per inference per layer, split by
    kind of operation, total written at each bar's end.  Written to a temporary file, then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    names = profiles or list(report["profiles"])
    layers = report["layers"]
    labels = [r["name"] for r in layers][::-1]
    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names) + 2.2, 0.32 * len(layers) + 1.8),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        peak = max((r["energy_j"][name] for r in layers), default=0.0)
        scale, unit = _unit(peak)
        left = [0.0] * len(layers)
        for kind in ("sop", "mac", "neuron_update"):
            vals = [r["energy_by_kind_j"][name][kind] / scale for r in layers][::-1]
            ax.barh(labels, vals, left=left, color=COLORS[kind], label=LABELS[kind], height=0.7)
            left = [a + b for a, b in zip(left, vals, strict=True)]
        for y, v in enumerate(left):
            if v > 0:
                ax.text(v, y, f" {v:.3g}", va="center", fontsize=7)
        ax.set_xlim(0, max(left + [1e-30]) * 1.25)
        total = report["total"]["energy_j"][name]
        tscale, tunit = _unit(total)
        ax.set_title(f"{name}: total {total / tscale:.3g} {tunit} per inference", fontsize=9)
        ax.set_xlabel(f"energy per inference ({unit})")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].legend(loc="lower right", fontsize=7)
    fig.suptitle(f"Energy per layer by kind of operation ({report['backend']}, {report['samples']} samples)",
                 fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=120)


def save_png(fig, path: str | Path, dpi: int) -> Path:
    """Write the matplotlib figure ``fig`` to ``path`` as PNG (atomically) and close it;
    UserError when the file cannot be written."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    except OSError as e:
        raise UserError(f"cannot write the plot {path}: {e}") from None
    finally:
        plt.close(fig)
    return Path(path)
