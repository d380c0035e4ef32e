"""backends/lava/lowering.py without running Lava: the processes ``build`` makes (Lava imported,
never run) are checked parameter by parameter against the lowered Network and the schedule.

Fast (well under a second per test) so that mutation testing can run them; Lava == emulator
equality of whole runs is tests/test_lava.py's.  Skipped only where Lava cannot be imported, never
in CI (LMUF_REQUIRE_LAVA).
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.fixed_point import WEIGHT_BITS, DenseTerm, Network, Population, Synapse, lower
from lmuformer.errors import UserError
from tests.conftest import skip_without_lava
from tests.graphs import EDGE_X, edge_graph

skip_without_lava(module_level=True)

from lava.proc.dense.process import DelayDense, Dense  # noqa: E402
from lava.proc.io.sink import RingBuffer as Sink  # noqa: E402
from lava.proc.io.source import RingBuffer as Source  # noqa: E402
from lava.proc.lif.process import LIFReset  # noqa: E402

from backends.lava import lowering  # noqa: E402
from backends.lava.processes import GradedIntegrator  # noqa: E402
from tests.nir_graphs import CASES  # noqa: E402


def _param(p, key):
    return p.proc_params[key]


def _targets(port) -> list[tuple[str, str, object]]:
    """(process type, port name, process) of every port ``port`` sends to."""
    return [(type(c.process).__name__, c.name, c.process) for c in port.out_connections]


def _by_name(ln) -> dict[str, object]:
    return {p.name: p for p in ln.processes}


def _feeder(in_port):
    """The processes sending into ``in_port``."""
    return [c.process for c in in_port.in_connections]


# ---- a hand-made Network: a NIR delay, a skip connection, rounding channels, a Threshold ----

def hand_net() -> Network:
    """input(2, rounding channels 4 and 6) -> a: LIF(3) -> (delay 2) -> b: Threshold(2) -> r: integrator(2);
    input -> b (skip, graded), input -> r (graded, no rounding channel); r sends constant 8."""
    pops = {
        "input": Population("input", "input", 2, frac=5, consts=[4, 6]),
        "a": Population("a", "lif", 3, vth=700, du=1000, dv=300, bias_mant=np.array([1, -2, 3]),
                        bias_exp=np.array([4, 5, 6]), du_f=0.25, dv_f=0.125, vth_f=1.5,
                        bias_f=np.array([0.5, -0.25, 2.0])),
        "b": Population("b", "lif", 2, vth=90, du=4095, dv=4096, bias_mant=np.array([0, 7]),
                        bias_exp=np.array([0, 1]), reset_each_step=True, du_f=1.0, dv_f=1.0, vth_f=0.75,
                        bias_f=np.array([0.0, 3.5])),
        "r": Population("r", "integrator", 2, frac=9, du=3000, dv=17, bias_int=np.array([-5, 11]),
                        du_f=0.75, dv_f=0.0625, bias_f=np.array([-0.125, 0.375]), consts=[8]),
    }
    w1 = np.array([[1, -2], [3, 4], [-5, 6]], np.int32)
    w2a, w2b = np.array([[7, 0, -8], [1, 1, 1]], np.int32), np.array([[-9, 10, 0], [0, 0, 11]], np.int32)
    syns = [
        Synapse("s1", "input", "a", 0, True, np.array([[0.5, -1.0], [1.5, 2.0], [-2.5, 3.0]]),
                [DenseTerm(w1, 3, -4, round_channel=0)]),
        Synapse("s2", "a", "b", 2, False, np.array([[0.25, 0.0, -1.0], [0.5, 0.5, 0.75]]),
                [DenseTerm(w2a, 2, -3), DenseTerm(w2b, -1, -6)]),
        Synapse("s3", "input", "b", 0, True, np.array([[1.0, 2.0], [-3.0, 0.5]]),
                [DenseTerm(np.array([[12, 13], [-14, 15]], np.int32), 0, -2, round_channel=1)]),
        Synapse("s4", "input", "r", 0, True, np.array([[-0.5, 0.25], [4.0, 0.0]]),
                [DenseTerm(np.array([[16, -17], [18, 0]], np.int32), 1, -1)]),
        Synapse("s5", "b", "r", 0, False, np.array([[1.25, -0.75], [0.0, 2.0]]),
                [DenseTerm(np.array([[19, -20], [0, 21]], np.int32), 5, 0)]),
    ]
    return Network(pops, syns, input="input", readout="r", latency=0, dt=1.0, input_bits=8, input_frac=5)


HAND_X = np.array([[[0.5, -1.0], [1.25, 0.0], [3.0, -0.03125]],
                   [[-2.0, 0.0625], [0.0, 1.0], [-0.5, 0.75]]])  # (2 samples, 3 frames, 2 features)


def test_schedule_by_hand():
    net = hand_net()
    sched = lowering.schedule(net, 3)
    # a: input + 1; b: max(a + 1 - 2, input + 1) = 2; r: b + 1; gap = max(3 - 1, delay 2, 1)
    assert sched.depth == {"input": 1, "a": 2, "b": 2, "r": 3}
    assert (sched.steps, sched.period) == (3, 5)
    assert sched.total_steps(1) == 5 and sched.total_steps(3) == 15
    assert list(sched.columns("r", 0)) == [2, 3, 4]
    assert list(sched.columns("a", 2)) == [11, 12, 13]
    assert [lowering.synapse_delay(sched, s) for s in net.synapses] == [0, 1, 0, 1, 0]
    assert lowering.schedule(net, 3, gap=7).period == 10
    assert lowering.schedule(net, 3, gap=1).period == 5  # never below the gap it needs
    assert lowering.schedule(net, 3, gap=2).period == 5


def test_schedule_gaps_of_the_shallow_graphs():
    """The gap is at least 1, the depth - 1 and the longest NIR delay."""
    one = Network({"input": Population("input", "input", 1), "r": Population("r", "integrator", 1)},
                  [Synapse("s", "input", "r", 0, True, np.ones((1, 1)))], "input", "r", 0, 1.0, 8, 0)
    sched = lowering.schedule(one, 4)
    assert sched.depth == {"input": 1, "r": 2} and sched.period == 5
    one.synapses[0].delay = 3  # r one step earlier than its input's arrival would allow: depth 0 + 1
    sched = lowering.schedule(one, 4)
    assert sched.depth == {"input": 1, "r": 1} and sched.period == 7
    assert lowering.synapse_delay(sched, one.synapses[0]) == 2
    lone = Network({"input": Population("input", "input", 1), "r": Population("r", "integrator", 1)},
                   [], "input", "r", 0, 1.0, 8, 0)
    sched = lowering.schedule(lone, 4)  # nothing to wait for: still a gap of one step
    assert sched.depth == {"input": 1, "r": 1} and sched.period == 5
    deep = hand_net()
    deep.synapses[1].delay = 0  # no NIR delay: b one step after a; gap = depth 4 - 1
    assert lowering.schedule(deep, 3).depth == {"input": 1, "a": 2, "b": 3, "r": 4}
    assert lowering.schedule(deep, 3).period == 6


def test_schedule_refuses_a_cycle_without_delay():
    net = hand_net()
    net.synapses.append(Synapse("back", "r", "a", 0, True, np.ones((3, 2))))
    message = "^the graph has a cycle that Lava's one-step synapses cannot schedule$"
    with pytest.raises(UserError, match=message):
        lowering.schedule(net, 3)
    net = hand_net()
    net.synapses.append(Synapse("self", "a", "a", 0, False, np.ones((3, 3))))
    with pytest.raises(UserError, match="cycle"):
        lowering.schedule(net, 3)


def test_schedule_takes_recurrent_delays():
    net = hand_net()
    # first in the list: the depths of the synapses after it are still computed
    net.synapses.insert(0, Synapse("self", "a", "a", 1, False, np.ones((3, 3))))  # Delay(1): Dense latency
    net.synapses.append(Synapse("back", "r", "a", 2, True, np.ones((3, 2))))  # r (3) + 1 - 2 = a (2)
    sched = lowering.schedule(net, 3)
    assert sched.depth == {"input": 1, "a": 2, "b": 2, "r": 3}
    assert [lowering.synapse_delay(sched, s) for s in (net.synapses[0], net.synapses[-1])] == [0, 0]


def test_build_fixed_hand_net():
    net = hand_net()
    sched = lowering.schedule(net, 3)
    ln = lowering.build(net, sched, HAND_X, fixed=True)
    total = 10  # 3 + 1 * 5 + 3 - 1
    assert sched.total_steps(2) == total
    by = _by_name(ln)

    # input: x * 2**5 from column depth - 1 = 0 and 5, one constant row of 4
    src = ln.root
    assert isinstance(src, Source) and src is ln.processes[0]
    data = src.data.init
    assert data.dtype == np.int32 and data.shape == (4, total)
    want = np.zeros((4, total), np.int32)
    want[:2, 0:3] = [[16, 40, 96], [-32, 0, -1]]
    want[:2, 5:8] = [[-64, 0, -16], [2, 32, 24]]
    want[2], want[3] = 4, 6
    assert np.array_equal(data, want)
    assert sorted(t[1] for t in _targets(src.s_out)) == ["s_in"] * 3
    assert {t[2].name for t in _targets(src.s_out)} == {"s1.term0", "s3.term0", "s4.term0"}

    # a: LIF with a periodic reset at its depth, gated outside [depth, depth + steps)
    a = by["a"]
    assert type(a) is LIFReset
    assert a.du.init == 1000 and a.dv.init == 300 and a.vth.init == 700
    assert np.array_equal(a.bias_mant.init, [1, -2, 3]) and np.array_equal(a.bias_exp.init, [4, 5, 6])
    assert a.proc_params.get("shape") == (3,)
    assert (_param(a, "reset_interval"), _param(a, "reset_offset")) == (5, 2)
    gate = [g for g in _feeder(a.a_in) if isinstance(g, Source)]
    assert len(gate) == 1
    g = gate[0].data.init
    assert g.dtype == np.int32 and g.shape == (3, 5)
    assert np.array_equal(g, np.repeat([[-(2**15), 0, 0, 0, -(2**15)]], 3, axis=0))
    assert _targets(gate[0].s_out) == [("LIFReset", "a_in", a)]

    # b: a Threshold, reset every step (offset 0); the same gate as a (same depth)
    b = by["b"]
    assert (_param(b, "reset_interval"), _param(b, "reset_offset")) == (1, 0)
    assert b.du.init == 4095 and b.dv.init == 4096 and b.vth.init == 90
    assert np.array_equal(b.bias_mant.init, [0, 7]) and np.array_equal(b.bias_exp.init, [0, 1])
    gb = [g for g in _feeder(b.a_in) if isinstance(g, Source)][0].data.init
    assert np.array_equal(gb, np.repeat([[-(2**15), 0, 0, 0, -(2**15)]], 2, axis=0))

    # r: the integrator, window [3, 6) mod 5, its rounding constant after its outputs
    r = by["r"]
    assert type(r) is GradedIntegrator
    assert {k: _param(r, k) for k in ("shape", "period", "offset", "window", "consts", "du", "dv")} == {
        "shape": (2,), "period": 5, "offset": 3, "window": 3, "consts": [8], "du": 3000, "dv": 17}
    assert np.array_equal(_param(r, "bias"), [-5, 11])

    # sinks: one per LIF and one on the readout, a column per Lava step, constants included
    assert set(ln.sinks) == {"a", "b", "r"}
    for n, size in (("a", 3), ("b", 2), ("r", 3)):
        s = ln.sinks[n]
        assert type(s) is Sink and _param(s, "shape") == (size,) and _param(s, "buffer") == total
        assert _feeder(s.a_in) == [by[n]]
        assert s in ln.processes

    # synapses: weights with the rounding columns, exponents, 8 weight bits, message bits, delays
    def dense(name, cls, weights, exp, bits, source, target, delay=None):
        d = by[name]
        assert type(d) is cls, name
        assert d.weights.init.dtype == np.int32
        assert np.array_equal(d.weights.init, weights), name
        assert _param(d, "weight_exp") == exp and _param(d, "num_weight_bits") == WEIGHT_BITS == 8
        assert d.num_message_bits.init == bits
        if delay is not None:
            assert np.array_equal(d.delays.init, np.full(np.shape(weights), delay))
        assert source in _feeder(d.s_in) and len(_feeder(d.s_in)) == 1
        assert _targets(d.a_out) == [(type(target).__name__, "a_in", target)]

    dense("s1.term0", Dense, [[1, -2, 2, 0], [3, 4, 2, 0], [-5, 6, 2, 0]], 3, 24, src, a)
    dense("s2.term0", DelayDense, [[7, 0, -8], [1, 1, 1]], 2, 0, a, b, delay=1)
    dense("s2.term1", DelayDense, [[-9, 10, 0], [0, 0, 11]], -1, 0, a, b, delay=1)
    dense("s3.term0", Dense, [[12, 13, 0, 2], [-14, 15, 0, 2]], 0, 24, src, b)
    dense("s4.term0", DelayDense, [[16, -17, 0, 0], [18, 0, 0, 0]], 1, 24, src, r, delay=1)
    dense("s5.term0", Dense, [[19, -20], [0, 21]], 5, 0, b, r)
    assert len(ln.processes) == 1 + 2 * 2 + 1 + 3 + 6  # input, LIFs and gates, integrator, sinks, Dense
    assert sorted(t[2].name for t in _targets(a.s_out) if t[0] != "RingBuffer") == ["s2.term0", "s2.term1"]
    assert sorted(t[2].name for t in _targets(r.s_out) if t[0] != "RingBuffer") == []


def test_build_float_hand_net():
    net = hand_net()
    sched = lowering.schedule(net, 3)
    ln = lowering.build(net, sched, HAND_X, fixed=False)
    by = _by_name(ln)
    data = ln.root.data.init
    assert data.dtype == np.float64 and data.shape == (2, 10)  # no rounding channels
    want = np.zeros((2, 10))
    want[:, 0:3], want[:, 5:8] = HAND_X[0].T, HAND_X[1].T
    assert np.array_equal(data, want)
    a, b, r = by["a"], by["b"], by["r"]
    assert (a.du.init, a.dv.init, a.vth.init) == (0.25, 0.125, 1.5)
    assert np.array_equal(a.bias_mant.init, [0.5, -0.25, 2.0]) and np.array_equal(a.bias_exp.init, 0)
    assert (_param(a, "reset_interval"), _param(a, "reset_offset")) == (5, 2)
    assert (_param(b, "reset_interval"), _param(b, "reset_offset")) == (1, 0)
    assert (b.du.init, b.dv.init, b.vth.init) == (1.0, 1.0, 0.75)
    g = [p for p in _feeder(a.a_in) if isinstance(p, Source)][0].data.init
    assert g.dtype == np.float64 and np.array_equal(g, np.repeat([[-1.0e6, 0, 0, 0, -1.0e6]], 3, axis=0))
    assert {k: _param(r, k) for k in ("period", "offset", "window", "consts", "du", "dv")} == {
        "period": 5, "offset": 3, "window": 3, "consts": [], "du": 0.75, "dv": 0.0625}
    assert np.array_equal(_param(r, "bias"), [-0.125, 0.375])
    assert _param(ln.sinks["r"], "shape") == (2,)
    names = sorted(p.name for p in ln.processes if isinstance(p, Dense))
    assert names == ["s1", "s2", "s3", "s4", "s5"]
    for s in net.synapses:
        d = by[s.name]
        assert d.weights.init.dtype == np.float64 and np.array_equal(d.weights.init, s.weight)
        assert d.num_message_bits.init == (24 if s.graded else 0)
        delay = lowering.synapse_delay(sched, s)
        assert type(d) is (DelayDense if delay else Dense)
        if delay:
            assert np.array_equal(d.delays.init, np.full(s.weight.shape, delay))
        assert _targets(d.a_out)[0][2] is by[s.target]


def test_build_edge_graph_by_hand():
    """tests/graphs.py's edge graph: a 9-bit readout weight split into two Dense terms."""
    net = lower(edge_graph())
    sched = lowering.schedule(net, 5)
    assert sched.depth == {"input": 1, "a": 2, "readout": 3} and sched.period == 7
    ln = lowering.build(net, sched, EDGE_X, fixed=True)
    by = _by_name(ln)
    data = ln.root.data.init
    assert data.shape == (2, 7)
    assert np.array_equal(data[:, :4], (EDGE_X[0] * 2**net.input_frac).T) and not data[:, 4:].any()
    assert by["a.in.term0"].weights.init.tolist() == [[2, 0], [0, 2]]
    assert by["readout.in.term0"].weights.init.tolist() == [[4, -2], [2, 0]]
    assert by["readout.in.term1"].weights.init.tolist() == [[88, -90], [2, 0]]
    assert [_param(by[f"readout.in.term{k}"], "weight_exp") for k in (0, 1)] == [18, 11]
    assert (_param(by["a"], "reset_interval"), _param(by["a"], "reset_offset")) == (7, 2)
    assert (_param(by["readout"], "offset"), _param(by["readout"], "window")) == (3, 5)
    assert set(ln.sinks) == {"a", "readout"}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fixed", [True, False])
def test_build_matches_the_network(case, fixed):
    """The NIR-subset graphs (const population, rounding channels, Delay, Threshold, CubaLI):
    every process against the lowered Network, generically."""
    make, data = CASES[case]
    net = lower(make())
    x = data(samples=2, frames=3)
    sched = lowering.schedule(net, 4)
    ln = lowering.build(net, sched, x, fixed)
    total = sched.total_steps(2)
    by = _by_name(ln)
    pops = net.populations
    dtype = np.int32 if fixed else np.float64
    # input RingBuffer
    pin = pops[net.input]
    consts = pin.consts if fixed else []
    d = ln.root.data.init
    assert d.dtype == dtype and d.shape == (pin.size + len(consts), total)
    xin = net.encode_input(x) if fixed else x
    for i in range(2):
        c0 = sched.depth[net.input] - 1 + i * sched.period
        assert np.array_equal(d[:pin.size, c0:c0 + 3], xin[i].T)
    mask = np.zeros(total, bool)
    for i in range(2):
        mask[sched.depth[net.input] - 1 + i * sched.period:][:3] = True
    assert not d[:pin.size, ~mask].any()
    for j, c in enumerate(consts):
        assert np.all(d[pin.size + j] == c)
    # constant populations
    for n, p in pops.items():
        if p.kind != "const":
            continue
        feeders = [s for s in net.synapses if s.source == n]
        dn = by[f"{feeders[0].name}.term0" if fixed else feeders[0].name]
        const = _feeder(dn.s_in)[0]
        assert type(const) is Source
        cd = const.data.init
        cc = p.consts if fixed else []
        assert cd.dtype == dtype and cd.shape == (1 + len(cc), total)
        assert np.all(cd[0] == 1)
        for j, c in enumerate(cc):
            assert np.all(cd[1 + j] == c)
    # populations
    for n, p in pops.items():
        if p.kind == "lif":
            lif = by[n]
            assert type(lif) is LIFReset
            if fixed:
                assert (lif.du.init, lif.dv.init, lif.vth.init) == (p.du, p.dv, p.vth)
                assert np.array_equal(lif.bias_mant.init, p.bias_mant)
                assert np.array_equal(lif.bias_exp.init, p.bias_exp)
            else:
                assert (lif.du.init, lif.dv.init, lif.vth.init) == (p.du_f, p.dv_f, p.vth_f)
                assert np.array_equal(lif.bias_mant.init, p.bias_f) and np.all(lif.bias_exp.init == 0)
            want = (1, 0) if p.reset_each_step else (sched.period, sched.depth[n] % sched.period)
            assert (_param(lif, "reset_interval"), _param(lif, "reset_offset")) == want
            gate = [g for g in _feeder(lif.a_in) if isinstance(g, Source)]
            assert len(gate) == 1
            g = gate[0].data.init
            assert g.dtype == dtype and g.shape == (p.size, sched.period)
            step = np.arange(1, sched.period + 1)  # Lava steps 1..period, the buffer cycles
            active = [(t - sched.depth[n]) % sched.period < sched.steps for t in step]
            low = -(2**15) if fixed else -1.0e6
            assert np.array_equal(g, np.where(np.array(active)[None, :] & np.ones((p.size, 1), bool), 0, low))
            assert _param(ln.sinks[n], "shape") == (p.size,)
        elif p.kind == "integrator":
            integ = by[n]
            assert type(integ) is GradedIntegrator
            assert _param(integ, "period") == sched.period and _param(integ, "window") == sched.steps
            assert _param(integ, "offset") == sched.depth[n] % sched.period
            assert _param(integ, "consts") == (list(p.consts) if fixed else [])
            assert (_param(integ, "du"), _param(integ, "dv")) == ((p.du, p.dv) if fixed else (p.du_f, p.dv_f))
            assert np.array_equal(_param(integ, "bias"), p.bias_int if fixed else p.bias_f)
            if n == net.readout:
                assert _param(ln.sinks[n], "shape") == (p.size + (len(p.consts) if fixed else 0),)
            else:
                assert n not in ln.sinks
    assert set(ln.sinks) == {n for n, p in pops.items() if p.kind == "lif"} | {net.readout}
    for n, s in ln.sinks.items():
        assert _param(s, "buffer") == total and _feeder(s.a_in) == [by[n]]
    # synapses
    for s in net.synapses:
        delay = lowering.synapse_delay(sched, s)
        terms = [(f"{s.name}.term{k}", t) for k, t in enumerate(s.terms)] if fixed else [(s.name, None)]
        for name, t in terms:
            dn = by[name]
            assert type(dn) is (DelayDense if delay else Dense)
            assert dn.num_message_bits.init == (24 if s.graded else 0)
            if fixed:
                nc = len(pops[s.source].consts)
                w = dn.weights.init
                assert w.shape == (t.weights.shape[0], t.weights.shape[1] + nc)
                assert np.array_equal(w[:, :t.weights.shape[1]], t.weights)
                extra = np.zeros((w.shape[0], nc))
                if t.round_channel is not None:
                    extra[:, t.round_channel] = 2
                assert np.array_equal(w[:, t.weights.shape[1]:], extra)
                assert _param(dn, "weight_exp") == t.weight_exp and _param(dn, "num_weight_bits") == 8
            else:
                assert np.array_equal(dn.weights.init, s.weight)
            if delay:
                assert np.array_equal(dn.delays.init, np.full(dn.weights.init.shape, delay))
            src = _feeder(dn.s_in)
            assert len(src) == 1
            if s.source in by:
                assert src[0] is by[s.source]
            elif s.source == net.input:
                assert src[0] is ln.root
            assert [c.process for c in dn.a_out.out_connections] == [by[s.target]]
