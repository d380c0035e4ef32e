"""Edges of lmuformer.analysis.counts (issue 16's survivor triage): the ``composed`` argument of
layer_counts, the per-node fallback with spike trains, shapes of 0-d (shared-parameter)
populations through chains and cycles, conv_fan_out's declared shapes and messages, a Delay
loop, a graph with no synapse at all, a graph the topological order refuses, and the exact
error messages.  Every expected value is written by hand or brute-forced here."""

from __future__ import annotations

import itertools
import re

import nir
import numpy as np
import pytest

from backends import SimulationResult
from lmuformer.analysis import BUILTIN, build_report, layer_counts
from lmuformer.analysis.counts import (
    Outgoing,
    _size,
    composed_outgoing,
    conv_fan_out,
    delivered_sops,
    fan_out,
    outgoing_delays,
    outgoing_synapses,
)
from lmuformer.errors import UserError


def _lif(n: int) -> nir.LIF:
    return nir.LIF(tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


def _shared_lif() -> nir.LIF:
    """0-d parameters, as Norse writes them: as large as what feeds it."""
    return nir.LIF(tau=np.array(1.0), r=np.array(1.0), v_leak=np.array(0.0), v_threshold=np.array(1.0),
                   v_reset=np.array(0.0))


def _result(spikes: dict[str, np.ndarray], steps: int, extra: dict | None = None) -> SimulationResult:
    samples = len(next(iter(spikes.values())))
    return SimulationResult("emulator", "fixed", np.zeros((samples, 2)), np.zeros((samples, steps, 2)),
                            spikes, {k: 0 for k in spikes}, steps, 0.0, extra=extra or {})


def _graph(dt: float | None = 1.0) -> nir.NIRGraph:
    """input(2) -> fc -> a(3 LIF) -> {s0 directly; d (2 steps) -> s2} -> li(2) -> output."""
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2])}),
        "fc": nir.Linear(weight=np.array([[1.0, 0], [1, 1], [0, 1]])),
        "a": _lif(3),
        "s0": nir.Linear(weight=np.array([[1.0, 0, 2], [0, 0, 1]])),  # columns nnz [1, 0, 2]
        "d": nir.Delay(delay=np.full(3, 2.0)),
        "s2": nir.Linear(weight=np.array([[0.0, 1, 1], [0, 1, 0]])),  # columns nnz [0, 2, 1]
        "li": nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "fc"), ("fc", "a"), ("a", "s0"), ("a", "d"), ("d", "s2"), ("s0", "li"), ("s2", "li"),
             ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={} if dt is None else {"dt": dt}, type_check=False)


STEPS = 4
TRAINS = np.array([  # (samples 2, steps 4, neurons 3)
    [[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]],
    [[0, 1, 0], [1, 1, 1], [0, 0, 0], [1, 0, 1]],
], dtype=bool)


def _brute(trains: np.ndarray, taps: list[tuple[int, list[int]]]) -> list[float]:
    """A spike of neuron j at step t through a tap (delay d, nnz) counts nnz[j] if t + d < steps."""
    samples, steps, n = trains.shape
    out = [0.0] * samples
    for s, t, j in itertools.product(range(samples), range(steps), range(n)):
        for d, nnz in taps:
            if trains[s, t, j] and t + d < steps:
                out[s] += nnz[j]
    return out


def test_layer_counts_uses_the_composed_synapses_it_is_given():
    """A ``composed`` map overrides the graph's own: its fan-outs, names and delays; any nonzero
    entry of a spike train is one spike, whatever its value (uint8 255 here)."""
    g = _graph()
    composed = {"input": [Outgoing("in", 0, np.array([2, 0]))],
                "a": [Outgoing("x", 1, np.array([1, 0, 3])), Outgoing("y", 3, np.array([0, 2, 2]))],
                "li": []}
    r = _result({"a": TRAINS.sum(axis=(1, 2))}, STEPS, {"spike_trains": {"a": TRAINS.astype(np.uint8) * 255}})
    layers = {la.name: la for la in layer_counts(g, r, composed)}
    a = layers["a"]
    assert a.fan_out.tolist() == [1, 2, 5] and a.synapses == 8 and a.outgoing == ["x", "y"]
    assert a.sops.tolist() == _brute(TRAINS, [(1, [1, 0, 3]), (3, [0, 2, 2])]) == [10.0, 6.0]
    assert layers["input"].synapses == 2 and layers["input"].macs.tolist() == [8.0, 8.0]
    # the graph's own composed synapses: s0 (delay 0) and d -> s2 (delay 2)
    own = {la.name: la for la in layer_counts(g, r)}["a"]
    assert own.fan_out.tolist() == [1, 2, 3] and own.outgoing == ["s0", "s2"]


def test_layer_counts_checks_the_composed_synapses_against_the_population():
    g = _graph()
    r = _result({"a": np.zeros(2)}, STEPS)
    bad = {"input": [Outgoing("in", 0, np.array([1, 1]))], "a": [Outgoing("w", 0, np.array([1, 2]))]}
    message = "synapse 'w' takes 2 inputs but 'a' has 3 neurons"
    with pytest.raises(UserError, match="^" + re.escape(message) + "$"):
        layer_counts(g, r, bad)


def test_fallback_counts_spike_trains_through_each_synapse_node():
    """Without composed synapses (``composed=None``: a graph the lowering refuses) the spikes go
    through each synapse node at the sum of the Delays on the way."""
    g = _graph()
    r = _result({"a": TRAINS.sum(axis=(1, 2))}, STEPS, {"spike_trains": {"a": TRAINS}})
    a = {la.name: la for la in layer_counts(g, r, None)}["a"]
    assert a.fan_out.dtype == np.int64 and a.fan_out.tolist() == [1, 2, 3] and a.outgoing == ["s0", "s2"]
    assert a.sops.tolist() == _brute(TRAINS, [(0, [1, 0, 2]), (2, [0, 2, 1])]) == [12.0, 11.0]


def test_fan_out_sums_the_synapse_nodes_as_int64():
    g = _graph()
    fo, syn = fan_out(g, "a", 3)
    assert fo.dtype == np.int64 and fo.tolist() == [1, 2, 3] and syn == ["s0", "s2"]


def test_fan_out_gives_a_conv_the_source_shape():
    w = np.array([[[[1.0, 0], [2, 3]]]])
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 3, 3])}),
             "conv": nir.Conv2d(None, w, 1, 0, 1, 1, np.zeros(1)),
             "output": nir.Output(output_type={"output": np.array([1, 2, 2])})}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "conv"), ("conv", "output")], metadata={},
                     type_check=False)
    fo, syn = fan_out(g, "input", 9)
    # taps (0,0), (1,0), (1,1) over 2 x 2 output positions, read per input pixel
    assert fo.tolist() == [1, 1, 0, 2, 3, 1, 1, 2, 1] and syn == ["conv"]


def test_delivered_sops_accumulates_in_float64_and_checks_shapes():
    """float16 spike trains: 2100 spikes of one neuron, beyond float16's exact integers (2048)."""
    g = _graph()
    trains = np.zeros((1, 2100, 3), dtype=np.float16)
    trains[0, :, 0] = 1
    assert delivered_sops(g, "a", trains).tolist() == [2100.0]  # s0's column 0 has one nonzero
    with pytest.raises(UserError, match="^" + re.escape("synapse 's0' takes 3 inputs but 'a' has 2 neurons")):
        delivered_sops(g, "a", np.zeros((1, 5, 2)))


def test_a_loop_of_delays_is_followed_once():
    """src -> d1 -> fc; d1 -> d2 -> d1 (a delay line feeding itself): d1 and d2 are expanded once."""
    nodes = {"src": _lif(2), "d1": nir.Delay(delay=np.ones(2)), "d2": nir.Delay(delay=np.ones(2)),
             "fc": nir.Linear(weight=np.eye(2)), "z": _lif(2)}
    edges = [("src", "d1"), ("d1", "d2"), ("d2", "d1"), ("d1", "fc"), ("fc", "z")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)
    assert outgoing_delays(g, "src") == {"fc": 1}
    assert outgoing_synapses(g, "src") == ["fc"]


def test_shared_populations_take_the_shape_of_their_source():
    """0-d populations: the shape of what feeds them, through a chain of them and around a loop,
    not that of other nodes of the graph (the input has 3 neurons, fc sends 4)."""
    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc": nir.Linear(weight=np.ones((4, 3))), "a": _shared_lif(), "b": _shared_lif()}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "fc"), ("fc", "a"), ("a", "b")], metadata={},
                     type_check=False)
    assert _size(g, "a") == 4 and _size(g, "b") == 4
    loop = nir.NIRGraph(nodes=nodes, edges=[("b", "a"), ("fc", "a"), ("a", "b"), ("input", "fc")],
                        metadata={}, type_check=False)
    assert _size(loop, "b") == 4  # b <- a <- fc (b, already on the way, is not asked again)


def _conv(w, input_shape=None):
    return nir.Conv2d(input_shape, np.asarray(w, dtype=float), 1, 0, 1, 1, np.zeros(np.shape(w)[0]))


def test_conv_fan_out_declared_shapes():
    """The node's declared input shape wins where it is a 1-D shape of two or more entries
    (a Conv1d declares two: channels, length); otherwise the shape given is used."""
    w1 = np.array([[[1.0, 0, 1]], [[0, 1, 0]]])  # 2 out, 1 in, kernel 3
    c1 = nir.Conv1d(5, w1, 1, 0, 1, 1, np.zeros(2))
    assert c1.input_type["input"].tolist() == [1, 5]
    # output positions p = 0..2: channel 0 reads p and p + 2, channel 1 reads p + 1
    assert conv_fan_out(c1, None).tolist() == [1, 2, 3, 2, 1]
    w = [[[[1.0, 1], [0, 1]]]]
    want = [1, 2, 1, 1, 3, 2, 0, 1, 1]  # taps (0,0), (0,1), (1,1) over 2 x 2 positions of a 3 x 3 input
    for declared in (np.array([[1, 3, 3]]), np.array([9])):  # 2-D, or a single entry: not a shape
        node = _conv(w)
        node.input_type = {"input": declared}
        assert conv_fan_out(node, (1, 3, 3)).tolist() == want
    node = _conv(w)
    del node.input_type  # a node without input_type (built by hand)
    assert conv_fan_out(node, (1, 3, 3)).tolist() == want
    assert conv_fan_out(_conv(w), (3, 3)).tolist() == want  # a 2-D (H, W) source: one channel


def test_conv_fan_out_messages():
    message = "Conv2d: Conv2d weight has shape (1, 2, 2); need 4 dims"
    with pytest.raises(UserError, match="^" + re.escape(message) + "$"):
        conv_fan_out(_conv(np.ones((1, 2, 2))), (1, 3, 3))
    pool = nir.SumPool2d(np.array([2, 2]), np.array([2, 2]), np.array([2, 0]))
    with pytest.raises(UserError, match="^" + re.escape("SumPool2d: pooling padding must be whole numbers at "
                                                        "most half the kernel") + "$"):
        conv_fan_out(pool, (1, 4, 4))
    with pytest.raises(UserError, match="^not a convolution or pooling node: Delay$"):
        conv_fan_out(nir.Delay(delay=np.ones(2)), (2,))


def test_graph_without_any_synapse_has_total_fan_out_zero():
    """input -> a -> output with no synapse node and no dt (the lowering refuses it): nothing has
    a synapse, the total fan-out is 0.0."""
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "a": _lif(2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "a"), ("a", "output")], metadata={}, type_check=False)
    assert composed_outgoing(g) is None
    rep = build_report(g, _result({"a": np.array([3.0, 1.0])}, 2), [BUILTIN["45nm"]], ann=False)
    t = rep["total"]
    assert (t["synapses"], t["fan_out"], t["sops"], t["spikes"]) == (0, 0.0, 0.0, 2.0)


def test_layers_of_a_graph_without_a_topological_order_come_in_node_order():
    """a -> fb -> b -> fa -> a with no Delay: no topological order; the layers come in the
    order of graph.nodes (the lowering delays the cycle's closing edge: b -> a is a synapse)."""
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "b": _lif(2),
             "fa": nir.Linear(weight=np.eye(2)), "a": _lif(2),
             "fb": nir.Linear(weight=np.array([[1.0, 0], [1, 1]])),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "fa"), ("fa", "a"), ("a", "fb"), ("fb", "b"), ("b", "fa"), ("b", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)
    layers = layer_counts(g, _result({"a": np.zeros(1), "b": np.zeros(1)}, 3))
    assert [(la.name, la.synapses) for la in layers] == [("input", 2), ("b", 2), ("a", 3)]


def test_a_population_without_neurons_has_no_synapses_and_no_sops():
    """e: a LIF with empty parameter arrays between 0 x 2 and 2 x 0 matrices: fan-out 0.0, no SOPs
    whatever spike count is reported for it (no division by its 0 neurons)."""
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "fc": nir.Linear(weight=np.ones((0, 2))), "e": _lif(0), "g": nir.Linear(weight=np.ones((2, 0))),
             "li": nir.LI(tau=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "fc"), ("fc", "e"), ("e", "g"), ("g", "li"), ("li", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0}, type_check=False)
    rep = build_report(g, _result({"e": np.array([3.0, 0.0])}, 3), [BUILTIN["45nm"]], ann=False)
    e = next(r for r in rep["layers"] if r["name"] == "e")
    assert (e["neurons"], e["synapses"], e["fan_out"], e["sops"], e["spikes"]) == (0, 0, 0.0, 0.0, 1.5)


def test_spike_counts_are_float64_whatever_the_backend_reports():
    """float32 counts, (samples, 1)-shaped: SOPs = spikes x mean fan-out (1/3) in float64."""
    g = _graph()
    composed = {"input": [Outgoing("in", 0, np.array([1, 1]))], "a": [Outgoing("x", 0, np.array([1, 0, 0]))]}
    r = _result({"a": np.array([[7], [5]], dtype=np.float32)}, STEPS)
    a = {la.name: la for la in layer_counts(g, r, composed)}["a"]
    assert a.spikes.dtype == np.float64 and a.spikes.tolist() == [7.0, 5.0]
    assert a.sops.dtype == np.float64 and a.sops.tolist() == [7 * (1 / 3), 5 * (1 / 3)]


def test_frames_come_from_the_input_layer_wherever_it_is():
    """A population fed by nothing listed before the Input comes first in the evaluation order;
    the report's frames are still the input's (steps - latency); no Input: no frames."""
    nodes = {"p": _lif(2), "input": nir.Input(input_type={"input": np.array([2])}), "a": _lif(2)}
    g = nir.NIRGraph(nodes=nodes, edges=[("input", "a")], metadata={"dt": 1.0, "latency_frames": 1},
                     type_check=False)
    r = _result({"p": np.zeros(1), "a": np.ones(1)}, 5)
    rep = build_report(g, r, [BUILTIN["45nm"]], ann=False)
    assert [row["name"] for row in rep["layers"]] == ["p", "input", "a"] and rep["frames"] == 4
    alone = nir.NIRGraph(nodes={"p": _lif(2)}, edges=[], metadata={}, type_check=False)
    assert build_report(alone, _result({"p": np.zeros(1)}, 5), [BUILTIN["45nm"]], ann=False)["frames"] is None


def test_a_result_without_samples_is_refused():
    r = SimulationResult("lava", "fixed", np.zeros((0, 2)), np.zeros((0, 3, 2)), {"a": np.zeros(0)}, {"a": 3},
                         3, 0.0)
    with pytest.raises(UserError, match="^the lava result has no samples to report$"):
        build_report(_graph(), r, [BUILTIN["45nm"]], ann=False)
