"""The per-node fallback of lmuformer.analysis.counts (graphs the fixed-point lowering refuses):
conv_fan_out against a brute-force loop over output positions and kernel taps, and
outgoing_delays / delivered_sops on small hand graphs with Delay chains."""
import itertools

import nir
import numpy as np
import pytest

from lmuformer.analysis.counts import conv_fan_out, delivered_sops, outgoing_delays
from lmuformer.errors import UserError


def _brute_conv(shape, w, stride, pad, dil, groups):
    """Reads per input neuron (C x spatial, flattened) of a conv: one per (output, nonzero tap)."""
    c_in, spatial = shape[0], shape[1:]
    c_out, c_g, *k = w.shape
    nd = len(spatial)
    stride, pad, dil = ([v] * nd if np.isscalar(v) else list(v) for v in (stride, pad, dil))
    out = [(spatial[i] + 2 * pad[i] - dil[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(nd)]
    counts = np.zeros(shape, dtype=np.int64)
    for o in range(c_out):
        g = o // (c_out // groups)
        for pos in itertools.product(*(range(n) for n in out)):
            for ci in range(c_g):
                for tap in itertools.product(*(range(n) for n in k)):
                    if w[(o, ci, *tap)] == 0:
                        continue
                    src = [pos[i] * stride[i] - pad[i] + tap[i] * dil[i] for i in range(nd)]
                    if all(0 <= src[i] < spatial[i] for i in range(nd)):
                        counts[(g * c_g + ci, *src)] += 1
    assert c_in == groups * c_g
    return counts.ravel()


def _mask(rng, shape):
    w = rng.integers(-2, 3, shape).astype(float)
    w.flat[0] = 0.0  # at least one zero tap
    return w


@pytest.mark.parametrize("stride,pad,dil,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 2), (3, 1, 1, 2),
                                                   ((2, 1), (0, 1), (1, 2), 1)])
def test_conv2d_fan_out_matches_brute_force(stride, pad, dil, groups):
    rng = np.random.default_rng(1)
    shape = (4, 7, 6)
    w = _mask(rng, (6, 4 // groups, 3, 2))
    if groups == 1:  # the shape from the node's input_type (NIR declares weight.shape[1] channels)
        got = conv_fan_out(nir.Conv2d(shape[1:], w, stride, pad, dil, groups, np.zeros(6)), (9, 9, 9))
    else:
        got = conv_fan_out(nir.Conv2d(None, w, stride, pad, dil, groups, np.zeros(6)), shape)
    assert got.dtype == np.int64
    assert got.tolist() == _brute_conv(shape, w, stride, pad, dil, groups).tolist()


@pytest.mark.parametrize("stride,pad,dil,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 3, 2, 3), (4, 0, 1, 1)])
def test_conv1d_fan_out_matches_brute_force(stride, pad, dil, groups):
    rng = np.random.default_rng(2)
    shape = (3, 11)
    w = _mask(rng, (6, 3 // groups, 3))
    node = nir.Conv1d(None, w, stride, pad, dil, groups, np.zeros(6))
    assert conv_fan_out(node, shape).tolist() == _brute_conv(shape, w, stride, pad, dil, groups).tolist()


@pytest.mark.parametrize("padding,pad", [("same", 1), ("valid", 0)])
def test_conv_string_padding(padding, pad):
    rng = np.random.default_rng(3)
    w = _mask(rng, (2, 2, 3, 3))
    node = nir.Conv2d(None, w, 1, padding, 1, 1, np.zeros(2))
    assert conv_fan_out(node, (2, 5, 4)).tolist() == _brute_conv((2, 5, 4), w, 1, pad, 1, 1).tolist()
    w1 = _mask(rng, (2, 2, 5))
    node1 = nir.Conv1d(None, w1, 1, padding, 2, 1, np.zeros(2))
    assert conv_fan_out(node1, (2, 12)).tolist() == _brute_conv((2, 12), w1, 1, 4 * pad, 2, 1).tolist()


@pytest.mark.parametrize("kernel,stride,pad", [((2, 2), (2, 2), (0, 0)), ((3, 2), (2, 1), (1, 0)),
                                               ((2, 2), (3, 3), (0, 0))])
def test_sum_pool_fan_out_matches_brute_force(kernel, stride, pad):
    shape = (2, 7, 5)
    node = nir.SumPool2d(np.array(kernel), np.array(stride), np.array(pad))
    w = np.zeros((2, 1) + kernel)
    w[...] = 1.0  # depthwise all-ones kernel
    assert conv_fan_out(node, shape).tolist() == _brute_conv(shape, w, stride, pad, 1, 2).tolist()


def test_conv_fan_out_needs_a_shape():
    node = nir.Conv2d(None, np.ones((1, 1, 2, 2)), 1, 0, 1, 1, np.zeros(1))
    with pytest.raises(UserError, match="cannot tell the input shape of a Conv2d node"):
        conv_fan_out(node, None)


DT = 0.5


def _delay_graph() -> nir.NIRGraph:
    """input(3) -> lif(3) -> {fc0 directly; delay a (1.0 s = 2 steps) -> fc2 and -> delay b
    (1.5 s = 3 steps) -> flatten -> fc5} -> li(2)."""
    n = 3
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n])}),
        "lif": nir.LIF(tau=np.full(n, DT), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                       v_reset=np.zeros(n)),
        "fc0": nir.Linear(weight=np.array([[1.0, 0, 2], [0, 0, 1]])),
        "a": nir.Delay(delay=np.full(n, 2 * DT)),
        "fc2": nir.Affine(weight=np.array([[0.0, 1, 0], [0, 1, 0]]), bias=np.array([0.1, 0.0])),
        "b": nir.Delay(delay=np.full(n, 3 * DT)),
        "flat": nir.Flatten(start_dim=0, end_dim=-1, input_type={"input": np.array([n])}),
        "fc5": nir.Linear(weight=np.array([[1.0, 1, 1], [1, 0, 0]])),
        "li": nir.LI(tau=np.full(2, DT), r=np.ones(2), v_leak=np.zeros(2)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "lif"), ("lif", "fc0"), ("lif", "a"), ("a", "fc2"), ("a", "b"), ("b", "flat"),
             ("flat", "fc5"), ("fc0", "li"), ("fc2", "li"), ("fc5", "li"), ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT}, type_check=False)


def test_outgoing_delays_sum_the_delays_on_the_way():
    g = _delay_graph()
    assert outgoing_delays(g, "lif") == {"fc0": 0, "fc2": 2, "fc5": 5}
    assert outgoing_delays(g, "input") == {}
    assert outgoing_delays(g, "a") == {"fc2": 0, "fc5": 3}


def test_outgoing_delays_without_dt_count_seconds_as_steps():
    g = _delay_graph()
    g = nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata={}, type_check=False)
    assert outgoing_delays(g, "lif") == {"fc0": 0, "fc2": 1, "fc5": 3}  # 1 + round(1.5)


def test_delivered_sops_brute_force():
    """Spikes at step t reach a synapse delayed d only if t + d < steps; each reaching spike of
    neuron j counts the synapse's nonzero weights in column j."""
    g = _delay_graph()
    rng = np.random.default_rng(4)
    trains = (rng.uniform(size=(3, 7, 3)) < 0.5).astype(np.float64)
    taps = {0: [1, 0, 2], 2: [0, 2, 0], 5: [2, 1, 1]}  # nonzeros per column of fc0, fc2, fc5
    want = np.zeros(3)
    for s, t, j in itertools.product(range(3), range(7), range(3)):
        for d, nnz in taps.items():
            if t + d < 7:
                want[s] += trains[s, t, j] * nnz[j]
    got = delivered_sops(g, "lif", trains)
    assert got.tolist() == want.tolist()
    short = trains[:, :2]  # 2 steps: only the undelayed fc0 is reached
    assert delivered_sops(g, "lif", short).tolist() == (short.sum(axis=1) @ np.array([1, 0, 2.0])).tolist()
    assert delivered_sops(g, "lif", np.zeros((2, 5, 3))).tolist() == [0.0, 0.0]


def test_delivered_sops_through_a_conv_reads_the_source_shape():
    """A conv synapse without a declared input shape takes the source's shape; a one-element Delay
    (1 step) and a Delay leading nowhere are followed too."""
    w = np.array([[[[1.0, 0], [2, 3]]]])
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 3, 3])}),
        "d": nir.Delay(delay=np.array([DT])),
        "conv": nir.Conv2d(None, w, 1, 0, 1, 1, np.zeros(1)),
        "dead": nir.Delay(delay=np.array([DT])),
        "output": nir.Output(output_type={"output": np.array([1, 2, 2])}),
    }
    edges = [("input", "d"), ("d", "conv"), ("input", "dead"), ("conv", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT}, type_check=False)
    assert outgoing_delays(g, "input") == {"conv": 1}
    nnz = _brute_conv((1, 3, 3), w, 1, 0, 1, 1)
    trains = (np.random.default_rng(5).uniform(size=(2, 4, 9)) < 0.5).astype(np.float64)
    want = trains[:, :3].sum(axis=1) @ nnz.astype(np.float64)  # the last step's spikes arrive too late
    assert delivered_sops(g, "input", trains).tolist() == want.tolist()
