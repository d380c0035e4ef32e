"""The streaming job: run a checkpoint (the torch model's streaming mode) or a NIR export (a
backend) on a data set's test split and measure accuracy against frames seen with
:mod:`lmuformer.analysis.streaming` (``lmuf stream``)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from backends import simulate
from backends.base import default_precision
from export import read_graph
from export.metadata import GraphMetadata, graph_input_shape
from export.normalize import prepare
from lmuformer.analysis.streaming import DEFAULT_MARGINS, StreamResult, per_step_outputs, summarize
from lmuformer.checkpoint import load_checkpoint
from lmuformer.data import load_test_split
from lmuformer.data.audio import normalize
from lmuformer.errors import UserError


def real_lengths(dataset: str, x: np.ndarray) -> np.ndarray:
    """Per-sample real frame counts: for ``scv2`` the frames before the trailing padding
    (rows equal to the normalised zero log-mel, which ``pad_or_cut`` appends); T otherwise."""
    x = np.asarray(x)
    n, frames = x.shape[0], x.shape[1]
    if dataset != "scv2":
        return np.full(n, frames, dtype=np.int64)
    pad = float(normalize(torch.zeros(())))
    is_pad = np.all(np.abs(x - pad) < 1e-6, axis=2)  # (n, frames)
    # length = frames minus the length of the trailing run of padding rows
    trailing = np.cumprod(is_pad[:, ::-1], axis=1).sum(axis=1)
    return (frames - trailing).astype(np.int64)


def model_outputs(model, x: np.ndarray, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Per-step head outputs of an LMUFormer in streaming mode: (samples, T + latency, classes)."""
    model = model.to(device).eval()
    dtype = next(model.parameters()).dtype
    outs = []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(np.asarray(x[i : i + batch_size]), dtype=dtype, device=device)
        try:
            outs.append(model.stream_outputs(xb).double().cpu().numpy())
        except ValueError as e:
            raise UserError(f"the data does not fit the model: {e}") from None
    return np.concatenate(outs)


def graph_outputs(graph, x: np.ndarray, backend: str = "torch", precision: str = "float",
                  progress: bool = False) -> tuple[np.ndarray, int]:
    """Per-step outputs of a NIR graph (:func:`export.normalize.prepare`-d) run by ``backend``,
    and the graph's latency."""
    latency = GraphMetadata.of(graph).latency_frames
    result = simulate(graph, x, backend=backend, precision=precision, progress=progress)
    outputs = per_step_outputs(result.trace)
    if outputs.shape[1] != x.shape[1] + latency:
        raise UserError(f"backend {backend!r} ran {outputs.shape[1]} steps, expected "
                        f"{x.shape[1]} frames + {latency} latency")
    return outputs, latency


def stream_eval(source: str | Path, dataset: str, backend: str | None = None, samples: int | None = None,
                data_dir: str | None = None, precision: str | None = None,
                margins_: tuple[float, ...] = DEFAULT_MARGINS, progress: bool = False,
                batch_size: int = 256, dt: float | None = None) -> StreamResult:
    """Streaming evaluation of a checkpoint (.pt, run in the torch model's streaming mode)
    or a NIR file (.nir, run by ``backend``: torch, emulator or lava) on the first
    ``samples`` test items of ``dataset``.

    ``precision`` defaults to "float" for the torch backend and "fixed" otherwise; ``dt`` (s) is
    the frame period of a NIR file whose metadata has none (its own dt wins; the result's
    ``notes`` say which was used)."""
    source = Path(source)
    if not source.is_file():
        raise UserError(f"file not found: {source}")
    suffix = source.suffix.lower()
    if suffix not in (".pt", ".nir"):
        raise UserError(f"{source}: expected a checkpoint (.pt) or a NIR file (.nir)")
    x, y = load_test_split(dataset, data_dir, samples)
    start = time.perf_counter()
    notes: list[str] = []
    if suffix == ".pt":
        if backend not in (None, "torch"):
            raise UserError(f"a checkpoint runs in the torch model's streaming mode; to use "
                            f"--backend {backend}, export it to NIR first")
        if precision not in (None, "float"):
            raise UserError("a checkpoint runs in floating point; use a quantised NIR export for 'fixed'")
        model = load_checkpoint(source).model
        outputs = model_outputs(model, x, batch_size=batch_size)
        latency, backend, precision = int(model.latency), "torch-stream", "float"
    else:
        backend = backend or "torch"
        precision = precision or default_precision(backend)

        graph = prepare(read_graph(source), dt=dt, where=str(source))
        notes = list(graph.metadata.get("notes", []))
        _, features = graph_input_shape(graph)
        if features != x.shape[2]:
            raise UserError(f"the graph takes {features} features per frame, the data has {x.shape[2]}")
        outputs, latency = graph_outputs(graph, x, backend, precision, progress)
    wall = time.perf_counter() - start
    if not np.all(np.isfinite(outputs)):
        raise UserError(f"{source}: the {backend} run produced non-finite outputs")
    result = summarize(outputs, y, x.shape[1], latency, real_lengths(dataset, x), margins_,
                       source=str(source), backend=backend, precision=precision, dataset=dataset, wall_s=wall)
    return dataclasses.replace(result, notes=notes)
