"""The common simulation interface: a graph and a batch of samples in, predictions,
per-step readout and per-population spike counts out."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nir
import numpy as np

from backends import fixed_point
from export.io import TORCH_NODES, check_supported
from export.normalize import prepare
from lmuformer.errors import UserError
from lmuformer.validation import check_frames


@dataclass
class SimulationResult:
    """One simulation of ``samples`` sequences.

    readout: (samples, classes) accumulated readout after the last step;
    trace: (samples, steps, classes) accumulated readout after each step;
    spikes: population name -> (samples,) spike counts over the whole run;
    neurons: population name -> neurons; steps: steps per sample; wall_s: seconds.
    """

    backend: str
    precision: str
    readout: np.ndarray
    trace: np.ndarray
    spikes: dict[str, np.ndarray]
    neurons: dict[str, int]
    steps: int
    wall_s: float
    extra: dict = field(default_factory=dict)

    @property
    def predictions(self) -> np.ndarray:
        return self.readout.argmax(axis=1)

    @property
    def samples(self) -> int:
        return self.readout.shape[0]

    @property
    def steps_per_second(self) -> float:
        return self.samples * self.steps / self.wall_s if self.wall_s > 0 else float("inf")


Runner = Callable[..., SimulationResult]

# backend name -> "module:function"; imported on first use so that a missing optional
# dependency (Lava) only matters to the backend that needs it.
BACKENDS: dict[str, str] = {
    "torch": "backends.torch_backend:run",
    "emulator": "backends.emulator:run",
    "lava": "backends.lava.backend:run",
}


def backend_nodes() -> dict[str, tuple[str, ...]]:
    """backend name -> the NIR node types it takes (the torch backend takes the most)."""
    fixed = tuple(fixed_point.SUPPORTED)
    return {"torch": TORCH_NODES, "emulator": fixed, "lava": fixed}


def default_precision(backend: str) -> str:
    """"float" for the torch re-import (floating point only), "fixed" for the others."""
    return "float" if backend == "torch" else "fixed"


def simulate(
    graph: nir.NIRGraph,
    x: np.ndarray,
    backend: str = "torch",
    precision: str | None = None,
    progress: bool = True,
    dt: float | None = None,
    **options,
) -> SimulationResult:
    """Run ``graph`` on x (samples, frames, features) for frames + latency steps each;
    ``precision`` None means :func:`default_precision` of the backend.  Every backend gets
    the graph :func:`export.normalize.prepare`-d (flat; ``dt``: the frame period, s, where
    the graph's metadata has none)."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    precision = precision or default_precision(backend)
    if precision not in ("fixed", "float"):
        raise UserError(f"precision must be 'fixed' or 'float', not {precision!r}")
    module, func = BACKENDS[backend].split(":")
    run: Runner = getattr(importlib.import_module(module), func)
    graph = prepare(graph, dt=dt)
    check_supported(graph, backend=backend, supported=backend_nodes()[backend])  # one line naming the node
    start = time.perf_counter()
    x = check_frames(x)  # 3-d, non-empty, finite (lmuformer.validation)
    result = run(graph, x, precision=precision, progress=progress, **options)
    result.wall_s = time.perf_counter() - start
    return result
