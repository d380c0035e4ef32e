"""A graded integrator process (the LMU memory, the readout, NIR I/LI/CubaLI), Lava style.

Lava has no resettable graded integrator: ``lava.proc.sdn.Sigma`` accumulates forever and
sends an int32 message (whose products with 8-bit weights overflow Lava's int32 Dense
accumulator for 24-bit states).  ``GradedIntegrator`` holds its state at 0 outside a
periodic window (one window per sample, so samples can run back to back in one Lava run):

    in window:   u <- wrap24(decay(u, du + 1) + a_in); sigma <- wrap24(decay(sigma, dv) + u + bias)
                 (fixed_pt, :func:`backends.fixed_point.graded_step_fixed`: with the defaults du =
                 4095, dv = 0 this is sigma <- wrap24(sigma + a_in + bias); floating_pt:
                 :func:`backends.fixed_point.graded_step_float`, du and dv as fractions)
    otherwise:   u <- 0, sigma <- 0
    send sigma as a graded message every step, followed by the constants ``consts``

with ``in window = (time_step - offset) mod period < window``.  wrap24 is the two's
complement wrap to 24 bits.  ``consts`` (fixed point only; default none) are the rounding
channels of :mod:`backends.fixed_point`: sent after sigma at every step, so the message has
``shape[0] + len(consts)`` entries.  The fixed-point model sends int64 messages so that the
receiving ``Dense`` accumulates ``weights @ sigma`` in int64 (exact).
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from backends.fixed_point import graded_step_fixed, graded_step_float


class GradedIntegrator(AbstractProcess):
    """``shape`` neurons; ``bias`` per neuron and step; window ``[offset, offset + window)``
    modulo ``period`` (in Lava time steps, which start at 1)."""

    def __init__(self, *, shape: tuple[int, ...], bias=0, period: int, offset: int, window: int,
                 consts=(), du=4095, dv=0, name: str | None = None) -> None:
        consts = [int(c) for c in consts]
        super().__init__(shape=shape, bias=bias, period=int(period), offset=int(offset), window=int(window),
                         consts=consts, du=du, dv=dv, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=(shape[0] + len(consts),))
        self.sigma = Var(shape=shape, init=0)
        self.u = Var(shape=shape, init=0)
        self.bias = Var(shape=shape, init=bias)


class _IntegratorBase(PyLoihiProcessModel):
    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.period = proc_params["period"]
        self.offset = proc_params["offset"]
        self.window = proc_params["window"]
        self.consts = np.asarray(proc_params.get("consts", []), np.int64)
        self.du = proc_params.get("du", 4095)
        self.dv = proc_params.get("dv", 0)

    def in_window(self) -> bool:
        return (self.time_step - self.offset) % self.period < self.window

    def update(self, a):
        raise NotImplementedError

    def run_spk(self) -> None:
        a = self.a_in.recv()
        if self.in_window():
            self.u[:], self.sigma[:] = self.update(a)
        else:
            self.u[:] = 0
            self.sigma[:] = 0
        self.s_out.send(np.concatenate([self.sigma, self.consts]) if self.consts.size else self.sigma)


@implements(proc=GradedIntegrator, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyGradedIntegratorFloat(_IntegratorBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    sigma: np.ndarray = LavaPyType(np.ndarray, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)

    def update(self, a):
        return graded_step_float(self.u, self.sigma, a, self.du, self.dv, self.bias)


@implements(proc=GradedIntegrator, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyGradedIntegratorFixed(_IntegratorBase):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int64, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int64, precision=24)
    sigma: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    u: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)
    bias: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=24)

    def update(self, a):
        return graded_step_fixed(self.u.astype(np.int64), self.sigma.astype(np.int64), a.astype(np.int64),
                                 self.du, self.dv, self.bias)
