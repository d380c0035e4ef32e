"""Lower a :class:`backends.fixed_point.Network` to Lava processes.

Processes (standard Lava wherever one exists):
    * input: ``io.source.RingBuffer`` replaying the (graded) input of every sample; the
      constant population (current biases): a ``RingBuffer`` of ones (and its rounding channels);
    * synapse term: ``Dense`` (``DelayDense`` when it needs extra delay), ``num_message_bits``
      24 for graded sources (input, memory), 0 for spikes; fixed point: weights ``2 * mantissa``,
      ``weight_exp``, ``num_weight_bits=8``; float: the NIR float weight, one Dense per synapse;
    * spiking population (NIR LIF, IF, CubaLIF, Threshold): ``LIFReset`` (``LIF`` plus a periodic
      state reset; every step for a Threshold), plus a periodic ``RingBuffer`` "gate" into its
      ``a_in`` that inhibits it outside its sample windows;
    * graded population (NIR I, LI, CubaLI, the Output's own readout):
      :class:`backends.lava.processes.GradedIntegrator` with the population's du and dv;
    * recording: an ``io.sink.RingBuffer`` on every spiking population and on the readout.

Time alignment.  Lava's Dense delivers one step after it receives, and every process runs
every step, so the populations run pipelined: population P computes the NIR step n of
sample i at Lava step ``depth[P] + i * period + n``.  ``depth`` is the longest path with
edge weight ``1 - delay`` over the synapses (input at depth 1); a synapse then needs the
extra Dense delay ``depth[target] - depth[source] + delay - 1``, which the longest paths make
``>= 0`` (0 for the memory's recurrent synapse: the Dense latency is its Delay(1)).  NIR Delay
nodes become these synaptic delays.

Rounding channels (fixed point).  A graded source with constant channels (``Population.consts``,
see :mod:`backends.fixed_point`) sends them after its outputs: the input RingBuffer has one
extra row per constant, the integrator appends them to its message; every Dense from that
source has one extra weight column per constant (2 on its term's channel, else 0), so that
Lava's Dense adds ``2**(shift - 1)`` before its right shift.

Samples run back to back in one Lava run, ``period = steps + gap`` apart.  Each LIF is reset
(``LIFReset``: u = v = 0) at the first step of its window; outside its windows the gate adds
-2**15 to its input so that its bias cannot make it spike (the gap is at least
``max depth - 1`` so that the steps before the first window are gated too, and at least
the longest NIR delay so that no spike crosses into the next sample).  The integrators
hold 0 outside their windows.  Inside a window every population sees exactly the operands
of the NIR step, so the fixed-point run equals the emulator bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from lava.proc.dense.process import DelayDense, Dense
from lava.proc.io.sink import RingBuffer as Sink
from lava.proc.io.source import RingBuffer as Source
from lava.proc.lif.process import LIFReset

from backends.fixed_point import WEIGHT_BITS, Network
from backends.lava.processes import GradedIntegrator
from lmuformer.errors import UserError

GATE_FIXED = -(2**15)  # a_in units: u = -2**21, far below any threshold
GATE_FLOAT = -1.0e6
GRADED_BITS = 24


@dataclass
class Schedule:
    """Lava step of NIR step 0 of the first sample for each population, and the period."""

    depth: dict[str, int]
    steps: int
    period: int

    def total_steps(self, samples: int) -> int:
        return max(self.depth.values()) + (samples - 1) * self.period + self.steps - 1

    def columns(self, name: str, sample: int) -> np.ndarray:
        """Sink columns (Lava step - 1) of the NIR steps of ``sample`` for population ``name``."""
        start = self.depth[name] + sample * self.period - 1
        return np.arange(start, start + self.steps)


def schedule(net: Network, steps: int, gap: int | None = None) -> Schedule:
    depth = {n: 0 for n in net.populations}
    for _ in range(len(depth) + 1):
        changed = False
        for s in net.synapses:
            if s.source == s.target and s.delay >= 1:
                continue
            need = depth[s.source] + 1 - s.delay
            if need > depth[s.target]:
                depth[s.target], changed = need, True
        if not changed:
            break
    else:
        raise UserError("the graph has a cycle that Lava's one-step synapses cannot schedule")
    # settled: every synapse but a skipped self-loop (delay >= 1) has depth[target] >= depth[source]
    # + 1 - delay, so synapse_delay is never negative (the shift keeps the differences)
    shift = 1 - min(depth.values())
    depth = {n: d + shift for n, d in depth.items()}
    need = max(max(depth.values()) - 1, net.max_delay, 1)
    gap = need if gap is None else max(gap, need)
    return Schedule(depth, steps, steps + gap)


def synapse_delay(sched: Schedule, s) -> int:
    return sched.depth[s.target] - sched.depth[s.source] + s.delay - 1


@dataclass
class LavaNetwork:
    root: object
    sinks: dict[str, Sink]
    processes: list = field(default_factory=list)


def _dense(weights: np.ndarray, delay: int, graded: bool, **kw):
    bits = GRADED_BITS if graded else 0
    if delay == 0:
        return Dense(weights=weights, num_message_bits=bits, **kw)
    return DelayDense(weights=weights, delays=np.full(weights.shape, delay, dtype=int),
                      num_message_bits=bits, **kw)


def build(net: Network, sched: Schedule, x: np.ndarray, fixed: bool) -> LavaNetwork:
    """Processes for the samples x (samples, frames, features), all connected."""
    samples, frames, _ = x.shape
    total = sched.total_steps(samples)
    pops = net.populations
    procs: list = []
    ports: dict[str, object] = {}  # population -> its output port
    inputs: dict[str, object] = {}  # population -> its input port

    xin = net.encode_input(x) if fixed else np.asarray(x, np.float64)
    n_in = pops[net.input].size
    consts = pops[net.input].consts if fixed else []
    data = np.zeros((n_in + len(consts), total), np.int32 if fixed else np.float64)
    for i in range(samples):
        cols = sched.columns(net.input, i)[:frames]
        data[:n_in, cols] = xin[i].T
    for j, c in enumerate(consts):  # rounding channels: constant at every step
        data[n_in + j] = c
    source = Source(data=data)
    procs.append(source)
    ports[net.input] = source.s_out

    for n, p in pops.items():  # the constant 1 behind current biases: a RingBuffer, every step
        if p.kind == "const":
            consts = p.consts if fixed else []
            data = np.ones((1 + len(consts), total), np.int32 if fixed else np.float64)
            for j, c in enumerate(consts):
                data[1 + j] = c
            const = Source(data=data)
            procs.append(const)
            ports[n] = const.s_out

    sinks: dict[str, Sink] = {}
    for n, p in pops.items():
        offset = sched.depth[n] % sched.period
        if p.kind == "lif":
            # a Threshold has no state: reset every step (Lava resets before the step's update)
            interval, offset = (1, 0) if p.reset_each_step else (sched.period, offset)
            if fixed:
                lif = LIFReset(shape=(p.size,), du=p.du, dv=p.dv, vth=p.vth, bias_mant=p.bias_mant,
                               bias_exp=p.bias_exp, reset_interval=interval, reset_offset=offset,
                               name=n)
            else:
                lif = LIFReset(shape=(p.size,), du=p.du_f, dv=p.dv_f, vth=p.vth_f, bias_mant=p.bias_f,
                               bias_exp=0, reset_interval=interval, reset_offset=offset, name=n)
            j = np.arange(sched.period)
            active = (j + 1 - sched.depth[n]) % sched.period < sched.steps
            gate = np.where(active, 0, GATE_FIXED if fixed else GATE_FLOAT)
            gate = np.repeat(gate[None, :], p.size, axis=0).astype(np.int32 if fixed else np.float64)
            gate_src = Source(data=gate)
            gate_src.s_out.connect(lif.a_in)
            procs += [lif, gate_src]
            ports[n], inputs[n] = lif.s_out, lif.a_in
        elif p.kind == "integrator":
            bias = p.bias_int if fixed else p.bias_f
            du, dv = (p.du, p.dv) if fixed else (p.du_f, p.dv_f)
            integ = GradedIntegrator(shape=(p.size,), bias=bias, period=sched.period, offset=offset,
                                     window=sched.steps, consts=p.consts if fixed else (), du=du, dv=dv,
                                     name=n)
            procs.append(integ)
            ports[n], inputs[n] = integ.s_out, integ.a_in
        if p.kind in ("lif", "integrator") and (p.kind == "lif" or n == net.readout):
            sink = Sink(shape=(p.size + (len(p.consts) if fixed else 0),), buffer=total)
            ports[n].connect(sink.a_in)
            sinks[n] = sink
            procs.append(sink)

    for s in net.synapses:
        delay = synapse_delay(sched, s)
        if fixed:
            consts = pops[s.source].consts
            for k, t in enumerate(s.terms):
                w = t.weights.astype(np.int32)
                if consts:  # the source's constant channels: weight 2 on this term's rounding channel
                    wc = np.zeros((w.shape[0], len(consts)), np.int32)
                    if t.round_channel is not None:
                        wc[:, t.round_channel] = 2
                    w = np.concatenate([w, wc], axis=1)
                d = _dense(w, delay, s.graded, weight_exp=t.weight_exp,
                           num_weight_bits=WEIGHT_BITS, name=f"{s.name}.term{k}")
                ports[s.source].connect(d.s_in)
                d.a_out.connect(inputs[s.target])
                procs.append(d)
        else:
            d = _dense(s.weight.astype(np.float64), delay, s.graded, name=s.name)
            ports[s.source].connect(d.s_in)
            d.a_out.connect(inputs[s.target])
            procs.append(d)
    return LavaNetwork(root=source, sinks=sinks, processes=procs)
