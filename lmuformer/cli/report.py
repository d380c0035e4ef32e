"""``lmuf report``: per-layer spikes, synaptic operations and energy of a NIR model's run."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from lmuformer.errors import UserError

BACKEND_NAMES = ("emulator", "lava", "torch")


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _graph_shape(graph) -> tuple[int, int]:
    """(frames, features) of the model the graph was exported from."""
    from export.interpret import graph_config
    from lmuformer.report.counts import _size

    cfg = graph_config(graph)
    inputs = [n for n in graph.nodes.values() if type(n).__name__ == "Input"]
    features = cfg.get("in_features") or (_size(inputs[0]) if inputs else None)
    frames = cfg.get("frames") or graph.metadata.get("frames")
    if not features or not frames:
        raise UserError("the graph records no model config (frames, features): use --dataset")
    return int(frames), int(features)


def load_samples(graph, dataset: str | None, data_dir: str | None, samples: int, random: bool,
                 seed: int = 0) -> np.ndarray:
    """(samples, frames, features) float32: the first ``samples`` of the dataset's test split,
    or standard-normal random input of the graph's shape."""
    frames, features = _graph_shape(graph) if random else (None, None)
    if random:
        rng = np.random.default_rng(seed)
        return rng.standard_normal((samples, frames, features)).astype(np.float32)
    from lmuformer.data import load_dataset

    ds = load_dataset(dataset, "test", data_dir)
    n = min(samples, len(ds))
    if n == 0:
        raise UserError(f"the {dataset} test split is empty")
    x = np.stack([np.asarray(ds[i][0], dtype=np.float32) for i in range(n)])
    try:
        _, want = _graph_shape(graph)
    except UserError:
        want = None
    if want is not None and x.shape[2] != want:
        raise UserError(
            f"the {dataset} dataset has {x.shape[2]} features per frame but the model takes {want}"
        )
    return x


@click.command("report")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--dataset", help="Dataset whose test split gives the samples (e.g. digits).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Data folder (mnist, psmnist, scv2).")
@click.option("--random", "use_random", is_flag=True,
              help="Standard-normal random input of the graph's shape instead of a dataset.")
@click.option("--seed", default=0, show_default=True, help="Seed of the --random input.")
@click.option("--samples", default=16, show_default=True, type=click.IntRange(min=1),
              help="Number of samples (the first N of the test split).")
@click.option("--backend", type=click.Choice(BACKEND_NAMES), default="emulator", show_default=True,
              help="Simulator that runs the graph.")
@click.option("--precision", type=click.Choice(("fixed", "float")),
              help="Arithmetic; default fixed, float for the torch backend.")
@click.option("--profile", "profiles", multiple=True, metavar="NAME_OR_FILE",
              help="Energy profile: 45nm, loihi, spinnaker2 or a .toml/.json file; repeatable "
              "(default: all built-ins).")
@click.option("--format", "fmt", type=click.Choice(("table", "json", "csv", "markdown")), default="table",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the report here (default: stdout).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG of energy per layer.")
def command(model, dataset, data_dir, use_random, seed, samples, backend, precision, profiles, fmt, output,
            plot) -> None:
    """Per-layer spikes, synaptic operations (SOPs), MACs, neuron updates and energy of MODEL
    (a NIR file) simulated on a dataset's first test samples (or --random input).

    Counts are per inference, the mean over samples; energy is given under each --profile.
    """
    from backends import simulate
    from export import read_graph
    from lmuformer.report import build_report, resolve_profiles
    from lmuformer.report.format import render

    if use_random == (dataset is not None):
        raise click.UsageError("give either --dataset NAME or --random")
    prof = resolve_profiles(list(profiles))
    graph = read_graph(model)
    x = load_samples(graph, dataset, data_dir, samples, use_random, seed)
    precision = precision or ("float" if backend == "torch" else "fixed")
    result = simulate(graph, x, backend=backend, precision=precision, progress=sys.stderr.isatty())
    report = build_report(graph, result, prof, source=str(model))
    text = render(report, fmt)
    if output:
        _write_text(Path(output), text)
    else:
        click.echo(text, nl=False)
    if plot:
        from lmuformer.report.plot import plot_report

        plot_report(report, plot)
