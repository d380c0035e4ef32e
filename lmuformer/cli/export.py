"""``lmuf export --to nir``: write a NIR file of a checkpoint or a preset."""

from __future__ import annotations

import json

import click

from backends.fixed_point import CURRENT_HEADROOM
from export.graph import ExportOptions

_D = ExportOptions()


@click.command("export")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option("--to", "target", type=click.Choice(["nir"]), default="nir", show_default=True)
@click.option("--preset", "preset_name", help="Export a randomly initialised preset instead.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="NIR file to write.")
@click.option("--weight-bits", type=int,
              help=f"Bits per term of learned weights [default: {_D.weight_bits}].")
@click.option("--weight-terms", type=int,
              help=f"Terms (synapses) per learned weight [default: {_D.weight_terms}; a fine-tuned "
              "checkpoint's own].")
@click.option("--lmu-bits", type=int, help=f"Bits per term of the LMU matrices [default: {_D.lmu_bits}].")
@click.option("--lmu-terms", type=int, help=f"Terms (synapses) per LMU weight [default: {_D.lmu_terms}].")
@click.option("--lmu-form", type=click.Choice(["recurrent", "taps"]), default="recurrent", show_default=True,
              help="LMU memory as the recurrent integrator (reference) or as spike-driven delay taps.")
@click.option("--lmu-taps", type=int, help="Taps of --lmu-form taps [default: the fewest whose "
              "truncation error over one sample is <= 1e-6].")
@click.option("--lmu-max-delay", type=int, help="Longest synaptic delay (steps) for --lmu-form taps; "
              "longer taps read a relay chain of LIF neurons [default: no limit].")
@click.option("--float", "as_float", is_flag=True, help="Export without quantisation.")
@click.option("--dt", type=float, help="Frame period in seconds [default: the checkpoint's data set's; "
              f"a preset: {_D.dt}].")
@click.option("--eval", "eval_dataset", help="Also measure float and quantised accuracy on this dataset.")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Folder of the --eval dataset and of the training split that calibrates the current "
              "grids [default: the folder training recorded].")
@click.option("--current-headroom", type=float,
              help="Headroom over the training split's peak synaptic input when calibrating a checkpoint's "
              "current grids: the finest grid on which HEADROOM x the peak fits Loihi's 16-bit a_in "
              "(>= 1; 1 trades the margin for unseen inputs for one finer bit) "
              f"[default: {CURRENT_HEADROOM:g}].")
@click.option("--samples", type=int, help="Evaluate on the first N test samples only.")
@click.option("--seed", default=0, show_default=True, help="Seed of a --preset's weights and BN calibration.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def command(checkpoint, target, preset_name, output, weight_bits, weight_terms, lmu_bits, lmu_terms,
            lmu_form, lmu_taps, lmu_max_delay, as_float, dt,
            eval_dataset, data_dir, current_headroom, samples, seed, as_json) -> None:
    """Export a spiking LMUFormer (CHECKPOINT or --preset) to a NIR file."""
    from lmuformer.files import check_outputs
    from lmuformer.jobs.export import export_model
    from lmuformer.validation import number

    if (checkpoint is None) == (preset_name is None):
        raise click.UsageError("give either a CHECKPOINT or --preset NAME")
    check_outputs({"--output": output}, inputs=[checkpoint])
    if dt is not None:
        number(dt, "--dt", float, 0.0, 1e6, low_open=True)
    summary = export_model(
        checkpoint=checkpoint, preset_name=preset_name, output=output, quantize=not as_float,
        weight_bits=weight_bits, weight_terms=weight_terms, lmu_bits=lmu_bits, lmu_terms=lmu_terms, dt=dt,
        eval_dataset=eval_dataset, data_dir=data_dir, samples=samples, progress=not as_json, seed=seed,
        lmu_form=lmu_form, lmu_taps=lmu_taps, lmu_max_delay=lmu_max_delay, current_headroom=current_headroom,
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        from export.summary import format_summary

        click.echo(f"wrote {output}")
        click.echo(format_summary(summary))
        if "current_grids" in summary:
            click.echo(f"current grids: {summary['current_grids']['source']}")
