"""Fine-tuning variants for the default export (one 8-bit term per learned weight, LMU two terms).

    python benchmarks/bench_finetune_variants.py --checkpoint d0/best.pt d1/best.pt d2/best.pt

For each variant (BatchNorm statistics frozen, the earlier default; the same selected on deployed
validation accuracy with the loss as tie-break; statistics recomputed on the clean training split
after each epoch, the default now; the same at learning rate 5e-4) and each checkpoint (one per
training seed): the deployed (integer forward = emulator) validation accuracy and loss after each
epoch, the state kept, its test accuracy, and the test accuracy after each epoch (recorded for
analysis only: variants are compared on validation).
Writes benchmarks/results/finetune_variants.json with the load average beside each wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.graph import ExportOptions  # noqa: E402
from lmuformer.files import write_json  # noqa: E402
from lmuformer.jobs.finetune import finetune  # noqa: E402

VARIANTS = {
    "frozen_bn": {"clean_bn": False},  # the default before issue 9's follow-up
    "frozen_bn_select_on_accuracy": {"clean_bn": False, "select_on": "accuracy"},
    "clean_bn": {"clean_bn": True},  # the default now
    "clean_bn_lr5e-4": {"clean_bn": True, "lr": 5e-4},
}


def run(checkpoints: list[str], variants: list[str]) -> dict:
    rows = []
    for name in variants:
        for ck in checkpoints:
            load0, t0 = os.getloadavg(), time.perf_counter()
            m = finetune(ck, tempfile.mkdtemp(), ExportOptions(), progress=False, record_test=True,
                         **VARIANTS[name])
            rows.append({
                "variant": name, "checkpoint": ck, "float_test_accuracy": m["test_accuracy"],
                "deployed_before": m["deployed_accuracy_before"], "deployed_after": m["deployed_accuracy"],
                "gap_pp": 100 * (m["deployed_accuracy"] - m["test_accuracy"]),
                "best_epoch": m["finetune_best_epoch"],
                "val_accuracy_before": m["deployed_val_accuracy_before"],
                "val_loss_before": m["deployed_val_loss_before"], "val_history": m["finetune_val_history"],
                "val_loss_history": m["finetune_val_loss_history"],
                "val_accuracy_kept": m["deployed_val_accuracy"], "val_loss_kept": m["deployed_val_loss"],
                "test_history": m["finetune_test_history"], "wall_s": time.perf_counter() - t0,
                "loadavg_before": load0,
            })
            r = rows[-1]
            print(f"{name} {ck}: val {r['val_accuracy_kept']:.4f} / {r['val_loss_kept']:.4f} (epoch "
                  f"{r['best_epoch']}), test {r['deployed_after']:.4f} "
                  f"(float {r['float_test_accuracy']:.4f}, {r['gap_pp']:+.2f} pp)", flush=True)
    summary = {}
    for name in variants:
        rs = [r for r in rows if r["variant"] == name]
        summary[name] = {"median_val_accuracy_kept": float(np.median([r["val_accuracy_kept"] for r in rs])),
                         "median_val_loss_kept": float(np.median([r["val_loss_kept"] for r in rs])),
                         "median_gap_pp": float(np.median([r["gap_pp"] for r in rs]))}
    return {"runs": rows, "summary": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", nargs="+", required=True, help="trained digits checkpoints")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="benchmarks/results/finetune_variants.json")
    args = ap.parse_args()
    result = run(args.checkpoint, args.variants)
    for name, s in result["summary"].items():
        print(f"{name}: median kept val accuracy {s['median_val_accuracy_kept']:.4f}, loss "
              f"{s['median_val_loss_kept']:.4f}; median test gap {s['median_gap_pp']:+.2f} pp")
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
