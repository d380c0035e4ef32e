"""``lmuf report``: SOP / MAC / neuron-update / energy arithmetic checked by hand on tiny
hand-built NIR graphs, the formats, profile files, the ANN baseline and the CLI."""

from __future__ import annotations

import csv
import io
import json
from types import SimpleNamespace

import nir
import numpy as np
import pytest
from click.testing import CliRunner

from backends import SimulationResult, simulate
from backends.fixed_point import lower
from lmuformer.analysis import BUILTIN, build_report, get_profile, layer_counts, load_profile_file
from lmuformer.analysis.ann import ann_baseline, ann_macs_per_frame
from lmuformer.analysis.format import FORMATS, render
from lmuformer.analysis.profiles import LOIHI2_NOTE, resolve_profiles
from lmuformer.errors import UserError
from tests.conftest import skip_without_lava

PJ = 1e-12


def _lif(n: int, th: float) -> nir.LIF:
    # tau = dt: v <- v + (0 - v + x) = x every step, so a neuron spikes iff its input > th
    return nir.LIF(tau=np.ones(n), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.full(n, th),
                   v_reset=np.zeros(n))


def tiny_graph() -> nir.NIRGraph:
    """input(2) -> a(3 LIF) -> b(2 LIF, silent) -> readout(2 I); a -> mem(2 I) -> b.

    a -> b directly (W1) and through a one-step Delay (W2): both taps count.  Zeros in every matrix.
    """
    lin = nir.Linear
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2])}),
        "a.in": lin(weight=np.array([[1.0, 0], [0, 1], [1, 1]])),  # nnz 4
        "a": _lif(3, 0.5),
        "b.syn0": lin(weight=np.array([[1.0, 0, 2], [0, 0, 3]])),  # column nnz [1, 0, 2]
        "a.delay1": nir.Delay(delay=np.ones(3)),
        "b.syn1": lin(weight=np.array([[1.0, 1, 1], [0, 1, 0]])),  # column nnz [1, 2, 1]
        "mem.in": lin(weight=np.array([[1.0, 0, 0], [0, 0, 1]])),  # column nnz [1, 0, 1]
        "mem": nir.I(r=np.ones(2)),
        "mem.delay1": nir.Delay(delay=np.ones(2)),
        "mem.rec": lin(weight=np.array([[0.5, 0], [0.25, 0.5]])),  # nnz 3
        "b.syn2": lin(weight=np.array([[1.0, 0], [0, 0]])),  # nnz 1
        "b": _lif(2, 1e6),
        "readout.syn0": nir.Affine(weight=np.array([[1.0, -1], [0, 2]]), bias=np.array([0.1, 0.0])),
        "readout": nir.I(r=np.ones(2)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [
        ("input", "a.in"), ("a.in", "a"),
        ("a", "b.syn0"), ("b.syn0", "b"),
        ("a", "a.delay1"), ("a.delay1", "b.syn1"), ("b.syn1", "b"),
        ("a", "mem.in"), ("mem.in", "mem"),
        ("mem", "mem.delay1"), ("mem.delay1", "mem.rec"), ("mem.rec", "mem"),
        ("mem", "b.syn2"), ("b.syn2", "b"),
        ("b", "readout.syn0"), ("readout.syn0", "readout"), ("readout", "output"),
    ]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0, "latency_frames": 1})


# a's input is (x0, x1, x0 + x1): sample 0 spikes 1, 1, 2 times (4); sample 1 twice each (6)
X = np.array([
    [[1, 0], [0, 0], [0, 1]],
    [[1, 1], [1, 1], [0, 0]],
], dtype=np.float32)
FRAMES, STEPS = 3, 4  # 3 frames + 1 latency step


@pytest.fixture(scope="module")
def run():
    g = tiny_graph()
    return g, simulate(g, X, backend="torch", progress=False)


def _by_name(report: dict) -> dict[str, dict]:
    return {r["name"]: r for r in report["layers"]}


def test_spike_raster_is_the_expected_one(run):
    _, r = run
    assert r.steps == STEPS
    np.testing.assert_array_equal(r.spikes["a"], [4, 6])
    np.testing.assert_array_equal(r.spikes["b"], [0, 0])


def test_counts_by_hand(run):
    g, r = run
    layers = {la.name: la for la in layer_counts(g, r)}
    assert set(layers) == {"input", "a", "mem", "b", "readout"}
    a = layers["a"]
    np.testing.assert_array_equal(a.fan_out, [3, 2, 4])  # both taps (direct and delayed) count
    assert (a.kind, a.neurons, a.synapses, a.steps) == ("spiking", 3, 9, STEPS)
    np.testing.assert_allclose(a.sops, [4 * 3.0, 6 * 3.0])  # spikes x mean fan-out
    np.testing.assert_allclose(a.neuron_updates, [12, 12])
    np.testing.assert_allclose(a.active_updates, [4, 6])
    inp = layers["input"]
    assert (inp.kind, inp.synapses, inp.steps) == ("input", 4, FRAMES)
    np.testing.assert_allclose(inp.macs, [12, 12])  # dense MACs on the real-valued frames
    np.testing.assert_allclose(inp.neuron_updates, 0)
    mem = layers["mem"]
    assert (mem.kind, mem.synapses) == ("graded", 4)  # recurrent (delayed) 3 + to b 1
    np.testing.assert_allclose(mem.macs, [16, 16])  # graded: every step
    np.testing.assert_allclose(mem.sops, 0)
    np.testing.assert_allclose(mem.active_updates, [8, 8])
    assert layers["b"].synapses == 3 and layers["readout"].synapses == 0
    np.testing.assert_allclose(layers["b"].sops, 0)


def test_per_neuron_spike_counts_are_used_when_reported(run):
    g, r = run
    per_neuron = {"a": np.array([[1, 1, 2], [2, 2, 2]])}
    r2 = SimulationResult(r.backend, r.precision, r.readout, r.trace, r.spikes, r.neurons, r.steps, 0.0,
                          extra={"neuron_spikes": per_neuron})
    a = {la.name: la for la in layer_counts(g, r2)}["a"]
    np.testing.assert_allclose(a.sops, [1 * 3 + 1 * 2 + 2 * 4, 2 * 9])


def test_energy_by_hand(run):
    g, r = run
    rep = build_report(g, r, [BUILTIN["45nm"], BUILTIN["loihi"]], ann=False)
    L, t = _by_name(rep), rep["total"]
    a = L["a"]
    assert a["spikes"] == 5 and a["spikes_std"] == 1 and a["sops"] == 15 and a["sops_std"] == 3
    assert a["firing_rate"] == pytest.approx(5 / 12)
    assert a["fan_out"] == 3 and a["neuron_updates"] == 12 and a["active_neuron_updates"] == 5
    # 45 nm: E_AC x SOPs + E_MAC x MACs, neuron updates not priced
    assert L["input"]["energy_j"]["45nm"] == pytest.approx(12 * 4.6 * PJ)
    assert a["energy_j"]["45nm"] == pytest.approx(15 * 0.9 * PJ)
    assert L["mem"]["energy_j"]["45nm"] == pytest.approx(16 * 4.6 * PJ)
    assert L["b"]["energy_j"]["45nm"] == 0 and L["readout"]["energy_j"]["45nm"] == 0
    assert t["energy_j"]["45nm"] == pytest.approx((12 * 4.6 + 15 * 0.9 + 16 * 4.6) * PJ)
    # Loihi: 23.6 pJ per op, 52 pJ inactive / 81 pJ active neuron update
    assert a["energy_j"]["loihi"] == pytest.approx((15 * 23.6 + 7 * 52 + 5 * 81) * PJ)
    assert L["mem"]["energy_j"]["loihi"] == pytest.approx((16 * 23.6 + 8 * 81) * PJ)
    assert L["b"]["energy_j"]["loihi"] == pytest.approx(8 * 52 * PJ)
    want = (12 * 23.6) + (15 * 23.6 + 7 * 52 + 5 * 81) + (16 * 23.6 + 8 * 81) + 8 * 52 + 8 * 52
    assert t["energy_j"]["loihi"] == pytest.approx(want * PJ)
    per_sample = [(12 * 23.6) + (s * 3 * 23.6 + (12 - s) * 52 + s * 81) + (16 * 23.6 + 8 * 81) + 16 * 52
                  for s in (4, 6)]
    assert t["energy_j_std"]["loihi"] == pytest.approx(np.std(per_sample) * PJ)
    by_kind = t["energy_by_kind_j"]["loihi"]
    assert sum(by_kind.values()) == pytest.approx(t["energy_j"]["loihi"])
    assert by_kind["sop"] == pytest.approx(15 * 23.6 * PJ)
    # totals are sums
    assert (t["neurons"], t["synapses"], t["spikes"], t["sops"], t["macs"], t["neuron_updates"]) == (
        9, 20, 5, 15, 28, 12 + 8 + 8 + 8)
    assert rep["samples"] == 2 and rep["backend"] == "torch" and rep["frames"] == FRAMES


def test_profile_files(tmp_path, run):
    toml = tmp_path / "mine.toml"
    toml.write_text('source = "made up for a test"\nsop_pj = 1\nmac_pj = 2\nneuron_update_pj = 3\n'
                    "neuron_update_active_pj = 4\n")
    js = tmp_path / "other.json"
    js.write_text(json.dumps({"name": "js", "source": "also made up", "sop_pj": 1.5}))
    p = load_profile_file(toml)
    assert p.name == "mine" and p.sop_j == pytest.approx(1e-12) and p.figure("neuron_update_active") == 4e-12
    q = get_profile(str(js))
    assert q.name == "js" and q.mac_j is None and set(q.unpriced()) == {
        "mac", "neuron_update", "neuron_update_active"}
    g, r = run
    rep = build_report(g, r, [p, q], ann=False)
    # input 12 x 2 + a (15 x 1 + 7 x 3 + 5 x 4) + mem (16 x 2 + 8 x 4) + b 8 x 3 + readout 8 x 3
    assert rep["total"]["energy_j"]["mine"] == pytest.approx(192 * PJ)
    assert rep["total"]["energy_j"]["js"] == pytest.approx(15 * 1.5 * PJ)
    assert rep["profiles"]["mine"]["source"] == "made up for a test"
    bad = tmp_path / "bad.toml"
    for text in ('sop_pj = 1\n', 'source = "x"\n', 'source = "x"\nsop_pj = -1\n', 'source = "x"\nfoo = 1\n',
                 "not toml ["):
        bad.write_text(text)
        with pytest.raises(UserError):
            load_profile_file(bad)
    with pytest.raises(UserError, match="Loihi 2"):
        get_profile("loihi2")
    with pytest.raises(UserError):
        get_profile("nonesuch")
    assert "Loihi 2" in LOIHI2_NOTE and "Loihi 2" in BUILTIN["loihi"].notes
    assert [p.name for p in resolve_profiles(None)] == ["45nm", "loihi", "spinnaker2"]


def test_formats(run):
    g, r = run
    rep = build_report(g, r, resolve_profiles(None), ann=False, source="hand.nir")
    data = json.loads(render(rep, "json"))
    for key in ("layers", "total", "profiles", "ann_baseline", "samples", "backend"):
        assert key in data
    for row in data["layers"] + [data["total"]]:
        for key in ("name", "neurons", "synapses", "fan_out", "steps", "spikes", "spikes_std", "firing_rate",
                    "sops", "macs", "neuron_updates", "energy_j"):
            assert key in row
        assert set(row["energy_j"]) == {"45nm", "loihi", "spinnaker2"}
    assert data["profiles"]["45nm"]["figures_j"]["mac"] == pytest.approx(4.6e-12)
    rows = list(csv.DictReader(io.StringIO(render(rep, "csv"))))
    assert [x["name"] for x in rows] == [x["name"] for x in data["layers"]] + ["total"]
    assert float(rows[-1]["energy_j_45nm"]) == pytest.approx(data["total"]["energy_j"]["45nm"])
    table = render(rep, "table")
    assert max(len(line) for line in table.splitlines()) <= 100
    assert "Horowitz" in table and "Not included" in table
    md = render(rep, "markdown")
    assert "| layer |" in md and "Davies" in md
    with pytest.raises(ValueError):
        render(rep, "xml")


def test_ann_baseline():
    from lmuformer.model.config import preset

    # the paper's count of the non-spiking SCv2 model: ~215 M MACs per 128-frame sample
    scv2 = ann_baseline(preset("scv2"), 128, spiking_energy_j=1e-4)
    assert scv2["macs"] == 215_121_920
    assert scv2["energy_j"] == pytest.approx(215_121_920 * 4.6e-12)
    assert scv2["ratio"] == pytest.approx(scv2["energy_j"] / 1e-4)
    # tiny (in 8, dim 16, memory 16 for the ANN twin, hidden 32, 10 classes) by hand, per frame
    convs = 3 * 8 * 16 + 4 * 3 * 16 * 16
    lmu = 16 * 1 + (16 * 16 + 16) + 32 * 16 + 16 * 16
    mlp = 2 * 16 * 32
    assert sum(r["macs"] for r in ann_macs_per_frame(preset("tiny"))) == convs + lmu + mlp + 16 * 10


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tiny_nir(tmp_path_factory):
    from export import model_to_nir, write_graph
    from lmuformer.model import build_model
    from lmuformer.model.calibrate import activate

    path = tmp_path_factory.mktemp("report") / "tiny.nir"
    write_graph(model_to_nir(activate(build_model("tiny"))), path)
    return path


def _invoke(args):
    from lmuformer.cli import cli

    return CliRunner().invoke(cli, ["report", *args], catch_exceptions=True)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_random_every_format(tiny_nir, tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    res = _invoke([str(tiny_nir), "--random", "--samples", "2", "--backend", "torch", "--format", fmt,
                   "-o", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    text = out.read_text()
    assert not list(tmp_path.glob(".*.tmp"))
    if fmt == "json":
        data = json.loads(text)
        assert data["samples"] == 2 and data["total"]["spikes"] > 0 and data["ann_baseline"]["macs"] > 0
        names = [r["name"] for r in data["layers"]]
        assert names[0] == "input" and "block0.lmu.memory" in names and names[-1] == "readout"
        assert data["total"]["sops"] > 0 and data["total"]["macs"] > 0
    elif fmt == "table":
        assert max(len(line) for line in text.splitlines()) <= 100
    elif fmt == "csv":
        assert list(csv.DictReader(io.StringIO(text)))[-1]["name"] == "total"
    else:
        assert "| **total** |" in text


def test_cli_digits_plot_and_profile(tiny_nir, tmp_path):
    prof = tmp_path / "hw.json"
    prof.write_text(json.dumps({"source": "test", "sop_pj": 2}))
    png = tmp_path / "energy.png"
    res = _invoke([str(tiny_nir), "--dataset", "digits", "--samples", "3", "--backend", "torch",
                   "--profile", "45nm", "--profile", str(prof), "--format", "json", "--plot", str(png)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    data = json.loads(res.output)
    assert list(data["profiles"]) == ["45nm", "hw"] and data["samples"] == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors(tiny_nir, tmp_path):
    res = _invoke([str(tiny_nir), "--random", "--backend", "torch", "--profile", "loihi2"])
    assert isinstance(res.exception, UserError)
    res = _invoke([str(tmp_path / "missing.nir"), "--random", "--backend", "torch"])
    assert isinstance(res.exception, UserError)
    res = _invoke([str(tiny_nir), "--backend", "torch"])  # neither --dataset nor --random
    assert res.exit_code != 0


@pytest.mark.parametrize("other", ["lava"])
def test_emulator_and_lava_fixed_point_give_identical_counts(tiny_nir, other):
    """The same samples under the emulator and another fixed-point backend: identical counts."""
    from export import read_graph
    from tests.conftest import skip_without_lava

    skip_without_lava()  # never skipped in CI (Python 3.10; .ci/run sets LMUF_REQUIRE_LAVA)
    g = read_graph(tiny_nir)
    x = np.random.default_rng(0).standard_normal((2, 8, 8)).astype(np.float32)
    reports = [build_report(g, simulate(g, x, backend=b, precision="fixed", progress=False),
                            [BUILTIN["45nm"]]) for b in ("emulator", other)]
    keys = ("spikes", "sops", "macs", "neuron_updates", "energy_j")
    assert [[r[k] for k in keys] for r in reports[0]["layers"]] == [
        [r[k] for k in keys] for r in reports[1]["layers"]]


def test_report_document_by_hand(run):
    """Every top-level field and the total row of the hand graph's report."""
    from lmuformer.analysis.counts import ASSUMPTIONS

    g, r = run
    rep = build_report(g, r, [BUILTIN["45nm"]], ann=True, source="hand.nir")
    assert set(rep) == {"source", "backend", "precision", "samples", "steps", "frames", "dt", "layers",
                        "total", "profiles", "ann_baseline", "assumptions"}
    assert (rep["source"], rep["backend"], rep["precision"]) == ("hand.nir", "torch", "float")
    assert (rep["samples"], rep["steps"], rep["frames"], rep["dt"]) == (2, STEPS, FRAMES, 1.0)
    assert rep["ann_baseline"] is None  # no model config in the graph's metadata
    assert rep["assumptions"] == list(ASSUMPTIONS) and list(rep["profiles"]) == ["45nm"]
    t = rep["total"]
    # neurons: a 3 + mem 2 + b 2 + readout 2 (not the input); synapses 4 + 9 + 4 + 3 + 0 over the
    # 9 neurons that have any (input 2, a 3, mem 2, b 2)
    assert (t["name"], t["kind"], t["neurons"], t["synapses"], t["steps"]) == ("total", "total", 9, 20, STEPS)
    assert t["fan_out"] == pytest.approx(20 / 9)
    assert (t["spikes"], t["spikes_std"], t["sops"], t["sops_std"], t["macs"]) == (5, 1, 15, 3, 28)
    assert t["firing_rate"] == 5 / (5 * STEPS)  # spikes over the spiking neurons (a, b) x steps
    # updates: a 12, mem 8, b 8, readout 8; active: a's 5 spikes and mem's 8 (readout sends nothing)
    assert (t["neuron_updates"], t["active_neuron_updates"]) == (36, 13)
    L = _by_name(rep)
    assert L["input"]["firing_rate"] is None and L["mem"]["firing_rate"] is None
    assert L["input"]["fan_out"] == 2.0 and L["readout"]["fan_out"] == 0.0 and L["a"]["fan_out"] == 3.0
    assert L["input"]["steps"] == FRAMES and L["mem"]["steps"] == STEPS
    for layer in layer_counts(g, r):
        assert layer.fan_out.shape == (layer.neurons,) and layer.fan_out.dtype == np.int64
        for a in (layer.spikes, layer.sops, layer.macs, layer.neuron_updates, layer.active_updates):
            assert a.shape == (2,)
    outgoing = {la.name: sorted(la.outgoing) for la in layer_counts(g, r)}
    assert outgoing == {"input": ["a.in"], "a": ["b.syn0", "b.syn1", "mem.in"], "mem": ["b.syn2", "mem.rec"],
                        "b": ["readout.syn0"], "readout": []}
    # one sample: the standard deviation is 0
    one = SimulationResult(r.backend, r.precision, r.readout[:1], r.trace[:1],
                           {k: v[:1] for k, v in r.spikes.items()}, r.neurons, r.steps, 0.0, extra=None)
    rep1 = build_report(g, one, [BUILTIN["45nm"]], ann=False)
    assert rep1["total"]["spikes"] == 4 and rep1["total"]["spikes_std"] == 0.0
    assert rep1["total"]["energy_j_std"]["45nm"] == 0.0


def test_report_metadata_edges(run):
    g, r = run
    bare = nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata={})  # no dt, no latency: all steps are frames
    rep = build_report(bare, r, [BUILTIN["45nm"]], ann=False)
    assert rep["dt"] is None and rep["frames"] == STEPS
    assert _by_name(rep)["input"]["macs"] == 4 * STEPS
    flushed = nir.NIRGraph(nodes=g.nodes, edges=g.edges, metadata={"dt": 1.0, "latency_frames": STEPS})
    assert _by_name(build_report(flushed, r, [BUILTIN["45nm"]], ann=False))["input"]["macs"] == 0


def test_report_errors(run):
    g, r = run
    with pytest.raises(UserError, match="^select at least one energy profile$"):
        build_report(g, r, [])
    missing = SimulationResult(r.backend, r.precision, r.readout, r.trace, {"b": r.spikes["b"]}, r.neurons,
                               r.steps, 0.0)
    with pytest.raises(UserError, match="^the torch backend reported no spike counts for population 'a'$"):
        layer_counts(g, missing)
    bad = SimulationResult(r.backend, r.precision, r.readout, r.trace, {**r.spikes, "a": np.zeros(3)},
                           r.neurons, r.steps, 0.0)
    with pytest.raises(UserError, match=r"^spike counts of 'a' have shape \(3,\), expected \(2,\)$"):
        layer_counts(g, bad)


def test_sizes_scale_synapses_and_fan_out_errors():
    from lmuformer.analysis.counts import _size, fan_out, outgoing_synapses

    def size(node, edges=(), **more) -> int:
        return _size(SimpleNamespace(nodes={"x": node, **more}, edges=list(edges)), "x")  # nodes, edges

    node = nir.Input(input_type={"input": np.array([4])})
    assert size(node) == 4
    node.input_type = {"other": np.array([9]), "input": np.array([4])}  # the "input" port, not the first
    assert size(node) == 4
    node.input_type = {"x": np.array([2, 3])}  # no "input" port: the only one
    assert size(node) == 6
    assert size(_lif(5, 1.0)) == 5 and size(nir.I(r=np.ones(7))) == 7
    shared = nir.LIF(tau=np.array(0.01), r=np.array(1.0), v_leak=np.array(0.0), v_threshold=np.array(1.0),
                     v_reset=np.array(0.0))  # 0-d parameters, as Norse writes them: sized by its source
    assert size(shared, [("w", "x")], w=nir.Linear(weight=np.ones((4, 2)))) == 4
    with pytest.raises(UserError, match="^cannot tell the size of the LIF node 'x'$"):
        size(shared)
    nodes = {
        "a": _lif(3, 1.0),
        "s": nir.Scale(scale=np.array([1.0, 0.0, 2.0])),
        "d": nir.Delay(delay=np.ones(3)),
        "flat": nir.Linear(weight=np.ones((1, 1, 3))),
        "narrow": nir.Linear(weight=np.ones((1, 2))),
        "z": _lif(3, 1.0),
    }
    g = nir.NIRGraph(nodes=nodes, edges=[("a", "s"), ("s", "z"), ("a", "d"), ("d", "flat"), ("d", "narrow")],
                     metadata={"dt": 1.0}, type_check=False)
    assert outgoing_synapses(g, "z") == []  # no successors at all
    g1 = nir.NIRGraph(nodes={k: nodes[k] for k in ("a", "s", "z")}, edges=[("a", "s"), ("s", "z")],
                      metadata={}, type_check=False)
    fo, syn = fan_out(g1, "a", 3)
    assert fo.tolist() == [1, 0, 1] and syn == ["s"]
    with pytest.raises(UserError, match=r"^synapse weights must be 2-D \(out, in\), got shape \(1, 1, 3\)$"):
        fan_out(g, "a", 3)
    g2 = nir.NIRGraph(nodes={k: nodes[k] for k in ("a", "d", "narrow")}, edges=[("a", "d"), ("d", "narrow")],
                      metadata={}, type_check=False)
    with pytest.raises(UserError, match="^synapse 'narrow' takes 2 inputs but 'a' has 3 neurons$"):
        fan_out(g2, "a", 3)


def test_graded_layer_with_one_synapse_and_total_fan_out():
    """input(3) -> m(1 I) -> [2] -> readout(1 I): m has a single synapse and still sends every step;
    the total fan-out is synapses over the neurons that have any (input 3 + m 1), not over all."""
    nodes = {
        "input": nir.Input(input_type={"input": np.array([3])}),
        "m.in": nir.Linear(weight=np.ones((1, 3))),
        "m": nir.I(r=np.ones(1)),
        "readout.in": nir.Linear(weight=np.array([[2.0]])),
        "readout": nir.I(r=np.ones(1)),
        "output": nir.Output(output_type={"output": np.array([1])}),
    }
    edges = [("input", "m.in"), ("m.in", "m"), ("m", "readout.in"), ("readout.in", "readout"),
             ("readout", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0, "latency_frames": 0})
    r = simulate(g, np.ones((1, 2, 3), np.float32), backend="torch", progress=False)
    rep = build_report(g, r, [BUILTIN["45nm"]], ann=False)
    m = _by_name(rep)["m"]
    assert (m["synapses"], m["macs"], m["neuron_updates"], m["active_neuron_updates"]) == (1, 2, 2, 2)
    t = rep["total"]
    assert (t["neurons"], t["synapses"]) == (2, 4) and t["fan_out"] == 1.0
    assert t["firing_rate"] is None  # no spiking population


def test_ann_baseline_in_report_uses_the_spiking_energy(tiny_nir):
    from export import read_graph

    g = read_graph(tiny_nir)
    x = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    rep = build_report(g, simulate(g, x, backend="torch", progress=False), [BUILTIN["loihi"]], ann=True)
    ann = rep["ann_baseline"]
    spiking = sum(la.energy(BUILTIN["45nm"]).mean() for la in layer_counts(g, simulate(
        g, x, backend="torch", progress=False)))
    assert ann["frames"] == 8 and ann["spiking_energy_45nm_j"] == pytest.approx(spiking)
    assert ann["ratio"] == pytest.approx(ann["energy_j"] / spiking)


def test_profiles_by_hand(tmp_path, monkeypatch):
    from lmuformer.analysis.profiles import Profile

    p = Profile("p", "src", sop_j=1.0, neuron_update_j=2.0)
    assert p.figure("neuron_update_active") == 2.0  # defaults to the inactive figure
    assert Profile("q", "s", mac_j=1.0, neuron_update_active_j=3.0).figure("neuron_update") is None
    assert p.figure("mac") is None and p.unpriced() == ["mac"]
    with pytest.raises(KeyError, match="'spike'"):
        p.figure("spike")
    assert p.to_dict() == {"name": "p", "source": "src", "unpriced": ["mac"], "notes": "",
                           "figures_j": {"sop": 1.0, "mac": None, "neuron_update": 2.0,
                                         "neuron_update_active": 2.0}}
    for spelling in ("loihi2", "Loihi 2", "loihi-2", "LOIHI - 2"):
        with pytest.raises(UserError, match=r"^No per-op.* Loihi 1\. Use 'loihi' or a profile file\.$"):
            get_profile(spelling)
    with pytest.raises(UserError, match=r"^unknown profile 'nope'; built in: 45nm, loihi, spinnaker2, or a "
                                        r"\.toml/\.json file$"):
        get_profile("nope")
    # a path with a .toml/.json suffix (any case) is a file, found or not; an existing file is too
    with pytest.raises(UserError, match="^profile file not found: missing.TOML$"):
        get_profile("missing.TOML")
    with pytest.raises(UserError, match="^profile file not found: missing.json$"):
        get_profile("missing.json")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hw").write_text('source = "s"\nsop_pj = 0\nnotes = "n"\n', encoding="utf-8")
    hw = get_profile("hw")  # no suffix: read as TOML
    assert (hw.name, hw.sop_j, hw.notes) == ("hw", 0.0, "n")  # zero is a valid figure
    (tmp_path / "U.JSON").write_text('{"source": "s", "mac_pj": 2, "name": "\\u00b5hw"}', encoding="utf-8")
    u = get_profile("U.JSON")
    assert (u.name, u.mac_j, u.notes, u.sop_j) == ("\u00b5hw", 2e-12, "", None)
    with pytest.raises(UserError, match="^profile 'hw' given twice$"):
        resolve_profiles(["hw", "hw"])
    assert [q.name for q in resolve_profiles(["hw", "U.JSON"])] == ["hw", "\u00b5hw"]
    allowed = r"; allowed: a finite number in \[0, 1000000000\]$"
    cases = {
        "a.json": ('[1]', "a.json: a profile file must be one table/object$"),
        "b.toml": ('source = "s"\nsop_pj = 1\nwatts = 2\n',
                   r"b.toml: unknown profile keys \['watts'\]; known: \['mac_pj', 'name', "),
        "c.toml": ('source = "s"\nsop_pj = -1\n', "c.toml: sop_pj = -1 is out of range" + allowed),
        "d.toml": ('source = "s"\nsop_pj = true\n', "d.toml: sop_pj = True is not a number" + allowed),
        "e.toml": ('source = "s"\nmac_pj = "x"\n', "e.toml: mac_pj = 'x' is not a number" + allowed),
        "f.toml": ('source = "s"\n', "f.toml: a profile needs at least one of sop_pj, mac_pj, "
                                     "neuron_update_pj, neuron_update_active_pj$"),
        "g.toml": ('sop_pj = 1\nsource = " "\n', r"g.toml: a profile needs a 'source' string \(where"),
        "h.toml": ('sop_pj = [', r"h.toml: not a readable profile file \(TOMLDecodeError: "),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(UserError, match="^" + message):
            load_profile_file(name)
    with pytest.raises(UserError, match="^profile file not found: nowhere.toml$"):
        load_profile_file("nowhere.toml")


def _const_and_readout_graph() -> nir.NIRGraph:
    """input(2) -> Affine (bias: a current bias, lowered through the const population) -> CubaLIF(3)
    -> Affine (one zero weight) -> Output: the Output's own memoryless readout."""
    n = 3
    cuba = nir.CubaLIF(tau_syn=np.full(n, 2e-3), tau_mem=np.full(n, 4e-3), r=np.ones(n), v_leak=np.zeros(n),
                       v_threshold=np.full(n, 0.3), w_in=np.ones(n))
    head = np.array([[1.0, 0.0, 0.5], [0.25, -1.0, 1.0]])
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                            "fc": nir.Affine(weight=np.array([[1.0, 0.5], [0.5, 1.0], [1.0, -0.5]]),
                                             bias=np.array([0.25, 0.5, 0.125])),
                            "cuba": cuba, "head": nir.Linear(weight=head),
                            "output": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("input", "fc"), ("fc", "cuba"), ("cuba", "head"), ("head", "output")],
                     metadata={"dt": 1e-3})
    return g


@pytest.mark.parametrize("backend", ["emulator", "lava"])
def test_const_population_and_memoryless_readout_counts_by_hand(backend):
    """The const population (current bias) sends no spikes and is no layer; SOPs of the spiking
    layer through the head into the Output's memoryless readout: its spikes x nonzero column
    weights (2, 1, 2), every spike delivered (no delays); the input's MACs: 6 weights x frames."""
    if backend == "lava":
        skip_without_lava()
    g = _const_and_readout_graph()
    x = np.abs(np.random.default_rng(0).normal(1.0, 0.5, (2, 6, 2)))
    assert any(p.kind == "const" for p in lower(g, steps=6, input_frac_bits=8).populations.values())
    res = simulate(g, x, backend=backend, precision="fixed", progress=False, record=True)
    trains = np.asarray(res.extra["spike_trains"]["cuba"], dtype=np.float64).reshape(2, 6, 3)
    assert set(res.extra["spike_trains"]) == {"cuba"}
    report = build_report(g, res, resolve_profiles(["45nm"]))
    assert [(r["name"], r["kind"]) for r in report["layers"]] == [("input", "input"), ("cuba", "spiking")]
    cuba = report["layers"][1]
    per_sample = trains.sum(axis=1) @ np.array([2.0, 1.0, 2.0])
    assert per_sample.sum() > 0  # the test sees spikes
    assert cuba["synapses"] == 5 and cuba["sops"] == per_sample.mean()
    assert cuba["spikes"] == trains.sum() / 2 == report["total"]["spikes"]
    assert report["total"]["sops"] == cuba["sops"]
    assert report["layers"][0]["macs"] == 6 * 6 and report["total"]["macs"] == 36
    assert report["ann_baseline"] is None and "uncounted_synapses" not in report


@pytest.mark.parametrize("backend", ["emulator", "lava"])
def test_threshold_node_is_a_spiking_layer_by_hand(backend):
    """A Threshold node spikes (a memoryless spiking population in the lowering): its spikes and
    SOPs through the head (nonzero per column: 2, 1, 2) count, the head is not left uncounted."""
    if backend == "lava":
        skip_without_lava()
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                            "fc": nir.Affine(weight=np.array([[1.0, 0.5], [0.5, -1.0], [1.0, 1.0]]),
                                             bias=np.zeros(3)),
                            "th": nir.Threshold(threshold=np.array([0.5, 0.2, 1.0])),
                            "head": nir.Linear(weight=np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])),
                            "output": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("input", "fc"), ("fc", "th"), ("th", "head"), ("head", "output")],
                     metadata={"dt": 1e-3})
    x = np.abs(np.random.default_rng(0).standard_normal((2, 5, 2)))
    res = simulate(g, x, backend=backend, progress=False, record=True)
    report = build_report(g, res, resolve_profiles(["45nm"]))
    trains = np.asarray(res.extra["spike_trains"]["th"], dtype=np.float64).reshape(2, 5, 3)
    row = report["layers"][1]
    assert (row["name"], row["kind"], row["neurons"], row["synapses"]) == ("th", "spiking", 3, 5)
    assert trains.sum() > 0 and row["spikes"] == trains.sum() / 2
    assert row["sops"] == (trains.sum(axis=1) @ np.array([2.0, 1.0, 2.0])).mean()
    assert "uncounted_synapses" not in report
