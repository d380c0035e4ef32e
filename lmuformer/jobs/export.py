"""The export job as one Python call (the CLI is a thin layer over it)."""

from __future__ import annotations

import math

import nir
import numpy as np
import torch
from tqdm import tqdm

from backends.emulator import calibrate_current_frac
from backends.fixed_point import CURRENT_HEADROOM
from export.graph import ExportOptions, model_to_nir
from export.interpret import GraphRunner
from export.io import write_graph
from export.metadata import with_current_frac
from export.summary import summarize
from lmuformer.checkpoint import load_checkpoint
from lmuformer.data import DATASETS, dataset_info, load_dataset, load_test_split
from lmuformer.errors import UserError
from lmuformer.model.calibrate import calibrated_preset

TUNED_OPTIONS = ("weight_bits", "weight_terms", "lmu_bits", "lmu_terms", "dt")  # pinned by lmuf finetune


def tuned_option_values(given: dict, tuned: dict | None, period: float | None, quantize: bool = True
                        ) -> dict:
    """The :data:`TUNED_OPTIONS` of an export: each as ``given``, else as the checkpoint was
    fine-tuned for (``tuned``), else dt = ``period`` (the data set's frame period) and the
    :class:`ExportOptions` defaults.  UserError where a given option (or a float export)
    contradicts the fine-tuning."""
    given = {k: given.get(k) for k in TUNED_OPTIONS}
    if tuned is not None:
        wrong = [k for k, v in given.items() if v is not None and v != tuned.get(k)]
        if not quantize or wrong:
            what = ("--float" if not quantize
                    else ", ".join(f"--{k.replace('_', '-')} {given[k]}" for k in wrong))
            raise UserError(f"the checkpoint was fine-tuned for another export ({what}); export it with "
                            + " ".join(f"--{k.replace('_', '-')} {tuned[k]}" for k in given if k in tuned))
        given = {k: tuned.get(k) if v is None else v for k, v in given.items()}
    if given["dt"] is None:
        given["dt"] = period
    defaults = ExportOptions()
    return {k: getattr(defaults, k) if v is None else v for k, v in given.items()}


def load_model(checkpoint: str | None = None, preset_name: str | None = None,
               seed: int = 0) -> torch.nn.Module:
    """A model in eval mode from a checkpoint file, or a preset seeded and batch-norm calibrated."""
    if checkpoint is not None:
        return load_checkpoint(checkpoint).model.eval()
    try:
        return calibrated_preset(preset_name, seed)
    except ValueError as e:
        raise UserError(str(e)) from None


def frame_period(metrics: dict) -> float | None:
    """The frame period (s) of the data set a checkpoint was trained on: as training recorded it
    (``frame_period_s``), else from its ``dataset`` (:func:`lmuformer.data.dataset_info`), else None."""
    if metrics.get("frame_period_s"):
        return float(metrics["frame_period_s"])
    if metrics.get("dataset") in DATASETS:
        return float(dataset_info(metrics["dataset"])["frame_period_s"])
    return None


def checkpoint_frame_period(checkpoint: str) -> float:
    """:func:`frame_period` of a checkpoint file, the :class:`ExportOptions` default if it has none."""
    return frame_period(load_checkpoint(checkpoint).metrics) or ExportOptions().dt


CALIBRATION_SAMPLES = 1024  # at most this many training samples, evenly spaced, calibrate the current grids


def calibration_inputs(dataset: str, data_dir: str | None = None, samples: int = CALIBRATION_SAMPLES
                       ) -> np.ndarray:
    """At most ``samples`` items of ``dataset``'s training split (never the test split), evenly
    spaced over it (the split may be ordered by class): x float32 (n, frames, features)."""
    ds = load_dataset(dataset, "train", data_dir)
    idx = np.unique(np.linspace(0, len(ds) - 1, min(len(ds), samples)).round().astype(int))
    return np.stack([np.asarray(ds[int(i)][0], np.float32) for i in idx])


def check_headroom(headroom: float) -> float:
    """``headroom`` if it is a finite number >= 1 (below 1 the calibration's own peak would not
    fit Loihi's 16-bit a_in), else UserError."""
    if not isinstance(headroom, (int, float)) or not math.isfinite(headroom) or headroom < 1:
        raise UserError(f"current headroom must be a number >= 1 (1: the calibration peak just fits "
                        f"Loihi's 16-bit a_in), got {headroom}")
    return float(headroom)


def calibrate_export(graph: nir.NIRGraph, dataset: str, data_dir: str | None = None,
                     samples: int = CALIBRATION_SAMPLES, headroom: float = CURRENT_HEADROOM
                     ) -> tuple[dict[str, int], dict]:
    """The current grids of ``graph``'s spiking populations calibrated on ``dataset``'s training
    split (:func:`backends.emulator.calibrate_current_frac` at ``headroom``, >= 1) and how (the
    ``current_calibration`` metadata: data, samples, headroom, peak |x| per population)."""
    headroom = check_headroom(headroom)
    x = calibration_inputs(dataset, data_dir, samples)
    frac, peaks = calibrate_current_frac(graph, x, headroom)
    return frac, {"data": f"{dataset} training split", "samples": len(x), "headroom": headroom,
                  "peak_abs_x": {k: round(v, 6) for k, v in peaks.items()}}


def model_and_tuning(checkpoint: str | None, preset_name: str | None,
                     seed: int) -> tuple[torch.nn.Module, dict | None, dict]:
    """The model (as :func:`load_model`) and, for a checkpoint, the export options it was
    fine-tuned for (``lmuf finetune``; None otherwise) and its metrics ({} for a preset), from
    one read of the file."""
    if checkpoint is None:
        return load_model(None, preset_name, seed), None, {}
    ckpt = load_checkpoint(checkpoint)
    tuned = ckpt.metrics.get("finetuned_for")
    return ckpt.model.eval(), dict(tuned) if isinstance(tuned, dict) else None, dict(ckpt.metrics)


def pin_current_frac(graph: nir.NIRGraph, frac: dict[str, int] | None) -> nir.NIRGraph:
    """``graph`` with the current grids ``lmuf finetune`` pinned in its metadata (None or empty:
    the static grid), in place; returned for chaining."""
    return with_current_frac(graph, frac, {"data": "pinned by lmuf finetune"})


def set_current_grids(graph: nir.NIRGraph, tuned: dict | None, metrics: dict, data_dir: str | None,
                      headroom: float = CURRENT_HEADROOM) -> dict:
    """Set ``graph``'s current grids (metadata ``current_frac``): a fine-tuned checkpoint's pinned
    ones (none pinned: static), else calibrated on the checkpoint's training split (its data
    set not readable: static); what was done, for the summary."""
    if tuned is not None:
        frac = tuned.get("current_frac")
        pin_current_frac(graph, frac)
        return {"source": "pinned by fine-tuning" if frac else "static (fine-tuned on the static grid)",
                "frac": frac}
    dataset = metrics.get("dataset")
    folder = data_dir or (metrics.get("options") or {}).get("data_dir")
    if dataset not in DATASETS:
        return {"source": "static (the checkpoint records no known dataset)", "frac": None}
    try:
        frac, info = calibrate_export(graph, dataset, folder, headroom=headroom)
    except UserError as e:
        return {"source": f"static (no calibration data: {e})", "frac": None}
    with_current_frac(graph, frac, info)
    return {"source": f"calibrated on {info['samples']} samples of the {dataset} training split, "
            f"headroom x{info['headroom']:g}", "frac": frac}


def export_model(
    checkpoint: str | None = None,
    preset_name: str | None = None,
    output: str = "model.nir",
    quantize: bool = True,
    weight_bits: int | None = None,
    weight_terms: int | None = None,
    lmu_bits: int | None = None,
    lmu_terms: int | None = None,
    dt: float | None = None,
    eval_dataset: str | None = None,
    data_dir: str | None = None,
    samples: int | None = None,
    progress: bool = False,
    lmu_form: str = "recurrent",
    lmu_taps: int | None = None,
    lmu_max_delay: int | None = None,
    seed: int = 0,
    current_headroom: float | None = None,
) -> dict:
    """Export to ``output`` and return the summary (with accuracies if ``eval_dataset``; ``progress``:
    a progress bar on stderr while the exported graph is evaluated).

    Options left None take the :class:`ExportOptions` defaults, or, for a checkpoint made by
    ``lmuf finetune --for-export``, the options it was fine-tuned for (recorded in its
    metrics as ``finetuned_for``); an option given that differs from those is a UserError.
    ``dt`` left None is a checkpoint's data set frame period (:func:`frame_period`; a preset:
    the default): only the graph's time unit, the LIF's dt / tau stays 1/2.  A quantised export
    of a checkpoint records calibrated current grids (:func:`set_current_grids`; ``data_dir`` or the
    folder training recorded) at ``current_headroom`` (default ``CURRENT_HEADROOM``; UserError for
    a preset, a float export or a fine-tuned checkpoint, whose grids are static or pinned); a
    preset's keeps the static grid."""
    if current_headroom is not None:
        check_headroom(current_headroom)
        if checkpoint is None or not quantize:
            what = "a preset" if checkpoint is None else "a --float export"
            raise UserError(f"--current-headroom calibrates a checkpoint's quantised export ({what} has no "
                            "current grid)")
    model, tuned, metrics = model_and_tuning(checkpoint, preset_name, seed)
    if tuned is not None and current_headroom is not None:
        raise UserError("the checkpoint was fine-tuned on pinned current grids: --current-headroom does not "
                        "apply (give it to lmuf finetune)")
    period = frame_period(metrics) if checkpoint is not None else None
    given = tuned_option_values(dict(zip(TUNED_OPTIONS, (weight_bits, weight_terms, lmu_bits, lmu_terms, dt),
                                         strict=True)), tuned, period, quantize)
    opts = ExportOptions(quantize=quantize, lmu_form=lmu_form, lmu_taps=lmu_taps, lmu_max_delay=lmu_max_delay,
                         **given)
    graph = model_to_nir(model, opts)
    grids = None
    if quantize and checkpoint is not None:
        grids = set_current_grids(graph, tuned, metrics, data_dir,
                                  CURRENT_HEADROOM if current_headroom is None else current_headroom)
    write_graph(graph, output)
    summary = summarize(graph)
    if grids is not None:
        summary["current_grids"] = grids
    if eval_dataset is not None:
        x, y = load_test_split(eval_dataset, data_dir, samples)
        with torch.no_grad():
            float_pred = torch.cat(
                [model(torch.as_tensor(x[i : i + 256])).argmax(1) for i in range(0, len(x), 256)]
            ).numpy()
        runner = GraphRunner(graph)
        preds, spikes = [], {}
        with tqdm(total=len(x), desc="exported graph (torch)", unit="sample", disable=not progress) as bar:
            for i in range(0, len(x), 256):
                r = runner.run(torch.as_tensor(x[i : i + 256]))
                preds.append((r.readout / r.steps).argmax(1).numpy())
                for k, v in r.spikes.items():
                    spikes[k] = spikes.get(k, 0.0) + float(v.sum())
                bar.update(len(r.readout))
        graph_pred = np.concatenate(preds)
        for m in summary["lmu"]:
            if m.get("form") == "taps":  # spikes x fan-out: counts taps that would land after the sample
                m["u_spikes"] = spikes[m["u"]] / len(x)
                m["sops_per_inference"] = m["u_spikes"] * m["sops_per_u_spike"]
        summary.update(
            eval_dataset=eval_dataset,
            eval_samples=len(y),
            accuracy_float=float(np.mean(float_pred == y)),
            accuracy_quantized=float(np.mean(graph_pred == y)),
        )
    return summary
