"""``lmuf report`` / ``lmuf map`` on chains of linear nodes (Conv2d -> SumPool2d -> Flatten ->
Delay -> Affine): the SOPs of a spiking layer are counted through the composed matrix the
emulator and Lava execute (the nonzero entries of its column), checked by hand.  The snnTorch
conv export is in tests/test_peers.py, the subset graphs in tests/test_nir_subset.py."""

from __future__ import annotations

import nir
import numpy as np
import pytest

from backends import simulate
from lmuformer.analysis import build_report, layer_counts, resolve_profiles
from lmuformer.analysis.mapping import Options, map_graph
from tests.conftest import skip_without_lava

DT = 1e-3


def chain_graph() -> nir.NIRGraph:
    """input(1x4x4) -> lif(1x4x4, tau = dt: spikes iff x > 0.5) -> conv(2 x 2x2, valid: 2x3x3)
    -> pool(SumPool2d 3: 2x1x1) -> flat(2) -> delay(1 step) -> fc(3 x 2) -> li(3) -> output.

    conv channel 0 has one tap (top-left): pixel (i, j) reaches its pooled cell iff i, j <= 2;
    channel 1 is all ones: every pixel reaches it.  fc = [[1, 0], [0, 1], [1, 1]]: row 0 reads
    channel 0, row 1 channel 1, row 2 both.  So pixel (i, j) reaches rows {0, 1, 2} when i, j <= 2
    (3 nonzeros in its column of the composed 3 x 16 matrix), else rows {1, 2} (2): 9 x 3 + 7 x 2
    = 41 synapses.  All weights positive: no entry cancels."""
    shape = (1, 4, 4)
    w = np.zeros((2, 1, 2, 2))
    w[0, 0, 0, 0] = 0.5
    w[1] = 0.25
    nodes = {
        "input": nir.Input(input_type={"input": np.array(shape)}),
        "lif": nir.LIF(tau=np.full(shape, DT), r=np.ones(shape), v_leak=np.zeros(shape),
                       v_threshold=np.full(shape, 0.5), v_reset=np.zeros(shape)),
        "conv": nir.Conv2d(input_shape=(4, 4), weight=w, stride=1, padding=0, dilation=1, groups=1,
                           bias=np.zeros(2)),
        "pool": nir.SumPool2d(kernel_size=np.array([3, 3]), stride=np.array([3, 3]),
                              padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([2, 1, 1])}, start_dim=0),
        "delay": nir.Delay(delay=np.full(2, DT)),
        "fc": nir.Affine(weight=np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), bias=np.zeros(3)),
        "li": nir.LI(tau=np.full(3, 2 * DT), r=np.ones(3), v_leak=np.zeros(3)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "lif"), ("lif", "conv"), ("conv", "pool"), ("pool", "flat"), ("flat", "delay"),
             ("delay", "fc"), ("fc", "li"), ("li", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT}, type_check=False)


HAND_NNZ = np.array([[3, 3, 3, 2], [3, 3, 3, 2], [3, 3, 3, 2], [2, 2, 2, 2]]).ravel()
FRAMES = 6


def _x() -> np.ndarray:
    return np.random.default_rng(1).uniform(0.0, 1.0, (2, FRAMES, 16))


def test_chain_fan_out_by_hand():
    g = chain_graph()
    res = simulate(g, _x(), backend="torch", progress=False)
    layers = {la.name: la for la in layer_counts(g, res)}
    lif = layers["lif"]
    np.testing.assert_array_equal(lif.fan_out, HAND_NNZ)
    assert lif.synapses == 41 and lif.outgoing == ["fc"]
    # the direct input -> lif edge is an identity Dense: one synapse per pixel, a MAC per frame
    assert layers["input"].synapses == 16 and layers["input"].macs.tolist() == [16.0 * FRAMES] * 2
    assert layers["li"].synapses == 0
    # torch reports totals only: spikes x mean fan-out
    np.testing.assert_allclose(lif.sops, np.asarray(res.spikes["lif"], float) * 41 / 16)
    report = build_report(g, res, resolve_profiles(["45nm"]), ann=False)
    assert "uncounted_synapses" not in report


@pytest.mark.parametrize("backend", ["emulator", "lava"])
def test_chain_sops_as_delivered_by_hand(backend):
    """Spike trains (emulator, Lava): a spike of pixel j at step t counts HAND_NNZ[j] SOPs if the
    one-step delay delivers it within the sample (t + 1 < steps)."""
    if backend == "lava":
        skip_without_lava()
    g = chain_graph()
    res = simulate(g, _x(), backend=backend, precision="fixed", progress=False, record=True)
    trains = np.asarray(res.extra["spike_trains"]["lif"], dtype=np.float64).reshape(2, FRAMES, 16)
    expected = trains[:, :FRAMES - 1].sum(axis=1) @ HAND_NNZ
    assert expected.min() > 0 and trains[:, -1].sum() > 0  # spikes, some of them not delivered
    report = build_report(g, res, resolve_profiles(["45nm"]), ann=False)
    row = next(r for r in report["layers"] if r["name"] == "lif")
    assert row["synapses"] == 41 and row["sops"] == pytest.approx(expected.mean(), abs=0)
    assert report["total"]["sops"] == row["sops"] and "uncounted_synapses" not in report


def test_map_stores_the_same_synapses_as_the_report_counts():
    """``lmuf map`` (sparse: nonzero entries only) stores the composed chain as the report
    counts it: input identity 16 + lif's 41 = 57, all on li's and lif's cores."""
    g = chain_graph()
    m = map_graph(g, "loihi2", base=Options(encoding="sparse"))
    report = build_report(g, simulate(g, _x(), backend="torch", progress=False), resolve_profiles(["45nm"]),
                          ann=False)
    assert m["totals"]["synapses"] == report["total"]["synapses"] == 57


def _scale_chain(refused: bool) -> nir.NIRGraph:
    """input(4) -> lif(4) -> scale -> fc1 -> li(2); ``refused``: fc1 an Affine with a bias, then a
    Delay and fc2 (a bias in front of a Delay: the fixed-point lowering refuses it, torch runs it)."""
    n = 4
    nodes = {
        "input": nir.Input(input_type={"input": np.array([n])}),
        "lif": nir.LIF(tau=np.full(n, DT), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, 0.5),
                       v_reset=np.zeros(n)),
        "scale": nir.Scale(scale=np.array([1.0, 0.0, 2.0, 1.0])),
        "fc1": nir.Linear(weight=np.array([[1.0, 1, 0, 0], [0, 0, 1, 1]])),
        "li": nir.LI(tau=np.full(2, 2 * DT), r=np.ones(2), v_leak=np.zeros(2)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "lif"), ("lif", "scale"), ("scale", "fc1"), ("li", "output")]
    if refused:
        nodes["fc1"] = nir.Affine(weight=nodes["fc1"].weight, bias=np.array([0.1, 0.0]))
        nodes["delay"] = nir.Delay(delay=np.full(2, DT))
        nodes["fc2"] = nir.Linear(weight=np.eye(2))
        edges += [("fc1", "delay"), ("delay", "fc2"), ("fc2", "li")]
    else:
        edges += [("fc1", "li")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT}, type_check=False)


def test_chain_through_scale_and_a_graph_the_lowering_refuses():
    """Scale -> Linear from a spiking layer counts the product's nonzeros (the Scale's zero removes
    column 1); a graph the lowering refuses falls back to the per-node count (the Scale's own
    nonzeros) and lists the synapse nodes behind it as uncounted."""
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 4))
    g = _scale_chain(False)
    res = simulate(g, x, backend="torch", progress=False)
    assert {la.name: la for la in layer_counts(g, res)}["lif"].fan_out.tolist() == [1, 0, 1, 1]
    assert "uncounted_synapses" not in build_report(g, res, resolve_profiles(["45nm"]), ann=False)
    g = _scale_chain(True)
    with pytest.raises(Exception, match="bias in front of a Delay"):
        simulate(g, x, backend="emulator", progress=False)
    report = build_report(g, simulate(g, x, backend="torch", progress=False), resolve_profiles(["45nm"]),
                          ann=False)
    assert report["uncounted_synapses"] == ["fc1", "fc2"]
    assert next(r for r in report["layers"] if r["name"] == "lif")["synapses"] == 3

