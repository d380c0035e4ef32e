"""``lmuf report``: per-layer spikes, synaptic operations and energy of a NIR model's run."""

from __future__ import annotations

import sys

import click

from lmuformer.cli.output import emit
from lmuformer.files import check_outputs

BACKEND_NAMES = ("emulator", "lava", "torch")


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
@click.option("--lmu-forms", "lmu_forms", is_flag=True,
              help="MODEL is a checkpoint (or a preset name): export it with the recurrent and the taps LMU "
              "memory and put both reports side by side (markdown, or --format json).")
@click.option("--lmu-taps", type=int, help="Taps of the taps form with --lmu-forms [default: export's].")
@click.option("--dt", type=float, metavar="SECONDS",
              help="Frame period where the graph's metadata has none (a graph's own dt wins).")
@click.option("--frames", type=click.IntRange(min=1),
              help="Frames of the --random input where the graph records none.")
def command(model, dataset, data_dir, use_random, seed, samples, backend, precision, profiles, fmt, output,
            plot, lmu_forms, lmu_taps, dt, frames) -> None:
    """Per-layer spikes, synaptic operations (SOPs), MACs, neuron updates and energy of MODEL
    (a NIR file) simulated on a dataset's first test samples (or --random input).

    Counts are per inference, the mean over samples; energy is given under each --profile.
    """
    from lmuformer.analysis import resolve_profiles
    from lmuformer.analysis.format import render
    from lmuformer.jobs.report import report_file

    if use_random == (dataset is not None):
        raise click.UsageError("give either --dataset NAME or --random")
    check_outputs({"--output": output, "--plot": plot}, inputs=[model, *profiles])
    prof = resolve_profiles(list(profiles))
    if lmu_forms:
        _compare(model, dataset, data_dir, use_random, seed, samples, backend, precision, prof, fmt, output,
                 lmu_taps)
        return
    report = report_file(model, prof, dataset, data_dir, samples, use_random, seed, backend, precision,
                         progress=sys.stderr.isatty(), dt=dt, frames=frames,
                         on_note=lambda s: click.echo(s, err=True))
    text = render(report, fmt)
    emit(text, output)
    if plot:
        from lmuformer.analysis.plot import plot_report

        plot_report(report, plot)


def _compare(model, dataset, data_dir, use_random, seed, samples, backend, precision, prof, fmt, output,
             lmu_taps) -> None:
    import json

    from lmuformer.analysis.compare import to_markdown
    from lmuformer.jobs.report import compare_file

    if fmt not in ("json", "markdown", "table"):
        raise click.UsageError("--lmu-forms renders markdown (the default) or json")
    c = compare_file(model, prof, dataset, data_dir, samples, use_random, seed, backend, precision, lmu_taps)
    text = json.dumps(c, indent=2, allow_nan=False) + "\n" if fmt == "json" else to_markdown(c)
    emit(text, output)
