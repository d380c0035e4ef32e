"""Streaming evaluation: accuracy against the number of frames seen, and early decisions.

Everything here works on the **per-step head outputs** of a causal execution, an array
``outputs`` of shape (samples, steps, classes) with ``steps = T + latency``: step t is what
the head emits while frame t is fed (t < T), the last ``latency`` steps are the flush
(zero frames).  Both the torch model's streaming mode (:meth:`LMUFormer.stream_outputs`)
and every simulator (:func:`backends.simulate`, whose ``trace`` is the *accumulated*
readout, so the per-step output is its first difference) produce this layout.

Definitions (the paper's rule, measured with real streaming):

- **running prediction** after step t: argmax of the running mean of the head outputs of
  steps 0..t (:func:`running_mean_predictions`);
- **accuracy after n frames** (n = 1..T): accuracy of the running prediction after step
  n - 1, i.e. what a causal device has produced when frame n - 1 arrives, with no flush
  (:func:`accuracy_by_frames`; entry n - 1 is n frames);
- **final accuracy**: after all T frames plus the ``latency`` flush steps, i.e. the
  running prediction after the last step; it equals the model's (parallel) prediction;
  ``accuracy_by_steps`` extends the curve over the flush (T + latency entries, the last is
  the final accuracy) and ``steps_for_99pct`` is its 99 % point (useful when T is short
  against the latency, as for the 8-frame digits, where 99 % may only come with the flush);
- **frames for 99 %**: the smallest n whose accuracy is >= 0.99 x the final accuracy, and
  the **reduction** 1 - n / T (:func:`frames_for_fraction`); for data with padding (Speech
  Commands: ~98 real frames of 128) it is also reported against the mean real length,
  ``1 - n / mean(real frames)``;
- **early decision** with threshold m: from frame ``latency + 1`` on (before that the
  pipeline is still filling: the head emits the positions that precede the first frame,
  confident and uninformative), stop at the first n where the margin of the
  running prediction, top1 - top2 of ``softmax(running mean of head outputs)``, is >= m,
  and answer the running prediction there (the decided class is therefore always the
  running-mean argmax); a sample that never reaches the margin uses all T frames and
  the final (flushed) prediction (:func:`early_decisions`).

Running a checkpoint or a graph on a data set is the job :mod:`lmuformer.jobs.stream`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmuformer.files import atomic_write

DEFAULT_MARGINS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


# ----------------------------------------------------------------------------- pure functions


def _check_outputs(outputs: np.ndarray) -> np.ndarray:
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 3 or outputs.shape[1] < 1:
        raise ValueError(f"expected per-step outputs (samples, steps, classes), got {outputs.shape}")
    return outputs


def running_means(outputs: np.ndarray) -> np.ndarray:
    """Running mean over steps: entry t is the mean of steps 0..t; same shape as outputs."""
    outputs = _check_outputs(outputs)
    steps = np.arange(1, outputs.shape[1] + 1, dtype=np.float64)
    return np.cumsum(outputs, axis=1) / steps[None, :, None]


def running_mean_predictions(outputs: np.ndarray) -> np.ndarray:
    """(samples, steps) int: argmax of the running mean of the head outputs of steps 0..t."""
    return running_means(outputs).argmax(axis=2)


def per_step_outputs(trace: np.ndarray) -> np.ndarray:
    """Per-step outputs from an accumulated readout trace (its first difference)."""
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 3:
        raise ValueError(f"expected a trace (samples, steps, classes), got {trace.shape}")
    return np.diff(trace, axis=1, prepend=np.zeros_like(trace[:, :1]))


def accuracy_by_frames(outputs: np.ndarray, labels: np.ndarray, frames: int) -> np.ndarray:
    """(frames,) accuracies: entry n - 1 is the accuracy of the running prediction after
    step n - 1 (n frames fed, no flush).  ``outputs`` holds at least ``frames`` steps."""
    preds = running_mean_predictions(outputs)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != preds.shape[0]:
        raise ValueError(f"{len(labels)} labels for {preds.shape[0]} samples")
    if not 1 <= frames <= preds.shape[1]:
        raise ValueError(f"frames must be in 1..{preds.shape[1]}, got {frames}")
    return (preds[:, :frames] == labels[:, None]).mean(axis=0)


def final_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the running prediction after the last step (all frames plus the flush)."""
    preds = running_mean_predictions(outputs)[:, -1]
    return float((preds == np.asarray(labels).reshape(-1)).mean())


def frames_for_fraction(curve: np.ndarray, final: float, fraction: float = 0.99) -> int | None:
    """Smallest n (1-based) with ``curve[n - 1] >= fraction * final``; None if no n does.

    A tiny tolerance (1e-12) absorbs float rounding in the product."""
    curve = np.asarray(curve, dtype=np.float64)
    hit = np.nonzero(curve >= fraction * final - 1e-12)[0]
    return int(hit[0]) + 1 if len(hit) else None


def reduction(n: int | None, total: float) -> float | None:
    """Sequence-length reduction ``1 - n / total`` (None when n is None)."""
    return None if n is None else 1.0 - n / float(total)


def margins(outputs: np.ndarray) -> np.ndarray:
    """(samples, steps): top1 - top2 of softmax(running mean of head outputs); 1 for one class."""
    m = running_means(outputs)
    if m.shape[2] < 2:
        return np.ones(m.shape[:2])
    p = np.exp(m - m.max(axis=2, keepdims=True))
    p /= p.sum(axis=2, keepdims=True)
    top = np.sort(p, axis=2)
    return top[..., -1] - top[..., -2]


def early_decisions(outputs: np.ndarray, margin: float, frames: int | None = None, min_frames: int = 1
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Early-decision rule: (predictions (samples,), frames_used (samples,)).

    Stops at the first n in min_frames..frames (frames defaults to all steps) where
    :func:`margins` >= ``margin`` and answers the running prediction there; a sample that
    never gets there answers the prediction after the last step (flush included) and
    counts ``frames`` frames."""
    outputs = _check_outputs(outputs)
    frames = outputs.shape[1] if frames is None else frames
    preds = running_mean_predictions(outputs)
    marg = margins(outputs)[:, :frames]
    reached = marg >= margin
    reached[:, : max(min_frames, 1) - 1] = False
    any_hit = reached.any(axis=1)
    first = np.where(any_hit, reached.argmax(axis=1), frames - 1)
    rows = np.arange(len(preds))
    decided = np.where(any_hit, preds[rows, first], preds[:, -1])
    return decided, first + 1


# ----------------------------------------------------------------------------- summary


@dataclass
class StreamResult:
    """Streaming evaluation of one model on ``samples`` sequences of ``frames`` frames."""

    source: str
    backend: str
    precision: str
    dataset: str
    samples: int
    frames: int
    latency: int
    accuracy_by_frames: list[float]
    final_accuracy: float
    accuracy_by_steps: list[float]
    steps_for_99pct: int | None
    frames_for_99pct: int | None
    reduction: float | None
    real_frames_mean: float
    reduction_real: float | None
    early: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the graph's preparation did (dt used, delays)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(outputs: np.ndarray, labels: np.ndarray, frames: int, latency: int,
              real_frames: np.ndarray | None = None, margins_: tuple[float, ...] = DEFAULT_MARGINS,
              **info: Any) -> StreamResult:
    """All streaming numbers from per-step outputs (samples, frames + latency, classes).

    ``real_frames``: optional per-sample count of real (unpadded) frames; defaults to
    ``frames`` for every sample.  ``info``: source, backend, precision, dataset, wall_s."""
    outputs = _check_outputs(outputs)
    labels = np.asarray(labels).reshape(-1)
    if outputs.shape[1] != frames + latency:
        raise ValueError(f"expected {frames + latency} steps (frames + latency), got {outputs.shape[1]}")
    curve = accuracy_by_frames(outputs, labels, frames)
    final = final_accuracy(outputs, labels)
    n99 = frames_for_fraction(curve, final, 0.99)
    by_steps = accuracy_by_frames(outputs, labels, frames + latency)
    real = np.full(len(labels), frames) if real_frames is None else np.asarray(real_frames)
    real_mean = float(real.mean()) if len(real) else float(frames)
    early = []
    min_frames = min(latency + 1, frames)
    for m in margins_:
        preds, used = early_decisions(outputs, m, frames, min_frames)
        early.append({"margin": float(m), "min_frames": min_frames,
                      "accuracy": float((preds == labels).mean()),
                      "mean_frames": float(used.mean()),
                      "decided_early": float((used < frames).mean())})
    return StreamResult(
        source=str(info.get("source", "")), backend=str(info.get("backend", "")),
        precision=str(info.get("precision", "")), dataset=str(info.get("dataset", "")),
        samples=len(labels), frames=frames, latency=latency,
        accuracy_by_frames=[float(a) for a in curve], final_accuracy=final,
        accuracy_by_steps=[float(a) for a in by_steps],
        steps_for_99pct=frames_for_fraction(by_steps, final, 0.99),
        frames_for_99pct=n99, reduction=reduction(n99, frames),
        real_frames_mean=real_mean, reduction_real=reduction(n99, real_mean),
        early=early, wall_s=float(info.get("wall_s", 0.0)),
    )


# ----------------------------------------------------------------------------- plot


def plot_curve(result: StreamResult, path: str | Path) -> None:
    """Accuracy vs frames seen, the final (flushed) accuracy and the 99 % point marked."""
    import matplotlib  # optional heavy dependency: imported only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.arange(1, result.frames + 1)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(n, 100 * np.asarray(result.accuracy_by_frames), lw=1.5, label="running-mean prediction")
    if result.latency > 0 and len(result.accuracy_by_steps) == result.frames + result.latency:
        ax.plot(np.arange(result.frames, result.frames + result.latency + 1),
                100 * np.asarray(result.accuracy_by_steps[result.frames - 1 :]), lw=1.2, ls="--",
                color="C0", alpha=0.6, label="flush steps (zero frames)")
        ax.axvspan(result.frames, result.frames + result.latency, color="gray", alpha=0.08)
    ax.axhline(100 * result.final_accuracy, color="gray", ls="--", lw=1,
               label=f"final (+{result.latency} flush steps): {100 * result.final_accuracy:.2f} %")
    ax.axhline(99 * result.final_accuracy, color="gray", ls=":", lw=1, label="99 % of final")
    if result.frames_for_99pct is not None:
        k = result.frames_for_99pct
        acc = 100 * result.accuracy_by_frames[k - 1]
        ax.plot([k], [acc], "o", color="C3",
                label=f"99 % at {k}/{result.frames} frames ({100 * result.reduction:.1f} % shorter)")
        ax.axvline(k, color="C3", lw=0.8, alpha=0.5)
    elif result.steps_for_99pct is not None:
        k = result.steps_for_99pct
        ax.plot([k], [100 * result.accuracy_by_steps[k - 1]], "o", mfc="none", color="C3",
                label=f"99 % only after {k - result.frames} flush steps")
    if not math.isclose(result.real_frames_mean, result.frames):
        ax.axvline(result.real_frames_mean, color="C2", lw=0.8, ls="-.",
                   label=f"mean real length {result.real_frames_mean:.1f}")
    ax.set_xlabel("frames seen (then flush steps)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{result.dataset}: streaming accuracy ({result.backend}, {result.samples} samples)")
    ax.set_xlim(1, max(result.frames + result.latency, 2))
    values = [100 * a for a in result.accuracy_by_steps] + [100 * result.final_accuracy]
    ax.set_ylim(max(0.0, min(values) - 5), min(101.0, max(values) + 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png"))
    plt.close(fig)
