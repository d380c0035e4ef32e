"""The export job as one Python call (the CLI is a thin layer over it)."""

from __future__ import annotations

import numpy as np
import torch

from export.graph import ExportOptions, model_to_nir
from export.interpret import GraphRunner
from export.io import write_graph
from export.summary import summarize
from lmuformer.checkpoint import load_checkpoint
from lmuformer.data import DATASETS, dataset_info, load_test_split
from lmuformer.errors import UserError
from lmuformer.model.calibrate import calibrated_preset


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


def _model_and_tuning(checkpoint: str | None, preset_name: str | None,
                      seed: int) -> tuple[torch.nn.Module, dict | None, float | None]:
    """The model (as :func:`load_model`) and, for a checkpoint, the export options it was
    fine-tuned for (``lmuf finetune``; None otherwise) and its :func:`frame_period`, from one
    read of the file."""
    if checkpoint is None:
        return load_model(None, preset_name, seed), None, None
    ckpt = load_checkpoint(checkpoint)
    tuned = ckpt.metrics.get("finetuned_for")
    return ckpt.model.eval(), dict(tuned) if isinstance(tuned, dict) else None, frame_period(ckpt.metrics)


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
) -> dict:
    """Export to ``output`` and return the summary (with accuracies if ``eval_dataset``).

    Options left None take the :class:`ExportOptions` defaults, or, for a checkpoint made by
    ``lmuf finetune --for-export``, the options it was fine-tuned for (recorded in its
    metrics as ``finetuned_for``); an option given that differs from those is a UserError.
    ``dt`` left None is a checkpoint's data set frame period (:func:`frame_period`; a preset:
    the default): only the graph's time unit, the LIF's dt / tau stays 1/2."""
    model, tuned, period = _model_and_tuning(checkpoint, preset_name, seed)
    given = {"weight_bits": weight_bits, "weight_terms": weight_terms, "lmu_bits": lmu_bits,
             "lmu_terms": lmu_terms, "dt": dt}
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
    given = {k: getattr(defaults, k) if v is None else v for k, v in given.items()}
    opts = ExportOptions(quantize=quantize, lmu_form=lmu_form, lmu_taps=lmu_taps, lmu_max_delay=lmu_max_delay,
                         **given)
    graph = model_to_nir(model, opts)
    write_graph(graph, output)
    summary = summarize(graph)
    if eval_dataset is not None:
        x, y = load_test_split(eval_dataset, data_dir, samples)
        with torch.no_grad():
            float_pred = torch.cat(
                [model(torch.as_tensor(x[i : i + 256])).argmax(1) for i in range(0, len(x), 256)]
            ).numpy()
        runner = GraphRunner(graph)
        preds, spikes = [], {}
        for i in range(0, len(x), 256):
            r = runner.run(torch.as_tensor(x[i : i + 256]))
            preds.append((r.readout / r.steps).argmax(1).numpy())
            for k, v in r.spikes.items():
                spikes[k] = spikes.get(k, 0.0) + float(v.sum())
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
