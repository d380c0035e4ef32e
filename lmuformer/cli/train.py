"""``lmuf train``: train an LMUFormer on a dataset (single process or under torchrun)."""

from __future__ import annotations

import os
from typing import Any

import click


@click.command("train")
@click.option("--dataset", help="Dataset name (default: digits, the embedded one).")
@click.option("--data-dir", type=click.Path(file_okay=False),
              help="Folder holding the dataset (mnist, psmnist, scv2; digits needs none).")
@click.option("--preset", help="Model preset (default: the dataset's own, adapted to its shape).")
@click.option("--recipe", help="Named recipe over the dataset's default: 'small' (scv2 only) for a few "
              "hundred clips, e.g. the synthetic folder: plain cross-entropy, no mixup or augmentation, "
              "dim 64, batch 32, LR 5e-3, 30 epochs (the paper's BCE + mixup + SpecAugment collapses to the "
              "uniform prior there). Default: the dataset's recipe (scv2: the paper's).")
@click.option("--epochs", type=int, help="Total epochs (a resumed run continues up to this).")
@click.option("--batch-size", type=int, help="Global batch size (split over torchrun processes).")
@click.option("--lr", type=float, help="Initial Adam learning rate.")
@click.option("--seed", type=int, help="Random seed (same seed, same results).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output folder for best.pt, last.pt, metrics.json (default runs/DATASET-PRESET).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML or JSON file with any training option; flags given here win.")
@click.option("--resume", type=click.Path(dir_okay=False), help="Continue from a checkpoint (last.pt).")
@click.option("--threads", type=int, help="Torch threads per process (default: cores / local processes).")
@click.option("--device", help="Torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
              help="Training precision (autocast; fp16 with loss scaling). Default: bf16 on CUDA, "
                   "fp32 on the CPU. Evaluation runs in fp32.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def command(config_file: str | None, no_progress: bool, **flags: Any) -> None:
    """Train with the paper's recipe scaled to the dataset; keeps best.pt (on validation
    accuracy) and last.pt, and reports the test accuracy of best.pt."""
    from lmuformer.files import protect
    from lmuformer.training import load_config, train

    protect(config_file)  # no output of the run may replace its config file

    options: dict[str, Any] = load_config(config_file) if config_file else {}
    options.update({k: v for k, v in flags.items() if v is not None})
    if "out" in options:  # the config file may say "out" like the flag
        options.setdefault("out_dir", options.pop("out"))
    metrics = train(progress=not no_progress, **options)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(
            f"test accuracy {100 * metrics['test_accuracy']:.2f} % "
            f"(best epoch {metrics['best_epoch']}/{metrics['epochs']}, "
            f"val {100 * metrics['val_accuracy']:.2f} %, {metrics['train_seconds']:.0f} s); "
            f"best checkpoint: {metrics['best_checkpoint']}"
        )
