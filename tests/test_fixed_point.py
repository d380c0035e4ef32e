"""The fixed-point lowering's checks, notes and parameters on small hand-made NIR graphs.

Each bad graph raises one UserError whose message names what is wrong; the parameters of
good graphs are computed by hand from the rules in ``backends/fixed_point.py``'s docstring.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest

from backends.base import simulate
from backends.fixed_point import input_frac_for, lower, lower_for_input
from lmuformer.errors import UserError
from tests.graphs import _linear, edge_graph, wrap_graph


def _graph(nodes: dict, edges: list, **metadata) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0, "latency_frames": 0, **metadata})


def _io(n: int = 1) -> dict:
    return {"input": nir.Input(input_type={"input": np.array([n])}),
            "output": nir.Output(output_type={"output": np.array([n])})}


def _lif_graph(lif: nir.LIF, weight=((1,),), exponent: int = 0) -> nir.NIRGraph:
    """input(1) -> weight -> LIF -> [1] -> readout I -> output."""
    n = np.asarray(lif.v_threshold).size
    nodes = {**_io(), "a.in": _linear(weight, exponent), "a": lif, "r.in": _linear(np.ones((1, n)), 0),
             "readout": nir.I(r=np.ones(1))}
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "r.in"), ("r.in", "readout"), ("readout", "output")]
    return _graph(nodes, edges)


def _lif_node(n: int = 1, tau=2.0, r=1.0, v_leak=0.0, v_threshold=1.0, v_reset=0.0) -> nir.LIF:
    def full(v):
        return np.broadcast_to(np.asarray(v, np.float64), (n,)).copy()

    return nir.LIF(tau=full(tau), r=full(r), v_leak=full(v_leak), v_threshold=full(v_threshold),
                   v_reset=full(v_reset))


@pytest.mark.parametrize("bits, ok", [(1, False), (2, True), (24, True), (25, False)])
def test_input_bits_range(bits, ok):
    if ok:
        assert lower(wrap_graph(), input_bits=bits).input_bits == bits
    else:
        with pytest.raises(UserError, match=r"^input bits must be between 2 and 24, got "):
            lower(wrap_graph(), input_bits=bits)


def test_one_input_one_output_and_an_integrator_readout():
    g = wrap_graph()
    g.nodes["input2"] = nir.Input(input_type={"input": np.array([1])})
    with pytest.raises(UserError, match=r"^need exactly one Input and one Output node, found 2 and 1$"):
        lower(g)
    g = wrap_graph()
    g.nodes["output2"] = nir.Output(output_type={"output": np.array([1])})
    with pytest.raises(UserError, match=r"found 1 and 2$"):
        lower(g)
    g = _lif_graph(_lif_node())
    g.edges[-1] = ("a", "output")  # the LIF feeds the output: its spikes are the result
    assert lower(g).readout == "a" and lower(g).readout_scale() == 1.0


def test_lif_parameters_checked():
    with pytest.raises(UserError, match=r"^a: tau differs between neurons; Lava's LIF takes one value"):
        lower(_lif_graph(nir.LIF(tau=np.array([2.0, 3.0]), r=np.ones(2), v_leak=np.zeros(2),
                                 v_threshold=np.ones(2), v_reset=np.zeros(2)), weight=[[1], [1]]))
    with pytest.raises(UserError, match=r"^a: v_reset must be 0 \(Lava's LIF resets to 0\)$"):
        lower(_lif_graph(_lif_node(v_reset=0.5)))
    with pytest.raises(UserError, match=r"^a: need 0 < dt/tau <= 1 and r > 0 \(got dt/tau=2.0, r=1.0\)$"):
        lower(_lif_graph(_lif_node(tau=0.5)))
    with pytest.raises(UserError, match=r"\(got dt/tau=0.5, r=0.0\)$"):
        lower(_lif_graph(_lif_node(r=0.0)))
    # alpha = 1 (tau = dt) is allowed: dv saturates at 4095
    p = lower(_lif_graph(_lif_node(tau=1.0))).populations["a"]
    assert (p.dv, p.dv_f, p.vth) == (4095, 1.0, 2**10)


def test_lif_fixed_point_parameters_by_hand():
    # tau = 3 dt: alpha = 1/3, dv = rint(4096 / 3) = 1365 (a note), vth = rint(1 * 2**10 * 3) = 3072
    net = lower(_lif_graph(_lif_node(tau=3.0, v_leak=0.25, r=2.0)))
    p = net.populations["a"]
    assert (p.kind, p.size, p.frac, p.du, p.dv) == ("lif", 1, 10, 4095, 1365)
    assert p.vth == round(2**10 / (2 / 3)) == 1536
    assert p.dv_f == pytest.approx(1 / 3) and p.vth_f == pytest.approx(1.5)
    # bias = v_leak / r = 1/8: scaled 2**16 / 8 = 8192 > 4095 -> bias_exp 1, mantissa 4096 > 4095 -> exp 2
    assert p.bias_f.tolist() == [0.125]
    assert (p.bias_mant.tolist(), p.bias_exp.tolist()) == ([2048], [2])
    assert any(n.startswith("a: dv = 1365/4096 rounds dt/tau = 0.333") for n in net.notes), net.notes
    assert not any("bias rounded" in n for n in net.notes)
    # a bias off the grid is rounded (a note), a threshold too large for 17 bits lowers the grid
    net = lower(_lif_graph(_lif_node(v_leak=1 / 3, v_threshold=100.0)))
    p = net.populations["a"]
    # 100 * 2**k * 2 < 2**17 -> k = 9
    assert p.frac == 9 and p.vth == 100 * 2**10
    assert "a: bias rounded to bias_mant << bias_exp" in net.notes
    assert "a: current grid 2**-9; finer spike synapse terms (2**-10) rounded" not in net.notes
    # 2**15 / 3 = 10922.7 -> / 2 = 5461.3 > 4095 -> / 4 = 2730.7: rint 2731, bias_exp 2
    assert (p.bias_mant.tolist(), p.bias_exp.tolist()) == ([2731], [2])


def test_spike_synapse_finer_than_the_lif_grid_is_noted():
    # a spike synapse term of 2**-12 into a LIF whose grid is capped at 2**-10
    lif = _lif_node()
    nodes = {**_io(), "a.in": _linear([[1]], 0), "a": lif, "b.in": _linear([[1]], -12), "b": _lif_node(),
             "r.in": _linear([[1]], 0), "readout": nir.I(r=np.ones(1))}
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "b.in"), ("b.in", "b"), ("b", "r.in"),
             ("r.in", "readout"), ("readout", "output")]
    net = lower(_graph(nodes, edges))
    assert net.populations["b"].frac == 10
    assert "b: current grid 2**-10; finer spike synapse terms (2**-12) rounded" in net.notes
    t = net.synapses[1].terms[0]
    assert (t.weight_exp, t.exponent, t.shift) == (-12 + 10 - 1, -12, 3)
    assert t.round_channel is None  # a spike synapse is not rounded by a constant channel
    # lifting max_frac makes it exact
    net = lower(_graph(nodes, edges), max_frac=12)
    assert net.populations["b"].frac == 12 and not any("current grid" in n for n in net.notes)


def test_bad_synapses_and_delays():
    g = _lif_graph(_lif_node())
    g.nodes["a.in2"] = _linear([[1]], 0)
    g.edges.append(("input", "a.in2"))  # a synapse without a target
    with pytest.raises(UserError, match=r"^a.in2: a synapse needs exactly one source and one target$"):
        lower(g)
    g = _lif_graph(_lif_node())
    g.edges[0] = ("a", "a.in")  # the LIF feeds itself without delay
    g.edges.append(("input", "r.in2"))
    g.nodes["r.in2"] = _linear([[1]], 0)
    g.edges.append(("r.in2", "readout"))
    with pytest.raises(UserError, match=r"^the graph has a cycle without a Delay node$"):
        lower(g)
    g = _lif_graph(_lif_node())
    g.nodes["x"] = _linear([[1]], 0)
    g.edges += [("input", "x"), ("x", "input")]
    with pytest.raises(UserError, match=r"^x: its target input is not a LIF or I population$"):
        lower(g)


def _delayed(delay: float) -> nir.NIRGraph:
    """input -> Delay -> [1] -> readout: the input arrives ``delay`` steps later."""
    nodes = {**_io(), "d": nir.Delay(delay=np.array([delay])), "r.in": _linear([[1]], 0),
             "readout": nir.I(r=np.ones(1))}
    return _graph(nodes, [("input", "d"), ("d", "r.in"), ("r.in", "readout"), ("readout", "output")])


def test_delays_fold_into_synapses():
    net = lower(_delayed(2.0))
    (s,) = net.synapses
    assert (s.source, s.target, s.delay, s.graded, net.max_delay) == ("input", "readout", 2, True, 2)
    x = np.array([[[1.0], [2.0], [0.0], [0.0]]])
    r = simulate(_delayed(2.0), x, backend="emulator", precision="fixed", progress=False)
    assert r.trace[0, :, 0].tolist() == [0.0, 0.0, 1.0, 3.0]
    for bad in (0.0, 1.5):
        with pytest.raises(UserError, match=r"^d: delay is not a positive whole number of steps$"):
            lower(_delayed(bad))


def test_identity_edges_become_synapses():
    """A population wired straight to another (no Linear between) is an identity synapse."""
    nodes = {**_io(2), "a.in": _linear(np.eye(2), 0), "a": _lif_node(2), "readout": nir.I(r=np.full(2, 0.5))}
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "readout"), ("readout", "output")]
    net = lower(_graph(nodes, edges))
    s = next(s for s in net.synapses if s.name == "a->readout")
    assert (s.source, s.target, s.delay, s.graded) == ("a", "readout", 0, False)
    assert s.weight.tolist() == [[0.5, 0.0], [0.0, 0.5]]  # dt * r folded in
    (t,) = s.terms  # no metadata: quantised to one 8-bit term, 0.5 = 64 * 2**-7 exactly
    assert t.exponent == -7 and t.weights.tolist() == [[128, 0], [0, 128]]
    assert net.notes == []


def test_input_overflow_of_the_int32_accumulator():
    # W = 254: 254 * 2**15 * fan-in + 2**23 >= 2**31 from fan-in 258 on (16-bit input)
    assert lower(_fan_in(257)).input_bits == 16
    g = _fan_in(258)
    with pytest.raises(UserError, match=r"^r.in: a 16-bit input overflows the int32 accumulator$"):
        lower(g)
    assert lower(g, input_bits=8).input_bits == 8


def _fan_in(n: int) -> nir.NIRGraph:
    nodes = {**_io(n), "r.in": _linear(np.full((1, n), 127), 0), "readout": nir.I(r=np.ones(1))}
    nodes["output"] = nir.Output(output_type={"output": np.array([1])})
    return _graph(nodes, [("input", "r.in"), ("r.in", "readout"), ("readout", "output")])


def test_lower_for_input_checks():
    g = wrap_graph()
    with pytest.raises(UserError, match=r"^precision must be 'fixed' or 'float', not 'double'$"):
        lower_for_input(g, np.zeros((1, 2, 1)), "double")
    net, x, steps = lower_for_input(g, np.zeros((3, 5, 1)), "fixed")
    assert steps == 5 and x.shape == (3, 5, 1) and net.input == "input" and net.readout == "readout"
    net, _, steps = lower_for_input(edge_graph(), np.zeros((1, 4, 2)), "float")
    assert steps == 5  # latency_frames 1


def test_integrator_grid_and_bias():
    """The readout integrator's grid: the finest on which the static bound fits 24 bits (at most 20)."""
    # edge graph: readout fed by 2 spikes/step through |W| row sums (473, 129) / 256 over 5 steps
    net = lower(edge_graph(), steps=5)
    p = net.populations["readout"]
    assert p.state_bound == 473 / 256 * 5  # no recurrence: the largest row sum times the steps
    assert p.frac == 19  # floor(log2((2**23 - 1) / (9.238 * 1.001))) = 19
    assert lower(edge_graph(), steps=5, fine_state=False).populations["readout"].frac == 8
    assert lower(edge_graph(), steps=5, max_state_frac=12).populations["readout"].frac == 12
    assert lower(edge_graph()).populations["readout"].frac == 20  # 1 step (the latency): capped at 20
    assert net.summary() == {"frac": {"input": 8, "a": 10, "readout": 19}, "dense_terms": 3, "notes": []}
    assert net.populations["readout"].bias_int.tolist() == [0, 0]
    # a graded-fed integrator: no static bound, a note, grid 16
    net = lower(wrap_graph())
    assert net.populations["readout"].frac == 16
    assert net.notes == ["readout: no static state bound (graded inputs); state may wrap at 24 bits"]


# ---- the emulator's integer edges, by hand ----

def test_wrap32_and_wrap24_by_hand():
    from backends.emulator import _wrap32
    from backends.fixed_point import wrap24 as _wrap24

    a = np.array([0, 5, -5, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32 + 7], dtype=np.int64)
    assert _wrap32(a).tolist() == [0, 5, -5, 2**31 - 1, -(2**31), -(2**31), 2**31 - 1, 7]
    b = np.array([0, 2**23 - 1, 2**23, -(2**23), -(2**23) - 1, 2**24 + 3], dtype=np.int64)
    assert _wrap24(b).tolist() == [0, 2**23 - 1, -(2**23), -(2**23), 2**23 - 1, 3]


def test_lif_step_fixed_by_hand():
    """u = a_in << 6 (du = 4095), u wraps at 24 bits, v = trunc decay + u + bias clipped to
    +-(2**23 - 1), spike iff v > vth << 6, then v = 0."""
    from backends.emulator import lif_step_fixed

    z = np.zeros(7, np.int64)
    a_in = np.array([1, -1, 2**17 - 1, 2**17, 2**17 + 1, -(2**17), -(2**17) + 1], dtype=np.int64)
    v0 = np.array([4097, -4097, 0, 0, 0, 0, -(2**20)], dtype=np.int64)
    u, v, s = lif_step_fixed(z, v0, a_in, 4095, 2048, 0, 2**10)
    # u = a_in << 6, wrapped as Lava does: > 2**23 -> - 2**24, <= -2**23 -> + 2**24
    assert u.tolist() == [64, -64, 2**23 - 64, 2**23, -(2**23) + 64, 2**23, -(2**23) + 64]
    # v: trunc(+-4097 * 2048 / 4096) = +-2048 (towards 0), + u, clipped to +-(2**23 - 1); threshold 2**16
    assert v.tolist() == [2048 + 64, -2048 - 64, 0, 0, -(2**23) + 64, 0, -(2**23) + 1]
    assert s.tolist() == [False, False, True, True, False, True, False]
    # the strict > at the tie: v == vth << 6 does not spike, one unit above does
    u, v, s = lif_step_fixed(z[:2], np.zeros(2, np.int64), np.array([2**10, 2**10]), 4095, 2048,
                             np.array([0, 1]), 2**10)
    assert s.tolist() == [False, True] and v.tolist() == [2**16, 0]
    # the bias is added every step; the decay keeps (4096 - dv) / 4096 of v
    u, v, s = lif_step_fixed(z[:1], np.array([1000]), np.array([0]), 4095, 1024, np.array([7]), 2**10)
    assert (u.tolist(), v.tolist(), s.tolist()) == ([0], [750 + 7], [False])
    # a_in << 6 wraps at 32 bits (to -2**31), then u's 24-bit rule adds 2**24
    u, v, s = lif_step_fixed(z[:1], z[:1], np.array([2**25]), 4095, 2048, 0, 2**10)
    assert u.tolist() == [-(2**31) + 2**24]


def test_emulator_result_fields_by_hand():
    from tests.graphs import EDGE_SPIKES, EDGE_X

    g = edge_graph()
    x = np.concatenate([EDGE_X, np.zeros_like(EDGE_X), EDGE_X])
    r = simulate(g, x, backend="emulator", precision="fixed", progress=False, batch_size=2)
    assert (r.backend, r.precision, r.steps, r.neurons) == ("emulator", "fixed", 5, {"a": 2})
    assert r.spikes["a"].tolist() == [2, 0, 2]
    assert np.array_equal(r.readout, r.trace[:, -1]) and r.trace.shape == (3, 5, 2)
    assert r.readout[1].tolist() == [0.0, 0.0]
    # a_in of a = x * 2**10: the largest is (2 + 2**-8) * 2**10 = 2052
    assert r.extra["peak_abs_a_in"] == {"a": 2052}
    assert r.extra["input_clipped"] == 0.0
    assert r.extra["network"] == lower(g, steps=5, input_frac_bits=input_frac_for(x)).summary()
    assert "spike_trains" not in r.extra
    rec = simulate(g, x, backend="emulator", precision="fixed", progress=False, record=True, batch_size=1)
    assert np.array_equal(rec.extra["spike_trains"]["a"], np.concatenate([EDGE_SPIKES, 0 * EDGE_SPIKES,
                                                                          EDGE_SPIKES]))
    fl = simulate(g, 300 * x, backend="emulator", precision="float", progress=False)
    assert "peak_abs_a_in" not in fl.extra and "input_clipped" not in fl.extra
    clipped = simulate(g, 300 * x, backend="emulator", precision="fixed", progress=False, input_frac_bits=8)
    assert clipped.extra["input_clipped"] == 8 / 24  # the 8 nonzero values (600, 600.7) outside +-128
    fits = simulate(g, 300 * x, backend="emulator", precision="fixed", progress=False)  # the grid fits x
    assert fits.extra["input_clipped"] == 0.0 and fits.extra["network"]["frac"]["input"] == 5
    from backends.emulator import run

    empty = run(g, np.zeros((0, 4, 2)), progress=False)  # simulate() refuses it; the backend copes
    assert empty.trace.shape == (0, 5, 2) and empty.readout.shape == (0, 2)


def test_weights_off_their_metadata_are_quantised_with_a_note():
    g = wrap_graph()
    g.nodes["readout.in"] = nir.Linear(weight=np.array([[0.3]]))  # no metadata: rint to 8 bits
    net = lower(g)
    (t,) = net.synapses[0].terms
    # 0.3 = 77 * 2**-8 + 0.0008: the 8-bit term with the largest |m| <= 127 is 77 * 2**-8
    assert (t.exponent, t.weights.tolist()) == (-8, [[154]])
    assert net.notes[0] == "readout.in: quantised to 8 bits (max abs error 0.000781)"
    g.nodes["readout.in"] = nir.Linear(weight=np.array([[0.3]]), metadata={
        "weight_mantissa": np.array([[1]]), "weight_exponent": -2})  # metadata that disagrees
    assert lower(g).notes[0] == "readout.in: re-quantised to 8 bits (max abs error 0.000781)"


def test_recurrent_integrator_state_bound_by_hand():
    """m <- m + s + (-1/2) m[t-1]: A = 1/2, the bound over 3 steps is 1 + 1/2 + 1/4."""
    nodes = {**_io(), "a.in": _linear([[1]], 0), "a": _lif_node(), "m.in": _linear([[1]], 0),
             "m": nir.I(r=np.ones(1)), "d": nir.Delay(delay=np.array([1.0])), "m.rec": _linear([[-1]], -1),
             "r.in": _linear([[1]], 0), "readout": nir.I(r=np.ones(1))}
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "m.in"), ("m.in", "m"), ("m", "d"), ("d", "m.rec"),
             ("m.rec", "m"), ("m", "r.in"), ("r.in", "readout"), ("readout", "output")]
    net = lower(_graph(nodes, edges), steps=3)
    m = net.populations["m"]
    assert m.state_bound == 1.75
    assert m.frac == 20  # capped: 1.75 fits 2**22
    rec = next(s for s in net.synapses if s.name == "m.rec")
    assert (rec.source, rec.delay, rec.graded) == ("m", 1, True)
    (t,) = rec.terms
    # -1 * 2**-1 from the memory's 2**-20 grid onto itself: weight_exp = -1 - 20 + 20 - 1 = -2
    assert (t.weight_exp, t.shift, t.round_channel) == (-2, 2, 0)
    # r.in: 2**0 from 2**-20 onto the readout's 2**-16 (graded-fed: no bound): shift 5, channel 2**3
    r_in = next(s for s in net.synapses if s.name == "r.in").terms[0]
    assert (r_in.weight_exp, r_in.round_channel, m.consts) == (-5, 1, [1, 8])
    floors = lower(_graph(nodes, edges), steps=3, round_graded=False)
    assert all(t.round_channel is None for s in floors.synapses for t in s.terms)
    assert floors.populations["m"].consts == []


def test_lower_for_input_passes_its_parameters():
    x = np.zeros((2, 4, 2))
    net, _, steps = lower_for_input(edge_graph(), x, "fixed")
    assert (net.input_bits, net.input_frac, steps) == (16, 20, 5)  # all zero: the finest grid
    x[0, 0, 0] = -1.0
    assert lower_for_input(edge_graph(), x, "fixed")[0].input_frac == 14  # 2**14 fits, 2**15 does not
    assert net.populations["readout"].state_bound == 473 / 256 * 5  # lowered for the 5 steps
    net, _, _ = lower_for_input(edge_graph(), x, "fixed", input_bits=8, input_frac_bits=4)
    assert (net.input_bits, net.input_frac) == (8, 4)
    g = wrap_graph()
    del g.metadata["latency_frames"]
    assert lower_for_input(g, np.zeros((1, 3, 1)), "float")[2] == 3  # no latency: frames only
    with pytest.raises(UserError, match=r"^input must be \(samples, frames, features\), got shape \(8, 8\)$"):
        lower_for_input(g, np.zeros((8, 8)), "fixed")


def test_split_terms_and_clipping_at_their_bounds():
    from backends.fixed_point import split_terms

    assert [(m.tolist(), e) for m, e in split_terms(np.array([[127, -127]]), 0)] == [([[127, -127]], 0)]
    assert [(m.tolist(), e) for m, e in split_terms(np.array([[128]]), 0)] == [([[1]], 7)]  # 0 digit dropped
    assert [(m.tolist(), e) for m, e in split_terms(np.array([300]), -3)] == [([2], 4), ([44], -3)]
    net = lower(wrap_graph())
    lsb = 2.0**-8
    assert net.clipped_fraction(np.array([32767 * lsb, -32768 * lsb])) == 0.0  # the last codes fit
    assert net.clipped_fraction(np.array([32768 * lsb, -32769 * lsb])) == 1.0


@pytest.mark.parametrize("v_leak, frac, mant, exp", [
    (4095 / 512, 10, 4095, 7),  # 4095/512 * 2**16 = 4095 * 2**7: the largest bias that fits k = 10
    (10.0, 9, 2560, 7),  # 10 * 2**16 / 2**7 = 5120 > 4095: k = 9
    (10000.0, 0, 4095, 7),  # fits no grid: k = 0 and the mantissa clipped to 4095
    (-10000.0, 0, -4095, 7),
    (4095 / 2**16, 10, 4095, 0),  # the 13-bit mantissa's largest value at bias_exp 0
])
def test_a_large_bias_lowers_the_current_grid(v_leak, frac, mant, exp):
    p = lower(_lif_graph(_lif_node(v_leak=v_leak))).populations["a"]
    assert (p.frac, p.bias_mant.tolist(), p.bias_exp.tolist()) == (frac, [mant], [exp])
    assert p.bias_mant.dtype == np.int64 and p.bias_exp.dtype == np.int64


def test_emulator_records_spike_trains_only_when_asked():
    from backends.emulator import Emulator
    from tests.graphs import EDGE_SPIKES, EDGE_X

    emu = Emulator(lower(edge_graph(), steps=5), fixed=True)
    assert emu.run(EDGE_X, 5)["trains"] == {}
    assert np.array_equal(emu.run(EDGE_X, 5, record=True)["trains"]["a"], EDGE_SPIKES)


def test_emulator_result_types_and_short_inputs():
    from tests.graphs import EDGE_X

    g = edge_graph()
    r = simulate(g, EDGE_X, backend="emulator", precision="fixed", progress=False, record=True)
    assert r.spikes["a"].dtype == np.int64 and r.extra["spike_trains"]["a"].dtype == bool
    zero = simulate(g, np.zeros((1, 4, 2)), backend="emulator", precision="fixed", progress=False)
    assert zero.extra["peak_abs_a_in"] == {"a": 0} and zero.spikes["a"].tolist() == [0]
    # one frame and one latency step: the second step runs on zeros
    one = simulate(g, EDGE_X[:, :1], backend="emulator", precision="fixed", progress=False, record=True)
    assert one.extra["spike_trains"]["a"].tolist() == [[[False, True], [False, False]]]


@pytest.mark.parametrize("r, exponent, note", [(0.5, -1, None), (0.0, 0, "quantised")])
def test_integrator_r_folded_into_the_exponent(r, exponent, note):
    """dt * r = 2**-1 is folded into the exponent of the metadata's mantissa (exact, no note);
    r = 0 has no log2: the weight (all 0) is quantised (noted)."""
    g = wrap_graph()
    g.nodes["readout"] = nir.I(r=np.full(1, r))
    if r == 0.0:
        g.nodes["readout.in"] = nir.Linear(weight=np.array([[1.0]]))
    net = lower(g)
    (t,) = net.synapses[0].terms
    assert net.synapses[0].weight.tolist() == [[r]]
    if note is None:
        assert t.exponent == exponent and t.weights.tolist() == [[2]]
        assert not any("quantised" in n for n in net.notes)
    else:
        assert t.weights.tolist() == [[0]]
        assert net.notes[0] == "readout.in: quantised to 8 bits (max abs error 0)"


def _spikes_into_readout(delay: bool = False, bias: float | None = None) -> nir.NIRGraph:
    """input -> [1] -> LIF a -> (Delay 1) -> [1] (+ bias) -> readout -> output."""
    syn = _linear([[1]], 0) if bias is None else nir.Affine(
        weight=np.array([[1.0]]), bias=np.array([bias]),
        metadata={"weight_mantissa": np.array([[1]]), "weight_exponent": 0})
    nodes = {**_io(), "a.in": _linear([[1]], 0), "a": _lif_node(), "r.in": syn,
             "readout": nir.I(r=np.ones(1))}
    edges = [("input", "a.in"), ("a.in", "a"), ("r.in", "readout"), ("readout", "output")]
    if delay:
        nodes["d"] = nir.Delay(delay=np.array([1.0]))
        edges += [("a", "d"), ("d", "r.in")]
    else:
        edges.append(("a", "r.in"))
    return _graph(nodes, edges)


def test_state_bound_of_delayed_spikes_and_a_bias():
    # a delayed spike synapse is an input, not a recurrence: 1 per step over 3 steps
    assert lower(_spikes_into_readout(delay=True), steps=3).populations["readout"].state_bound == 3.0
    # the bias counts like an input that is always on: (1 + 0.5) * 3
    net = lower(_spikes_into_readout(bias=0.5), steps=3)
    assert net.populations["readout"].state_bound == 4.5
    assert net.populations["readout"].bias_f.tolist() == [0.5]


def test_steps_and_latency_from_the_metadata():
    g = edge_graph()
    g.metadata["frames"] = 4  # steps = frames + latency = 5
    assert lower(g).populations["readout"].state_bound == 473 / 256 * 5
    del g.metadata["latency_frames"]
    net = lower(g)
    assert net.latency == 0 and net.populations["readout"].state_bound == 473 / 256 * 4


def test_the_input_is_first_whatever_the_node_order():
    """A population that needs no zero-delay source (fed through a Delay) is as ready as the input;
    the input still comes first, then the order of the nodes."""
    g = _delayed(1.0)
    nodes = {"acc": nir.I(r=np.ones(1)), **g.nodes}
    del nodes["readout"]
    edges = [(a.replace("readout", "acc"), b.replace("readout", "acc")) for a, b in g.edges]
    net = lower(_graph(nodes, edges))
    assert list(net.populations) == ["input", "acc"] and net.readout == "acc"


def test_delay_tolerance_chains_and_bad_delay_inputs():
    assert lower(_delayed(2 + 5e-7)).synapses[0].delay == 2  # within 1e-6 of a whole step
    with pytest.raises(UserError, match=r"^d: delay is not a positive whole number of steps$"):
        lower(_delayed(1 + 5e-6))  # no relative tolerance
    g = _delayed(1.0)
    g.nodes["d2"] = nir.Delay(delay=np.array([2.0]))
    g.edges = [("input", "d2"), ("d2", "d")] + [e for e in g.edges if e[0] != "input"]
    assert lower(g).synapses[0].delay == 3  # chained delays add up
    g = _delayed(1.0)
    g.nodes["x"] = nir.Input(input_type={"input": np.array([1])})
    g.nodes = {"a.in": _linear([[1]], 0), "a": _lif_node(), **_delayed(1.0).nodes}
    g.edges = _delayed(1.0).edges + [("input", "a.in"), ("a.in", "a"), ("a", "d")]
    with pytest.raises(UserError, match=r"^d: a Delay node needs exactly one input$"):
        lower(g)
    nodes = {**_io(), "l2": _linear([[1]], 0), "l1": _linear([[1]], 0), "readout": nir.I(r=np.ones(1))}
    g = _graph(nodes, [("input", "l1"), ("l1", "l2"), ("l2", "readout"), ("readout", "output")])
    net = lower(g)  # a chain of linear nodes is composed into one synapse (named after its last node)
    assert [(s.name, s.source, s.target, s.weight.tolist()) for s in net.synapses] == [
        ("l2", "input", "readout", [[1.0]])]


@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_populations_without_synapses_and_an_integrator_bias(precision):
    """LIF a has no synapse, only v_leak 1.5: v = 1.5, 2.25 (> 2: spike), 1.5, 2.25 (spike); the
    readout adds its bias 1 every step and 1 per spike of a (nodes set after construction:
    NIR would add an Input in front of a)."""
    nodes = {**_io(), "a": _lif_node(v_leak=1.5), "z.in": nir.Linear(weight=np.zeros((1, 1))),
             "r.in": nir.Affine(weight=np.array([[1.0]]), bias=np.array([1.0]),
                                metadata={"weight_mantissa": np.array([[1]]), "weight_exponent": 0}),
             "readout": nir.I(r=np.ones(1))}  # its grid is 2**0 (spikes of weight 1, no bound): bias 1
    edges = [("input", "z.in"), ("z.in", "readout"), ("a", "r.in"), ("r.in", "readout"),
             ("readout", "output")]
    g = _graph(dict(nodes), list(edges))
    g.nodes, g.edges = nodes, edges
    r = simulate(g, np.zeros((2, 4, 1)), backend="emulator", precision=precision, progress=False, record=True)
    assert r.extra["spike_trains"]["a"][:, :, 0].astype(int).tolist() == [[0, 1, 0, 1]] * 2
    assert r.trace[:, :, 0].tolist() == [[1.0, 3.0, 4.0, 6.0]] * 2


def test_nodes_the_fixed_point_backends_do_not_run():
    """A nested graph (flattened by export.normalize first) and a node type outside NIR's set:
    one line naming the node; unconnected neurons are lowered as populations without input."""
    g = wrap_graph()
    g.nodes["x"] = nir.NIRGraph(nodes={}, edges=[])  # after construction: NIR would rewire it
    with pytest.raises(UserError, match=r"^x \(NIRGraph\): a nested graph; flatten it first"):
        lower(g)

    class Odd(nir.Linear):
        pass

    g = wrap_graph()
    g.nodes["x"] = Odd(weight=np.ones((1, 1)))
    with pytest.raises(UserError, match=r"^x: Odd nodes are not supported by the fixed-point backends$"):
        lower(g)
    for node in (nir.LI(tau=np.ones(1), r=np.ones(1), v_leak=np.zeros(1)),
                 nir.IF(r=np.ones(1), v_threshold=np.ones(1)), nir.Threshold(threshold=np.ones(1))):
        g = wrap_graph()
        g.nodes["x"] = node
        assert lower(g).populations["x"].size == 1
    g = wrap_graph()
    g.nodes["x"] = nir.Scale(scale=np.ones(1))
    with pytest.raises(UserError, match=r"^x: a synapse needs exactly one source and one target$"):
        lower(g)


def test_identity_edges_scale_by_dt_r_of_integrators_only():
    """a -> b (LIF, r = 4) and a -> readout (I, r = 3, dt = 0.5): identity synapses of weight 1 and
    dt * r = 1.5; the Affine r.in's bias 1 into the readout is scaled by dt * r too."""
    nodes = {**_io(), "a.in": _linear([[1]], 0), "a": _lif_node(), "b": _lif_node(r=4.0),
             "r.in": nir.Affine(weight=np.array([[1.0]]), bias=np.array([1.0])),
             "readout": nir.I(r=np.full(1, 3.0))}
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "b"), ("a", "readout"), ("b", "r.in"),
             ("r.in", "readout"), ("readout", "output"), ("a", "input")]  # into the Input: no synapse
    g = _graph(dict(nodes), list(edges), dt=0.5)
    g.nodes, g.edges = nodes, edges
    net = lower(g)
    syn = {s.name: s for s in net.synapses}
    assert set(syn) == {"a.in", "r.in", "a->b", "a->readout"}
    assert syn["a->b"].weight.tolist() == [[1.0]] and syn["a->readout"].weight.tolist() == [[1.5]]
    assert syn["r.in"].weight.tolist() == [[1.5]] and net.populations["readout"].bias_f.tolist() == [1.5]
    assert all(t.weights.dtype == np.int32 for s in net.synapses for t in s.terms)


def test_lif_parameter_edges():
    lif = _lif_node(2)
    lif.v_threshold = np.array([1.0, 2.0])
    with pytest.raises(UserError, match=r"^a: v_threshold differs between neurons; Lava's LIF"):
        lower(_lif_graph(lif, weight=[[1], [1]]))
    # r per neuron: folded into the synapse rows, the population sees r = 1
    lif = _lif_node(2, v_leak=0.5)
    lif.r = np.array([1.0, 2.0])
    net = lower(_lif_graph(lif, weight=[[1], [1]]))
    assert net.synapses[0].weight.tolist() == [[1.0], [2.0]]
    assert net.populations["a"].bias_f.tolist() == [0.5, 0.5]
    assert net.populations["a"].vth == 2**11  # 1 * 2**10 / (1/2 * 1)
    with pytest.raises(UserError, match=r"\(got dt/tau=0.0, r=1.0\)$"):
        lower(_lif_graph(_lif_node(tau=np.inf)))
    # dt/tau just below 1: rint(4096 * 0.99995) = 4096 does not fit 12 bits: dv = 4095 (a note)
    net = lower(_lif_graph(_lif_node(tau=1 / 0.99995)))
    assert net.populations["a"].dv == 4095
    assert (net.latency, net.dt) == (0, 1.0) and lower(edge_graph()).latency == 1


def test_threshold_bound_and_a_small_state_bound():
    # vth * 2**k / (alpha r) must stay below 2**17: 64 * 2**10 * 2 = 2**17 exactly -> k = 9
    assert lower(_lif_graph(_lif_node(v_threshold=64.0))).populations["a"].frac == 9
    # r = 2: 100 * 2**10 / (1/2 * 2) = 102400 < 2**17 -> k = 10
    assert lower(_lif_graph(_lif_node(r=2.0, v_threshold=100.0))).populations["a"].frac == 10
    # a bound below 1 (one spike of weight 2**-3) still sets the finest grid, 2**-20
    g = _lif_graph(_lif_node())
    g.nodes["r.in"] = _linear([[1]], -3)
    p = lower(g, steps=1).populations["readout"]
    assert (p.state_bound, p.frac) == (0.125, 20)


def test_integrator_grid_margin_bias_and_lowered_grid_note():
    # bound 16 (one spike a step for 16 steps): (2**23 - 1) / (16 * 1.001) < 2**19 -> grid 2**-18
    assert lower(_lif_graph(_lif_node()), steps=16).populations["readout"].frac == 18
    p = lower(_spikes_into_readout(bias=0.5), steps=3).populations["readout"]
    assert p.frac == 20 and p.bias_int.tolist() == [2**19]  # 0.5 on the 2**-20 grid
    # 1000 neurons, weight 100 * 2**-12 each, 100 steps: bound 2441 fits 24 bits only on 2**-11
    g = _lif_graph(_lif_node(1000), weight=np.ones((1000, 1)))
    g.nodes["r.in"] = _linear(np.full((1, 1000), 100), -12)
    net = lower(g, steps=100)
    assert net.populations["readout"].frac == 11
    assert "readout: state grid 2**-11 to fit 24 bits (bound |m| <= 2441)" in net.notes


def test_emulator_run_defaults():
    """run(graph, x): fixed point, 16-bit input on the finest grid x fits (150: 2**-7)."""
    from backends.emulator import run

    r = run(edge_graph(), np.array([[[150.0, 100.0]]]), progress=False)
    assert r.precision == "fixed" and r.extra["input_clipped"] == 0.0
    assert r.extra["network"]["frac"]["input"] == 7
    r = run(edge_graph(), np.array([[[150.0, 100.0]]]), progress=False, input_frac_bits=8)
    assert r.extra["input_clipped"] == 0.5  # 150 only: outside +-128


def test_uniformity_tolerance_names_and_odd_shifts():
    for tau in (2 * (1 + 1e-7), 2 + 5e-9):  # beyond rtol 1e-9, atol 0
        with pytest.raises(UserError, match=r"^a: tau differs between neurons"):
            lower(_lif_graph(nir.LIF(tau=np.array([2.0, tau]), r=np.ones(2), v_leak=np.zeros(2),
                                     v_threshold=np.ones(2), v_reset=np.zeros(2)), weight=[[1], [1]]))
    g = wrap_graph()
    g.nodes["readout"] = nir.I(r=np.array([1.0, 2.0]))
    g.nodes["readout.in"] = _linear([[1], [1]], 0)
    with pytest.raises(UserError, match=r"^readout: r differs between neurons"):
        lower(g)
    g = edge_graph()
    assert lower(g).populations["readout"].state_bound == 473 / 256  # no frames in the metadata: 1 step
    assert lower(g).populations["a"].name == "a"
    # a graded term with a right shift of 1: 2**-8 from the input's 2**-8 onto 2**-16, no channel
    g = wrap_graph()
    g.nodes["readout.in"] = _linear([[1]], -8)
    net = lower(g)
    assert net.synapses[0].terms[0].shift == 1 and net.synapses[0].terms[0].round_channel is None
    assert "readout.in: a right shift by 1 stays floor-rounded" in net.notes


def test_input_accumulator_bound_at_equality():
    # W = 240 (mantissa 120), fan-in 272: 240 * 2**15 * 272 + 2**23 = 2**31 exactly: refused
    nodes = {**_io(272), "r.in": _linear(np.full((1, 272), 120), 0), "readout": nir.I(r=np.ones(1))}
    nodes["output"] = nir.Output(output_type={"output": np.array([1])})
    g = _graph(nodes, [("input", "r.in"), ("r.in", "readout"), ("readout", "output")])
    with pytest.raises(UserError, match="overflows the int32 accumulator"):
        lower(g)


def test_graded_sums_beyond_float32_are_exact():
    """8 input codes of 32767 (one 32766) times W = 254: the sum 254 * 262135 needs 26 bits (float32
    would round it); the readout (grid 2**-16) gets it << 7, wrapped to 24 bits."""
    nodes = {**_io(8), "r.in": _linear(np.full((1, 8), 127), 0), "readout": nir.I(r=np.ones(1))}
    nodes["output"] = nir.Output(output_type={"output": np.array([1])})
    g = _graph(nodes, [("input", "r.in"), ("r.in", "readout"), ("readout", "output")])
    codes = np.array([32767] * 7 + [32766])
    r = simulate(g, (codes / 256)[None, None, :], backend="emulator", precision="fixed", progress=False)
    total = (254 * int(codes.sum())) << 7
    want = ((total + 2**23) % 2**24) - 2**23
    assert r.trace[0, 0, 0] == want * 2.0**-16


@pytest.mark.parametrize("peak, bits, q", [(1.0, 16, 14), (0.9999, 16, 15), (1.7, 16, 14), (150.0, 16, 7),
                                           (32767.0, 16, 0), (1e9, 16, 0), (1.0, 8, 6), (0.0, 16, 20),
                                           (2.0**-10, 16, 20)])
def test_input_grid_is_the_finest_the_data_fits(peak, bits, q):
    """input_frac_for: the largest q in 0..20 with rint(max|x| 2**q) <= 2**(bits-1) - 1."""
    x = np.array([[[0.5 * peak, -peak]]])
    assert input_frac_for(x, bits) == q
    lim = 2 ** (bits - 1) - 1
    if 0 < q < 20:
        assert np.rint(peak * 2.0**q) <= lim < np.rint(peak * 2.0 ** (q + 1))
