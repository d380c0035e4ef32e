"""The map job (``lmuf map``): place a NIR file on a target's cores and chips, with spike
rates from an emulator run on a data set or random input, or the worst-case activity."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from export import read_graph
from export.normalize import prepare
from lmuformer.analysis.mapping import Hardware, Options, map_graph
from lmuformer.analysis.mapping.placement import with_optimisations
from lmuformer.jobs.simulate import samples_for_graph


def map_file(path: str, target: Hardware, optimisations: Sequence[str] = (), base: Options | None = None,
             dataset: str | None = None, data_dir: str | None = None, samples: int | None = None,
             random: bool = False, seed: int = 0, dt: float | None = None, frames: int | None = None,
             on_note: Callable[[str], None] | None = None) -> dict:
    """The placement report of :func:`lmuformer.analysis.mapping.map_graph` for ``path``, its
    ``source`` the file; with neither ``dataset`` nor ``random`` the activity is the worst case.
    ``dt``, ``frames``, ``on_note``: as :func:`lmuformer.jobs.report.report_file`."""
    base = base or Options()
    with_optimisations(base, list(optimisations))  # unknown names fail before the run
    graph = prepare(read_graph(path), dt=dt, frames=frames, where=str(path))
    for note in graph.metadata.get("notes", []):
        (on_note or (lambda s: None))(note)
    x = None
    if random or dataset is not None:
        x, _ = samples_for_graph(graph, dataset, data_dir, samples, random, seed)
    report = map_graph(graph, target, list(optimisations), x, base)
    report["source"] = str(path)
    return report
