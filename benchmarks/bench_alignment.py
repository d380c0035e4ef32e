"""Accuracy impact of the causal alignment: the same trained weights under both time alignments.

lmuformer (causal): kernel-3 convolutions emit position p at step p + 1, a sample of T frames
runs T + latency steps (zero flush), every layer starts from rest at step 0, logits = mean of the
head outputs over all steps.  Reference (zeyuliu1037/LMUFormer): ``Conv1d(k3, padding 1)`` looks
one frame ahead, zero padding at both ends, every layer starts at the sample's first frame,
logits = mean over the T frames.  The reference's function is computed here with lmuformer's own
modules, the kernel-3 convolutions replaced by ``F.conv1d(padding=1)`` and the one-step skip
delays by the identity.

For each checkpoint: test accuracy under both, the fraction of test samples whose prediction
differs, and the largest logit difference in units of the logits' standard deviation.  The
checkpoints were trained under the causal alignment, so this measures how far apart the two
functions are for a trained model, in the direction opposite to importing a reference checkpoint.

Writes ``benchmarks/results/alignment.json``.
Usage: ``python benchmarks/bench_alignment.py CHECKPOINT [CHECKPOINT ...] [--dataset digits]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lmuformer.checkpoint import load_checkpoint
from lmuformer.data import load_test_split
from lmuformer.files import write_json
from lmuformer.model.layers import CausalConv3, Delay1
from lmuformer.model.lmuformer import LMUFormer

RESULTS = Path(__file__).resolve().parent / "results" / "alignment.json"


@contextlib.contextmanager
def reference_alignment():
    """Within the block, CausalConv3 is the reference's Conv1d(k3, pad 1) and Delay1 the identity."""
    conv, delay = CausalConv3.forward, Delay1.forward

    def conv_pad1(self: CausalConv3, x: torch.Tensor) -> torch.Tensor:  # x: (steps, batch, channels)
        return F.conv1d(x.permute(1, 2, 0), self.weight, padding=1).permute(2, 0, 1)

    CausalConv3.forward, Delay1.forward = conv_pad1, lambda self, x: x
    try:
        yield
    finally:
        CausalConv3.forward, Delay1.forward = conv, delay


@torch.no_grad()
def reference_logits(model: LMUFormer, x: torch.Tensor) -> torch.Tensor:
    """Logits (batch, classes) of ``model``'s weights under the reference's alignment; x (B, T, F)."""
    with reference_alignment():
        return model._features(x.transpose(0, 1), None).mean(dim=0)


@torch.no_grad()
def compare(model: LMUFormer, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Accuracies and differences of the two alignments on (x, y)."""
    ours = model(x)
    ref = reference_logits(model, x)
    scale = ours.std().item()
    return {
        "accuracy_causal": float((ours.argmax(1) == y).float().mean()),
        "accuracy_reference_alignment": float((ref.argmax(1) == y).float().mean()),
        "predictions_differ": float((ours.argmax(1) != ref.argmax(1)).float().mean()),
        "max_logit_difference_in_std": float((ours - ref).abs().max() / scale),
        "mean_logit_difference_in_std": float((ours - ref).abs().mean() / scale),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    x, y = (torch.as_tensor(a) for a in load_test_split(args.dataset, args.data_dir))
    rows = []
    for path in args.checkpoints:
        model = load_checkpoint(path).model
        row = {"checkpoint": str(path), **compare(model, x, y)}
        rows.append(row)
        print(f"{path}: causal {100 * row['accuracy_causal']:.2f} %, reference alignment "
              f"{100 * row['accuracy_reference_alignment']:.2f} %, predictions differ "
              f"{100 * row['predictions_differ']:.2f} %, max logit difference "
              f"{row['max_logit_difference_in_std']:.2f} std")
    write_json(args.results, {"dataset": args.dataset, "samples": len(y), "runs": rows,
                              "loadavg_1min": round(os.getloadavg()[0], 2)})
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
