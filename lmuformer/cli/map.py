"""``lmuf map``: place a NIR model's fixed-point network on neuro-cores and chips."""

from __future__ import annotations

import click

from lmuformer.cli.output import emit


@click.command("map")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="loihi2", show_default=True, metavar="NAME_OR_FILE",
              help="Hardware: loihi2, loihi1 or a .toml/.json file.")
@click.option("--dataset", help="Run the first test samples of this dataset for the spike rates.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Data folder (mnist, psmnist, scv2).")
@click.option("--random", "use_random", is_flag=True, help="Run standard-normal random input instead.")
@click.option("--seed", default=0, show_default=True, help="Seed of the --random input.")
@click.option("--samples", default=4, show_default=True, type=click.IntRange(min=1),
              help="Samples of the run that measures the spike rates.")
@click.option("--opt", "opts", multiple=True, metavar="NAME",
              help="Optimisation: sparse, one-term, axon-delays; repeatable.")
@click.option("--no-split", is_flag=True, help="A population must fit one core (error otherwise).")
@click.option("--format", "fmt", type=click.Choice(("table", "json", "markdown")), default="table",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the report here (default: stdout).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write a PNG of the per-core load.")
@click.option("--dt", type=float, metavar="SECONDS",
              help="Frame period where the graph's metadata has none (a graph's own dt wins).")
@click.option("--frames", type=click.IntRange(min=1),
              help="Frames of the --random input where the graph records none.")
def command(model, target, dataset, data_dir, use_random, seed, samples, opts, no_split, fmt, as_json, output,
            plot, dt, frames) -> None:
    """Place MODEL (a NIR file), as the emulator and Lava run it (fixed point: weight terms,
    delays, graded LMU memory), on the cores and chips of --target: per core its neurons,
    synapses, synaptic memory, input axons and, from a run (--dataset or --random), messages
    per step; totals, the busiest core and time estimates with their sources.  Without a run
    the activity is the worst case (every neuron fires every step)."""
    from lmuformer.analysis.mapping import Options, get_hardware
    from lmuformer.analysis.mapping.format import render
    from lmuformer.jobs.map import map_file

    if use_random and dataset is not None:
        raise click.UsageError("give --dataset NAME or --random, not both")
    hw = get_hardware(target)
    report = map_file(model, hw, list(opts), Options(split=not no_split), dataset, data_dir, samples,
                      use_random, seed, dt=dt, frames=frames, on_note=lambda s: click.echo(s, err=True))
    text = render(report, "json" if as_json else fmt)
    emit(text, output)
    if plot:
        from lmuformer.analysis.mapping.plot import plot_placement

        plot_placement(report, plot)
