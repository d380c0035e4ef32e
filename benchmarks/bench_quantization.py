"""Bit-width sweep: LMU impulse-response error and accuracy of the quantised export.

    python benchmarks/bench_quantization.py --checkpoint runs/digits/best.pt

For the LMU matrices of the ``digits`` and ``scv2`` presets: the relative impulse-response
error over the sample length for (a) the naive representation (A_d and B_d each with one
shared exponent) and (b) ours (integrator form: A_d - I and B_d as 1 or 2 terms), per
bit width.  With a checkpoint: the test accuracy of the quantised graph (torch re-import)
per (weight bits and terms, LMU bits and terms), against the float model, and the synapses each
representation costs.  Prints a table and writes benchmarks/results/quantization.json.

    python benchmarks/bench_quantization.py --checkpoint d0/best.pt d1/best.pt d2/best.pt --finetune-seeds 1

also measures, per checkpoint (one per training seed), the deployed (emulator, fixed point) test
accuracy of the exports (weight terms, LMU terms) = (1, 2) (the default), (1, 1) and (2, 2), their
agreement and spike identity with their float graphs, and fine-tunes the default export
(``lmuf finetune`` defaults) with each fine-tuning seed: deployed accuracy, seconds (wall and CPU,
with the load average), and the spike identity of the fine-tuned export on the emulator against
the fine-tuned model's own integer forward pass (whole test split).  ``--finetune-seeds 0``:
the exports only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.graph import ExportOptions, model_to_nir  # noqa: E402
from export.interpret import GraphRunner  # noqa: E402
from export.quantize import dequantize, impulse_response_error, quantize_term, quantize_terms  # noqa: E402
from export.summary import summarize  # noqa: E402
from lmuformer.data import load_test_split  # noqa: E402
from lmuformer.files import write_json  # noqa: E402
from lmuformer.functional.lmu import lmu_discrete  # noqa: E402
from lmuformer.model.config import preset  # noqa: E402

BITS = [4, 6, 8, 10, 12]


def impulse_sweep() -> list[dict]:
    rows = []
    for name in ("digits", "scv2"):
        cfg = preset(name)
        a, b = lmu_discrete(cfg.memory_size, cfg.theta)
        eye = np.eye(a.shape[0])
        steps = cfg.frames + 5
        for bits in BITS:
            row = {"preset": name, "order": cfg.memory_size, "steps": steps, "bits": bits}
            row["naive"] = impulse_response_error(
                a, b, quantize_term(a, bits).value, quantize_term(b, bits).value, steps
            )
            for terms in (1, 2):
                a_q = eye + dequantize(quantize_terms(a - eye, bits, terms))
                b_q = dequantize(quantize_terms(b, bits, terms))
                row[f"integrator_{terms}term"] = impulse_response_error(a, b, a_q, b_q, steps)
            rows.append(row)
    return rows


def accuracy_sweep(checkpoint: str, samples: int | None) -> dict:
    from lmuformer.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint).model.eval()
    x, y = load_test_split("digits", None, samples)
    xt = torch.as_tensor(x)
    with torch.no_grad():
        acc_float = float((model(xt).argmax(1).numpy() == y).mean())
    rows = []
    grid = [(wb, wt, 8, 2) for wb in (4, 6, 8, 10) for wt in (1, 2)]
    grid += [(8, 2, lb, lt) for lb in BITS for lt in (1, 2) if (lb, lt) != (8, 2)]
    for weight_bits, weight_terms, lmu_bits, lmu_terms in grid:
        opts = ExportOptions(weight_bits=weight_bits, weight_terms=weight_terms, lmu_bits=lmu_bits,
                             lmu_terms=lmu_terms)
        graph = model_to_nir(model, opts)
        acc = float((GraphRunner(graph).logits(xt).argmax(1).numpy() == y).mean())
        s = summarize(graph)
        rows.append({
            "weight_bits": weight_bits, "weight_terms": weight_terms, "lmu_bits": lmu_bits,
            "lmu_terms": lmu_terms, "accuracy": acc, "drop_pp": 100 * (acc_float - acc),
            "synapses": s["synapses"], "lmu_synapses": s["lmu_synapses"],
            "impulse_response_error": s["quantization_error"]["lmu"][0]["impulse_response_error"],
        })
    return {"checkpoint": checkpoint, "samples": len(y), "accuracy_float": acc_float, "rows": rows}


def deployed_one(checkpoint: str, seeds: int, out_dir: str) -> dict:
    """One trained checkpoint: float accuracy, the one- and two-term exports on the emulator, and
    ``seeds`` fine-tunings of the one-term export (``lmuf finetune`` defaults)."""
    import os
    import tempfile
    import time

    from backends.base import simulate
    from lmuformer.analysis.spikes import fixed_vs_float, spike_identity
    from lmuformer.checkpoint import load_checkpoint
    from lmuformer.jobs.finetune import finetune, own_forward

    ck = load_checkpoint(checkpoint)
    model = ck.model.eval()
    x, y = load_test_split("digits")
    with torch.no_grad():
        acc_float = float((model(torch.as_tensor(x)).argmax(1).numpy() == y).mean())
    exports = []
    for terms in ((1, 2), (1, 1), (2, 2)):
        graph = model_to_nir(model, ExportOptions(weight_terms=terms[0], lmu_terms=terms[1]))
        r, _, _ = fixed_vs_float(graph, x, y)
        exports.append({
            "weight_terms": terms[0], "lmu_terms": terms[1],
            **{k: r[k] for k in ("deployed_accuracy", "float_graph_accuracy", "agreement")},
            "identical_spike_trains": r["spike_identity"]["identical"],
            "synapses": summarize(graph)["synapses"],
        })
        print(f"{checkpoint}: float {acc_float:.4f}, terms {terms} deployed "
              f"{exports[-1]['deployed_accuracy']:.4f}", flush=True)
    runs = []
    opts = ExportOptions()  # the default export
    for seed in range(seeds):
        d = tempfile.mkdtemp(dir=out_dir)
        load0, cpu0, t0 = os.getloadavg(), time.process_time(), time.perf_counter()
        m = finetune(checkpoint, d, opts, seed=seed, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        graph, _, own = own_forward(Path(d) / "best.pt", opts, x, m["finetune_input_frac_bits"])
        fx = simulate(graph, x, backend="emulator", precision="fixed", progress=False, record=True)
        ident = spike_identity(fx.extra["spike_trains"], own, list(fx.neurons))
        runs.append({
            "seed": seed, "deployed_accuracy_before": m["deployed_accuracy_before"],
            "deployed_accuracy": float((fx.predictions == y).mean()), "best_epoch": m["finetune_best_epoch"],
            "val_history": m["finetune_val_history"], "val_loss_history": m["finetune_val_loss_history"],
            "val_loss_before": m["deployed_val_loss_before"], "relowered": m["finetune_relowered"],
            "epochs": m["finetune_epochs"], "lr": m["finetune_lr"], "distill": m["finetune_distill"],
            "wall_s": wall, "cpu_s": cpu, "loadavg_before": load0, "loadavg_after": os.getloadavg(),
            "identical_spike_trains_vs_own_forward": ident["identical"],
        })
        print(f"  fine-tune seed {seed}: deployed {m['deployed_accuracy_before']:.4f} -> "
              f"{runs[-1]['deployed_accuracy']:.4f} (float {acc_float:.4f}), {wall:.0f} s wall, "
              f"{cpu:.0f} s CPU, "
              f"load {load0[0]:.1f}, identical spike trains {ident['identical']:.4f}", flush=True)
    return {"checkpoint": checkpoint, "training_seed": ck.metrics.get("seed"), "samples": len(y),
            "accuracy_float": acc_float, "exports": exports, "finetune_default": runs}


def deployed_sweep(checkpoints: list[str], seeds: int, out_dir: str) -> dict:
    """:func:`deployed_one` per checkpoint (one per training seed) and the bar: the median over
    all fine-tunings of (deployed - float) accuracy >= -0.2 pp (and the same without fine-tuning,
    per export)."""
    per = [deployed_one(c, seeds, out_dir) for c in checkpoints]
    gaps = [100 * (r["deployed_accuracy"] - p["accuracy_float"]) for p in per for r in p["finetune_default"]]
    before = [100 * (p["exports"][0]["deployed_accuracy"] - p["accuracy_float"]) for p in per]
    median = float(np.median(gaps)) if gaps else None
    per_export = {}
    for i, e in enumerate(per[0]["exports"]):
        g = [100 * (p["exports"][i]["deployed_accuracy"] - p["accuracy_float"]) for p in per]
        per_export[f"{e['weight_terms']}x{e['lmu_terms']}"] = {
            "gap_pp": g, "median_gap_pp": float(np.median(g)),
            "agreement": [p["exports"][i]["agreement"] for p in per],
            "synapses": [p["exports"][i]["synapses"] for p in per]}
    return {"checkpoints": per,
            "bar": "median over seeds of deployed (default export: 1 weight term, 2 LMU terms; fixed point) "
                   "- float >= -0.2 pp",
            "without_finetuning": per_export,
            "gap_pp_before": before, "gap_pp_after": gaps,
            "median_gap_pp_before": float(np.median(before)), "median_gap_pp_after": median,
            "bar_met_before": bool(np.median(before) >= -0.2),
            "bar_met": None if median is None else bool(median >= -0.2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", nargs="+", help="trained digits checkpoints (one per training seed; "
                    "the accuracy sweep takes the first)")
    ap.add_argument("--samples", type=int, help="test samples (default: all 360)")
    ap.add_argument("--out", default="benchmarks/results/quantization.json")
    ap.add_argument("--finetune-seeds", type=int, default=0, help="fine-tune the default export N times")
    ap.add_argument("--skip-sweep", action="store_true", help="only the deployed / fine-tuning part")
    args = ap.parse_args()
    result: dict = {"impulse_response": impulse_sweep()}
    if Path(args.out).exists():  # keep the parts of an earlier run that this one does not redo
        import json

        result = {**json.loads(Path(args.out).read_text()), **result}
    print("LMU impulse-response relative error (naive shared scale vs integrator form)")
    print(f"{'preset':>7} {'bits':>4} {'naive':>10} {'int.1term':>10} {'int.2terms':>10}")
    for r in result["impulse_response"]:
        print(f"{r['preset']:>7} {r['bits']:>4} {r['naive']:>10.2e} {r['integrator_1term']:>10.2e} "
              f"{r['integrator_2term']:>10.2e}")
    if args.checkpoint and (args.finetune_seeds or args.skip_sweep):
        import tempfile

        dep = deployed_sweep(args.checkpoint, args.finetune_seeds, tempfile.mkdtemp())
        result["deployed"] = dep
        for p in dep["checkpoints"]:
            print(f"\n{p['checkpoint']} (training seed {p['training_seed']}): "
                  f"float {p['accuracy_float']:.4f}")
            for r in p["exports"]:
                print(f"  terms ({r['weight_terms']}, {r['lmu_terms']}): "
                      f"deployed {r['deployed_accuracy']:.4f}, float graph "
                      f"{r['float_graph_accuracy']:.4f}, agreement {r['agreement']:.4f}, identical spike "
                      f"trains {r['identical_spike_trains']:.4f}, {r['synapses']} synapses")
        for k, v in dep["without_finetuning"].items():
            print(f"terms {k} without fine-tuning: median deployed - float {v['median_gap_pp']:+.2f} pp "
                  f"({', '.join(f'{g:+.2f}' for g in v['gap_pp'])}), agreement {v['agreement']}")
        after = dep["median_gap_pp_after"]
        print(f"median deployed - float (default export): before fine-tuning "
              f"{dep['median_gap_pp_before']:+.2f} pp, after {'-' if after is None else f'{after:+.2f}'} pp; "
              f"bar (>= -0.2 pp) met: "
              f"before {dep['bar_met_before']}, after {dep['bar_met']}")
    if args.checkpoint and not args.skip_sweep:
        acc = accuracy_sweep(args.checkpoint[0], args.samples)
        result["accuracy"] = acc
        print(f"\ndigits test accuracy: float model {acc['accuracy_float']:.4f} ({acc['samples']} samples)")
        print(f"{'w.bits':>6} {'w.terms':>7} {'lmu.bits':>8} {'terms':>5} {'accuracy':>8} {'drop pp':>7} "
              f"{'synapses':>9} {'lmu syn.':>8} {'IR error':>9}")
        for r in acc["rows"]:
            print(f"{r['weight_bits']:>6} {r['weight_terms']:>7} {r['lmu_bits']:>8} {r['lmu_terms']:>5} "
                  f"{r['accuracy']:>8.4f} "
                  f"{r['drop_pp']:>7.2f} {r['synapses']:>9} {r['lmu_synapses']:>8} "
                  f"{r['impulse_response_error']:>9.2e}")
    out = write_json(args.out, result)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
