"""The LMU memory as delay taps (``lmu_form="taps"``): the same function as the recurrent form,
the emulator equal to Lava bit for bit, and the report counting the taps' SOPs as delivered."""

from __future__ import annotations

import json

import nir
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from backends.base import simulate
from export import GraphRunner, model_to_nir
from export.graph import ExportOptions, bn_affine
from export.taps import realised_error, shortest_taps, truncation_error
from lmuformer.analysis import BUILTIN, build_report
from lmuformer.cli import cli
from lmuformer.errors import UserError
from lmuformer.functional.lmu import impulse_response
from tests.conftest import skip_without_lava
from tests.graphs import active_model, inputs


@pytest.fixture(scope="module")
def model():
    return active_model("tiny").double()


def test_truncation_by_hand() -> None:
    h = np.array([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0], [0.0, 1e-4]])  # energy 9 + 16 + 1e-8
    tot = 25 + 1e-8
    assert truncation_error(h, 1) == pytest.approx(np.sqrt((16 + 1e-8) / tot))
    assert truncation_error(h, 3) == pytest.approx(1e-4 / np.sqrt(tot))
    assert truncation_error(h, 4) == truncation_error(h, 9) == 0.0
    assert shortest_taps(h, 1e-3) == 2 and shortest_taps(h, 1e-5) == 4
    assert realised_error(h[:2], h) == pytest.approx(1e-4 / np.sqrt(tot))


def test_graph_structure(model) -> None:
    g = model_to_nir(model, ExportOptions(quantize=False, lmu_form="taps", lmu_taps=6))
    assert "block0.lmu.memory" not in g.nodes and json.loads(g.metadata["lmu_memory"])[0]["taps"] == 6
    assert not any(isinstance(n, nir.I) and n is not g.nodes["readout"] for n in g.nodes.values())
    lmu = model.blocks[0][0]
    a, b = lmu.memory.A.numpy(), lmu.memory.B.numpy()
    gain = bn_affine(lmu.memory_out[0])[0].detach().numpy()
    h = impulse_response(a, b, 6)
    for k in range(6):
        syn = f"block0.lmu.m.lif.syn{k}"
        np.testing.assert_allclose(g.nodes[syn].weight[:, 0], gain * h[k], rtol=1e-12)
        src = "block0.lmu.u.lif" if k == 0 else f"block0.lmu.u.lif.delay{k}"
        assert (src, syn) in g.edges
        if k:
            assert isinstance(g.nodes[src], nir.Delay) and g.nodes[src].delay[0] == pytest.approx(0.01 * k)


def test_float_taps_equal_recurrent_graph_and_stream(model) -> None:
    """Float64: the taps cover the whole 13-step sample, so all three agree to rounding."""
    x = torch.as_tensor(inputs(6, seed=3), dtype=torch.float64)
    rec = GraphRunner(model_to_nir(model, ExportOptions(quantize=False))).run(x)
    taps = GraphRunner(model_to_nir(model, ExportOptions(quantize=False, lmu_form="taps"))).run(x)
    opts = ExportOptions(quantize=False, lmu_form="taps", lmu_max_delay=4)
    relay = GraphRunner(model_to_nir(model, opts)).run(x)
    assert taps.spikes["block0.lmu.u.lif"].sum() > 0 and taps.spikes["block0.lmu.m.lif"].sum() > 0
    for k, v in rec.spikes.items():
        assert torch.equal(taps.spikes[k], v) and torch.equal(relay.spikes[k], v), k
    assert relay.spikes["block0.lmu.taps.relay3"].sum() > 0  # taps 12 reads the third relay
    np.testing.assert_allclose(taps.trace, rec.trace, rtol=0, atol=1e-9)
    np.testing.assert_allclose(relay.trace, rec.trace, rtol=0, atol=1e-9)
    np.testing.assert_allclose(taps.readout / taps.steps, model.stream(x), rtol=0, atol=1e-9)


def test_short_taps_truncate(model) -> None:
    """Two taps drop most of the impulse response: the graph then differs from the model."""
    g = model_to_nir(model, ExportOptions(quantize=False, lmu_form="taps", lmu_taps=2))
    assert json.loads(g.metadata["lmu_memory"])[0]["truncation_error"] > 0.1
    x = torch.as_tensor(inputs(4, seed=3), dtype=torch.float64)
    assert (GraphRunner(g).logits(x) - model.stream(x)).abs().max() > 1e-3


def test_fixed_point_taps_emulator_equals_lava(model) -> None:
    skip_without_lava()
    g = model_to_nir(model, ExportOptions(lmu_form="taps", lmu_max_delay=8))
    x = inputs(2, seed=5)
    emu = simulate(g, x, backend="emulator", precision="fixed", progress=False, record=True)
    lava = simulate(g, x, backend="lava", precision="fixed", progress=False, record=True)
    assert emu.spikes["block0.lmu.u.lif"].sum() > 0 and emu.spikes["block0.lmu.taps.relay1"].sum() > 0
    for k, v in emu.extra["spike_trains"].items():
        assert np.array_equal(lava.extra["spike_trains"][k], v), k
    assert np.array_equal(lava.trace, emu.trace)


def test_report_counts_tap_sops_as_delivered(model) -> None:
    g = model_to_nir(model, ExportOptions(lmu_form="taps"))
    x = inputs(3, seed=7)
    res = simulate(g, x, backend="emulator", precision="fixed", progress=False, record=True)
    u = res.extra["spike_trains"]["block0.lmu.u.lif"][:, :, 0]  # (samples, steps)
    steps = res.steps
    nnz = [sum(int(np.count_nonzero(n.weight)) for name, n in g.nodes.items()  # both terms of tap k
               if name.split(".term")[0] == f"block0.lmu.m.lif.syn{k}") for k in range(13)]
    assert min(nnz) > 0 and u.sum() > 0
    expected = [sum(nnz[k] for t in np.nonzero(u[i])[0] for k in range(len(nnz)) if t + k < steps)
                for i in range(len(x))]
    rows = {r["name"]: r for r in build_report(g, res, [BUILTIN["45nm"]])["layers"]}
    assert rows["block0.lmu.u.lif"]["sops"] == pytest.approx(np.mean(expected))
    res.extra.pop("spike_trains")  # without trains: spikes x fan-out, every tap of every spike
    rows = {r["name"]: r for r in build_report(g, res, [BUILTIN["45nm"]])["layers"]}
    assert rows["block0.lmu.u.lif"]["sops"] == pytest.approx(u.sum(axis=1).mean() * sum(nnz))
    assert sum(nnz) * u.sum(axis=1).mean() > np.mean(expected)  # late spikes lose taps


def test_cli_export_json_and_errors(tmp_path) -> None:
    run = CliRunner().invoke
    out = str(tmp_path / "t.nir")
    res = run(cli, ["export", "--preset", "tiny", "-o", out, "--lmu-form", "taps", "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    m = s["lmu"][0]
    assert s["lmu_form"] == "taps" and m["taps"] == 13 and m["truncation_error"] == 0.0
    assert m["synapses"] == s["lmu_synapses"] > 0 and m["sops_per_u_spike"] == m["synapses"]
    assert 0 < m["stream_truncation_error"] < 1e-3 and m["impulse_response_error"] < 1e-3
    taps = ["export", "--preset", "tiny", "-o", out, "--lmu-form", "taps", "--lmu-taps"]
    res = run(cli, [*taps, "5", "--json"])
    assert json.loads(res.output)["lmu"][0]["truncation_error"] > 1e-3
    res = run(cli, [*taps, "0"])
    assert isinstance(res.exception, UserError)  # main() prints it as one "error:" line, exit 2
    assert str(res.exception) == "lmu-taps must be at least 1, got 0"


def test_cli_report_lmu_forms(tmp_path) -> None:
    res = CliRunner().invoke(cli, ["report", "tiny", "--lmu-forms", "--random", "--samples", "2",
                                    "--format", "json"])
    assert res.exit_code == 0, res.output
    c = json.loads(res.output)
    assert set(c["forms"]) == {"recurrent", "taps"} and set(c["profiles"]) == {"45nm", "loihi", "spinnaker2"}
    assert c["memory_energy_j"]["recurrent"]["45nm"] > 0 and c["same_predictions"] == 1.0
    assert any(r["name"] == "block0.lmu.memory" and r["taps"] is None for r in c["layers"])
