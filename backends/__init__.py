"""Simulators that run exported NIR graphs: ``torch`` (the re-import), ``emulator``
(vectorised Loihi-style integer arithmetic) and ``lava`` (Lava processes).

All share one entry point, :func:`backends.base.simulate`, and one result type.
:mod:`backends.fixed_point` lowers a graph to the integer network the emulator and Lava run;
:mod:`backends.finetune` is that integer arithmetic in differentiable torch (the job that trains
through it, ``lmuf finetune``: :mod:`lmuformer.jobs.finetune`).
"""

from backends.base import BACKENDS, SimulationResult, simulate

__all__ = ["BACKENDS", "SimulationResult", "simulate"]
