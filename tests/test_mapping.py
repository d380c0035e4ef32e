"""``lmuf map``: placements computed by hand on small hand-built networks, chip counts, the
hardware files, the optimisations, the scv2 preset and the CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from backends.fixed_point import DenseTerm, Network, Population, Synapse
from lmuformer.analysis.mapping import (
    BUILTIN,
    Figure,
    Hardware,
    Options,
    get_hardware,
    load_hardware_file,
    place,
)
from lmuformer.analysis.mapping.hardware import check
from lmuformer.analysis.mapping.placement import compare, secondary_terms, with_optimisations
from lmuformer.errors import UserError


def _hw(**over) -> Hardware:
    figs = {"cores_per_chip": 2, "neurons_per_core": 4, "synaptic_memory_bits": 200, "weight_bits": 8,
            "max_delay": 4, "delay_bits": 6, "graded_bits": 24, "t_synop_ns": 1.0, "t_neuron_ns": 2.0,
            "t_neuron_active_ns": 3.0, "t_barrier_ns": 10.0}
    figs.update(over)
    figures = {k: Figure(v, "test") for k, v in figs.items() if v is not None}
    return check(Hardware("toy", "test", figures), "toy")


B_MASK = np.array([[1, 1, 0, 0, 0, 0],   # nnz 2
                   [0, 0, 1, 1, 1, 1],   # nnz 4
                   [1, 1, 1, 1, 1, 1]])  # nnz 6


def _net(b_delay: int = 1) -> Network:
    """input(2) -> A (6 LIF, dense 6x2) -> B (3 LIF, 3x6 with zeros, delay ``b_delay``)."""
    pops = {"in": Population("in", "input", 2), "A": Population("A", "lif", 6),
            "B": Population("B", "lif", 3)}
    s1 = Synapse("A.syn0", "in", "A", 0, True, np.ones((6, 2)),
                 [DenseTerm(np.full((6, 2), 2, np.int32), 0, -3)])
    s2 = Synapse("B.syn0", "A", "B", b_delay, False, B_MASK * 1.0,
                 [DenseTerm(B_MASK.astype(np.int32) * 4, 0, -3)])
    return Network(pops, [s1, s2], "in", "B", 0, 1.0, 16, 8)


def _layout(r: dict) -> list[list[tuple[str, int, int]]]:
    return [[(p["name"], p["start"], p["stop"]) for p in c["populations"]] for c in r["cores"]]


def test_dense_placement_by_hand():
    """A: 2 x 8 = 16 bits a neuron; B: 6 x (8 + 6 delay bits) = 84.  Split: A by neurons into
    [0:4] + [4:6]; B by memory (200 bits: 2 rows) into [0:2] + [2:3].  FFD by memory: B[0:2]
    (168) opens a core, B[2:3] (84) does not fit it, A[0:4] (64) fits neither (neurons),
    A[4:6] (32) fills the first core to 200 bits and 4 neurons."""
    r = place(_net(), _hw(), Options(), steps=5)
    assert _layout(r) == [[("A", 0, 4)], [("A", 4, 6), ("B", 0, 2)], [("B", 2, 3)]]
    assert [c["memory_bits"] for c in r["cores"]] == [64, 200, 84]
    assert [c["neurons"] for c in r["cores"]] == [4, 4, 1]
    assert [c["synapses"] for c in r["cores"]] == [8, 4 + 12, 6]
    assert [c["fan_in"] for c in r["cores"]] == [2, 2 + 6, 6]
    assert [c["chip"] for c in r["cores"]] == [0, 0, 1]
    t = r["totals"]
    assert (t["cores"], t["chips"], t["memory_bits"], t["neurons"]) == (3, 2, 348, 9)
    assert t["memory_utilisation"] == pytest.approx(348 / 600)


def test_activity_and_time_by_hand():
    rates = {"in": np.ones(2), "A": np.array([0.5, 0, 0, 0, 0.25, 0.25]), "B": np.array([1.0, 0, 0])}
    r = place(_net(), _hw(), Options(), rates, steps=5)
    c0, c1, c2 = r["cores"]
    assert c0["messages_per_step"] == 2 and c0["sops_per_step"] == 8  # 4 rows x 2 graded inputs
    assert c1["messages_per_step"] == 2 + 1.0  # input axons + every A axon (dense B rows)
    assert c1["sops_per_step"] == 2 * 2 + 2 * 1.0  # A[4:6] rows x 2; 2 dense B rows x sum(rates A)
    assert c2["sops_per_step"] == 1.0
    assert [p["sops_per_step"] for p in c1["populations"]] == [4, 2.0]
    # time (ns): sops x 1 + neurons x 2 + spikes x (3 - 2)
    assert c0["time_per_step_s"] == pytest.approx((8 + 4 * 2 + 0.5) * 1e-9)
    assert c1["time_per_step_s"] == pytest.approx((6 + 4 * 2 + (0.5 + 1.0)) * 1e-9)
    assert r["totals"]["busiest_core"] == 0
    assert r["totals"]["time_per_step_s"] == pytest.approx((16.5 + 10) * 1e-9)
    assert r["totals"]["time_per_inference_s"] == pytest.approx(5 * 26.5e-9)
    assert r["activity"] == "measured"


def test_sparse_and_axon_delays_by_hand():
    """Sparse entry = 8 + 2 (index: 4 neurons) + 6 (delay) = 16 bits: B rows 32, 64, 96 (192 <
    252 dense) fit one core; A stays dense (96 < 12 x 10).  Axon delays: B rows 6 x 8 = 48, all
    three (144 bits) on one core; both: B sparse at 8 + 2 bits, 12 x 10 = 120 < 144."""
    r = place(_net(), _hw(), with_optimisations(Options(), ["sparse"]))
    assert _layout(r) == [[("A", 0, 4)], [("A", 4, 6)], [("B", 0, 3)]]
    assert [c["memory_bits"] for c in r["cores"]] == [64, 32, 192]
    assert r["cores"][2]["synapses"] == 12 and r["cores"][2]["fan_in"] == 6
    r = place(_net(), _hw(), with_optimisations(Options(), ["axon-delays"]))
    assert [c["memory_bits"] for c in r["cores"]] == [64, 32, 144]
    assert _layout(r) == [[("A", 0, 4)], [("A", 4, 6)], [("B", 0, 3)]]
    rows = compare(_net(), _hw(), Options(), ["sparse", "axon-delays"])
    assert [v["variant"] for v in rows] == ["as lowered", "sparse", "axon-delays", "sparse + axon-delays"]
    assert [v["memory_bits"] for v in rows] == [348, 288, 240, 96 + 120]


def test_fan_in_limit_splits():
    """B's sparse rows need axons {0, 1}, {2..5}, {0..5}: union 6, so with 6 axons a core B
    fits one core; with 5, rows 0 and 1 would still share one (6 > 5: no) and row 2 alone needs
    6: an error."""
    sparse = with_optimisations(Options(share_cores=False), ["sparse"])
    r = place(_net(), _hw(fan_in_axons=6, synaptic_memory_bits=10_000), sparse)
    assert [c["fan_in"] for c in r["cores"] if c["populations"][0]["name"] == "B"] == [6]
    with pytest.raises(UserError, match="neuron 2 alone"):
        place(_net(), _hw(fan_in_axons=5, synaptic_memory_bits=10_000), sparse)


def test_graph_that_needs_several_chips():
    """140,000 neurons fed by one input: 1,024 per Loihi 1 core -> 137 cores -> 2 chips."""
    n = 140_000
    pops = {"in": Population("in", "input", 1), "P": Population("P", "lif", n)}
    syn = Synapse("P.syn0", "in", "P", 0, True, np.ones((n, 1)),
                  [DenseTerm(np.full((n, 1), 2, np.int32), 0, -1)])
    net = Network(pops, [syn], "in", "P", 0, 1.0, 16, 8)
    r = place(net, BUILTIN["loihi1"])
    assert r["totals"]["cores"] == 137 and r["totals"]["chips"] == 2
    assert r["cores"][-1]["neurons"] == n - 136 * 1024 and r["cores"][-1]["chip"] == 1
    assert r["cores"][0]["memory_bits"] == 1024 * 8
    assert place(net, BUILTIN["loihi2"])["totals"]["cores"] == 18  # 8,192 a core: one chip


def test_bad_placements():
    with pytest.raises(UserError, match="splitting is off"):
        place(_net(), _hw(), Options(split=False))
    with pytest.raises(UserError, match="alone needs 84 bits"):
        place(_net(), _hw(synaptic_memory_bits=80))
    with pytest.raises(UserError, match="exceeds the target's max_delay"):
        place(_net(b_delay=5), _hw())


def test_builtin_figures_are_sourced():
    for hw in BUILTIN.values():
        for key, f in hw.figures.items():
            assert f.source.strip(), key
            if f.assumption:
                assert "assumption" in f.source or "derived" in f.source, (hw.name, key)
    assert BUILTIN["loihi2"].index_bits == 13 and BUILTIN["loihi1"].index_bits == 10
    notes = place(_net(), BUILTIN["loihi1"])["notes"]
    assert any("no graded spikes" in n for n in notes)


def test_hardware_files(tmp_path):
    good = tmp_path / "chip.toml"
    good.write_text('source = "datasheet"\ncores_per_chip = 2\nneurons_per_core = 4\n'
                    'synaptic_memory_bits = 200\nweight_bits = 8\nmax_delay = 4\ndelay_bits = 6\n'
                    't_synop_ns = {value = 1.0, source = "guess", assumption = true}\n')
    hw = load_hardware_file(good)
    assert hw.name == "chip" and hw.figures["t_synop_ns"].assumption
    assert place(_net(), hw)["totals"]["cores"] == 3
    assert place(_net(), hw)["totals"]["time_per_step_s"] is None  # no t_neuron_ns: no estimate
    bad = {
        "missing": {"source": "x", "cores_per_chip": 2, "neurons_per_core": 4, "weight_bits": 8},
        "negative": {"source": "x", "cores_per_chip": 2, "neurons_per_core": -4, "synaptic_memory_bits": 9,
                     "weight_bits": 8},
        "fraction": {"source": "x", "cores_per_chip": 2.5, "neurons_per_core": 4, "synaptic_memory_bits": 9,
                     "weight_bits": 8},
        "nosource": {"cores_per_chip": 2, "neurons_per_core": 4, "synaptic_memory_bits": 9, "weight_bits": 8},
        "unknown": {"source": "x", "cores": 2},
        "delay": {"source": "x", "cores_per_chip": 2, "neurons_per_core": 4, "synaptic_memory_bits": 9,
                  "weight_bits": 8, "max_delay": 64, "delay_bits": 6},
    }
    for name, data in bad.items():
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(data))
        with pytest.raises(UserError):
            get_hardware(str(p))
    with pytest.raises(UserError, match="unknown target"):
        get_hardware("truenorth")


@pytest.fixture(scope="module")
def tiny_nir(tmp_path_factory):
    from export import model_to_nir, write_graph
    from lmuformer.model import build_model
    from lmuformer.model.calibrate import activate

    path = tmp_path_factory.mktemp("map") / "tiny.nir"
    write_graph(model_to_nir(activate(build_model("tiny"))), path)
    return path


def test_one_term_drops_the_secondary_terms(tiny_nir):
    from backends.fixed_point import lower
    from export import read_graph

    net = lower(read_graph(tiny_nir))
    sec = secondary_terms(net)
    assert sec and all(n.endswith(".term1") for n in sec)
    full = place(net, BUILTIN["loihi2"])["totals"]
    one = place(net, BUILTIN["loihi2"], with_optimisations(Options(), ["one-term"]))["totals"]
    kept = sum(t.weights.size for s in net.synapses if s.name not in sec and s.source != net.input
               for t in s.terms)
    inputs = sum(t.weights.size for s in net.synapses if s.name not in sec and s.source == net.input
                 for t in s.terms)
    assert one["synapses"] == kept + inputs < full["synapses"]


def _invoke(args):
    from lmuformer.cli import cli

    return CliRunner().invoke(cli, ["map", *args], catch_exceptions=True)


def test_cli_run_formats_and_plot(tiny_nir, tmp_path):
    png = tmp_path / "map.png"
    res = _invoke([str(tiny_nir), "--random", "--samples", "2", "--json", "--plot", str(png),
                   "--opt", "sparse"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    data = json.loads(res.output)
    assert data["activity"] == "measured" and data["samples"] == 2 and data["options"]["encoding"] == "auto"
    assert data["totals"]["messages_per_step"] > 0 and data["totals"]["time_per_step_s"] > 0
    assert [v["variant"] for v in data["comparison"]] == ["as lowered", "sparse"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = _invoke([str(tiny_nir), "--target", "loihi1", "--format", "markdown"])
    assert res.exit_code == 0 and "| core |" in res.output and "Davies" in res.output
    res = _invoke([str(tiny_nir)])
    assert max(len(line) for line in res.output.splitlines()) <= 100 and "worst case" in res.output


def test_cli_bad_input_one_line_exit_2(tiny_nir, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('source = "x"\ncores_per_chip = 0\nneurons_per_core = 4\nsynaptic_memory_bits = 9\n'
                   'weight_bits = 8\n')
    small = tmp_path / "small.toml"
    small.write_text('source = "x"\ncores_per_chip = 4\nneurons_per_core = 64\nsynaptic_memory_bits = 4096\n'
                     'weight_bits = 8\nmax_delay = 8\ndelay_bits = 6\n')
    cases = [["--target", str(bad)], ["--no-split", "--target", str(small)], ["--opt", "magic"]]
    assert isinstance(_invoke([str(tiny_nir), *cases[2]]).exception, UserError)
    from lmuformer.cli import main

    for args, what in zip(cases[:2], ("impossible", "splitting is off"), strict=True):
        monkeypatch.setattr(sys, "argv", ["lmuf", "map", str(tiny_nir), *args])
        with pytest.raises(SystemExit) as e:
            main()
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1
        assert what in err


def test_scv2_preset_places():
    """The scv2 preset's graph (1,689,894 parameters; 5.8 M synapses) is placed (the timing is
    in benchmarks/results/mapping.json)."""
    from backends.fixed_point import lower
    from export import model_to_nir
    from lmuformer.model import build_model

    net = lower(model_to_nir(build_model("scv2").eval()))
    r = place(net, BUILTIN["loihi2"], steps=133)
    assert r["totals"]["chips"] == 1 and r["totals"]["cores"] > 20
    assert r["totals"]["time_per_step_s"] > 0 and r["totals"]["max_core_memory_bits"] <= 128 * 1024 * 8


def test_const_population_takes_no_core_and_sends_every_step():
    """The constant population behind a current bias (kind "const") is a host-side source like
    the Input: no neuro-core, no neurons counted; its synapses sit on the target's core and its
    value 1 arrives every step (one axon, one SOP per nonzero row), by hand."""
    pops = {"in": Population("in", "input", 2), "const.one": Population("const.one", "const", 1),
            "A": Population("A", "lif", 3)}
    s1 = Synapse("A.syn0", "in", "A", 0, True, np.ones((3, 2)),
                 [DenseTerm(np.full((3, 2), 2, np.int32), 0, -3)])
    bias = np.array([[1.0], [0.0], [-2.0]])
    s2 = Synapse("A.current_bias", "const.one", "A", 0, True, bias,
                 [DenseTerm(np.array([[2], [0], [-4]], np.int32), 0, -1)])
    net = Network(pops, [s1, s2], "in", "A", 0, 1.0, 16, 8)
    r = place(net, _hw(neurons_per_core=8), Options(encoding="sparse"),
              {"in": np.ones(2), "const.one": np.ones(1), "A": np.zeros(3)}, steps=4)
    assert list(r["populations"]) == ["A"] and r["totals"]["cores"] == 1 and r["totals"]["neurons"] == 3
    (core,) = r["cores"]
    assert core["fan_in"] == 2 + 1 and core["messages_per_step"] == 3.0
    assert core["synapses"] == 6 + 2 and core["sops_per_step"] == 8.0  # sparse: the nonzero rows only
    # a target without graded spikes: only the Input's graded values are a problem, the const's 1 is a spike
    no_graded = place(net, _hw(graded_bits=None, neurons_per_core=8), Options(encoding="sparse"))
    assert any("in send graded values" in n for n in no_graded["notes"])
    assert not any("const.one" in n for n in no_graded["notes"])
