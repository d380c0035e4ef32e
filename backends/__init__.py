"""Simulators that run exported NIR graphs: ``torch`` (the re-import), ``emulator``
(vectorised Loihi-style integer arithmetic) and ``lava`` (Lava processes).

All share one entry point, :func:`backends.base.simulate`, and one result type.
"""

from backends.base import BACKENDS, SimulationResult, simulate

__all__ = ["BACKENDS", "SimulationResult", "simulate"]
