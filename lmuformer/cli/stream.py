"""``lmuf stream``: accuracy against frames seen (true streaming), the 99 % point, early decisions."""

from __future__ import annotations

from pathlib import Path

import click

from lmuformer.errors import UserError

PLOT_FORMATS = (".png", ".pdf", ".svg")


@click.command("stream")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("--dataset", required=True, help="Dataset name (digits, mnist, psmnist, scv2).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Data folder.")
@click.option("--backend", type=click.Choice(["torch", "emulator", "lava"]), default=None,
              help="Simulator for a .nir file (default torch); a .pt checkpoint always runs "
                   "in the torch model's streaming mode.")
@click.option("--precision", type=click.Choice(["fixed", "float"]), default=None,
              help="NIR only; default float on torch, fixed on emulator/lava.")
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="First N test samples (default all).")
@click.option("--margin", type=click.FloatRange(0.0, 1.0), multiple=True,
              help="Early-decision margin (top1 - top2 of the softmax of the running mean); "
                   "repeatable; default 0.1 0.2 0.3 0.5 0.7 0.9.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Accuracy-vs-frames picture (.png, .pdf or .svg).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Write all numbers as JSON.")
@click.option("--dt", type=float, metavar="SECONDS",
              help="Frame period of a .nir file whose metadata has none (a graph's own dt wins).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(source, dataset, data_dir, backend, precision, samples, margin, plot_path, json_path, dt, quiet):
    """Streaming accuracy of SOURCE (a .pt checkpoint or a .nir export) against frames seen.

    After n frames the prediction is the argmax of the running mean of the head outputs
    emitted so far; the final accuracy adds the latency flush steps.
    """
    from lmuformer.analysis import streaming
    from lmuformer.files import check_outputs, write_json
    from lmuformer.jobs.stream import stream_eval

    if plot_path is not None and Path(plot_path).suffix.lower() not in PLOT_FORMATS:
        raise UserError(f"--plot must end in one of {', '.join(PLOT_FORMATS)}")
    check_outputs({"--json": json_path, "--plot": plot_path}, inputs=[source])
    margins = tuple(margin) if margin else streaming.DEFAULT_MARGINS
    r = stream_eval(source, dataset, backend=backend, samples=samples, data_dir=data_dir,
                    precision=precision, margins_=margins, progress=not quiet, dt=dt)
    for note in r.notes:
        click.echo(note, err=True)
    click.echo(f"{r.dataset}: {r.samples} samples, {r.frames} frames (+{r.latency} flush), "
               f"{r.backend}/{r.precision}, {r.wall_s:.1f} s")
    click.echo(f"final accuracy (with flush): {100 * r.final_accuracy:.2f} %; "
               f"after all {r.frames} frames: {100 * r.accuracy_by_frames[-1]:.2f} %")
    if r.frames_for_99pct is None:
        where = "never" if r.steps_for_99pct is None else f"after {r.steps_for_99pct} steps"
        click.echo(f"99 % of the final accuracy is not reached before the flush ({where}, "
                   f"of {r.frames} frames + {r.latency} flush steps)")
    else:
        line = (f"99 % of final after {r.frames_for_99pct}/{r.frames} frames: "
                f"{100 * r.accuracy_by_frames[r.frames_for_99pct - 1]:.2f} %, "
                f"{100 * r.reduction:.2f} % shorter")
        if abs(r.real_frames_mean - r.frames) > 1e-9:
            line += f" ({100 * r.reduction_real:.2f} % vs {r.real_frames_mean:.1f} real frames)"
        click.echo(line)
    for e in r.early:
        click.echo(f"early decision, margin {e['margin']:.2f}: accuracy {100 * e['accuracy']:.2f} %, "
                   f"mean {e['mean_frames']:.2f} frames, {100 * e['decided_early']:.1f} % decided early")
    if json_path is not None:
        write_json(json_path, r.to_dict())
        click.echo(f"wrote {json_path}")
    if plot_path is not None:
        streaming.plot_curve(r, plot_path)
        click.echo(f"wrote {plot_path}")
