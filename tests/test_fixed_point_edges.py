"""Edges of the fixed-point lowering (backends/fixed_point.py) that the graph-level tests do not
reach: the graded step's decays, the static state bounds, the unrolled convolutions and pools
(every shape inference path, stride/dilation/groups/padding, the size limit), the input grid.
Expected values are worked out by hand (integer arithmetic) or with torch on the unrolled input."""

from __future__ import annotations

import re

import nir
import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

import backends.fixed_point as fp
from backends.fixed_point import (
    CONST,
    MAX_INPUT_FRAC,
    Population,
    Synapse,
    _decay,
    _graded_constants,
    _Graph,
    _leaky_bound,
    _lif_constants,
    _pair,
    _per_neuron_r,
    _state_bound,
    _uniform,
    _unroll,
    graded_step_fixed,
    graded_step_float,
    input_frac_for,
    lower,
    lower_for_input,
)
from lmuformer.errors import UserError
from tests.graphs import _linear, wrap_graph


def _a(*v):
    return np.array(v, np.int64)


# -- the graded step -------------------------------------------------------------------------------

@pytest.mark.parametrize("du", [0, 23, 2047, 4094])
def test_graded_step_fixed_current_decay(du):
    """u <- trunc(u (4095 - du) / 4096) + a_in, v <- v + u + bias (dv = 0): no shortcut unless du = 4095."""
    u, v = graded_step_fixed(_a(12288, -12288), _a(5, 5), _a(1, 1), du, 0, _a(2, 2))
    decayed = 12288 * (4095 - du) // 4096  # positive: floor = trunc
    assert u.tolist() == [decayed + 1, -decayed + 1]
    assert v.tolist() == [5 + decayed + 1 + 2, 5 - decayed + 1 + 2]


def test_graded_step_fixed_voltage_decay_with_a_plain_current():
    # du = 4095: u is this step's input; dv = 1: v <- trunc(4096 * 4095 / 4096) + 5 = 4100
    u, v = graded_step_fixed(_a(7), _a(4096), _a(5), 4095, 1, _a(0))
    assert (u.tolist(), v.tolist()) == ([5], [4100])


def test_graded_step_fixed_integrator_wraps_at_24_bits():
    _, v = graded_step_fixed(_a(0), _a(2**23 - 1), _a(1), 4095, 0, _a(0))
    assert v.tolist() == [-(2**23)]


def test_graded_step_float_with_a_decaying_current():
    u, v = graded_step_float(np.array([2.0]), np.array([1.0]), np.array([1.0]), 0.5, 0.0, np.array([0.25]))
    assert (u.tolist(), v.tolist()) == ([2.0], [3.25])  # u = 2 * 0.5 + 1; v = 1 + 2 + 0.25


# -- static bounds ---------------------------------------------------------------------------------

def _pop(size, **kw):
    return Population("p", "integrator", size, **kw)


def _syn(source, weight, graded=False, delay=1):
    return Synapse(f"{source}.w", source, "p", delay, graded, np.asarray(weight, np.float64))


def test_state_bound_by_hand():
    # no bias (None): |m| <= 2 per step, 3 steps
    assert _state_bound([_syn("a", [[2.0], [-1.0]])], _pop(2), 3) == 6.0
    # self-recurrence A = 1 - 0.5: 1 + 0.5 + 0.25
    assert _state_bound([_syn("a", [[1.0]]), _syn("p", [[-0.5]])], _pop(1), 3) == 1.75
    assert _state_bound([_syn("a", [[1.0]], graded=True)], _pop(1), 3) is None
    assert _state_bound([], _pop(0), 3) == 0.0
    assert _state_bound([], _pop(0), 0) == 0.0


def test_leaky_bound_by_hand():
    incoming = [_syn("a", [[1.0, -2.0], [0.5, 0.0]]), _syn(CONST + "x", [[0.25], [0.0]], graded=True)]
    p = _pop(2, du=2047, dv=1024, bias_f=np.array([0.5, -1.0]))
    # input [3.25, 0.5]; current x min(10, 4096 / 2048) = [6.5, 1]; (+ |b|) x min(10, 4096 / 1024)
    assert _leaky_bound(incoming, p, 10) == 28.0
    p0 = _pop(2, du=2047, dv=0, bias_f=np.array([0.5, -1.0]))
    assert _leaky_bound(incoming, p0, 10) == 70.0  # no leak: (6.5 + 0.5) x 10 steps
    assert _leaky_bound([_syn("p", [[1.0, 0.0], [0.0, 1.0]])], p, 10) is None  # self-recurrent
    assert _leaky_bound([_syn("b", [[1.0, 0.0], [0.0, 1.0]], graded=True)], p, 10) is None
    assert _leaky_bound([], _pop(0, dv=4096, bias_f=np.zeros(0)), 5) == 0.0


def test_delay_must_be_a_whole_number_of_steps():
    g = _Graph({"d": nir.Delay(np.array([]))}, {}, {}, [], 1.0)
    with pytest.raises(UserError, match=r"^d: delay is not a positive whole number of steps$"):
        g.delay_steps("d")


# -- convolutions and pools ------------------------------------------------------------------------

def test_pair():
    assert _pair(3, 2) == (3, 3)
    assert _pair([2, 5], 2) == (2, 5)
    assert _pair(np.array([[1, 4]]), 2) == (1, 4)


def _net(shape, node, name="c"):
    nodes = {"input": nir.Input(input_type={"input": np.array(shape)}), name: node}
    return _Graph.of(nir.NIRGraph(nodes=nodes, edges=[("input", name)], metadata={"dt": 1.0},
                                  type_check=False))


def _check(u, x, ref):
    """The unrolled matrix on C-order vectors equals torch on the tensor."""
    got = u.weight @ x.reshape(-1).numpy() + u.bias
    np.testing.assert_allclose(got, ref.reshape(-1).numpy(), rtol=0, atol=1e-12)
    assert u.shape_out == tuple(ref.shape[1:])
    assert u.bias.shape == (u.weight.shape[0],)


def test_conv1d_shape_from_its_input():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(3, 2, 2)).astype(np.float32), rng.normal(size=3)
    node = nir.Conv1d(input_shape=None, weight=w, stride=2, padding=1, dilation=1, groups=1, bias=b)
    x = torch.as_tensor(rng.normal(size=(1, 2, 7)))
    ref = F.conv1d(x, torch.as_tensor(w, dtype=torch.float64), torch.as_tensor(b), 2, 1)
    _check(_unroll(_net([2, 7], node), "c"), x, ref)


def test_conv1d_with_its_input_shape_on_a_flat_input():
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(2, 3, 3)), rng.normal(size=2)
    node = nir.Conv1d(input_shape=5, weight=w, stride=1, padding="same", dilation=2, groups=1, bias=b)
    x = torch.as_tensor(rng.normal(size=(1, 3, 5)))
    ref = F.conv1d(x, torch.as_tensor(w), torch.as_tensor(b), 1, "same", 2)
    _check(_unroll(_net([15], node), "c"), x, ref)


def test_conv2d_shape_from_its_input_with_stride_dilation_padding():
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(4, 2, 3, 2)).astype(np.float32), rng.normal(size=4)
    node = nir.Conv2d(input_shape=None, weight=w, stride=(1, 2), padding=(2, 0), dilation=(2, 1), groups=1,
                      bias=b)
    x = torch.as_tensor(rng.normal(size=(1, 2, 4, 5)))
    ref = F.conv2d(x, torch.as_tensor(w, dtype=torch.float64), torch.as_tensor(b), (1, 2), (2, 0), (2, 1), 1)
    _check(_unroll(_net([2, 4, 5], node), "c"), x, ref)


def test_conv2d_with_its_input_shape_on_a_flat_input():
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(1, 2, 2, 2)), rng.normal(size=1)
    node = nir.Conv2d(input_shape=(3, 4), weight=w, stride=1, padding=1, dilation=1, groups=1, bias=b)
    x = torch.as_tensor(rng.normal(size=(1, 2, 3, 4)))
    ref = F.conv2d(x, torch.as_tensor(w), torch.as_tensor(b), 1, 1)
    _check(_unroll(_net([24], node), "c"), x, ref)


@pytest.mark.parametrize("kind", [nir.SumPool2d, nir.AvgPool2d])
def test_pools_with_padding(kind):
    node = kind(kernel_size=np.array([2, 3]), stride=np.array([2, 1]), padding=np.array([1, 1]))
    x = torch.as_tensor(np.random.default_rng(4).normal(size=(1, 2, 3, 4)))
    ref = F.avg_pool2d(x, (2, 3), (2, 1), (1, 1), count_include_pad=True)
    if kind is nir.SumPool2d:
        ref = ref * 6
    u = _unroll(_net([2, 3, 4], node), "c")
    _check(u, x, ref)
    assert not u.bias.any()


def test_grouped_conv2d_takes_weight_channels_times_groups():
    rng = np.random.default_rng(7)
    w, b = rng.normal(size=(4, 1, 2, 2)), rng.normal(size=4)  # 2 groups: 2 input channels, 1 per group
    node = nir.Conv2d(input_shape=None, weight=w, stride=1, padding=0, dilation=1, groups=2, bias=b)
    x = torch.as_tensor(rng.normal(size=(1, 2, 3, 3)))
    ref = F.conv2d(x, torch.as_tensor(w), torch.as_tensor(b), 1, 0, 1, 2)
    _check(_unroll(_net([2, 3, 3], node), "c"), x, ref)


def test_pool_with_scalar_parameters():
    node = nir.SumPool2d(kernel_size=2, stride=2, padding=0)
    x = torch.as_tensor(np.random.default_rng(5).normal(size=(1, 1, 4, 4)))
    _check(_unroll(_net([1, 4, 4], node), "c"), x, F.avg_pool2d(x, 2, 2, divisor_override=1))


def _conv1d(**kw):
    args = {"input_shape": None, "weight": np.ones((1, 1, 2)), "stride": 1, "padding": 0, "dilation": 1,
            "groups": 1, "bias": np.zeros(1), **kw}
    return nir.Conv1d(**args)


def _conv2d(**kw):
    args = {"input_shape": None, "weight": np.ones((1, 2, 2, 2)), "stride": 1, "padding": 0, "dilation": 1,
            "groups": 1, "bias": np.zeros(1), **kw}
    return nir.Conv2d(**args)


@pytest.mark.parametrize("shape, node, message", [
    ([6], _conv1d(), r"^c \(Conv1d\): its input shape is not known \(set input_shape\)$"),
    ([8], _conv2d(), r"^c \(Conv2d\): its input shape is not known \(set input_shape\)$"),
    ([8], nir.SumPool2d(kernel_size=2, stride=2, padding=0),
     r"^c \(SumPool2d\): its input shape is not known \(set input_shape\)$"),
    ([1], _conv2d(input_shape=(2, 2)), r"^c \(Conv2d\): expects 8 inputs \(2, 2, 2\), gets 1$"),
    ([6, 2, 2], _conv2d(groups=3), r"^c \(Conv2d\): Given groups=3, "),
    ([1, 2, 2], nir.AvgPool2d(kernel_size=3, stride=1, padding=2), r"^c \(AvgPool2d\): pad should be "),
])
def test_unroll_refusals(shape, node, message):
    with pytest.raises(UserError, match=message):
        _unroll(_net(shape, node), "c")


def test_unroll_needs_one_input():
    g = _net([1, 4], _conv1d())
    g.preds["c"] = []
    with pytest.raises(UserError, match=r"^c \(Conv1d\): needs exactly one input$"):
        _unroll(g, "c")


def test_dense_size_limit(monkeypatch):
    node = _conv1d(weight=np.ones((2, 1, 2)))  # 1 x 6 -> 2 x 5: a 10 x 6 matrix
    monkeypatch.setattr(fp, "MAX_DENSE", 60)
    assert _unroll(_net([1, 6], node), "c").weight.shape == (10, 6)
    monkeypatch.setattr(fp, "MAX_DENSE", 59)
    with pytest.raises(UserError, match=r"^c \(Conv1d\): its dense matrix \(10 x 6\) exceeds 59 entries$"):
        _unroll(_net([1, 6], node), "c")


# -- the input grid --------------------------------------------------------------------------------

def test_input_frac_for_edges():
    assert input_frac_for(np.zeros((0, 3))) == MAX_INPUT_FRAC
    assert input_frac_for(np.array([1e6])) == 0
    assert input_frac_for(np.array([0.5]), 2) == 1  # rint(0.5 * 2) = 1 = 2**1 - 1
    # just over lim / 2 = 0.5: rint(0.5004 * 2) = 1 still fits 2 bits at q = 1 (floor(log2) gave 0)
    assert input_frac_for(np.array([0.5004]), 2) == 1


@pytest.mark.parametrize("bits, frac", [(2, 1), (24, 20)])
def test_lower_for_input_chooses_the_grid_for_its_bits(bits, frac):
    net, _, _ = lower_for_input(wrap_graph(), np.full((1, 2, 1), 0.5), "fixed", input_bits=bits)
    assert (net.input_bits, net.input_frac) == (bits, frac)


@pytest.mark.parametrize("bits", [1, 25])
def test_lower_for_input_refuses_bits(bits):
    with pytest.raises(UserError, match=rf"^input bits must be between 2 and 24, got {bits}$"):
        lower_for_input(wrap_graph(), np.full((1, 2, 1), 0.5), "fixed", input_bits=bits)


# -- decays, thresholds, biases --------------------------------------------------------------------

def test_decay_rounding_notes_and_the_full_decay():
    notes: list[str] = []
    assert _decay("n", "du + 1", 1 / 3, notes) == 1365
    assert _decay("n", "dv", 1 / 3, notes) == 1365
    assert notes == [f"n: du + 1 = 1365/4096 rounds dt/tau_syn = {1 / 3}",
                     f"n: dv = 1365/4096 rounds dt/tau = {1 / 3}"]
    assert _decay("n", "dv", 0.5, notes) == 2048 and len(notes) == 2  # exact: no note
    assert _decay("n", "dv", 1.0, notes) == 4095  # Lava's LIF: at most 4095
    assert _decay("n", "dv", 1.0, notes, 4096) == 4096  # a graded population: no state


def test_threshold_constants():
    alpha, g, vth, bias, beta = _lif_constants("t", nir.Threshold(np.array([-1.0, 0.5])), 1.0)
    assert (alpha, g, vth, beta) == (1.0, 1.0, 0.5, 1.0)
    assert bias.tolist() == [1.5, 0.0]
    _, _, vth, bias, _ = _lif_constants("t", nir.Threshold(np.array([-1.0, -2.0])), 1.0)
    assert (vth, bias.tolist()) == (0.0, [1.0, 2.0])
    _, _, vth, bias, _ = _lif_constants("t", nir.Threshold(np.zeros(0)), 1.0)
    assert (vth, bias.size) == (0.0, 0)


def test_per_neuron_r_must_be_positive():
    node = nir.LIF(tau=np.full(2, 2.0), r=np.array([1.0, 0.0]), v_leak=np.zeros(2), v_threshold=np.ones(2),
                   v_reset=np.zeros(2))
    with pytest.raises(UserError, match=r"^a: need r > 0 \(got r=0.0\)$"):
        _lif_constants("a", node, 1.0)


# -- decays of the current and of graded populations ---------------------------------------------

def _one(node, n: int = 1) -> nir.NIRGraph:
    """input(1) -> [n] -> node -> output."""
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}), "a.in": _linear(np.ones((n, 1)), 0),
             "a": node, "output": nir.Output(output_type={"output": np.array([n])})}
    return nir.NIRGraph(nodes=nodes, edges=[("input", "a.in"), ("a.in", "a"), ("a", "output")],
                        metadata={"dt": 1.0, "latency_frames": 0})


def _cuba(tau_syn):
    return nir.CubaLIF(tau_syn=np.array([tau_syn]), tau_mem=np.array([2.0]), r=np.ones(1), v_leak=np.zeros(1),
                       v_threshold=np.ones(1), v_reset=np.zeros(1), w_in=np.ones(1))


def test_cubalif_current_decay_and_its_note():
    net = lower(_one(_cuba(3.0)))
    assert (net.populations["a"].du, net.populations["a"].dv) == (1364, 2048)
    assert f"a: du + 1 = 1365/4096 rounds dt/tau_syn = {1 / 3}" in net.notes
    net = lower(_one(_cuba(1.0)))
    assert net.populations["a"].du == 4095  # beta = 1: u is this step's input
    assert not [m for m in net.notes if "du + 1" in m]


def _li(tau):
    n = np.size(tau)
    return nir.LI(tau=np.asarray(tau, np.float64), r=np.ones(n), v_leak=np.zeros(n))


def _cubali(tau_mem):
    n = np.size(tau_mem)
    return nir.CubaLI(tau_syn=np.full(n, 2.0), tau_mem=np.asarray(tau_mem, np.float64), r=np.ones(n),
                      v_leak=np.zeros(n), w_in=np.ones(n))


@pytest.mark.parametrize("node, message", [
    (_li([2.0, 3.0]), r"^a: tau differs between neurons; Lava's LIF takes one value per population$"),
    (_cubali([2.0, 3.0]), r"^a: tau_mem differs between neurons; Lava's LIF takes one value per population$"),
])
def test_graded_population_refusals(node, message):
    with pytest.raises(UserError, match=message):
        lower(_one(node, 2))


@pytest.mark.parametrize("tau, alpha", [(np.inf, "0.0"), (0.75, "1.3333333333333333")])
def test_graded_constants_refuse_a_decay_outside_0_1(tau, alpha):
    with pytest.raises(UserError, match=rf"^a: need 0 < dt/tau <= 1 \(got dt/tau={alpha}\)$"):
        _graded_constants("a", _li([tau]), _pop(1), 1.0, [])
    with pytest.raises(UserError, match=rf"^a: need 0 < dt/tau <= 1 \(got dt/tau={alpha}\)$"):
        lower(_one(_li([tau])))  # one line from lower() too (was a ValueError from log2)


def test_graded_constants_by_hand():
    notes: list[str] = []
    p = _pop(2)
    li = nir.LI(tau=np.full(2, 3.0), r=np.ones(2), v_leak=np.array([0.5, -1.5]))
    assert _graded_constants("a", li, p, 1.0, notes).tolist() == [0.5 / 3, -1.5 / 3]  # dt/tau v_leak
    assert (p.dv, p.dv_f, p.du) == (1365, 1 / 3, 4095)
    assert notes == [f"a: dv = 1365/4096 rounds dt/tau = {1 / 3}"]
    p = _pop(2)
    shared = nir.LI(tau=np.array(1.0), r=np.array(1.0), v_leak=np.array(0.25))  # 0-d, as Norse writes them
    assert _graded_constants("a", shared, p, 1.0, notes).tolist() == [0.25, 0.25]
    assert p.dv == 4096 and len(notes) == 1  # dt/tau = 1: no voltage state
    p = _pop(1)
    cuba = nir.CubaLI(tau_syn=np.array([3.0]), tau_mem=np.array([2.0]), r=np.ones(1), v_leak=np.zeros(1),
                      w_in=np.ones(1))
    assert _graded_constants("c", cuba, p, 1.0, notes).tolist() == [0.0]
    assert (p.du, p.du_f, p.dv) == (1364, 1 / 3, 2048)
    assert notes[1:] == [f"c: du + 1 = 1365/4096 rounds dt/tau_syn = {1 / 3}"]
    p = _pop(1)
    cuba.tau_syn = np.array([1.0])
    _graded_constants("c", cuba, p, 1.0, notes)
    assert p.du == 4095 and len(notes) == 2
    assert _graded_constants("o", None, _pop(3), 1.0, notes).tolist() == [0.0] * 3


@pytest.mark.parametrize("tau_syn, message", [
    ([2.0, 3.0], r"^c: tau_syn differs between neurons; Lava's LIF takes one value per population$"),
    ([np.inf], r"^c: need 0 < dt/tau_syn <= 1 \(got dt/tau_syn=0.0\)$"),
    ([0.75], r"^c: need 0 < dt/tau_syn <= 1 \(got dt/tau_syn=1.3333333333333333\)$"),
])
def test_graded_constants_refuse_current_decays(tau_syn, message):
    n = len(tau_syn)
    cuba = nir.CubaLI(tau_syn=np.array(tau_syn), tau_mem=np.full(n, 2.0), r=np.ones(n), v_leak=np.zeros(n),
                      w_in=np.ones(n))
    with pytest.raises(UserError, match=message):
        _graded_constants("c", cuba, _pop(n), 1.0, [])


def test_leaky_readout_fed_by_spikes_gets_the_leaky_bound():
    """input -> [1] -> LIF -> [0.5] -> LI(tau = 2 dt): the row times dt/tau = 0.25 per spike, |v| <= 0.25 x
    min(steps, 4096 / 2048) = 0.5 (the integrator's bound would be 0.25 x 10 steps)."""
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}), "s.in": _linear([[1]], 0),
             "s": nir.LIF(tau=np.full(1, 2.0), r=np.ones(1), v_leak=np.zeros(1), v_threshold=np.ones(1),
                          v_reset=np.zeros(1)),
             "a.in": _linear([[1]], -1), "a": _li([2.0]),
             "output": nir.Output(output_type={"output": np.array([1])})}
    edges = [("input", "s.in"), ("s.in", "s"), ("s", "a.in"), ("a.in", "a"), ("a", "output")]
    net = lower(nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0, "latency_frames": 0}), steps=10)
    assert net.populations["a"].state_bound == 0.5


def test_graded_decay_note_through_lower():
    assert f"a: dv = 1365/4096 rounds dt/tau = {1 / 3}" in lower(_one(_li([3.0]))).notes


@pytest.mark.parametrize("r, per_neuron", [([1.0, 1.0 + 1e-7], True), ([1e-9, 2e-9], True),
                                           ([2.0, 2.0], False), ([], False)])
def test_per_neuron_r_relative_tolerance_only(r, per_neuron):
    n = len(r)
    node = nir.LIF(tau=np.full(n, 2.0), r=np.array(r), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))
    got = _per_neuron_r(node)
    assert (got is not None) == per_neuron
    if per_neuron:
        assert got.tolist() == r


def test_current_bias_goes_through_a_constant_population():
    node = nir.CubaLIF(tau_syn=np.array([2.0]), tau_mem=np.array([2.0]), r=np.ones(1), v_leak=np.zeros(1),
                       v_threshold=np.ones(1), v_reset=np.zeros(1), w_in=np.ones(1))
    g = _one(node)
    g.nodes["a.in"] = nir.Affine(weight=np.ones((1, 1)), bias=np.array([0.3]))
    net = lower(g)
    c = net.populations["const.one"]
    assert (c.name, c.kind, c.size) == ("const.one", "const", 1)
    (syn,) = [s for s in net.synapses if s.name == "a.current_bias"]
    assert (syn.source, syn.target, syn.delay, syn.graded) == ("const.one", "a", 0, True)
    assert syn.weight.tolist() == [[0.3 * 0.5]]  # the bias times beta w_in
    for t in syn.terms:
        assert t.weights.dtype == np.int32 and np.all(t.weights % 2 == 0)
    # 16-bit quantisation (rint) split into exact 8-bit terms
    value = sum(t.weights.astype(np.float64) / 2 * 2.0**t.exponent for t in syn.terms)
    assert abs(value[0, 0] - 0.15) <= 2.0 ** (np.floor(np.log2(0.15)) - 15)
    assert len(syn.terms) == 3 and net.populations["a"].bias_f.tolist() == [0.0]


def test_uniform_of_an_empty_parameter_is_zero():
    assert _uniform(np.zeros(0), "tau", "a") == 0.0
    assert _uniform(np.array([2.0, 2.0]), "tau", "a") == 2.0


@pytest.mark.parametrize("node, message", [
    (_li([2.0, 3.0]), r"^a: tau differs between neurons; Lava's LIF takes one value per population$"),
    (_cubali([2.0, 3.0]), r"^a: tau_mem differs between neurons; Lava's LIF takes one value per population$"),
], ids=["li", "cubali"])  # ids without the quote of "Lava's": mutmut does not map such test ids
def test_graded_constants_refuse_per_neuron_decays(node, message):
    with pytest.raises(UserError, match=message):
        _graded_constants("a", node, _pop(2), 1.0, [])


# -- the spiking constants and the constant population (mutation survivors, issue 16) -------------

def _lif_node(kind, n=1, **kw):
    base = {"r": np.ones(n), "v_leak": np.zeros(n), "v_threshold": np.ones(n), "v_reset": np.zeros(n)}
    if kind is nir.IF:
        del base["v_leak"]
    if kind is nir.LIF:
        base["tau"] = np.full(n, 2.0)
    if kind is nir.CubaLIF:
        base.update(tau_mem=np.full(n, 2.0), tau_syn=np.full(n, 2.0), w_in=np.ones(n))
    base.update(kw)
    return kind(**base)


def test_lif_constants_by_hand():
    """(alpha, gain, vth, leak, beta); beta = 1 (no current stage) except for a CubaLIF."""
    assert _lif_constants("a", _lif_node(nir.IF, r=np.array([2.0])), 0.5) == (0.0, 1.0, 1.0, 0.0, 1.0)
    alpha, g, vth, leak, beta = _lif_constants("a", _lif_node(nir.LIF, r=np.array([2.0]),
                                                             v_leak=np.array([0.5])), 1.0)
    assert (alpha, g, vth, leak.tolist(), beta) == (0.5, 1.0, 1.0, [0.25], 1.0)
    *_, leak, beta = _lif_constants("a", _lif_node(nir.CubaLIF, tau_syn=np.array([4.0])), 1.0)
    assert beta == 0.25
    # v_leak / r in float64 whatever v_leak's dtype
    *_, leak, _ = _lif_constants("a", _lif_node(nir.LIF, r=np.array([3.0]),
                                                v_leak=np.array([0.1], np.float32)), 1.0)
    assert leak.dtype == np.float64 and leak.tolist() == [float(np.float32(0.1)) / 3.0]


_DIFFERS = "differs between neurons; Lava's LIF takes one value per population"


@pytest.mark.parametrize("node, message", [
    (_lif_node(nir.IF, r=np.array([0.0])), r"^a: need r > 0 \(got r=0.0\)$"),
    (_lif_node(nir.CubaLIF, 2, tau_mem=np.array([2.0, 3.0])), f"^a: tau_mem {_DIFFERS}$"),
    (_lif_node(nir.CubaLIF, 2, tau_syn=np.array([2.0, 3.0])), f"^a: tau_syn {_DIFFERS}$"),
    (_lif_node(nir.CubaLIF, tau_syn=np.array([np.inf])), r"^a: need 0 < dt/tau_syn <= 1 \(got 0.0\)$"),
    (_lif_node(nir.CubaLIF, tau_syn=np.array([0.75])),
     r"^a: need 0 < dt/tau_syn <= 1 \(got 1.3333333333333333\)$"),
], ids=["if-r", "tau_mem", "tau_syn", "beta-0", "beta-above-1"])
def test_lif_constants_refusals(node, message):
    with pytest.raises(UserError, match=message):
        _lif_constants("a", node, 1.0)


def _biased_cuba(names: list[str], bias: float) -> nir.NIRGraph:
    """input -> names[0] -> ... -> names[-1] (its bias into the current) -> CubaLIF "a" -> output."""
    g = _one(_lif_node(nir.CubaLIF))
    del g.nodes["a.in"]
    chain = ["input", *names, "a"]
    for n in names[:-1]:
        g.nodes[n] = _linear(np.ones((1, 1)), 0)
    g.nodes[names[-1]] = nir.Affine(weight=np.ones((1, 1)), bias=np.array([bias]))
    edges = list(zip(chain[:-1], chain[1:], strict=False)) + [("a", "output")]
    return nir.NIRGraph(nodes=g.nodes, edges=edges, metadata=g.metadata)


@pytest.mark.parametrize("names, const", [(["const.one"], "const.one.1"),
                                          (["const.one", "const.one.1"], "const.one.2")])
def test_constant_population_takes_a_free_name(names, const):
    net = lower(_biased_cuba(names, 0.2))
    assert [n for n, p in net.populations.items() if p.kind == "const"] == [const]
    (syn,) = [s for s in net.synapses if s.name == "a.current_bias"]
    assert syn.source == const


def test_current_bias_quantised_to_16_bits():
    net = lower(_biased_cuba(["b"], 0.2))  # times beta w_in = 0.5: 0.1 = 26214.4 / 2**18
    (syn,) = [s for s in net.synapses if s.name == "a.current_bias"]
    value = sum(t.weights.astype(np.float64) / 2 * 2.0**t.exponent for t in syn.terms)
    assert value.tolist() == [[26214 / 2**18]]  # rint onto 16 signed bits (17 bits: 52429 / 2**19)


def test_population_order_puts_input_and_constant_populations_first():
    """Among the populations ready at once, input and const first, then in the given order."""
    pops = {n: Population(n, k, 1) for n, k in [("b", "lif"), ("input", "input"), ("c", "const")]}
    synapses = [Synapse("b.in", "input", "b", 1, False, np.ones((1, 1))),  # delayed: b is ready at once
                Synapse("d.in", "c", "d", 0, True, np.ones((1, 1)))]
    pops["d"] = Population("d", "integrator", 1)
    net = fp.Network(pops, synapses, "input", "d", 0, 1.0, 16, 8)
    assert fp._population_order(net) == ["input", "c", "b", "d"]


def test_float32_parameters_are_scaled_in_float64():
    """An LI (dt/tau = 1/3) with float32 weights and v_leak: the row factor and the leak bias in float64."""
    node = nir.LI(tau=np.array([3.0]), r=np.ones(1), v_leak=np.array([0.1], np.float32))
    assert _graded_constants("a", node, _pop(1), 1.0, []).tolist() == [(1 / 3) * float(np.float32(0.1))]
    g = _one(node)
    g.nodes["a.in"] = nir.Linear(weight=np.array([[0.1]], np.float32))
    (syn,) = lower(g).synapses
    assert syn.weight.dtype == np.float64 and syn.weight.tolist() == [[float(np.float32(0.1)) * (1 / 3)]]


def test_conv2d_padding_array_and_float32_bias():
    """An array padding is a pair; the bias repeated per output position in float64."""
    rng = np.random.default_rng(4)
    w, b = rng.normal(size=(2, 2, 2, 2)), np.array([0.1, -0.3], np.float32)
    node = nir.Conv2d(input_shape=(3, 3), weight=w, stride=1, padding=np.array([1, 0]), dilation=1, groups=1,
                      bias=b)
    x = torch.as_tensor(rng.normal(size=(1, 2, 3, 3)))
    ref = F.conv2d(x, torch.as_tensor(w), torch.as_tensor(b, dtype=torch.float64), 1, (1, 0))
    u = _unroll(_net([18], node), "c")
    _check(u, x, ref)
    assert u.bias.dtype == np.float64 and u.bias.tolist() == [float(b[0])] * 8 + [float(b[1])] * 8


def test_unroll_skips_the_size_check_of_an_unknown_shape():
    """(-1,): the shape of a node in a cycle of shapeless nodes, not known, so not compared."""
    g = _net([5], _conv1d(input_shape=4))
    g.shapes["input"] = (-1,)
    assert _unroll(g, "c").shape_out == (1, 3)


# -- the graph-level lowering: names, readouts, target scales (mutation survivors, issue 16) -------

def test_output_fed_by_the_input_gets_its_own_readout_population():
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "output": nir.Output(output_type={"output": np.array([2])})}
    net = lower(nir.NIRGraph(nodes=nodes, edges=[("input", "output")], metadata={"dt": 1.0}))
    assert net.readout == "output"
    assert [(n, p.name, p.kind, p.size) for n, p in net.populations.items()] == [
        ("input", "input", "input", 2), ("output", "output", "integrator", 2)]


def test_output_fed_by_two_populations_gets_its_own_readout_population():
    g = _one(_lif_node(nir.LIF))
    g.nodes["b"], g.nodes["b.in"] = _lif_node(nir.LIF), _linear(np.ones((1, 1)), 0)
    g.edges += [("input", "b.in"), ("b.in", "b"), ("b", "output")]
    net = lower(g)
    assert net.readout == "output" and net.populations["output"].kind == "integrator"


def test_an_output_nothing_feeds_is_one_line():
    g = _one(_lif_node(nir.LIF))
    g.edges.remove(("a", "output"))
    with pytest.raises(UserError, match=r"^output \(Output\): nothing feeds it$"):
        lower(g)


def _scaled_weight(node, weight) -> list:
    g = _one(node, len(weight))
    g.nodes["a.in"] = nir.Linear(weight=np.asarray(weight))
    (syn,) = [s for s in lower(g).synapses if s.name == "a.in"]
    return syn.weight.tolist()


def test_target_scales_by_hand():
    """Rows times dt/tau r (LI), dt/tau_syn w_in (CubaLIF) and r per neuron (CubaLIF), in float64."""
    li = nir.LI(tau=np.array([2.0]), r=np.array([4.0]), v_leak=np.zeros(1))
    assert _scaled_weight(li, [[1.0]]) == [[2.0]]
    cuba = _lif_node(nir.CubaLIF, tau_syn=np.array([3.0]), w_in=np.array([1.0], np.float32))
    assert _scaled_weight(cuba, [[1.0]]) == [[1 / 3]]
    cuba = _lif_node(nir.CubaLIF, 2, r=np.array([1.0, 2.0]))
    assert _scaled_weight(cuba, [[1.0], [1.0]]) == [[0.5], [1.0]]


@pytest.mark.parametrize("node, message", [
    (_lif_node(nir.CubaLIF, 2, tau_syn=np.array([2.0, 3.0])), f"^a: tau_syn {_DIFFERS}$"),
    (_lif_node(nir.CubaLIF, tau_syn=np.array([0.5])),
     r"^a: need 0 < dt/tau_syn <= 1 \(got dt/tau_syn=2.0\)$"),
    (_cubali([2.0, 3.0]), f"^a: tau_mem {_DIFFERS}$"),
    (_cubali([0.5]), r"^a: need 0 < dt/tau_mem <= 1 \(got dt/tau_mem=2.0\)$"),
], ids=["cubalif-tau_syn", "cubalif-beta", "cubali-tau_mem", "cubali-alpha"])
def test_target_scale_refusals_through_lower(node, message):
    with pytest.raises(UserError, match=message):
        lower(_one(node, np.asarray(node.tau_syn).size))


def _graph(nodes: dict, edges: list) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)


def _io(n_in: int, n_out: int) -> dict:
    return {"input": nir.Input(input_type={"input": np.array([n_in])}),
            "output": nir.Output(output_type={"output": np.array([n_out])})}


_CHAIN = [("input", "b"), ("b", "a"), ("a", "output")]


@pytest.mark.parametrize("g, message", [
    (_graph({**_io(1, 1), "b": nir.Affine(weight=np.ones((1, 1)), bias=np.array([0.5])),
             "d": nir.Delay(delay=np.array([1.0])), "a": _lif_node(nir.LIF)},
            [("input", "b"), ("b", "d"), ("d", "a"), ("a", "output")]),
     r"^d: a bias in front of a Delay node is not supported \(its first steps would differ\)$"),
    (_graph({**_io(1, 3), "b": _linear(np.ones((2, 1)), 0), "a": _lif_node(nir.LIF, 3)}, _CHAIN),
     r"^b: sends 2 values from input to a, which has 3 neurons$"),
    (_graph({**_io(1, 1), "b": _linear(np.ones((1, 3)), 0), "a": _lif_node(nir.LIF)}, _CHAIN),
     r"^b \(Linear\): expects 3 inputs, gets 1$"),
], ids=["bias-before-delay", "sends", "linear-inputs"])
def test_malformed_chains_exact_messages(g, message):
    with pytest.raises(UserError, match=message):
        lower(g)


@pytest.mark.parametrize("scale, weight", [([2.0], np.eye(3) * 2.0),
                                           ([1.0, 2.0, 3.0], np.diag([1.0, 2.0, 3.0]))])
def test_scale_node_is_a_diagonal(scale, weight):
    g = _graph({**_io(3, 3), "b": nir.Scale(scale=np.array(scale)), "a": _lif_node(nir.LIF, 3)}, _CHAIN)
    (syn,) = lower(g).synapses
    assert syn.weight.tolist() == weight.tolist()


def test_chained_affine_biases_compose():
    """input -> (w 1, b 0.1) -> (w 2, b 0.3) -> LIF: the bias 2 * 0.1 + 0.3."""
    g = _graph({**_io(1, 1), "b1": nir.Affine(weight=np.ones((1, 1)), bias=np.array([0.1])),
                "b": nir.Affine(weight=np.full((1, 1), 2.0), bias=np.array([0.3])), "a": _lif_node(nir.LIF)},
               [("input", "b1"), ("b1", "b"), ("b", "a"), ("a", "output")])
    net = lower(g)
    assert net.populations["a"].bias_f.tolist() == [2 * 0.1 + 0.3]
    assert [s.weight.tolist() for s in net.synapses] == [[[2.0]]]


def test_a_graph_without_dt_is_one_line():
    g = _one(_lif_node(nir.LIF))
    g.metadata = {}
    message = r"^graph: the graph's metadata has no 'dt' \(frame period in seconds\)$"
    with pytest.raises(UserError, match=message):
        lower(g)


@pytest.mark.parametrize("node, message", [
    (nir.LIF(tau=np.zeros(1), r=np.ones(1), v_leak=np.zeros(1), v_threshold=np.ones(1), v_reset=np.zeros(1)),
     "a: need 0 < dt/tau <= 1 and r > 0 (got dt/tau=inf, r=1.0)"),
    (nir.CubaLIF(tau_syn=np.ones(1), tau_mem=np.zeros(1), r=np.ones(1), v_leak=np.zeros(1),
                 v_threshold=np.ones(1), v_reset=np.zeros(1), w_in=np.ones(1)),
     "a: need 0 < dt/tau <= 1 and r > 0 (got dt/tau=inf, r=1.0)"),
    (_cuba(0.0), "a: need 0 < dt/tau_syn <= 1 (got dt/tau_syn=inf)"),
    (_li([0.0]), "a: need 0 < dt/tau <= 1 (got dt/tau=inf)"),
    (_cubali([0.0]), "a: need 0 < dt/tau_mem <= 1 (got dt/tau_mem=inf)"),
])
def test_a_zero_time_constant_is_one_error(node, message):
    """tau = 0 is dt/tau = inf, refused in one line (was a ZeroDivisionError)."""
    with pytest.raises(UserError, match="^" + re.escape(message) + "$"):
        lower(_one(node))
