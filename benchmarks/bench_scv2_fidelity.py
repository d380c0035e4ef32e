"""Issue 9's 128-frame bars: deployed == trained on a Speech-Commands-layout model.

    python benchmarks/bench_scv2_fidelity.py --checkpoint runs/scv2/best.pt --data-dir DIR \
        --finetune-epochs 2 --lava-samples 3

For a trained spiking scv2-layout checkpoint (128 frames x 128 mel bins), on the whole test split:

* the exports (weight terms, LMU terms) = (1, 2) (the default), (2, 2) and (1, 1) without
  fine-tuning, each with the static current grid (2**-10 for every LIF) and with the grids the
  export job calibrates on the training split (``lmuformer.jobs.export.calibrate_export``,
  headroom x2; the default export also at headroom x1.5 and x1, for the sensitivity only), run
  on the emulator in fixed point (input grid: the finest the test split fits, as ``lmuf
  simulate`` chooses it, unless ``--input-frac-bits``) and in float (the graph's own float
  arithmetic): prediction agreement (bar >= 99.5 %), the fraction of samples whose spike trains
  are identical, the first diverging population, a_in values beyond 16 bits, and each sample
  whose prediction differs with the float graph's margin (top readout minus the runner-up) and
  its rank among all samples' margins (0: the closest call);
* ``lmuf finetune --for-export`` for the default export (``--finetune-epochs``), then the
  export of the fine-tuned checkpoint on the emulator against the fine-tuned model's own integer
  forward pass (bar: 100 % identical spike trains), and on Lava (``fixed_pt``) for the first
  ``--lava-samples`` samples.

Wall and CPU seconds with the load average (the machine is shared).  Writes
benchmarks/results/scv2_fidelity.json.  Any trained spiking checkpoint works: digits (no
``--data-dir``) gives the same measurements on its 360 test samples.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.base import simulate  # noqa: E402
from export.graph import ExportOptions, model_to_nir  # noqa: E402
from export.metadata import with_current_frac  # noqa: E402
from export.summary import summarize  # noqa: E402
from lmuformer.analysis.spikes import fixed_vs_float, spike_identity  # noqa: E402
from lmuformer.checkpoint import load_checkpoint  # noqa: E402
from lmuformer.data import load_test_split  # noqa: E402
from lmuformer.files import write_json  # noqa: E402
from lmuformer.jobs.export import calibrate_export  # noqa: E402
from lmuformer.jobs.finetune import finetune, own_forward  # noqa: E402

OWN = "the fine-tuned model's own integer forward pass (backends.finetune.IntegerForward)"


def _timed(fn):
    load0, cpu0, t0 = os.getloadavg(), time.process_time(), time.perf_counter()
    out = fn()
    return out, {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - cpu0,
                 "loadavg_before": load0, "loadavg_after": os.getloadavg()}


def export_fidelity(model, x: np.ndarray, y: np.ndarray, terms: tuple[int, int],
                    input_frac_bits: int | None = None, grids: str = "static",
                    calibration: tuple[str, str | None] | None = None, headroom: float = 2.0) -> dict:
    """Fixed vs float emulator run of the export of ``model`` with ``terms`` = (weight terms, LMU
    terms) (no fine-tuning); ``input_frac_bits``: the input grid 2**-q (None: the finest x fits);
    ``grids``: "static" or "calibrated" (on ``calibration`` = (dataset, data_dir)'s training split
    at ``headroom``, as the export job)."""
    graph = model_to_nir(model, ExportOptions(weight_terms=terms[0], lmu_terms=terms[1]))
    frac = None
    if grids == "calibrated":
        frac, info = calibrate_export(graph, *calibration, headroom=headroom)
        with_current_frac(graph, frac, info)
    (r, fx, fl), t = _timed(lambda: fixed_vs_float(graph, x, y, input_frac_bits))
    q = fx.extra["network"]["frac"]["input"]
    top2 = np.sort(fl.readout, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]  # the float graph's lead of its prediction (accumulated readout)
    differ = np.nonzero(fx.predictions != fl.predictions)[0]
    rank = np.argsort(np.argsort(margin, kind="stable"), kind="stable")  # 0: the closest call
    flips = [{"sample": int(i), "float_margin": float(margin[i]), "margin_rank": int(rank[i])}
             for i in differ]
    return {"weight_terms": terms[0], "lmu_terms": terms[1], "input_frac_bits": q, "current_grids": grids,
            "headroom": headroom if frac else None, "current_frac": frac, **r,
            "disagreements": flips, "readout_max_abs_diff": float(np.abs(fx.readout - fl.readout).max()),
            "synapses": summarize(graph)["synapses"], **t}


def finetuned_fidelity(checkpoint: str, data_dir: str | None, x: np.ndarray, y: np.ndarray, epochs: int,
                       lava_samples: int, out_dir: str) -> dict:
    """Fine-tune for the default export, then its export vs the fine-tuned model's own forward."""
    opts = ExportOptions()
    m, t_ft = _timed(lambda: finetune(checkpoint, out_dir, opts, epochs=epochs, data_dir=data_dir,
                                      progress=True))
    graph, logits, own = own_forward(Path(out_dir) / "best.pt", opts, x, m["finetune_input_frac_bits"])
    fx, t_emu = _timed(lambda: simulate(graph, x, backend="emulator", precision="fixed", progress=False,
                                        record=True))
    emu = spike_identity(fx.extra["spike_trains"], own, list(fx.neurons))
    emu["reference"] = OWN
    res = {"export": asdict(opts), "current_frac_pinned": m["finetuned_for"]["current_frac"],
           "epochs": epochs, "finetune": t_ft, "a_in_overflow": fx.extra["a_in_overflow"],
           "deployed_accuracy_before": m["deployed_accuracy_before"],
           "deployed_accuracy": float((fx.predictions == y).mean()),
           "best_epoch": m["finetune_best_epoch"], "val_history": m["finetune_val_history"],
           "relowered": m["finetune_relowered"],
           "predictions_equal_own_forward": bool(np.array_equal(logits.argmax(1), fx.predictions)),
           "emulator_vs_own_forward": emu, "emulator": t_emu, "synapses": summarize(graph)["synapses"]}
    if lava_samples:
        n = min(lava_samples, len(x))
        lv, t_lava = _timed(lambda: simulate(graph, x[:n], backend="lava", precision="fixed", progress=False,
                                             record=True))
        res["lava_vs_own_forward"] = spike_identity(lv.extra["spike_trains"],
                                                    {k: v[:n] for k, v in own.items()}, list(lv.neurons))
        res["lava_vs_own_forward"]["reference"] = OWN
        res["lava"] = {**t_lava, "samples": n, "wall_s_per_sample": t_lava["wall_s"] / n}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="trained spiking scv2-layout checkpoint")
    ap.add_argument("--data-dir", help="the checkpoint's data set folder (a Speech-Commands-layout folder; "
                    "digits: none)")
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--lava-samples", type=int, default=3)
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--input-frac-bits", type=int, nargs="+", default=[None],
                    help="input grids 2**-q to measure the exports at (default: the finest the data fits)")
    ap.add_argument("--out", default="benchmarks/results/scv2_fidelity.json")
    args = ap.parse_args()
    ck = load_checkpoint(args.checkpoint)
    model = ck.model.eval()
    x, y = load_test_split(ck.metrics["dataset"], args.data_dir)
    with torch.no_grad():
        acc = float((model(torch.as_tensor(x)).argmax(1).numpy() == y).mean())
    result = {"checkpoint": args.checkpoint, "config": model.config.to_dict(),
              "training_options": ck.metrics.get("options"), "test_samples": len(y),
              "steps": model.config.frames + model.latency, "float_model_accuracy": acc,
              "command": " ".join(sys.argv), "exports": []}
    print(f"float model: test accuracy {acc:.4f} ({len(y)} samples)", flush=True)
    cal = (ck.metrics["dataset"], args.data_dir)
    runs = [(t, q, g, 2.0) for q in args.input_frac_bits for t in ((1, 2), (2, 2), (1, 1))
            for g in ("static", "calibrated")]
    runs += [((1, 2), q, "calibrated", h) for q in args.input_frac_bits for h in (1.5, 1.0)]
    for terms, q, grids, h in runs:
        r = export_fidelity(model, x, y, terms, q, grids, cal, h)
        result["exports"].append(r)
        s = r["spike_identity"]
        print(f"terms {terms}, input 2**-{r['input_frac_bits']}, {grids} grids"
              f"{f' (headroom x{h:g})' if grids == 'calibrated' else ''}: "
              f"fixed {r['deployed_accuracy']:.4f}, "
              f"float graph {r['float_graph_accuracy']:.4f}, "
              f"agreement {r['agreement']:.4f} (bar 0.995 met: {r['agreement_bar_met']}), identical spike "
              f"trains {s['identical']:.4f}, first divergence {s['first_divergence']} "
              f"{s['first_divergence_samples']}, {r['synapses']} synapses, "
              f"a_in > 16 bits {r['a_in_overflow']}",
              flush=True)
    if not args.skip_finetune:
        r = finetuned_fidelity(args.checkpoint, args.data_dir, x, y, args.finetune_epochs, args.lava_samples,
                               tempfile.mkdtemp(prefix="scv2fid-"))
        result["finetune_default"] = r
        print(f"fine-tuned ({r['epochs']} epochs, {r['finetune']['wall_s']:.0f} s wall, "
              f"load {r['finetune']['loadavg_before'][0]:.1f}): "
              f"deployed {r['deployed_accuracy_before']:.4f} -> "
              f"{r['deployed_accuracy']:.4f}; emulator identical spike trains vs own forward "
              f"{r['emulator_vs_own_forward']['identical']:.4f}", flush=True)
        if "lava_vs_own_forward" in r:
            print(f"  Lava ({r['lava_vs_own_forward']['samples']} samples): identical "
                  f"{r['lava_vs_own_forward']['identical']:.4f}, {r['lava']['wall_s']:.0f} s", flush=True)
    out = write_json(args.out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
