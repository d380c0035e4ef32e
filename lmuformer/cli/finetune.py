"""``lmuf finetune CKPT --for-export``: fine-tune through the exact integer arithmetic of the export."""

from __future__ import annotations

import click

from backends.fixed_point import CURRENT_HEADROOM
from export.graph import ExportOptions

_D = ExportOptions()


@click.command("finetune")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--for-export", "for_export", is_flag=True, required=True,
              help="Fine-tune for the fixed-point export given by the export options below (required).")
@click.option("--weight-bits", default=_D.weight_bits, show_default=True,
              help="Bits per term of learned weights.")
@click.option("--weight-terms", default=_D.weight_terms, show_default=True, help="Terms per learned weight.")
@click.option("--lmu-bits", default=_D.lmu_bits, show_default=True, help="Bits per term of the LMU matrices.")
@click.option("--lmu-terms", default=_D.lmu_terms, show_default=True, help="Terms per LMU weight.")
@click.option("--dt", type=float, help="Frame period in seconds [default: the checkpoint's data set's].")
@click.option("--epochs", default=8, show_default=True, type=click.IntRange(min=0),
              help="Epochs (the defaults of --epochs, --lr and --distill won a sweep on deployed "
                   "validation accuracy: benchmarks/results/finetune_variants.json).")
@click.option("--lr", default=2e-4, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Initial Adam learning rate (cosine decay to 0).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--distill", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Weight of the float model's soft labels in the loss (the rest: cross entropy).")
@click.option("--clean-bn/--frozen-bn", "clean_bn", default=True, show_default=True,
              help="Recompute BatchNorm statistics on the clean training split after each epoch.")
@click.option("--current-headroom", default=CURRENT_HEADROOM, show_default=True, type=float,
              help="Headroom over the training split's peak synaptic input when calibrating the current "
                   "grids that fine-tuning pins (>= 1; see lmuf export).")
@click.option("--seed", default=0, show_default=True)
@click.option("--augment", is_flag=True, help="Use the dataset's training augmentation.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder of the checkpoint's dataset.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder.")
def command(checkpoint, for_export, weight_bits, weight_terms, lmu_bits, lmu_terms, dt, epochs, lr,
            batch_size, distill, clean_bn, current_headroom, seed, augment, data_dir, out_dir) -> None:
    """Fine-tune CHECKPOINT so that its export runs exactly as trained (writes OUT/best.pt)."""
    from lmuformer.jobs.export import checkpoint_frame_period
    from lmuformer.jobs.finetune import finetune

    if dt is None:
        dt = checkpoint_frame_period(checkpoint)
    opts = ExportOptions(dt=dt, quantize=True, weight_bits=weight_bits, weight_terms=weight_terms,
                         lmu_bits=lmu_bits, lmu_terms=lmu_terms)
    m = finetune(checkpoint, out_dir, opts, epochs=epochs, lr=lr, batch_size=batch_size, distill=distill,
                 seed=seed, data_dir=data_dir, augment=augment, clean_bn=clean_bn,
                 current_headroom=current_headroom)
    click.echo(f"deployed (fixed-point) test accuracy {m['deployed_accuracy_before']:.4f} -> "
               f"{m['deployed_accuracy']:.4f} in {m['finetune_wall_s']:.1f} s; wrote {out_dir}/best.pt")
