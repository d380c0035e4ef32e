"""``lmuf export --to nir``: write a NIR file of a checkpoint or a preset."""

from __future__ import annotations

import json

import click


@click.command("export")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option("--to", "target", type=click.Choice(["nir"]), default="nir", show_default=True)
@click.option("--preset", "preset_name", help="Export a randomly initialised preset instead.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="NIR file to write.")
@click.option("--weight-bits", type=int, help="Bits per term of learned weights [default: 8].")
@click.option("--weight-terms", type=int,
              help="Terms (synapses) per learned weight [default: 2; a fine-tuned checkpoint's own].")
@click.option("--lmu-bits", type=int, help="Bits per term of the LMU matrices [default: 8].")
@click.option("--lmu-terms", type=int, help="Terms (synapses) per LMU weight [default: 2].")
@click.option("--float", "as_float", is_flag=True, help="Export without quantisation.")
@click.option("--dt", type=float, help="Frame period in seconds [default: 0.01].")
@click.option("--eval", "eval_dataset", help="Also measure float and quantised accuracy on this dataset.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder of the --eval dataset.")
@click.option("--samples", type=int, help="Evaluate on the first N test samples only.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def command(checkpoint, target, preset_name, output, weight_bits, weight_terms, lmu_bits, lmu_terms,
            as_float, dt,
            eval_dataset, data_dir, samples, as_json) -> None:
    """Export a spiking LMUFormer (CHECKPOINT or --preset) to a NIR file."""
    from export.api import export_model

    if (checkpoint is None) == (preset_name is None):
        raise click.UsageError("give either a CHECKPOINT or --preset NAME")
    summary = export_model(
        checkpoint=checkpoint, preset_name=preset_name, output=output, quantize=not as_float,
        weight_bits=weight_bits, weight_terms=weight_terms, lmu_bits=lmu_bits, lmu_terms=lmu_terms, dt=dt,
        eval_dataset=eval_dataset, data_dir=data_dir, samples=samples, progress=not as_json,
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        from export.summary import format_summary

        click.echo(f"wrote {output}")
        click.echo(format_summary(summary))
