"""The report jobs (``lmuf report``): run a NIR file on a data set's first test samples (or
random input) and count spikes, SOPs and energy per layer; or export a model with both LMU
memory forms and report them side by side."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from backends import simulate
from export import read_graph
from export.normalize import prepare
from lmuformer.analysis.compare import compare_forms
from lmuformer.analysis.counts import build_report
from lmuformer.analysis.profiles import Profile
from lmuformer.jobs.export import frame_period, model_and_tuning, set_current_grids, tuned_option_values
from lmuformer.jobs.simulate import samples_for_graph


def report_file(path: str, profiles: Sequence[Profile], dataset: str | None = None,
                data_dir: str | None = None, samples: int | None = None, random: bool = False, seed: int = 0,
                backend: str = "emulator", precision: str | None = None, progress: bool = False,
                dt: float | None = None, frames: int | None = None,
                on_note: Callable[[str], None] | None = None) -> dict:
    """The report (:func:`lmuformer.analysis.counts.build_report`) of the NIR file ``path`` run
    by ``backend`` on the input :func:`samples_for_graph` gives.  ``dt`` (s) and ``frames`` where
    the graph records none (:func:`export.normalize.prepare`); ``on_note`` gets what it did."""
    graph = prepare(read_graph(path), dt=dt, frames=frames, where=str(path))
    for note in graph.metadata.get("notes", []):
        (on_note or (lambda s: None))(note)
    x, _ = samples_for_graph(graph, dataset, data_dir, samples, random, seed)
    record = {"record": True} if backend in ("emulator", "lava") else {}  # trains: SOPs as delivered
    result = simulate(graph, x, backend=backend, precision=precision, progress=progress, **record)
    return build_report(graph, result, profiles, source=str(path))


def compare_file(model: str, profiles: Sequence[Profile], dataset: str | None = None,
                 data_dir: str | None = None, samples: int | None = None, random: bool = False, seed: int = 0,
                 backend: str = "emulator", precision: str | None = None, lmu_taps: int | None = None
                 ) -> dict:
    """:func:`lmuformer.analysis.compare.compare_forms` of ``model`` (a checkpoint file, else a
    preset name) on the input :func:`samples_for_graph` gives for its first export.  A checkpoint's
    forms are exported as ``lmuf export`` exports it: the options it was fine-tuned for, if any
    (:func:`lmuformer.jobs.export.tuned_option_values`), its data set's frame period, and its
    current grids (pinned by fine-tuning, else calibrated on its training split:
    :func:`lmuformer.jobs.export.set_current_grids`); a preset's keep the defaults and the static grid."""
    is_file = os.path.exists(model)
    net, tuned, metrics = model_and_tuning(model if is_file else None, None if is_file else model, seed)
    options = tuned_option_values({}, tuned, frame_period(metrics) if is_file else None)  # as lmuf export
    on_graph = (lambda g: set_current_grids(g, tuned, metrics, data_dir)) if is_file else None
    return compare_forms(net, lambda g: samples_for_graph(g, dataset, data_dir, samples, random, seed)[0],
                         profiles, backend=backend, precision=precision, source=str(model), on_graph=on_graph,
                         lmu_taps=lmu_taps, **options)
