"""The fixed-point mapping and the NumPy emulator (no Lava needed)."""

from __future__ import annotations

import numpy as np
import pytest

from backends.base import simulate
from backends.fixed_point import lower, split_terms
from export import model_to_nir
from export.graph import ExportOptions
from lmuformer.errors import UserError
from tests.graphs import (
    EDGE_SPIKES,
    EDGE_X,
    WRAP_X,
    active_model,
    edge_graph,
    edge_trace,
    inputs,
    wrap_graph,
    wrapped_trace,
)


@pytest.fixture(scope="module")
def tiny_graphs():
    model = active_model("tiny")
    return tuple(model_to_nir(model, ExportOptions(quantize=q)) for q in (True, False))


@pytest.fixture(scope="module")
def digits_graph():
    return model_to_nir(active_model("digits", seed=1), ExportOptions(quantize=True))


def test_split_terms_exact():
    rng = np.random.default_rng(0)
    m = rng.integers(-(2**20), 2**20, size=(7, 5))
    terms = split_terms(m, -12)
    assert all(np.abs(t).max() <= 127 for t, _ in terms)
    total = sum(t.astype(np.float64) * 2.0**e for t, e in terms)
    assert np.array_equal(total, m * 2.0**-12)
    assert len(split_terms(np.array([[5, -127]]), 3)) == 1


def test_mapping():
    # one 8-bit term per learned synapse: every weight is representable without rounding
    g = model_to_nir(active_model("tiny"), ExportOptions(quantize=True, weight_terms=1))
    net = lower(g)
    assert not net.notes, net.notes
    for s in net.synapses:
        for t in s.terms:
            assert np.all(t.weights % 2 == 0) and np.abs(t.weights).max() <= 254
            if not s.graded:  # spike synapses are exact: the shift is >= -1 on even weights
                assert t.weight_exp >= -1
        # the terms reproduce the stored (quantised) weight exactly
        k = net.populations[s.target].frac
        src = net.populations[s.source].frac if s.graded else 0
        value = sum(t.weights / 2 * 2.0 ** (t.weight_exp + 1 + src - k) for t in s.terms)
        assert np.array_equal(value, s.weight), s.name
    for p in net.populations.values():
        if p.kind == "lif":
            assert p.dv == 2048 and p.du == 4095
            assert p.vth == round(p.vth_f / 2 * 2 ** (p.frac + 1))
            assert np.array_equal(p.bias_mant * 2.0**p.bias_exp, p.bias_f * 2.0 ** (p.frac + 6))
            assert np.abs(p.bias_mant).max() <= 4095 and p.bias_exp.max() <= 7
    memory = net.populations["block0.lmu.memory"]
    assert memory.state_bound * 2**memory.frac < 2**23
    assert net.encode_input(np.array([0.5, -1.0, 1e6])).tolist() == [128, -256, 2**15 - 1]
    assert net.clipped_fraction(np.array([0.5, -1.0, 1e6, -200.0])) == 0.5


@pytest.mark.parametrize("quantized", [True, False])
def test_float_emulator_matches_torch(tiny_graphs, quantized):
    g = tiny_graphs[0 if quantized else 1]
    x = inputs(16)
    ref = simulate(g, x, backend="torch", progress=False)
    emu = simulate(g, x, backend="emulator", precision="float", progress=False)
    # same operations up to float64 summation order and the v -> 2v scaling: 1e-9 relative
    np.testing.assert_allclose(emu.trace, ref.trace, rtol=0, atol=1e-9 * np.abs(ref.trace).max())
    assert np.array_equal(emu.predictions, ref.predictions)
    for k, v in ref.spikes.items():
        assert np.array_equal(emu.spikes[k], v), k
    assert ref.spikes["block0.lmu.u.lif"].sum() > 0  # the memory path is active


def test_fixed_agrees_with_float(digits_graph):
    x = inputs(64, seed=3)
    ref = simulate(digits_graph, x, backend="torch", progress=False)
    fx = simulate(digits_graph, x, backend="emulator", precision="fixed", progress=False)
    agree = float(np.mean(ref.predictions == fx.predictions))
    assert agree >= 0.75, agree
    total_ref = sum(v.sum() for v in ref.spikes.values())
    total_fx = sum(v.sum() for v in fx.spikes.values())
    assert abs(total_fx - total_ref) <= 0.05 * total_ref
    assert max(fx.extra["peak_abs_a_in"].values()) < 2**15  # within Loihi's 16-bit a_in


def test_two_term_export_is_rounded_not_broken(tiny_graphs):
    """``--weight-terms 2``: the second term is finer than the 2**-10 current grid, so it is
    floor-rounded (noted); every term still fits Lava's Dense.  The default (one term per learned
    matrix) has no spike synapse term finer than its grid."""
    assert not any("finer spike synapse terms" in n for n in lower(tiny_graphs[0]).notes)
    g = model_to_nir(active_model("tiny"), ExportOptions(weight_terms=2))
    net = lower(g)
    assert any("rounded" in n for n in net.notes)
    for s in net.synapses:
        assert all(np.abs(t.weights).max() <= 254 for t in s.terms)
    for p in net.populations.values():
        if p.kind == "lif":
            assert p.frac == 10 and p.vth < 2**17
            assert np.abs(p.bias_mant).max() <= 4095 and p.bias_exp.max() <= 7


def test_batching_does_not_change_results(tiny_graphs):
    g, _ = tiny_graphs
    x = inputs(10, seed=5)
    a = simulate(g, x, backend="emulator", precision="fixed", progress=False, batch_size=3, record=True)
    b = simulate(g, x[4:5], backend="emulator", precision="fixed", progress=False, record=True)
    assert np.array_equal(a.trace[4:5], b.trace)
    for k, v in b.extra["spike_trains"].items():
        assert np.array_equal(a.extra["spike_trains"][k][4:5], v)
    assert a.trace.shape == (10, 13, 10) and a.steps == 13


def test_bad_input(tiny_graphs):
    with pytest.raises(UserError, match="features"):
        simulate(tiny_graphs[0], np.zeros((2, 8, 5)), backend="emulator", precision="fixed", progress=False)
    with pytest.raises(UserError, match="samples, frames, features"):
        simulate(tiny_graphs[0], np.zeros((8, 8)), backend="emulator", precision="fixed", progress=False)


@pytest.mark.parametrize("precision", ["fixed", "float"])
def test_threshold_ties_and_wide_weights_by_hand(precision):
    g = edge_graph()
    net = lower(g)
    wide = next(s for s in net.synapses if s.name == "readout.in")
    assert len(wide.terms) == 2  # the 9-bit mantissas are split into two 8-bit Dense terms
    r = simulate(g, EDGE_X, backend="emulator", precision=precision, progress=False, record=True)
    assert np.array_equal(r.extra["spike_trains"]["a"], EDGE_SPIKES)
    assert np.array_equal(r.trace, edge_trace())  # exact: every value lies on the grids
    assert r.trace[0, -1].tolist() == [127 / 256, 129 / 256]
    ref = simulate(g, EDGE_X, backend="torch", progress=False)
    assert np.array_equal(ref.trace, edge_trace())


def test_integrator_wraps_at_24_bits():
    g = wrap_graph()
    net = lower(g)
    frac = net.populations["readout"].frac
    fixed = simulate(g, WRAP_X, backend="emulator", precision="fixed", progress=False)
    assert np.array_equal(fixed.trace, wrapped_trace(frac))
    assert fixed.trace[0, 1, 0] < 0  # 200 does not fit: it wrapped to a negative state
    floating = simulate(g, WRAP_X, backend="emulator", precision="float", progress=False)
    assert floating.trace[0, :, 0].tolist() == [100.0, 200.0, 227.5]


def test_encode_input_rounds_off_grid_values_to_nearest():
    """The input grid is 2**-8: rint (half to even) of x * 256, clipped to 16 bits."""
    net = lower(wrap_graph())
    lsb = 2.0**-8
    x = np.array([1 / 3, -1 / 3, 0.7 * lsb, -0.7 * lsb, 0.3 * lsb, 0.5 * lsb, 1.5 * lsb, 2.5 * lsb,
                  -1.5 * lsb,
                  127.999, -128.0, -128.01])
    assert net.encode_input(x).tolist() == [85, -85, 1, -1, 0, 0, 2, 2, -2, 2**15 - 1, -(2**15), -(2**15)]
    assert net.encode_input(x).dtype == np.int32
    # 127.999 * 256 rounds to 32768 and -128.01 to -32771: both outside 16 bits
    assert net.clipped_fraction(x) == 2 / 12
    assert net.clipped_fraction(np.zeros(0)) == 0.0


def test_graded_synapses_round_half_up(digits_graph):
    """Every graded synapse term (input, memory) is rounded half up onto the target's grid
    by its source's constant channel: the emulator's Dense output == floor(exact + 1/2),
    computed in Python integers; floor without the channel (round_graded=False)."""
    from backends.emulator import Emulator

    net = lower(digits_graph, steps=13)
    graded = [s for s in net.synapses if s.graded]
    assert {s.source for s in graded} == {"input", "block0.lmu.memory"}
    emu = Emulator(net, fixed=True)
    rng = np.random.default_rng(7)
    floors = Emulator(lower(digits_graph, steps=13, round_graded=False), fixed=True)
    for s in graded:
        n_in = net.populations[s.source].size
        src = rng.integers(-(2**15), 2**15, size=(64, n_in)).astype(np.int64)
        src[0] = 0
        for j, t in enumerate(s.terms):
            assert t.shift >= 2 and t.round_channel is not None
            assert net.populations[s.source].consts[t.round_channel] == 2 ** (t.shift - 2)
            exact = src @ t.weights.astype(np.int64).T  # int64, exact
            want = (exact + 2 ** (t.shift - 1)) // 2**t.shift
            emu.w[s.name + "#"] = [emu.w[s.name][j]]
            got = emu._synapse(s.name + "#", src, True)
            assert np.array_equal(got, want), s.name
            assert np.all(got[0] == 0)  # a zero sum stays 0
            floors.w[s.name + "#"] = [floors.w[s.name][j]]
            assert np.array_equal(floors._synapse(s.name + "#", src, True), exact // 2**t.shift)
            err = got * 2**t.shift - exact
            assert np.all(np.abs(err) <= 2 ** (t.shift - 1))


def test_spike_identity_counts():
    from lmuformer.analysis.spikes import spike_identity

    ref = {n: np.zeros((4, 3, 2), bool) for n in ("a", "b", "c")}
    run = {n: v.copy() for n, v in ref.items()}
    run["c"][0, 2, 1] = True  # sample 0 differs in c only
    run["b"][1, 0, 0] = run["c"][1, 0, 0] = True  # sample 1 first in b (graph order a, b, c)
    r = spike_identity(run, ref, ["a", "b", "c"])
    assert r["identical"] == 0.5 and r["identical_samples"] == 2 and r["samples"] == 4
    assert r["first_divergence"] == "b" and r["first_divergence_samples"] == {"b": 1, "c": 1}
    assert spike_identity(ref, ref, ["c", "b", "a"])["first_divergence"] is None
    with pytest.raises(UserError):
        spike_identity({"a": ref["a"]}, ref, ["a", "b", "c"])


def test_one_term_export_spikes_as_its_float_graph():
    """One 8-bit term per weight: spike synapses exact, graded ones rounded half up, the memory
    on a 2**-20 grid.  Measured on 64 random samples: 62 identical (0.97), and a sample can
    only diverge first where the rounded graded input enters (patch.stage0)."""
    from lmuformer.analysis.spikes import fixed_vs_float

    g = model_to_nir(active_model("tiny"), ExportOptions(quantize=True, weight_terms=1, lmu_terms=1))
    x = inputs(64, seed=3)
    y = np.arange(64) % 10
    both, fx, fl = fixed_vs_float(g, x, y)
    r = both["spike_identity"]
    assert r["identical"] >= 0.9, r
    assert set(r["first_divergence_samples"]) <= {"patch.stage0.lif"}, r
    assert np.array_equal(fx.predictions, fl.predictions)
    assert both["agreement"] == 1.0 and both["agreement_bar_met"] and both["a_in_overflow"] == {}
    assert both["deployed_accuracy"] == np.mean(fx.predictions == y) == both["float_graph_accuracy"]
    assert fixed_vs_float(g, x[:4])[0]["deployed_accuracy"] is None


def test_simulate_cli_reports_spike_identity(tiny_graphs, tmp_path):
    from click.testing import CliRunner

    from export.io import write_graph
    from lmuformer.cli import cli

    path = tmp_path / "tiny.nir"
    write_graph(tiny_graphs[0], path)
    res = CliRunner().invoke(cli, ["simulate", str(path), "--random", "--samples", "4",
                                    "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "identical spike trains (vs the float graph): " in res.output
    import json

    ident = json.loads((tmp_path / "r.json").read_text())["spike_identity"]
    assert ident["samples"] == 4 and 0 <= ident["identical_samples"] <= 4
