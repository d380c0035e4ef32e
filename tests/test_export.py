"""NIR export: file round trip, float re-import == model, quantised semantics, errors."""

from __future__ import annotations

import re

import h5py
import nir
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from export import ExportOptions, GraphRunner, model_to_nir, read_graph, write_graph
from export.io import check_supported
from export.quantize import (
    dequantize,
    exponent_for,
    impulse_response_error,
    quantize_term,
    quantize_terms,
    quantize_to_grid,
)
from lmuformer import PRESETS, build_model
from lmuformer.cli import cli
from lmuformer.errors import UserError
from lmuformer.functional.lmu import lmu_discrete
from lmuformer.model.calibrate import activate

SPIKING = sorted(n for n, c in PRESETS.items() if c.variant == "spiking")


def _input(model, batch: int = 2, frames: int | None = None, seed: int = 0) -> torch.Tensor:
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames or cfg.frames, cfg.in_features, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", SPIKING)
def test_float_export_round_trips_and_matches_stream(name: str, tmp_path) -> None:
    model = activate(build_model(name)).double()
    path = tmp_path / "m.nir"
    write_graph(model_to_nir(model, ExportOptions(quantize=False)), path)
    graph = nir.read(path, type_check=True)
    frames = min(model.config.frames, 60)  # psmnist's 784 frames are long for a unit test
    x = _input(model, frames=frames)
    logits = GraphRunner(graph).logits(x)
    assert (logits - model.stream(x)).abs().max() <= 1e-4
    assert logits.std() > 0


def test_graph_structure() -> None:
    graph = model_to_nir(activate(build_model("tiny")), ExportOptions(quantize=False))
    md = graph.metadata
    assert md["dt"] == 0.01 and md["latency_frames"] == 5
    lif = graph.nodes["head.lif"]
    np.testing.assert_array_equal(lif.tau, np.full(16, 0.02))  # 2 frames at 10 ms
    assert graph.nodes["block0.lmu.pre.lif"].v_threshold[0] == 0.5
    # the LMU recurrence is explicit: memory -> Delay(dt) -> Linear(A - I) -> memory
    assert ("block0.lmu.memory", "block0.lmu.memory.delay1") in graph.edges
    assert ("block0.lmu.memory.delay1", "block0.lmu.memory.rec") in graph.edges
    assert ("block0.lmu.memory.rec", "block0.lmu.memory") in graph.edges
    a_d, _ = lmu_discrete(32, 8.0)
    np.testing.assert_allclose(graph.nodes["block0.lmu.memory.rec"].weight, a_d - np.eye(32))
    # time-axis taps: delays of 0, 1 and 2 frames on the input
    assert graph.nodes["input.delay2"].delay[0] == pytest.approx(0.02)


def test_quantised_weights_are_exact_in_file(tmp_path) -> None:
    model = activate(build_model("tiny"))
    path = tmp_path / "q.nir"
    write_graph(model_to_nir(model, ExportOptions(weight_bits=6, lmu_bits=8, lmu_terms=2)), path)
    graph = read_graph(path)
    seen = 0
    for node in graph.nodes.values():
        if isinstance(node, (nir.Affine, nir.Linear)):
            m, e, bits = (node.metadata[k] for k in ("weight_mantissa", "weight_exponent", "weight_bits"))
            assert np.abs(m).max() <= 2 ** (bits - 1) - 1
            np.testing.assert_array_equal(node.weight, np.asarray(m, dtype=np.float64) * 2.0 ** int(e))
            seen += 1
    assert seen > 20


def test_quantised_graph_equals_model_with_same_weights() -> None:
    """A model whose folded weights already lie on the grid exports to the same graph
    semantics: the quantised run equals the float run of the quantised values."""
    model = activate(build_model("tiny")).double()
    x = _input(model)
    q = model_to_nir(model, ExportOptions())
    f = model_to_nir(model, ExportOptions(quantize=False))
    for name, node in q.nodes.items():  # put the quantised values into the float graph
        if isinstance(node, (nir.Affine, nir.Linear)) and name in f.nodes:
            f.nodes[name] = node
    for name in [n for n in q.nodes if ".term" in n]:
        f.nodes[name] = q.nodes[name]
    f.edges = q.edges
    for name in list(f.nodes):
        if name not in q.nodes:
            del f.nodes[name]
    assert torch.equal(GraphRunner(q).logits(x), GraphRunner(f).logits(x))


def test_quantisation_functions() -> None:
    w = np.array([[0.5, -0.25], [0.126, 0.0]])
    t = quantize_term(w, 8)
    assert np.abs(t.mantissa).max() <= 127
    assert np.abs(t.value - w).max() <= 2.0**t.exponent / 2
    two = quantize_terms(w, 4, terms=2)
    assert np.abs(dequantize(two) - w).max() < np.abs(quantize_term(w, 4).value - w).max()


def test_quantisation_by_hand() -> None:
    # the smallest exponent with max|w| / 2**e <= 127: 0.5 / 2**-7 = 64; 127 * 2**-7 fits exactly at -7
    assert exponent_for(np.array([0.5, -0.1]), 8) == -7
    assert exponent_for(np.array([127 * 2.0**-7]), 8) == -7
    assert exponent_for(np.array([-128 * 2.0**-7]), 8) == -6
    assert exponent_for(np.array([3.0]), 2) == 2 and exponent_for(np.array([3.0]), 3) == 0  # limits 1, 3
    assert exponent_for(np.zeros(3), 8) == 0 and exponent_for(np.zeros(0), 8) == 0
    t = quantize_term(np.array([[0.5, -0.25], [0.126, 0.0]]), 8)
    assert t.exponent == -7 and t.bits == 8 and t.mantissa.dtype == np.int8
    assert t.mantissa.tolist() == [[64, -32], [16, 0]]  # 0.126 * 128 = 16.128 rounds to 16
    assert t.value.tolist() == [[0.5, -0.25], [0.125, 0.0]] and t.value.dtype == np.float64
    # off-grid values: round half to even, clipped to +-(2**(bits-1) - 1)
    t = quantize_term(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.6, 200.0, -200.0]), 4, exponent=0)
    assert t.mantissa.tolist() == [0, 2, 2, 0, -2, 3, 7, -7]
    t = quantize_term(np.array([0.3, 0.6]), 8, exponent=-1)
    assert t.mantissa.tolist() == [1, 1] and t.exponent == -1
    assert quantize_term(np.ones(1), 9).mantissa.dtype == np.int16
    assert quantize_term(np.ones(1), 16).mantissa.dtype == np.int16
    assert quantize_term(np.ones(1), 17).mantissa.dtype == np.int32
    assert quantize_term(np.ones(1), 32).mantissa.dtype == np.int32
    assert quantize_term(np.ones(1), 33).mantissa.dtype == np.int64
    assert quantize_term(np.ones(1), 2).mantissa.tolist() == [1]
    with pytest.raises(ValueError, match="need at least 2 bits, got 1"):
        quantize_term(np.ones(1), 1)
    # two terms: [0.75, 0.1] at 4 bits -> [6, 1] * 2**-3, then the residual [0, -0.025] -> [0, -6] * 2**-8
    terms = quantize_terms(np.array([0.75, 0.1]), 4, terms=2)
    assert [(t.mantissa.tolist(), t.exponent) for t in terms] == [([6, 1], -3), ([0, -6], -8)]
    assert dequantize(terms).tolist() == [0.75, 0.125 - 6 / 256]
    assert len(quantize_terms(np.array([0.75, 0.1]), 4, terms=3)) == 3
    assert len(quantize_terms(np.array([0.75, 0.1]), 4)) == 1  # one term by default
    # an exact first term ends the list; an all-zero matrix is one zero term
    assert [t.exponent for t in quantize_terms(np.array([0.5, -0.25]), 8, terms=3)] == [-7]
    zero = quantize_terms(np.zeros((2, 2)), 8, terms=2)
    assert len(zero) == 1 and zero[0].exponent == 0 and not zero[0].mantissa.any()
    grid = quantize_to_grid(np.array([0.3, -0.3, 0.125, 0.375, 1.0]), -2)  # ties to even
    assert grid.tolist() == [0.25, -0.25, 0.0, 0.5, 1.0]
    assert quantize_to_grid(np.array([5.0, 6.0, 7.0]), 1).tolist() == [4.0, 6.0, 8.0]
    assert quantize_to_grid(np.array([0.3], dtype=np.float32), -2).dtype == np.float64
    # impulse responses x = 1, 0.5, 0.25 against 1, 0.25, 0.0625: sqrt(sum of squared errors / sum of squares)
    a, b = np.array([[0.5]]), np.array([1.0])
    want = np.sqrt((0.25**2 + 0.1875**2) / (1 + 0.25 + 0.0625))
    assert impulse_response_error(a, b, np.array([[0.25]]), b, 3) == pytest.approx(want, rel=1e-12)
    assert impulse_response_error(a, b, a, np.array([1.1]), 2) == pytest.approx(0.1, rel=1e-12)
    assert impulse_response_error(a, b, a, b, 5) == 0.0


def test_lmu_representation_keeps_dynamics() -> None:
    """Integrator form with two 8-bit terms vs a naive shared 8-bit scale on A (scv2 size)."""
    a, b = lmu_discrete(512, 128.0)
    naive = impulse_response_error(a, b, quantize_term(a, 8).value, quantize_term(b, 8).value, 133)
    a_q = np.eye(512) + dequantize(quantize_terms(a - np.eye(512), 8, 2))
    ours = impulse_response_error(a, b, a_q, dequantize(quantize_terms(b, 8, 2)), 133)
    assert ours < 0.01 < naive


def test_ann_is_refused() -> None:
    with pytest.raises(UserError, match="non-spiking"):
        model_to_nir(build_model("tiny-ann"))


def test_bad_files(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        read_graph(tmp_path / "missing.nir")
    text = tmp_path / "text.nir"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a readable NIR file"):
        read_graph(text)
    conv = tmp_path / "conv.nir"
    g = nir.NIRGraph(
        nodes={"input": nir.Input({"input": np.array([1, 4, 4])}),
               "conv": nir.Conv2d((4, 4), np.ones((1, 1, 3, 3)), 1, 1, 1, 1, np.zeros(1)),
               "output": nir.Output({"output": np.array([1, 4, 4])})},
        edges=[("input", "conv"), ("conv", "output")], metadata={"dt": 0.01},
    )
    nir.write(conv, g)
    conv_graph = read_graph(conv)  # the torch backend takes convolutions: reads and runs
    x = torch.arange(16, dtype=torch.float64).reshape(1, 1, 16)
    out = GraphRunner(conv_graph).run(x).readout.reshape(4, 4)
    img = x.reshape(4, 4)
    assert out[1, 1] == img[:3, :3].sum() and out[0, 0] == img[:2, :2].sum()
    with pytest.raises(UserError, match="the lava backend does not take the NIR node conv \\(Conv2d\\); "
                       "it takes: Input, Output"):
        check_supported(conv_graph, backend="lava", supported=("Input", "Output"))
    with h5py.File(tmp_path / "empty.nir", "w"):
        pass
    with pytest.raises(UserError):
        read_graph(tmp_path / "empty.nir")


def test_cli_export(tmp_path) -> None:
    out = tmp_path / "tiny.nir"
    res = CliRunner().invoke(cli, ["export", "--to", "nir", "--preset", "tiny", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    import json

    summary = json.loads(res.output)
    assert summary["latency_frames"] == 5 and summary["nodes"]["LIF"] == 11
    assert summary["quantization_error"]["lmu"][0]["impulse_response_error"] < 0.01
    nir.read(out)


def test_outputs_are_written_atomically_with_ordinary_permissions(tmp_path) -> None:
    import os
    import stat

    from lmuformer.files import atomic_write, write_json

    path = write_json(tmp_path / "out" / "a.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert list(path.parent.iterdir()) == [path]

    def fail(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_text() == '{\n  "x": 1\n}\n'  # the previous file is intact
    assert list(path.parent.iterdir()) == [path]  # no temporary left behind


def test_atomic_files_details(tmp_path) -> None:
    import os

    from lmuformer.files import atomic_write, write_text

    seen = []

    def writer(tmp: str) -> None:
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("ok")

    out = atomic_write(tmp_path / "deep" / "er" / "curve.png", writer)
    assert out == tmp_path / "deep" / "er" / "curve.png" and out.read_text() == "ok"
    assert os.path.dirname(seen[0]) == str(out.parent)  # the same folder: the rename is atomic
    name = os.path.basename(seen[0])
    assert name.startswith(".lmuf-tmp.") and name.endswith(".curve.png")  # writers read the suffix
    atomic_write(tmp_path / "noext", writer)
    assert os.path.basename(seen[1]).startswith(".lmuf-tmp.") and seen[1].endswith(".noext")
    assert write_text(tmp_path / "u.txt", "µ—\n") == tmp_path / "u.txt"
    assert (tmp_path / "u.txt").read_bytes() == "µ—\n".encode()
    old = os.umask(0o027)
    try:
        path = write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    (tmp_path / "file").write_text("")
    # the OS's words only
    with pytest.raises(UserError, match="^cannot write output .*file/x.json: Not a directory$"):
        write_text(tmp_path / "file" / "x.json", "{}")
    with pytest.raises(UserError, match="^cannot write "):
        atomic_write(tmp_path / "file" / "y.bin", writer)
    assert len(seen) == 2  # the writer was not called for an impossible path


def test_write_text_is_utf8_whatever_the_locale(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",  # an ASCII locale
           "PYTHONPATH": str(root)}
    code = "import sys; from lmuformer.files import write_text; write_text(sys.argv[1], '\\u00b5\\u2014')"
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "u.txt")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "u.txt").read_bytes() == "\u00b5\u2014".encode()


def test_metadata_round_trip_through_a_file(tmp_path) -> None:
    """GraphMetadata is what model_to_nir writes and what is read back from HDF5, typed."""
    from export.metadata import GraphMetadata

    model = activate(build_model("tiny"))
    graph = model_to_nir(model, ExportOptions(weight_terms=1))
    write_graph(graph, tmp_path / "m.nir")
    back = GraphMetadata.of(read_graph(tmp_path / "m.nir"))
    assert back == GraphMetadata.of(graph)
    assert (back.dt, back.latency_frames, back.frames, back.quantized) == (0.01, 5, model.config.frames, True)
    assert (back.weight_bits, back.weight_terms, back.lmu_bits, back.lmu_terms) == (8, 1, 8, 2)
    assert back.model_config == model.config.to_dict() and back.lmu_memory[0]["memory"] == "block0.lmu.memory"
    foreign = GraphMetadata.of(nir.NIRGraph(nodes={}, edges=[], metadata={}))
    assert (foreign.dt, foreign.latency_frames, foreign.frames, foreign.model_config) == (None, 0, None, {})


def test_frame_period_changes_units_not_arithmetic() -> None:
    """dt scales tau, r and delays together: dt / tau stays 1/2, so the fixed-point network and
    its spike trains are the same at 10 ms and at 1 ms (digits' frame period)."""
    from backends import simulate

    model = activate(build_model("tiny"))
    x = np.random.default_rng(0).random((3, model.config.frames, model.config.in_features)).astype(np.float32)
    runs = {}
    for dt in (0.01, 0.001):
        graph = model_to_nir(model, ExportOptions(dt=dt))
        np.testing.assert_allclose(graph.nodes["head.lif"].tau, 2 * dt)
        runs[dt] = simulate(graph, x, backend="emulator", precision="fixed", progress=False, record=True)
    a, b = runs[0.01], runs[0.001]
    assert a.extra["spike_trains"].keys() == b.extra["spike_trains"].keys()
    for name, trains in a.extra["spike_trains"].items():
        np.testing.assert_array_equal(trains, b.extra["spike_trains"][name])
    np.testing.assert_array_equal(a.trace, b.trace)
    assert sum(int(t.sum()) for t in a.extra["spike_trains"].values()) > 0


def test_export_dt_is_the_checkpoints_frame_period(tmp_path) -> None:
    from lmuformer.checkpoint import save_checkpoint
    from lmuformer.jobs.export import export_model

    model = build_model("digits")
    save_checkpoint(tmp_path / "d.pt", model, {"dataset": "digits", "frame_period_s": 0.001})
    save_checkpoint(tmp_path / "old.pt", model, {"dataset": "digits"})  # no frame_period_s: the data set
    save_checkpoint(tmp_path / "none.pt", model, {})
    assert export_model(str(tmp_path / "d.pt"), output=str(tmp_path / "d.nir"))["dt"] == 0.001
    assert export_model(str(tmp_path / "old.pt"), output=str(tmp_path / "o.nir"))["dt"] == 0.001
    assert export_model(str(tmp_path / "none.pt"), output=str(tmp_path / "n.nir"))["dt"] == ExportOptions().dt
    assert export_model(str(tmp_path / "d.pt"), output=str(tmp_path / "e.nir"), dt=0.02)["dt"] == 0.02


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory) -> str:
    """The tiny preset trained for one epoch on digits (2 s): predictions of several classes."""
    from lmuformer.training import train

    out = tmp_path_factory.mktemp("trained_tiny")
    train(epochs=1, out_dir=out, dataset="digits", preset="tiny", seed=0, lr=2e-2, threads=1, progress=False)
    return str(out / "best.pt")


def test_export_eval_scores_the_model_and_its_exported_graph(trained_tiny, tmp_path, capsys) -> None:
    """``lmuf export --eval``: the float model's test accuracy and the written graph's (its torch
    re-import), on the first 300 digits test samples (two batches of 256), with a progress bar."""
    from backends.base import simulate
    from lmuformer.checkpoint import load_checkpoint
    from lmuformer.data import load_test_split
    from lmuformer.jobs.export import export_model

    path = tmp_path / "m.nir"
    s = export_model(checkpoint=trained_tiny, output=str(path), eval_dataset="digits", samples=300,
                     progress=True)
    err = capsys.readouterr().err  # "exported graph (torch): 100%|...| 300/300 [00:01<00:00, 250sample/s]"
    assert re.search(r"(^|\r)exported graph \(torch\): 100%.* 300/300 \[.*sample/s\]", err), err
    x, y = load_test_split("digits", samples=300)
    with torch.no_grad():
        float_pred = load_checkpoint(trained_tiny).model.eval()(torch.as_tensor(x)).argmax(1).numpy()
    run = simulate(read_graph(path), x, backend="torch", progress=False)
    assert len(set(float_pred.tolist())) >= 5 and len(set(run.predictions.tolist())) >= 5
    assert (s["eval_dataset"], s["eval_samples"]) == ("digits", 300)
    assert s["accuracy_float"] == np.mean(float_pred == y) > 0.15
    assert s["accuracy_quantized"] == np.mean(run.predictions == y) > 0.15
    assert "u_spikes" not in s["lmu"][0] and "sops_per_inference" not in s["lmu"][0]


def test_export_eval_counts_the_taps_forms_u_spikes(tmp_path, capsys) -> None:
    """``--lmu-form taps --eval``: the u spikes per inference of the written graph (torch re-import,
    300 samples) and the SOPs they cost (u spikes x the taps' fan-out)."""
    from backends.base import simulate
    from lmuformer.checkpoint import save_checkpoint
    from lmuformer.data import load_test_split
    from lmuformer.jobs.export import export_model
    from tests.graphs import active_model

    save_checkpoint(tmp_path / "ck.pt", active_model("tiny"), {"dataset": "digits", "preset": "tiny"})
    path = tmp_path / "m.nir"
    s = export_model(checkpoint=str(tmp_path / "ck.pt"), output=str(path), eval_dataset="digits", samples=300,
                     lmu_form="taps")
    assert capsys.readouterr().err == ""  # no progress bar unless asked
    x, _ = load_test_split("digits", samples=300)
    run = simulate(read_graph(path), x, backend="torch", progress=False)
    lmu = s["lmu"][0]
    spikes = float(run.spikes[lmu["u"]].sum()) / 300
    assert lmu["u_spikes"] == pytest.approx(spikes, rel=1e-12) and spikes > 1
    assert lmu["sops_per_inference"] == pytest.approx(spikes * lmu["sops_per_u_spike"], rel=1e-12)
    assert lmu["sops_per_u_spike"] > 1


def test_export_model_writes_model_nir_by_default(tmp_path, monkeypatch) -> None:
    from lmuformer.jobs.export import export_model

    monkeypatch.chdir(tmp_path)
    export_model(preset_name="tiny")
    assert [p.name for p in tmp_path.iterdir()] == ["model.nir"]
    nir.read(tmp_path / "model.nir")
