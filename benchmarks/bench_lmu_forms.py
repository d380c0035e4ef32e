"""The LMU memory as delay taps vs the recurrent form: predictions, accuracy and energy.

    python benchmarks/bench_lmu_forms.py --checkpoint runs/digits/best.pt

* digits (a trained checkpoint, all 360 test samples): predictions of the float model, the
  float recurrent graph and the float taps graph (torch re-import, float64); accuracy of both
  quantised graphs on the torch re-import and on the fixed-point emulator; energy per
  inference of both forms (emulator, fixed point, spike trains recorded so that the taps' SOPs
  count as delivered; both forms on the current grids ``lmuf export`` calibrates, as ``lmuf
  report --lmu-forms`` runs them) in every built-in profile; a tap-count sweep (truncation error, realised
  error, synapses, accuracy of the quantised taps graph);
* scv2 preset with random weights on standard-normal input (``--random``): nearly silent,
  as every freshly initialised preset (u does not fire), so its memory costs the taps form
  nothing; also an "activated" scv2 (the tests' random BatchNorm statistics and u's bias + 3,
  so that u fires on nearly every step: a worst case for the taps, not realistic activity), and
  the taps form with a 62-step maximum delay (relay chain).

Prints tables and writes benchmarks/results/lmu_forms.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends import simulate  # noqa: E402
from export.graph import ExportOptions, model_to_nir  # noqa: E402
from export.interpret import GraphRunner  # noqa: E402
from export.summary import summarize  # noqa: E402
from lmuformer.analysis import BUILTIN  # noqa: E402
from lmuformer.analysis.compare import compare_forms, to_markdown  # noqa: E402
from lmuformer.data import load_test_split  # noqa: E402
from lmuformer.files import write_json  # noqa: E402
from lmuformer.jobs.export import model_and_tuning, set_current_grids  # noqa: E402
from lmuformer.jobs.report import compare_file  # noqa: E402

PROFILES = [BUILTIN[p] for p in ("45nm", "loihi", "spinnaker2")]
LOIHI2_MAX_DELAY = 62  # assumed, see export/README.md


def _preds(graph, x: np.ndarray) -> np.ndarray:
    runner = GraphRunner(graph)
    return np.concatenate([runner.logits(torch.as_tensor(x[i : i + 128])).argmax(1).numpy()
                           for i in range(0, len(x), 128)])


def _compact(c: dict) -> dict:
    """The comparison without the full per-form reports (kept: totals, memory, ratios, layers)."""
    out = {k: v for k, v in c.items() if k != "forms"}
    out["lmu"] = {f: r["lmu"] for f, r in c["forms"].items()}
    out["totals"] = {f: {k: r["total"][k] for k in ("synapses", "spikes", "sops", "macs", "neuron_updates")}
                     for f, r in c["forms"].items()}
    return out


def digits(checkpoint: str) -> dict:
    model, tuned, metrics = model_and_tuning(checkpoint, None, 0)
    x, y = load_test_split("digits", None, None)
    with torch.no_grad():
        model_pred = model(torch.as_tensor(x)).argmax(1).numpy()
    out: dict = {"checkpoint": checkpoint, "samples": len(y)}
    pred = {}
    for form in ("recurrent", "taps"):
        pred[f"float_{form}"] = _preds(model_to_nir(model, ExportOptions(quantize=False, lmu_form=form)), x)
        g = model_to_nir(model, ExportOptions(lmu_form=form))
        out[f"current_grids_{form}"] = set_current_grids(g, tuned, metrics, None)  # as lmuf export
        pred[f"quantised_{form}"] = _preds(g, x)
        emu = simulate(g, x, backend="emulator", precision="fixed", progress=False)
        pred[f"emulator_{form}"] = emu.predictions
        out[f"summary_{form}"] = {k: v for k, v in summarize(g).items() if k != "quantization_error"}
    out["accuracy"] = {"model": float(np.mean(model_pred == y)),
                       **{k: float(np.mean(v == y)) for k, v in pred.items()}}
    out["same_predictions_float"] = int(np.sum(pred["float_taps"] == pred["float_recurrent"]))
    out["same_as_model_float_taps"] = int(np.sum(pred["float_taps"] == model_pred))
    out["same_predictions_emulator"] = int(np.sum(pred["emulator_taps"] == pred["emulator_recurrent"]))
    sweep = []
    for taps in (2, 4, 6, 8, 10, 12, 13):
        g = model_to_nir(model, ExportOptions(lmu_form="taps", lmu_taps=taps))
        m = summarize(g)["lmu"][0]
        sweep.append({"taps": taps, "truncation_error": m["truncation_error"],
                      "stream_truncation_error": m["stream_truncation_error"],
                      "impulse_response_error": m["impulse_response_error"], "synapses": m["synapses"],
                      "accuracy_quantised": float(np.mean(_preds(g, x) == y))})
    out["taps_sweep"] = sweep
    t0 = time.perf_counter()
    c = compare_file(checkpoint, PROFILES, "digits", backend="emulator", precision="fixed")  # as lmuf report
    out["energy"] = _compact(c)
    out["energy_markdown"] = to_markdown(c)
    out["energy_wall_s"] = time.perf_counter() - t0
    return out


def scv2(samples: int) -> dict:
    from lmuformer.model import build_model
    from lmuformer.model.calibrate import activate

    x = np.random.default_rng(0).standard_normal((samples, 128, 128)).astype(np.float32)
    out: dict = {"samples": samples, "input": "standard normal (--random, seed 0)"}
    torch.manual_seed(0)
    model = build_model("scv2").eval()
    c = compare_forms(model, x, PROFILES, backend="emulator", precision="fixed", source="preset scv2")
    out["random_weights"] = _compact(c)
    out["random_weights_markdown"] = to_markdown(c)
    active = activate(build_model("scv2"), seed=0)
    for lmu, _ in active.blocks:
        lmu.to_u[1].bias.data += 3.0
    c = compare_forms(active, x[:2], PROFILES, backend="emulator", precision="fixed", source="scv2 activated")
    out["activated"] = _compact(c)
    out["activated_markdown"] = to_markdown(c)
    c = compare_forms(active, x[:2], PROFILES, backend="emulator", precision="fixed",
                      source=f"scv2 activated, max delay {LOIHI2_MAX_DELAY}", lmu_max_delay=LOIHI2_MAX_DELAY)
    out["activated_relays"] = _compact(c)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a trained digits checkpoint")
    ap.add_argument("--scv2-samples", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/lmu_forms.json")
    args = ap.parse_args()
    result = {"loadavg_start": os.getloadavg(), "digits": digits(args.checkpoint)}
    d = result["digits"]
    print(f"digits ({d['samples']} test samples): accuracy {d['accuracy']}")
    print(f"float predictions taps == recurrent: {d['same_predictions_float']}/{d['samples']}; "
          f"taps == model: {d['same_as_model_float_taps']}/{d['samples']}; "
          f"emulator taps == recurrent: {d['same_predictions_emulator']}/{d['samples']}")
    print(f"{'taps':>4} {'trunc.':>9} {'stream':>9} {'realised':>9} {'synapses':>8} {'acc(q)':>7}")
    for r in d["taps_sweep"]:
        print(f"{r['taps']:>4} {r['truncation_error']:>9.2e} {r['stream_truncation_error']:>9.2e} "
              f"{r['impulse_response_error']:>9.2e} {r['synapses']:>8} {r['accuracy_quantised']:>7.4f}")
    print(d["energy_markdown"])
    result["scv2"] = scv2(args.scv2_samples)
    print(result["scv2"]["random_weights_markdown"])
    print(result["scv2"]["activated_markdown"])
    r = result["scv2"]["activated_relays"]
    print(f"relays ({LOIHI2_MAX_DELAY}-step max delay): memory {r['memory_energy_j']['taps']}, "
          f"ratio {r['ratio_memory']}")
    result["loadavg_end"] = os.getloadavg()
    print(f"\nwrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
