"""The mutation survivors of backends/fixed_point.py (issue 16), killed: the integrator's state grid
at the 24-bit limit, the shape inference of nodes without shaped parameters (conv, Delay, Flatten,
0-d neurons, a cycle through a Delay), parameters against a stale ``output_type``, row factors
(float32 CubaLIF, r of CubaLI), float64 arithmetic whatever the parameters' dtype (long double,
object), the refusals of ``_paths``, summed biases, the naming and merging of parallel paths,
metadata without an exponent, empty and zero-scaled weights (r = 0 raised ValueError before), the
graded steps outside the plain integrator.  Expected values by hand; warnings are errors here (a
NumPy deprecation is a defect too)."""

from __future__ import annotations

import math

import nir
import numpy as np
import pytest

from backends.fixed_point import (
    STATE_MAX,
    Network,
    Population,
    _Graph,
    _uniform,
    composed_synapses,
    graded_step_fixed,
    graded_step_float,
    lower,
    split_terms,
)
from lmuformer.errors import UserError
from tests.graphs import _lif, _linear

pytestmark = pytest.mark.filterwarnings("error")


def _graph(nodes: dict, edges: list) -> nir.NIRGraph:
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)


def _input(*shape: int) -> nir.Input:
    return nir.Input(input_type={"input": np.array(shape)})


def _output(n: int) -> nir.Output:
    return nir.Output(output_type={"output": np.array([n])})


def _lif0() -> nir.LIF:
    """A LIF with 0-d (shared) parameters, as Norse writes them: its shape is not in the node."""
    return nir.LIF(tau=np.array(2.0), r=np.array(1.0), v_leak=np.array(0.0), v_threshold=np.array(1.0),
                   v_reset=np.array(0.0))


def _conv2d(weight, input_shape=None) -> nir.Conv2d:
    w = np.asarray(weight, np.float64)
    return nir.Conv2d(input_shape=input_shape, weight=w, stride=1, padding=0, dilation=1, groups=1,
                      bias=np.zeros(w.shape[0]))


def _weights_of(synapses) -> list:
    return [(s.name, s.source, s.target, s.delay, s.weight.tolist()) for s in synapses]


def _weights(net) -> list:
    return _weights_of(net.synapses)


# -- the integrator's state grid at the 24-bit limit ----------------------------------------------

# weights b whose static bound (steps = 1: |b|) times the 1.001 margin is exactly 16 and exactly
# (2**23 - 1) / 2**18: fit = floor(log2((2**23 - 1) / (b 1.001))) = 18 in both cases; a limit of
# 2**23 + 1 (first) or 2**23 - 2 (second) gives 19 or 17
@pytest.mark.parametrize("target", [16.0, (STATE_MAX - 1) / 2**18], ids=["power-of-two", "limit"])
def test_integrator_grid_at_the_24_bit_limit(target):
    b = target / 1.001
    while b * 1.001 != target:  # the neighbouring float whose product is exactly the target
        b = float(np.nextafter(b, np.inf if b * 1.001 < target else -np.inf))
    nodes = {"input": _input(1), "a.in": _linear([[1]], 0), "a": _lif(1),
             "readout.in": nir.Linear(weight=np.array([[b]])), "readout": nir.I(r=np.ones(1)),
             "output": _output(1)}
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "readout.in"), ("readout.in", "readout"),
             ("readout", "output")]
    p = lower(_graph(nodes, edges), steps=1).populations["readout"]
    assert p.state_bound == b
    assert p.frac == 18 == math.floor(math.log2((STATE_MAX - 1) / target))


# -- shapes of nodes whose parameters do not give them ----------------------------------------------

def test_shapeless_neuron_after_a_conv_takes_the_conv_output_shape():
    """input (1, 3, 3) -> 2x2 conv (2 channels, input shape from the input) -> 0-d LIF: 2 x 2 x 2 neurons."""
    w = np.arange(1.0, 9.0).reshape(2, 1, 2, 2)
    nodes = {"input": _input(1, 3, 3), "c": _conv2d(w), "a": _lif0(), "output": _output(8)}
    net = lower(_graph(nodes, [("input", "c"), ("c", "a"), ("a", "output")]))
    assert net.populations["a"].size == 8
    (syn,) = net.synapses
    assert syn.weight.shape == (8, 9)
    # output channel 0 at (0, 0) sums w[0] over pixels (0,0), (0,1), (1,0), (1,1) of the 3 x 3 input
    assert syn.weight[0].tolist() == [1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]


def test_cycle_of_shapeless_nodes_through_a_delay():
    """a (0-d LIF) <- 1x1 conv (input shape 2 x 2) <- Delay <- a: a's shape is the conv's output, and
    the conv's input (a, in the cycle) is not known when it is asked, so its size is not checked."""
    nodes = {"input": _input(4), "a.in": _linear(np.eye(4, dtype=np.int64), 0), "a": _lif0(),
             "d": nir.Delay(delay=np.array([1.0])), "c": _conv2d([[[[0.5]]]], input_shape=(2, 2)),
             "output": _output(4)}
    edges = [("c", "a"), ("a.in", "a"), ("input", "a.in"), ("a", "d"), ("d", "c"), ("a", "output")]
    net = lower(_graph(nodes, edges))
    assert net.populations["a"].size == 4
    assert sorted(_weights(net)) == [("a.in", "input", "a", 0, np.eye(4).tolist()),
                                     ("c", "a", "a", 1, (np.eye(4) * 0.5).tolist())]


def test_shapeless_neuron_after_a_flatten_and_after_a_delay():
    """input (2, 3) -> Flatten -> 0-d LIF: 6 neurons; input (2, 3) -> Delay -> 0-d LIF: 6 neurons."""
    nodes = {"input": _input(2, 3), "f": nir.Flatten(input_type={"input": np.array([2, 3])}, start_dim=0),
             "a": _lif0(), "output": _output(6)}
    net = lower(_graph(nodes, [("input", "f"), ("f", "a"), ("a", "output")]))
    assert net.populations["a"].size == 6
    assert _weights(net) == [("f", "input", "a", 0, np.eye(6).tolist())]
    nodes = {"input": _input(2, 3), "d": nir.Delay(delay=np.array([2.0])), "a": _lif0(), "output": _output(6)}
    net = lower(_graph(nodes, [("input", "d"), ("d", "a"), ("a", "output")]))
    assert net.populations["a"].size == 6
    assert _weights(net) == [("d->a", "input", "a", 2, np.eye(6).tolist())]


def test_conv_after_a_delay_keeps_the_shape_and_after_a_flatten_does_not():
    """A Delay sends its input's shape (1, 3, 3): a conv behind it infers its input shape; a Flatten
    sends (9,), so a conv behind it needs input_shape (one line)."""
    w = np.ones((1, 1, 2, 2))
    nodes = {"input": _input(1, 3, 3), "d": nir.Delay(delay=np.array([1.0])), "c": _conv2d(w),
             "a": _lif(4), "output": _output(4)}
    edges = [("input", "d"), ("d", "c"), ("c", "a"), ("a", "output")]
    (syn,) = lower(_graph(nodes, edges)).synapses
    assert (syn.name, syn.delay, syn.weight.shape) == ("c", 1, (4, 9))
    nodes["d"] = nir.Flatten(input_type={"input": np.array([1, 3, 3])}, start_dim=0)
    with pytest.raises(UserError, match=r"^c \(Conv2d\): its input shape is not known \(set input_shape\)$"):
        lower(_graph(nodes, edges))


def test_shapeless_neuron_takes_its_output_type_before_its_input_shape():
    """A 0-d LIF typed (1, 2, 2) fed by a Linear of 4 outputs sends (1, 2, 2): a conv behind it infers
    its 2 x 2 input from that."""
    a = _lif0()
    a.output_type = {"output": np.array([1, 2, 2])}
    nodes = {"input": _input(4), "a.in": _linear(np.eye(4, dtype=np.int64), 0), "a": a,
             "c": _conv2d(np.ones((1, 1, 2, 2))), "b": _lif(1), "output": _output(1)}
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "c"), ("c", "b"), ("b", "output")]
    net = lower(_graph(nodes, edges))
    assert net.populations["a"].size == 4
    assert [s.weight.tolist() for s in net.synapses if s.name == "c"] == [[[1.0, 1.0, 1.0, 1.0]]]


def test_shapeless_neuron_without_inputs_is_one_neuron():
    nodes = {"input": _input(1), "b.in": _linear([[1]], 0), "b": _lif(1), "a": _lif0(), "output": _output(1)}
    net = lower(_graph(nodes, [("input", "b.in"), ("b.in", "b"), ("b", "output")]))
    assert net.populations["a"].size == 1


def test_flatten_without_input_sends_nothing():
    """A Flatten without input sends 0 values: the 0-d LIF it feeds first has 0 neurons, so the
    Linear that feeds it too is refused first (nodes in order)."""
    nodes = {"input": _input(1), "lin": _linear([[1]], 0),
             "f": nir.Flatten(input_type={"input": np.array([1])}), "a": _lif0(), "output": _output(1)}
    edges = [("f", "a"), ("input", "lin"), ("lin", "a"), ("a", "output")]
    with pytest.raises(UserError, match=r"^lin: sends 1 values from input to a, which has 0 neurons$"):
        lower(_graph(nodes, edges))


def _stale(node: nir.NIRNode) -> nir.NIRNode:
    node.output_type = {"output": np.array([3])}
    return node


@pytest.mark.parametrize("node", [
    _stale(nir.I(r=np.ones(2))),
    _stale(nir.LI(tau=np.full(2, 2.0), r=np.ones(2), v_leak=np.zeros(2))),
    _stale(nir.CubaLI(tau_syn=np.full(2, 2.0), tau_mem=np.full(2, 2.0), r=np.ones(2), v_leak=np.zeros(2),
                      w_in=np.ones(2))),
    _stale(nir.Threshold(threshold=np.ones(2))),
    _stale(_lif(2)),
], ids=["I", "LI", "CubaLI", "Threshold", "LIF"])
def test_neuron_size_from_its_parameters_not_a_stale_output_type(node):
    nodes = {"input": _input(1), "a.in": _linear(np.ones((2, 1), np.int64), 0), "a": node,
             "output": _output(2)}
    net = lower(_graph(nodes, [("input", "a.in"), ("a.in", "a"), ("a", "output")]))
    assert net.populations["a"].size == 2


# -- row factors ----------------------------------------------------------------------------------

def test_float32_cubalif_row_factor_in_float64():
    """All parameters float32 (so w_in stays float32): the row factor dt/tau_syn w_in = 1/3 in float64."""
    f32 = {k: np.array([v], np.float32) for k, v in
           dict(tau_syn=3.0, tau_mem=2.0, r=1.0, v_leak=0.0, v_threshold=1.0, v_reset=0.0, w_in=1.0).items()}
    node = nir.CubaLIF(**f32)
    assert node.w_in.dtype == np.float32
    nodes = {"input": _input(1), "a.in": _linear([[1]], 0), "a": node, "output": _output(1)}
    (syn,) = lower(_graph(nodes, [("input", "a.in"), ("a.in", "a"), ("a", "output")])).synapses
    assert syn.weight.tolist() == [[1 / 3]]


def test_cubali_rows_times_r():
    """CubaLI rows times dt/tau_syn w_in dt/tau_mem r = 1/2 * 1/2 * 4 = 1."""
    node = nir.CubaLI(tau_syn=np.full(1, 2.0), tau_mem=np.full(1, 2.0), r=np.full(1, 4.0), v_leak=np.zeros(1),
                      w_in=np.ones(1))
    nodes = {"input": _input(1), "a.in": _linear([[1]], 0), "a": node, "output": _output(1)}
    (syn,) = lower(_graph(nodes, [("input", "a.in"), ("a.in", "a"), ("a", "output")])).synapses
    assert syn.weight.tolist() == [[1.0]]


# -- chains composed in float64 ---------------------------------------------------------------------

# 1 + 2**-53 + 2**-60 in long double (64-bit mantissa where the platform has one): float64 rounds it to
# 1 + 2**-52, whose square rounds to 1 + 2**-51; the square taken in long double rounds to 1 + 2**-52
_X = np.longdouble(1) + np.longdouble(2) ** -53 + np.longdouble(2) ** -60
_X64 = float(np.float64(_X))


@pytest.mark.parametrize("kind", ["Linear", "Affine", "Scale"])
def test_chain_composed_in_float64_whatever_the_parameter_dtype(kind):
    def node():
        w = np.full((1, 1), _X)
        return {"Linear": nir.Linear(weight=w), "Scale": nir.Scale(scale=np.full(1, _X)),
                "Affine": nir.Affine(weight=w, bias=np.zeros(1, np.longdouble))}[kind]

    nodes = {"input": _input(1), "l1": node(), "l2": node(), "a": _lif(1), "output": _output(1)}
    net = lower(_graph(nodes, [("input", "l1"), ("l1", "l2"), ("l2", "a"), ("a", "output")]))
    (syn,) = net.synapses
    assert syn.weight.dtype == np.float64 and syn.weight.tolist() == [[_X64 * _X64]]
    assert net.populations["a"].bias_f.dtype == np.float64


def test_affine_bias_in_float64_whatever_its_dtype():
    nodes = {"input": _input(1), "b": nir.Affine(weight=np.ones((1, 1)), bias=np.full(1, _X)), "a": _lif(1),
             "output": _output(1)}
    p = lower(_graph(nodes, [("input", "b"), ("b", "a"), ("a", "output")])).populations["a"]
    assert p.bias_f.dtype == np.float64 and p.bias_f.tolist() == [_X64]


def test_long_double_parameters_lowered_in_float64():
    """r per neuron (LIF), thresholds (Threshold) in long double: rows and biases in float64."""
    nodes = {"input": _input(1), "a.in": nir.Linear(weight=np.ones((2, 1))), "a": _lif(2),
             "output": _output(2)}
    nodes["a"].r = np.array([1, 2 * _X], np.longdouble)  # rows times r: 1 and 2 + 2**-51 in float64
    net = lower(_graph(nodes, [("input", "a.in"), ("a.in", "a"), ("a", "output")]))
    (syn,) = net.synapses
    assert syn.weight.dtype == np.float64 and syn.weight.tolist() == [[1.0], [2 * _X64]]
    assert net.populations["a"].bias_f.dtype == np.float64
    nodes["a"] = nir.Threshold(threshold=np.array([0.5, _X], np.longdouble))
    p = lower(_graph(nodes, [("input", "a.in"), ("a.in", "a"), ("a", "output")])).populations["a"]
    assert p.bias_f.dtype == np.float64 and p.bias_f.tolist() == [_X64 - 0.5, 0.0]


@pytest.mark.parametrize("kind", ["LI", "CubaLI"])
def test_leaky_graded_population_with_long_double_r(kind):
    """A spike-fed LI/CubaLI with r in long double: its bias in float64, the leaky bound by hand."""
    r = np.full(1, 1.0, np.longdouble)
    node = (nir.LI(tau=np.full(1, 2.0), r=r, v_leak=np.zeros(1)) if kind == "LI" else
            nir.CubaLI(tau_syn=np.full(1, 2.0), tau_mem=np.full(1, 2.0), r=r, v_leak=np.zeros(1),
                       w_in=np.ones(1)))
    nodes = {"input": _input(1), "b.in": _linear([[1]], 0), "b": _lif(1), "a.in": _linear([[1]], 0),
             "a": node, "output": _output(1)}
    edges = [("input", "b.in"), ("b.in", "b"), ("b", "a.in"), ("a.in", "a"), ("a", "output")]
    p = lower(_graph(nodes, edges), steps=4).populations["a"]
    assert p.bias_f.dtype == np.float64 and p.bias_f.tolist() == [0.0]
    # LI: row 1/2 (alpha r), current x min(4, 4096/4096), voltage x min(4, 4096/2048): 1/2 x 1 x 2;
    # CubaLI: row 1/4 (alpha r beta w_in), current x min(4, 4096/2048), voltage x 2: 1/4 x 2 x 2
    assert p.state_bound == 1.0


def test_long_double_weight_quantised_in_float64():
    """The quantisation note measures the error against the float64 weight (1 + 2**-52 -> 1)."""
    nodes = {"input": _input(1), "l": nir.Linear(weight=np.full((1, 1), _X)), "a": _lif(1),
             "output": _output(1)}
    net = lower(_graph(nodes, [("input", "l"), ("l", "a"), ("a", "output")]))
    assert net.notes == [f"l: quantised to 8 bits (max abs error {2.0**-52:.3g})"]


def test_split_terms_of_narrow_integers():
    """-128 (int8) needs two 8-bit terms: -1 * 2**7; digits are int64 whatever the mantissa's dtype."""
    ((m, e),) = split_terms(np.array([-128], np.int8), 0)
    assert (m.dtype, m.tolist(), e) == (np.int64, [-1], 7)
    ((m, e),) = split_terms(np.array([5], np.int16), 3)
    assert (m.dtype, m.tolist(), e) == (np.int64, [5], 3)


def test_if_without_biases_has_one_zero_bias_per_neuron():
    """An IF fed by a direct edge (no linear node, no leak): bias arrays of its size, all 0."""
    node = nir.IF(r=np.ones(3), v_threshold=np.ones(3), v_reset=np.zeros(3))
    nodes = {"input": _input(3), "a": node, "output": _output(3)}
    p = lower(_graph(nodes, [("input", "a"), ("a", "output")])).populations["a"]
    assert (p.bias_f.tolist(), p.bias_mant.tolist(), p.bias_exp.tolist()) == ([0.0] * 3, [0] * 3, [0] * 3)


# -- paths: refusals, summed biases, parallel paths --------------------------------------------------

def test_output_cannot_feed_a_synapse():
    nodes = {"input": _input(1), "a.in": _linear([[1]], 0), "a": _lif(1), "output": _output(1),
             "back": _linear([[1]], 0)}
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "output"), ("output", "back"), ("back", "a")]
    with pytest.raises(UserError, match=r"^output \(Output\) cannot feed a synapse here$"):
        lower(_graph(nodes, edges))


def test_linear_node_without_input_behind_another_is_one_line():
    """b (processed first) reaches c, which has no input: the refusal names c."""
    nodes = {"input": _input(1), "a.in": _linear([[1]], 0), "b": _linear([[1]], 0), "c": _linear([[1]], 0),
             "a": _lif(1), "output": _output(1)}
    edges = [("input", "a.in"), ("a.in", "a"), ("c", "b"), ("b", "a"), ("a", "output")]
    with pytest.raises(UserError, match=r"^c: a synapse needs exactly one source and one target$"):
        lower(_graph(nodes, edges))


def test_biases_of_two_inputs_are_summed():
    """input -> (1, +0.25) and (1, +0.5) -> Scale 1 -> LIF: bias 0.75, weight 2."""
    nodes = {"input": _input(1), "b1": nir.Affine(weight=np.ones((1, 1)), bias=np.array([0.25])),
             "b2": nir.Affine(weight=np.ones((1, 1)), bias=np.array([0.5])), "s": nir.Scale(scale=np.ones(1)),
             "a": _lif(1), "output": _output(1)}
    edges = [("input", "b1"), ("input", "b2"), ("b1", "s"), ("b2", "s"), ("s", "a"), ("a", "output")]
    net = lower(_graph(nodes, edges))
    assert net.populations["a"].bias_f.tolist() == [0.75]
    assert _weights(net) == [("s", "input", "a", 0, [[2.0]])]


def test_parallel_paths_from_two_sources_are_two_named_synapses():
    """s sums the input (now) and a (one step ago, through d): one synapse per (source, delay), the
    second named after its source and delay."""
    nodes = {"input": _input(1), "s": nir.Scale(scale=np.full(1, 0.5)), "a": _lif(1),
             "d": nir.Delay(delay=np.array([1.0])), "output": _output(1)}
    edges = [("input", "s"), ("d", "s"), ("s", "a"), ("a", "d"), ("a", "output")]
    net = lower(_graph(nodes, edges))
    assert _weights(net) == [("s", "input", "a", 0, [[0.5]]), ("s<a@1", "a", "a", 1, [[0.5]])]


def test_composed_synapses_hold_populations_without_fixed_point_parameters():
    """Sizes and kinds only: the input's grid is 0 (no data), no parameter is set."""
    nodes = {"input": _input(2), "s": nir.Scale(scale=np.full(2, 0.5)), "d": nir.Delay(delay=np.array([1.0])),
             "output": _output(2)}
    pops, synapses = composed_synapses(_graph(nodes, [("input", "s"), ("s", "d"), ("d", "output")]))
    assert pops == {"input": Population("input", "input", 2),
                    "output": Population("output", "integrator", 2, dv=4096, dv_f=1.0)}
    # the Scale feeds a Delay, not a population: the synapse is the Delay -> Output edge, named after it
    assert _weights_of(synapses) == [("d->output", "input", "output", 1, (np.eye(2) * 0.5).tolist())]


# -- metadata, empty populations, zero scales ------------------------------------------------------

@pytest.mark.parametrize("node", [nir.I(r=np.zeros(1)),
                                  nir.LI(tau=np.full(1, 2.0), r=np.zeros(1), v_leak=np.zeros(1))],
                         ids=["I", "LI"])
def test_zero_r_behind_exported_mantissas_gives_zero_weights(node):
    """r = 0 makes the row factor 0 (not a power of two: the mantissas are re-quantised); this was a
    ValueError (int(nan)) before."""
    nodes = {"input": _input(1), "l": _linear([[3]], -2), "a": node, "output": _output(1)}
    net = lower(_graph(nodes, [("input", "l"), ("l", "a"), ("a", "output")]))
    (syn,) = net.synapses
    assert syn.weight.tolist() == [[0.0]] and [t.weights.tolist() for t in syn.terms] == [[[0]]]
    assert net.notes[0] == "l: re-quantised to 8 bits (max abs error 0)"


def test_mantissa_without_exponent_is_quantised_again():
    node = nir.Linear(weight=np.full((1, 1), 0.75), metadata={"weight_mantissa": np.array([[3]])})
    nodes = {"input": _input(1), "l": node, "a": _lif(1), "output": _output(1)}
    net = lower(_graph(nodes, [("input", "l"), ("l", "a"), ("a", "output")]))
    assert net.notes == ["l: re-quantised to 8 bits (max abs error 0)"]
    assert [(t.weights.tolist(), t.exponent) for t in net.synapses[0].terms] == [([[192]], -7)]


def test_population_of_no_neurons_has_empty_exact_weights():
    """c -> (0 x 1) -> I of 0 neurons -> (1 x 0) -> b: both empty weights quantise with error 0."""
    nodes = {"input": _input(1), "c.in": _linear([[1]], 0), "c": _lif(1),
             "l1": nir.Linear(weight=np.zeros((0, 1))), "a": nir.I(r=np.ones(0)),
             "l2": nir.Linear(weight=np.zeros((1, 0))), "b": _lif(1), "output": _output(1)}
    edges = [("input", "c.in"), ("c.in", "c"), ("c", "l1"), ("l1", "a"), ("a", "l2"), ("l2", "b"),
             ("b", "output")]
    net = lower(_graph(nodes, edges))
    assert net.notes == [f"{n}: quantised to 8 bits (max abs error 0)" for n in ("l1", "l2")]
    assert net.populations["a"].size == 0


# -- the graded steps' formula for any decay, inputs of object dtype ----------------------------------

def test_graded_steps_take_the_formula_outside_the_plain_integrator():
    """Only du = 4095, dv = 0 (float: 1, 0) is the plain integrator; any other decay, even outside its
    range, takes the formula: u <- trunc(u (4096 - du - 1) / 4096) + a_in, v <- v + u + bias."""
    one = np.array([4096], np.int64)
    zero = np.zeros(1, np.int64)
    u, v = graded_step_fixed(one, zero, one // 4096, 4097, 0, zero)  # trunc(4096 * -2 / 4096) + 1 = -1
    assert (u.tolist(), v.tolist()) == ([-1], [-1])
    u, v = graded_step_fixed(one, zero, one // 4096, 3**12 - 1, 0, zero)  # -(4096 - 3**12) + 1
    assert (u.tolist(), v.tolist()) == ([4096 - 3**12 + 1], [4096 - 3**12 + 1])
    u, v = graded_step_float(np.ones(1), np.zeros(1), np.zeros(1), 2.0, 0.0, np.zeros(1))  # u (1 - 2)
    assert (u.tolist(), v.tolist()) == ([-1.0], [-1.0])


def test_object_arrays_are_read_as_float64():
    """Parameters and inputs of object dtype (Python floats) work as float64 ones."""
    net = Network({}, [], "input", "output", 0, 1.0, 16, 8)
    x = np.array([0.5, -1.25, 200.0], dtype=object)
    assert net.encode_input(x).tolist() == [128, -320, 32767]
    assert net.clipped_fraction(x) == pytest.approx(1 / 3, rel=0, abs=0)
    assert _uniform(np.array([2.0, 2.0], dtype=object), "tau", "a") == 2.0
    g = _Graph({"d": nir.Delay(delay=np.array([2.0], dtype=object))}, {}, {}, [], 0.5)
    assert g.delay_steps("d") == 4
