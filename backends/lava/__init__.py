"""The ``lava`` backend: a lowered NIR graph run as Lava processes.

- :mod:`backends.lava.backend`: the runtime (signal guards, start and stop) and ``run``;
- :mod:`backends.lava.lowering`: :class:`backends.fixed_point.Network` -> Lava processes, time alignment;
- :mod:`backends.lava.processes`: our own process (the graded integrator) and its models.

Lava itself is imported only when a run starts (it is optional and runs on Python 3.10 only).
"""
