"""``lmuf import-reference``: a checkpoint of the reference code as an lmuformer checkpoint."""

from __future__ import annotations

import json

import click


@click.command("import-reference")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.option("--variant", type=click.Choice(["spiking", "ann"]), required=True,
              help="spiking: slmu_rnn_ms_conv1d; ann: lmu_rnn_conv1d.")
@click.option("--classes", "classes_csv", type=click.Path(dir_okay=False),
              help="The reference's label CSV (index,mid,display_name); default: its Speech Commands order.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Checkpoint to write.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def command(reference: str, variant: str, classes_csv: str | None, output: str, as_json: bool) -> None:
    """Convert REFERENCE (a state_dict saved by zeyuliu1037/LMUFormer) into an lmuformer checkpoint."""
    from lmuformer.reference_import import import_reference

    summary = import_reference(reference, variant, output, classes_csv)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    cfg = summary["config"]
    click.echo(f"wrote {output}: {variant}, {summary['parameters']:,} parameters, dim {cfg['dim']}, "
               f"memory {cfg['memory_size']}, depth {cfg['depth']}, {cfg['num_classes']} classes, "
               f"{summary['copied']} tensors copied")
    if summary["classes"] is not None:
        moved = sum(r != i for i, r in enumerate(summary["class_rows"]))
        click.echo(f"classes (lmuformer order): {', '.join(summary['classes'])}; {moved} head rows moved")
