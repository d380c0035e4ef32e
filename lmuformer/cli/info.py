"""``lmuf info``: parameters, variant and metrics of a preset or a checkpoint."""

from __future__ import annotations

import json

import click

from lmuformer.model import build_model


@click.command("info")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option("--preset", "preset_name", help="A preset name instead of a checkpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(checkpoint: str | None, preset_name: str | None, as_json: bool) -> None:
    """Describe a model: a trained CHECKPOINT or a --preset."""
    if (checkpoint is None) == (preset_name is None):
        raise click.UsageError("give either a CHECKPOINT or --preset NAME")
    if preset_name is not None:
        from lmuformer.model.config import preset

        try:
            cfg = preset(preset_name)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        model = build_model(cfg)
        info = {"source": f"preset:{preset_name}", "metrics": {}}
    else:
        from lmuformer.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        model, cfg = ckpt.model, ckpt.config
        info = {"source": checkpoint, "metrics": ckpt.metrics}
        if "test_accuracy" in ckpt.metrics:
            info["test_accuracy"] = ckpt.metrics["test_accuracy"]
    info.update(
        parameters=sum(p.numel() for p in model.parameters()),
        variant=cfg.variant,
        latency_frames=model.latency,
        config=cfg.to_dict(),
    )
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key in ("source", "variant", "parameters", "latency_frames", "test_accuracy"):
        if key in info:
            click.echo(f"{key:>15}: {info[key]}")
    click.echo(f"{'config':>15}: {json.dumps(info['config'])}")
