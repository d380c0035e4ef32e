"""Streaming evaluation: the running-mean rule, the 99 % point, early decisions, torch stream
== NIR export run by a backend, and ``lmuf stream`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from export import ExportOptions, model_to_nir, write_graph
from lmuformer.analysis import streaming
from lmuformer.cli import cli
from lmuformer.data import load_test_split
from lmuformer.errors import UserError
from lmuformer.files import write_json
from lmuformer.jobs import stream as stream_job
from lmuformer.model import build_model
from lmuformer.model.calibrate import activate

# One sample, 4 steps, 3 classes; per-step argmax is 0, 1, 2, 0 but the running mean's is 0, 1, 2, 2:
# sums [1,0,0] -> [1,3,0] -> [1,3,4] -> [3,3,4].
SEQ = np.array([[[1, 0, 0], [0, 3, 0], [0, 0, 4], [2, 0, 0]]], dtype=float)


def test_running_mean_rule_on_hand_made_sequence() -> None:
    assert streaming.running_mean_predictions(SEQ).tolist() == [[0, 1, 2, 2]]
    np.testing.assert_allclose(streaming.running_means(SEQ)[0, 2], [1 / 3, 1, 4 / 3])
    # two samples, labels 2 and 0; the second sample's running mean is always class 0
    two = np.concatenate([SEQ, np.tile([[[5.0, 1, 1]]], (1, 4, 1))])
    # 3 frames fed of 4 steps (latency 1): entries are after 1, 2, 3 frames
    curve = streaming.accuracy_by_frames(two, np.array([2, 0]), frames=3)
    assert curve.tolist() == [0.5, 0.5, 1.0]
    assert streaming.final_accuracy(two, np.array([2, 0])) == 1.0
    assert streaming.final_accuracy(two, np.array([0, 0])) == 0.5


def test_per_step_outputs_invert_the_accumulated_trace() -> None:
    trace = np.cumsum(SEQ, axis=1)
    np.testing.assert_array_equal(streaming.per_step_outputs(trace), SEQ)


def test_frames_for_99pct_and_reduction_on_hand_made_curve() -> None:
    curve = np.array([0.1, 0.5, 0.8, 0.95, 0.97, 0.96, 0.98, 0.98])
    n = streaming.frames_for_fraction(curve, final=0.98)  # needs >= 0.9702: 0.97 falls short
    assert n == 7
    assert streaming.reduction(n, 8) == pytest.approx(0.125)
    assert streaming.reduction(n, 7.0) == pytest.approx(0.0)
    # exactly 99 % counts although the product rounds up: 120 samples, final 100/120, 99/120 is 99 %
    # of it but 0.99 * (100 / 120) = 0.8250000000000001 > 99 / 120 = 0.825 in float64
    assert 0.99 * (100 / 120) > 99 / 120
    assert streaming.frames_for_fraction(np.array([98 / 120, 99 / 120, 100 / 120]), final=100 / 120) == 2
    assert streaming.frames_for_fraction(np.array([98 / 120, 100 / 120]), final=100 / 120) == 2  # 98 misses
    assert streaming.frames_for_fraction(np.array([0.5, 0.99, 1.0]), final=1.0) == 2
    assert streaming.frames_for_fraction(np.array([0.5, 0.9, 1.0]), final=1.0, fraction=0.9) == 2
    # never reached -> None
    assert streaming.frames_for_fraction(np.array([0.5, 0.6]), final=1.0) is None
    assert streaming.reduction(None, 8) is None
    # the paper's numbers: 87 of 128 frames is a 32.03 % shorter sequence
    assert streaming.reduction(87, 128) == pytest.approx(0.3203, abs=5e-5)


def test_early_decisions_on_hand_made_sequence() -> None:
    # 4 frames + 1 flush step, 2 classes; softmax margin of a logit gap d is tanh(d / 2)
    a = [[10, 0], [10, 0], [10, 0], [10, 0], [10, 0]]  # margin tanh(5) = 0.9999 from step 0
    b = [[0, 0], [0, 0], [6, 0], [6, 0], [0, 100]]  # gaps 0, 0, 2, 3: margins 0, 0, .762, .905
    out = np.array([a, b], dtype=float)
    np.testing.assert_allclose(streaming.margins(out)[1, :4], np.tanh([0, 0, 1, 1.5]))
    preds, used = streaming.early_decisions(out, margin=0.8, frames=4)
    assert preds.tolist() == [0, 0] and used.tolist() == [1, 4]
    preds, used = streaming.early_decisions(out, margin=0.7, frames=4)
    assert preds.tolist() == [0, 0] and used.tolist() == [1, 3]
    # never reached within the frames: the final (flushed) prediction, all 4 frames
    preds, used = streaming.early_decisions(out, margin=0.95, frames=4)
    assert preds.tolist() == [0, 1] and used.tolist() == [1, 4]
    # no decision before min_frames: sample a waits until frame 2
    preds, used = streaming.early_decisions(out, margin=0.8, frames=4, min_frames=2)
    assert preds.tolist() == [0, 0] and used.tolist() == [2, 4]
    # summarize decides from frame latency + 1 on
    r = streaming.summarize(out, np.array([0, 1]), frames=4, latency=1, margins_=(0.8, 0.95))
    assert r.early[0] == {"margin": 0.8, "min_frames": 2, "accuracy": 0.5, "mean_frames": 3.0,
                          "decided_early": 0.5}
    assert r.early[1]["accuracy"] == 1.0
    assert r.accuracy_by_frames == [0.5, 0.5, 0.5, 0.5] and r.final_accuracy == 1.0
    assert r.frames_for_99pct is None and r.reduction is None
    assert r.accuracy_by_steps == [0.5, 0.5, 0.5, 0.5, 1.0] and r.steps_for_99pct == 5


def test_summarize_passes_info_and_real_lengths() -> None:
    # SEQ: 1 sample, 3 frames + 1 latency step; running-mean predictions 0, 1, 2, 2
    r = streaming.summarize(SEQ, np.array([[2]]), frames=3, latency=1, real_frames=np.array([2]),
                            margins_=(), source="s.nir", backend="emulator", precision="fixed",
                            dataset="digits", wall_s=1.5)
    assert (r.source, r.backend, r.precision) == ("s.nir", "emulator", "fixed")
    assert (r.dataset, r.wall_s) == ("digits", 1.5)
    assert r.accuracy_by_frames == [0.0, 0.0, 1.0] and r.frames_for_99pct == 3 and r.steps_for_99pct == 3
    assert r.real_frames_mean == 2.0 and r.reduction_real == pytest.approx(1 - 3 / 2)
    assert r.early == [] and r.samples == 1
    bare = streaming.summarize(SEQ, np.array([2]), frames=3, latency=1, margins_=(0.5,))
    assert (bare.source, bare.backend, bare.precision, bare.dataset, bare.wall_s) == ("", "", "", "", 0.0)
    assert bare.real_frames_mean == 3.0 and bare.reduction_real == pytest.approx(0.0)
    assert bare.early[0]["min_frames"] == 2
    with pytest.raises(ValueError, match=r"^expected 5 steps \(frames \+ latency\), got 4$"):
        streaming.summarize(SEQ, np.array([2]), frames=3, latency=2)


def test_one_class_margin_and_bad_data() -> None:
    m = streaming.margins(np.zeros((2, 3, 1)))  # one class: always decided
    assert m.shape == (2, 3) and (m == 1).all()
    model = _tiny()
    with pytest.raises(UserError, match="^the data does not fit the model: expected input"):
        stream_job.model_outputs(model, np.zeros((1, 8, 5)))
    out = stream_job.model_outputs(model, np.zeros((3, 8, 8)), batch_size=2)  # batches of 2 and 1
    assert out.shape == (3, 8 + model.latency, 10) and out.dtype == np.float64


def test_real_lengths_of_padded_speech() -> None:
    from lmuformer.data.audio import normalize

    x = np.random.default_rng(0).normal(size=(2, 10, 4)).astype(np.float32)
    x[0, 7:] = float(normalize(torch.zeros(())))
    assert stream_job.real_lengths("scv2", x).tolist() == [7, 10]
    assert stream_job.real_lengths("digits", x).tolist() == [10, 10]
    assert {stream_job.real_lengths(d, x).dtype for d in ("scv2", "digits")} == {np.dtype(np.int64)}
    x[0, 6] = float(normalize(torch.zeros(()))) + 1e-3  # close to the padding value, but a real frame
    assert stream_job.real_lengths("scv2", x).tolist() == [7, 10]


def _tiny():
    return activate(build_model("tiny")).double()


def _digits(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    return load_test_split("digits", samples=n)


def test_torch_stream_curve_equals_nir_float_export_on_torch_backend() -> None:
    model = _tiny()
    x, y = _digits(24)
    stream = stream_job.model_outputs(model, x)
    graph = model_to_nir(model, ExportOptions(quantize=False))
    sim, latency = stream_job.graph_outputs(graph, x, backend="torch", precision="float")
    assert latency == model.latency and stream.shape == sim.shape == (24, 8 + latency, 10)
    np.testing.assert_allclose(sim, stream, atol=1e-9)
    assert (streaming.running_mean_predictions(sim) == streaming.running_mean_predictions(stream)).all()
    a = streaming.summarize(stream, y, 8, latency)
    b = streaming.summarize(sim, y, 8, latency)
    assert a.accuracy_by_frames == b.accuracy_by_frames and a.final_accuracy == b.final_accuracy
    assert a.frames_for_99pct == b.frames_for_99pct and a.early == b.early
    # the final (flushed) running prediction is the model's parallel prediction
    logits = model(torch.as_tensor(x, dtype=torch.float64))
    assert (streaming.running_mean_predictions(stream)[:, -1] == logits.argmax(1).numpy()).all()
    # the per-step outputs actually vary, so the test is not vacuous
    assert np.std(stream) > 0


def test_emulator_curve_agrees_with_torch_on_quantised_graph() -> None:
    model = _tiny()
    x, y = _digits(24)
    graph = model_to_nir(model, ExportOptions(quantize=True))
    ref, latency = stream_job.graph_outputs(graph, x, backend="torch", precision="float")
    emu, _ = stream_job.graph_outputs(graph, x, backend="emulator", precision="fixed")
    agree = streaming.running_mean_predictions(emu) == streaming.running_mean_predictions(ref)
    assert agree.mean() >= 0.95
    a = streaming.summarize(ref, y, 8, latency).accuracy_by_frames
    b = streaming.summarize(emu, y, 8, latency).accuracy_by_frames
    assert np.max(np.abs(np.subtract(a, b))) <= 0.1


def test_cli_end_to_end_on_tiny_export(tmp_path) -> None:
    path = tmp_path / "tiny.nir"
    torch.manual_seed(0)  # the weights: the same curve whichever tests ran before
    write_graph(model_to_nir(_tiny(), ExportOptions(quantize=False)), path)
    out, png = tmp_path / "s.json", tmp_path / "curve.png"
    res = CliRunner().invoke(cli, ["stream", str(path), "--dataset", "digits", "--samples", "16",
                                   "--margin", "0.2", "--json", str(out), "--plot", str(png), "--quiet"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "final accuracy" in res.output
    d = json.loads(out.read_text())
    assert len(d["accuracy_by_frames"]) == 8 and d["samples"] == 16
    assert len(d["accuracy_by_steps"]) == 13 and d["accuracy_by_steps"][-1] == d["final_accuracy"]
    assert d["backend"] == "torch" and d["precision"] == "float"
    # the numbers are the Python API's, and the 99 % point is the curve's first entry >= 0.99 * final
    api = stream_job.stream_eval(path, "digits", samples=16, margins_=(0.2,))
    assert d["accuracy_by_frames"] == api.accuracy_by_frames and d["final_accuracy"] == api.final_accuracy
    assert all(float(a * 16).is_integer() for a in d["accuracy_by_frames"])  # 16 samples
    curve, final = d["accuracy_by_frames"], d["final_accuracy"]
    want = next((i + 1 for i, a in enumerate(curve) if a >= 0.99 * final - 1e-12), None)
    n = d["frames_for_99pct"]
    assert want is not None  # with these weights the curve reaches 99 % of the final accuracy
    assert n == want == api.frames_for_99pct and d["reduction"] == pytest.approx(1 - n / 8)
    assert f"99 % of final after {n}/8 frames" in res.output
    assert d["real_frames_mean"] == 8 and [e["margin"] for e in d["early"]] == [0.2]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_checkpoint_source_uses_torch_stream(tmp_path) -> None:
    from lmuformer.checkpoint import save_checkpoint

    model = activate(build_model("tiny"))
    path = save_checkpoint(tmp_path / "m.pt", model, {})
    r = stream_job.stream_eval(path, "digits", samples=10)
    assert r.backend == "torch-stream" and len(r.accuracy_by_frames) == 8 and r.latency == model.latency
    x, y = _digits(10)
    logits = model(torch.as_tensor(x))
    assert r.final_accuracy == pytest.approx(float((logits.argmax(1).numpy() == y).mean()))
    with pytest.raises(UserError, match="export it to NIR"):
        stream_job.stream_eval(path, "digits", backend="emulator", samples=2)
    # "torch" and "float" are what a checkpoint runs anyway; "fixed" is refused in one line
    same = stream_job.stream_eval(path, "digits", backend="torch", precision="float", samples=10, margins_=())
    assert same.accuracy_by_frames == r.accuracy_by_frames and same.precision == "float"
    with pytest.raises(UserError, match="^a checkpoint runs in floating point; use a quantised NIR export "
                                        "for 'fixed'$"):
        stream_job.stream_eval(path, "digits", precision="fixed", samples=2)
    out = tmp_path / "r.json"
    write_json(out, r.to_dict())
    text = out.read_text()
    assert text.startswith('{\n  "') and text.endswith("}\n")  # indented by 2, one trailing newline
    assert json.loads(text)["final_accuracy"] == r.final_accuracy


def test_errors_are_user_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        stream_job.stream_eval(tmp_path / "missing.nir", "digits")
    bad = tmp_path / "x.txt"
    bad.write_text("x")
    with pytest.raises(UserError, match="expected a checkpoint"):
        stream_job.stream_eval(bad, "digits")
    path = tmp_path / "tiny.nir"
    write_graph(model_to_nir(_tiny(), ExportOptions(quantize=False)), path)
    with pytest.raises(UserError, match="unknown dataset"):
        stream_job.stream_eval(path, "nope")
    res = CliRunner().invoke(cli, ["stream", str(path), "--dataset", "digits", "--plot", "c.gif"])
    assert isinstance(res.exception, UserError)
