"""Standard NIR graphs (not lmuformer's shape) on the fixed-point backends.

Three small hand-built graphs cover every node type of the common subset: a conv net (Conv2d
with a bias into a CubaLIF's current, CubaLIF, SumPool2d, AvgPool2d, Flatten, Affine, LIF,
Linear, LI readout), a recurrent net (Scale, Conv1d, IF with recurrence through a Delay,
Threshold, I, an Affine bias into a CubaLI's current, an Affine into the Output) and an
MLP with a spiking output.  The emulator's float mode is checked against an independent NumPy reading of
NIR in discrete time (below); Lava ``fixed_pt`` against the emulator bit for bit, Lava
``floating_pt`` against the emulator's float mode.
"""

from __future__ import annotations

import nir
import numpy as np
import pytest

from backends.base import simulate
from backends.fixed_point import lower
from export.normalize import delayless_cycle, topological_order
from lmuformer.errors import UserError
from lmuformer.validation import check_structure
from tests.conftest import skip_without_lava
from tests.nir_graphs import CASES, DT, conv_graph, mlp_graph, mlp_inputs, recurrent_graph, reference

FLOAT_ATOL = 1e-9  # float emulator vs the reference below: float64 summation order only


@pytest.mark.parametrize("case", list(CASES))
def test_emulator_float_equals_the_nir_reading(case):
    make, data = CASES[case]
    g, x = make(), data()
    r = simulate(g, x, backend="emulator", precision="float", progress=False, record=True)
    want, trains = reference(g, x)
    np.testing.assert_allclose(r.trace, want, rtol=0, atol=FLOAT_ATOL * max(1.0, np.abs(want).max()))
    for n, spk in trains.items():
        assert np.array_equal(r.extra["spike_trains"][n], spk), n
        assert spk.any(), f"{n} never spikes: the test would not see it"


@pytest.mark.parametrize("case", ["conv", "recurrent"])
def test_emulator_fixed_tracks_float(case):
    """Fixed point quantises weights to 8 bits and states to their grids: the readout stays close."""
    make, data = CASES[case]
    g, x = make(), data()
    fx = simulate(g, x, backend="emulator", precision="fixed", progress=False, record=True)
    fl = simulate(g, x, backend="emulator", precision="float", progress=False, record=True)
    for n in fl.extra["spike_trains"]:
        agree = np.mean(fx.extra["spike_trains"][n] == fl.extra["spike_trains"][n])
        assert agree >= 0.9, (n, agree)
    assert np.abs(fx.trace - fl.trace).max() <= 0.25 * np.abs(fl.trace).max()


def test_emulator_fixed_equals_float_on_the_grid():
    """Weights and biases on 2**-6, inputs on 2**-8, dt/tau = 1/4: nothing is rounded, so the
    fixed-point spikes equal the float ones (off the grid, with dv = 819 for 1/5, 20 of 120 differ)."""
    g, x = mlp_graph(), np.round(mlp_inputs() * 256) / 256
    for n in ("lif0", "lif1"):
        g.nodes[n].tau = np.full(g.nodes[n].tau.shape, 4 * DT)
        g.nodes[n].r = np.full(g.nodes[n].r.shape, 5.0)  # one r: the rows are not scaled
    for n in ("fc0", "fc1"):
        g.nodes[n].weight = np.round(g.nodes[n].weight * 64) / 64
        g.nodes[n].bias = np.round(g.nodes[n].bias * 64) / 64
    assert not [n for n in lower(g).notes if "error 0)" not in n], lower(g).notes
    fx = simulate(g, x, backend="emulator", precision="fixed", progress=False, record=True)
    fl = simulate(g, x, backend="emulator", precision="float", progress=False, record=True)
    assert fl.extra["spike_trains"]["lif1"].sum() > 10
    for n, spk in fl.extra["spike_trains"].items():
        assert np.array_equal(fx.extra["spike_trains"][n], spk), n
    assert np.array_equal(fx.trace, fl.trace) and fx.trace.max() == 1.0  # the spiking readout


def test_lowered_parameters_of_the_new_node_types():
    net = lower(conv_graph())
    p = net.populations
    # CubaLIF: dt/tau_syn = 1/2 -> du + 1 = 2048; dt/tau_mem = 1/4 -> dv = 1024; vth = 0.5 * 2**k / (r/4)
    assert (p["cuba"].du, p["cuba"].dv, p["cuba"].size) == (2047, 1024, 75)
    assert p["cuba"].vth == round(0.5 * 2 ** p["cuba"].frac / 0.5)
    assert (p["li"].kind, p["li"].dv, p["li"].du, net.readout) == ("integrator", 1024, 4095, "li")
    syn = {s.name: s for s in net.synapses}
    # pool + flatten + fc and avg + flatten + fc: one synapse from cuba (the two paths summed)
    assert syn["conv"].weight.shape == (75, 50) and syn["fc"].weight.shape == (4, 75)
    net = lower(recurrent_graph())
    p = net.populations
    assert p["if"].dv == 0 and p["if"].vth == round(2 ** p["if"].frac / (DT * 1000))
    assert p["th"].reset_each_step and p["th"].dv == 4095
    assert (p["i"].du, p["i"].dv) == (4095, 0)
    assert (p["cubali"].du, p["cubali"].dv) == (2047, 512)
    assert net.readout == "output" and p["output"].dv == 4096  # the Affine head feeds the Output
    rec = [s for s in net.synapses if s.source == "if" and s.target == "if"]
    assert len(rec) == 1 and rec[0].delay == 1


def test_refusals_name_the_node():
    g = conv_graph()
    g.nodes["fc"] = nir.Affine(weight=g.nodes["fc"].weight, bias=np.zeros(4))
    g.nodes["fc2"] = nir.Affine(weight=g.nodes["fc2"].weight, bias=np.ones(3))
    lower(g)  # a bias into an LI is fine
    net = lower(g)  # the conv bias, per position, into the CubaLIF's current: a constant population
    bias = [syn for syn in net.synapses if syn.name == "cuba.current_bias"]
    assert len(bias) == 1 and bias[0].source == "const.one" and net.populations["const.one"].kind == "const"
    assert np.allclose(bias[0].weight[:, 0], np.repeat([0.1, -0.05, 0.0], 25) * 0.5)  # times dt/tau_syn
    assert not np.any(net.populations["cuba"].bias_f)  # nothing of it on v
    g = recurrent_graph()
    g.nodes["if"] = nir.IF(r=np.full((2, 4), 1000.0), v_threshold=np.arange(8.0).reshape(2, 4))
    with pytest.raises(UserError, match=r"^if: v_threshold differs between neurons"):
        lower(g)
    g = conv_graph()
    g.nodes["avg"] = nir.AvgPool2d(kernel_size=np.array([3, 3]), stride=np.array([1, 1]),
                                   padding=np.array([0, 0]))  # 3 x 3 x 3 values into fc's 12 inputs
    with pytest.raises(UserError, match=r"^fc \(Affine\): its inputs have different sizes \(12 and 27\)$"):
        lower(g)
    g = recurrent_graph()
    g.nodes["delay"] = nir.Delay(delay=np.full(8, 1.5 * DT))
    with pytest.raises(UserError, match=r"^delay: delay is not a positive whole number of steps$"):
        lower(g)


def _lava_pair(g, x, precision):
    skip_without_lava()
    lava = simulate(g, x, backend="lava", precision=precision, progress=False, record=True)
    emu = simulate(g, x, backend="emulator", precision=precision, progress=False, record=True)
    return lava, emu


@pytest.mark.parametrize("case", list(CASES))
def test_lava_fixed_equals_emulator(case):
    make, data = CASES[case]
    lava, emu = _lava_pair(make(), data(), "fixed")
    assert set(lava.extra["spike_trains"]) == set(emu.extra["spike_trains"])
    for n, spk in emu.extra["spike_trains"].items():
        assert np.array_equal(lava.extra["spike_trains"][n], spk), n
    assert np.array_equal(lava.trace, emu.trace)


@pytest.mark.parametrize("case", list(CASES))
def test_lava_float_matches_emulator_float(case):
    make, data = CASES[case]
    lava, emu = _lava_pair(make(), data(), "float")
    for n, spk in emu.extra["spike_trains"].items():
        assert np.array_equal(lava.extra["spike_trains"][n], spk), n
    np.testing.assert_allclose(lava.trace, emu.trace, rtol=0, atol=1e-9 * np.abs(emu.trace).max())


def _set(name, node=None, **attrs):
    """Replace node ``name`` and/or set attributes after construction (NIR's constructors check
    some of what a file read from disk need not satisfy)."""
    def mutate(g):
        if node is not None:
            g.nodes[name] = node
        for k, v in attrs.items():
            setattr(g.nodes[name], k, v)
    return mutate


def _edges(*extra):
    def mutate(g):
        g.edges += list(extra)
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_set("fc2", weight=np.ones(4)), r"^fc2 \(Linear\): its weight is not a matrix \(shape \(4,\)\)$"),
    (_set("conv", weight=np.ones((3, 5, 3, 3))), r"^conv \(Conv2d\): expects 125 inputs"),
    (_set("conv", stride=(9, 9), dilation=(4, 4), padding=(0, 0)), r"^conv \(Conv2d\): "),
    (_set("pool", kernel_size=np.array([9, 9])), r"^pool \(SumPool2d\): "),
    (_set("fc2", nir.Scale(scale=np.ones(3))), r"^fc2 \(Scale\): 3 factors for 4 inputs$"),
    (_edges(("fc2", "fc2")), r"^the graph has a cycle without a Delay node$"),
    (_set("li", tau=np.full(3, -DT)), r"^li: need 0 < dt/tau <= 1 \(got dt/tau=-1.0\)$"),
    (_set("cuba", v_reset=np.full((3, 5, 5), 0.5)), r"^cuba: v_reset must be 0"),
    (_set("output"), None),
], ids=["linear-1d", "conv-channels", "conv-too-small", "pool-too-big", "scale-size", "linear-cycle",
        "negative-tau", "v-reset", "ok"])
def test_malformed_graphs_are_one_line_errors(mutate, message):
    g = conv_graph()
    mutate(g)
    if message is None:
        lower(g)
        return
    with pytest.raises(UserError, match=message):
        lower(g)


def test_the_three_cycle_searches_name_the_same_cycle_along_the_edges():
    """One depth-first search (lmuformer.validation.depth_first) behind the structure check, the
    normaliser's delay-less cycle and the evaluation order: each names the cycle a -> b -> c -> a."""
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             **{n: nir.Linear(weight=np.eye(2)) for n in "abc"},
             "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    with pytest.raises(UserError, match=r"cycle without a Delay node \(a -> b -> c -> a\);"):
        check_structure(g)
    assert delayless_cycle(g) == ["a", "b", "c", "a"]
    with pytest.raises(UserError, match=r"^the graph has a cycle through 'a' without a Delay node$"):
        topological_order(g)


@pytest.mark.parametrize("case", ["conv", "recurrent", "mlp"])
def test_report_leaves_nothing_uncounted(case):
    """The subset graphs above (conv: Conv2d -> CubaLIF -> Flatten -> Affine, 'fc' was
    uncounted before): every synapse is counted, the report's synapses are the composed ones."""
    from backends.fixed_point import composed_synapses
    from lmuformer.analysis import build_report, resolve_profiles

    make, inputs = CASES[case]
    g = make()
    report = build_report(g, simulate(g, inputs(), backend="emulator", progress=False, record=True),
                          resolve_profiles(["45nm"]), ann=False)
    pops, synapses = composed_synapses(g)
    assert "uncounted_synapses" not in report
    assert report["total"]["synapses"] == sum(int((s.weight != 0).sum()) for s in synapses
                                              if pops[s.source].kind != "const")
