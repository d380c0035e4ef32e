"""The jobs over the current grids: ``lmuf export --current-headroom`` and ``lmuf report
--lmu-forms`` of a checkpoint, which lowers its forms on the grids the export job records."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from backends.fixed_point import calibrated_current_frac
from export.graph import model_to_nir
from export.io import read_graph
from export.metadata import GraphMetadata
from lmuformer.analysis.profiles import resolve_profiles
from lmuformer.checkpoint import save_checkpoint
from lmuformer.errors import UserError
from lmuformer.jobs.export import export_model
from lmuformer.jobs.report import compare_file, report_file
from tests.graphs import active_model


def test_export_current_headroom_trades_margin_for_a_finer_grid(tmp_path):
    """``current_headroom``: the grids are calibrated at the headroom given and recorded with it;
    a headroom below 1, a preset, a float export or a fine-tuned checkpoint: one error, no file."""
    model = active_model("tiny")
    save_checkpoint(tmp_path / "d.pt", model, {"dataset": "digits"})
    s1 = export_model(str(tmp_path / "d.pt"), output=str(tmp_path / "one.nir"), current_headroom=1.0)
    s2 = export_model(str(tmp_path / "d.pt"), output=str(tmp_path / "two.nir"))
    md1 = GraphMetadata.of(read_graph(tmp_path / "one.nir"))
    peaks = md1.current_calibration["peak_abs_x"]
    assert md1.current_calibration["headroom"] == 1.0
    assert s1["current_grids"]["source"].endswith("headroom x1")
    f1 = calibrated_current_frac(model_to_nir(model), peaks, 1.0)
    assert md1.current_frac == f1 == s1["current_grids"]["frac"]
    f1, f2 = s1["current_grids"]["frac"], s2["current_grids"]["frac"]
    assert all(f1[n] >= f2[n] for n in f2) and f1 != f2
    tuned = tmp_path / "tuned.pt"
    save_checkpoint(tuned, model, {"dataset": "digits",
                                   "finetuned_for": {"weight_terms": 1, "current_frac": f2}})
    for kwargs, match in (({"checkpoint": str(tmp_path / "d.pt"), "current_headroom": 0.99}, ">= 1"),
                          ({"checkpoint": str(tmp_path / "d.pt"), "current_headroom": math.inf}, ">= 1"),
                          ({"preset_name": "tiny", "current_headroom": 1.0}, "a preset has no current grid"),
                          ({"checkpoint": str(tmp_path / "d.pt"), "current_headroom": 1.0, "quantize": False},
                           r"quantised export \(a --float export has no current grid\)$"),
                          ({"checkpoint": str(tuned), "current_headroom": 1.0}, "pinned current grids")):
        with pytest.raises(UserError, match=match):
            export_model(output=str(tmp_path / "bad.nir"), **kwargs)
        assert not (tmp_path / "bad.nir").exists()


def test_lmu_forms_report_runs_the_graphs_the_export_job_writes(tmp_path):
    """``lmuf report --lmu-forms`` of a checkpoint lowers its forms on the grids ``lmuf export``
    records (calibrated on the training split), so its recurrent form reports what the report of
    the exported file reports; a preset's forms keep the static grid."""
    model, profiles = active_model("tiny"), resolve_profiles(None)
    save_checkpoint(tmp_path / "d.pt", model, {"dataset": "digits"})
    s = export_model(str(tmp_path / "d.pt"), output=str(tmp_path / "d.nir"))
    c = compare_file(str(tmp_path / "d.pt"), profiles, "digits", samples=4)
    assert c["forms"]["recurrent"]["current_grids"] == s["current_grids"]
    taps = c["forms"]["taps"]["current_grids"]
    assert taps["source"] == s["current_grids"]["source"] and set(taps["frac"].values()) - {10}
    own = report_file(str(tmp_path / "d.nir"), profiles, "digits", samples=4)
    rec = c["forms"]["recurrent"]
    assert rec["layers"] == own["layers"] and rec["total"] == own["total"]
    assert "current_grids" not in compare_file("tiny", profiles, random=True, samples=2)["forms"]["taps"]


def test_tuned_option_values_given_then_tuned_then_defaults():
    from export.graph import ExportOptions
    from lmuformer.jobs.export import tuned_option_values

    d = ExportOptions()
    keys = ("weight_bits", "weight_terms", "lmu_bits", "lmu_terms", "dt")
    none, defaults = dict.fromkeys(keys), {k: getattr(d, k) for k in keys}
    assert tuned_option_values(none, None, None) == defaults
    assert tuned_option_values({"weight_terms": 2}, None, 0.01)["dt"] == 0.01  # the data set's frame period
    assert tuned_option_values({"weight_terms": 2, "dt": 0.5}, None, 0.01) == {**defaults, "weight_terms": 2,
                                                                                 "dt": 0.5}
    tuned = {"weight_bits": 8, "weight_terms": 1, "lmu_bits": 8, "lmu_terms": 1, "current_frac": {"a": 12}}
    got = tuned_option_values({"lmu_terms": 1}, tuned, 0.02)  # a given option equal to the tuned one is fine
    assert got == {"weight_bits": 8, "weight_terms": 1, "lmu_bits": 8, "lmu_terms": 1, "dt": 0.02}
    assert tuned_option_values(none, {"weight_terms": 1}, None)["lmu_terms"] == d.lmu_terms  # older records
    assert tuned_option_values(none, {**tuned, "dt": 0.25}, 0.02)["dt"] == 0.25
    with pytest.raises(UserError) as e:
        tuned_option_values({"weight_terms": 2, "lmu_bits": 8}, tuned, None)
    assert str(e.value) == ("the checkpoint was fine-tuned for another export (--weight-terms 2); export it "
                            "with --weight-bits 8 --weight-terms 1 --lmu-bits 8 --lmu-terms 1")
    with pytest.raises(UserError, match=r"^the checkpoint was fine-tuned for another export "
                                        r"\(--weight-terms 2, --lmu-terms 2\); export it with "):
        tuned_option_values({"weight_terms": 2, "lmu_terms": 2}, tuned, None)
    with pytest.raises(UserError, match=r"^the checkpoint was fine-tuned for another export \(--float\);"):
        tuned_option_values(none, tuned, None, quantize=False)
    assert tuned_option_values(none, None, None, quantize=False)["weight_terms"] == d.weight_terms


def test_set_current_grids_pins_calibrates_or_says_why_static(tmp_path):
    from export.graph import ExportOptions
    from lmuformer.jobs.export import set_current_grids

    def graph():
        return model_to_nir(active_model("tiny"), ExportOptions())

    g = graph()
    pinned = {n: 11 for n in calibrated_current_frac(g, {})}
    assert set_current_grids(g, {"current_frac": pinned}, {"dataset": "digits"}, None) == {
        "source": "pinned by fine-tuning", "frac": pinned}
    assert GraphMetadata.of(g).current_frac == pinned
    g = graph()
    assert set_current_grids(g, {"current_frac": None}, {"dataset": "digits"}, None) == {
        "source": "static (fine-tuned on the static grid)", "frac": None}
    assert not GraphMetadata.of(g).current_frac
    assert set_current_grids(graph(), None, {"dataset": "nonesuch"}, None) == {
        "source": "static (the checkpoint records no known dataset)", "frac": None}
    g = graph()
    r = set_current_grids(g, None, {"dataset": "digits"}, None, headroom=1.0)
    assert r["source"] == "calibrated on 1024 samples of the digits training split, headroom x1"
    assert r["frac"] == GraphMetadata.of(g).current_frac and set(r["frac"].values()) - {10}
    # the folder training recorded is used when none is given (scv2: the folder's error, static)
    for given, recorded in ((None, str(tmp_path / "recorded")), (str(tmp_path / "given"), "/elsewhere")):
        r = set_current_grids(graph(), None, {"dataset": "scv2", "options": {"data_dir": recorded}}, given)
        assert r["frac"] is None and r["source"].startswith("static (no calibration data: ")
        assert (given or recorded) in r["source"], r["source"]


def test_export_model_writes_the_graph_of_its_options(tmp_path):
    """The file ``export_model`` writes is ``model_to_nir`` of the options given (float, LMU taps
    form, bits and terms), of the options a fine-tuned checkpoint recorded (with its pinned grids),
    and calibrates on the folder given before the one training recorded."""
    from export.graph import ExportOptions

    model = active_model("tiny")
    save_checkpoint(tmp_path / "d.pt", model, {"dataset": "digits"})

    def written(name, **kwargs):
        s = export_model(str(tmp_path / "d.pt"), output=str(tmp_path / f"{name}.nir"), **kwargs)
        return s, read_graph(tmp_path / f"{name}.nir")

    def same(graph, opts):
        want = model_to_nir(model.eval(), opts)
        assert set(graph.nodes) == set(want.nodes)
        for n, node in want.nodes.items():
            for k in ("weight", "bias", "delay"):
                if hasattr(node, k):
                    np.testing.assert_array_equal(getattr(graph.nodes[n], k), getattr(node, k),
                                                  err_msg=f"{n}.{k}")

    dt = 0.001  # digits' frame period (lmuformer.data)
    for kwargs in ({"quantize": False}, {"lmu_form": "taps", "lmu_taps": 6, "lmu_max_delay": 2},
                   {"weight_bits": 6, "weight_terms": 2, "lmu_bits": 7, "lmu_terms": 1}):
        s, g = written("opts", **kwargs)
        same(g, ExportOptions(**kwargs, dt=s["dt"]))
        assert s["dt"] == dt
        assert ("current_grids" in s) == kwargs.get("quantize", True)  # a float export has none
        assert any(".relay" in n for n in g.nodes) == ("lmu_max_delay" in kwargs)  # 6 taps, at most 2 apart
    tuned = {"weight_bits": 8, "weight_terms": 2, "lmu_bits": 8, "lmu_terms": 1, "current_frac": None}
    save_checkpoint(tmp_path / "d.pt", model, {"dataset": "digits", "finetuned_for": tuned})
    s, g = written("tuned")
    same(g, ExportOptions(weight_terms=2, lmu_terms=1, dt=dt))
    assert s["current_grids"] == {"source": "static (fine-tuned on the static grid)", "frac": None}
    with pytest.raises(UserError, match=r"^the checkpoint was fine-tuned for another export \(--float\)"):
        written("float", quantize=False)
    with pytest.raises(UserError, match=r"^the checkpoint was fine-tuned on pinned current grids: "
                                        r"--current-headroom does not apply \(give it to lmuf finetune\)$"):
        written("headroom", current_headroom=1.0)
    # a preset: seeded (0 by default), no current grids in its summary
    a = export_model(preset_name="tiny", output=str(tmp_path / "p0.nir"))
    b = export_model(preset_name="tiny", output=str(tmp_path / "p1.nir"), seed=0)
    assert a == b and "current_grids" not in a
    assert (tmp_path / "p0.nir").read_bytes() == (tmp_path / "p1.nir").read_bytes()
    assert export_model(preset_name="tiny", output=str(tmp_path / "p2.nir"), seed=1) != a
    save_checkpoint(tmp_path / "d.pt", model, {"dataset": "scv2", "options": {"data_dir": "/recorded/dir"}})
    s, _ = written("folder", data_dir=str(tmp_path / "given"))
    assert s["current_grids"]["frac"] is None and str(tmp_path / "given") in s["current_grids"]["source"]
    with pytest.raises(UserError, match=re.escape(str(tmp_path / "given"))):  # --eval reads the folder given
        written("eval", data_dir=str(tmp_path / "given"), eval_dataset="scv2")


def test_calibration_data_frame_period_and_model_loading(tmp_path):
    """The small pieces of the export job: the calibration samples (evenly spaced over the training
    split, its first and last included, float32), the recorded calibration (samples, headroom, peaks
    to 6 decimals), the frame period a checkpoint implies, a model from a file or a preset, and the
    record of pinned grids."""
    from export.graph import ExportOptions
    from lmuformer.data import load_dataset
    from lmuformer.jobs.export import (
        calibrate_export,
        calibration_inputs,
        checkpoint_frame_period,
        frame_period,
        load_model,
        pin_current_frac,
    )

    train = load_dataset("digits", "train")
    x = calibration_inputs("digits", samples=5)
    assert x.dtype == np.float32 and x.shape[0] == 5
    want = np.linspace(0, len(train) - 1, 5).round().astype(int)
    assert (want[0], want[-1]) == (0, len(train) - 1)
    for row, i in zip(x, want, strict=True):
        np.testing.assert_array_equal(row, np.asarray(train[int(i)][0], np.float32))
    assert calibration_inputs("digits", samples=10**6).shape[0] == len(train)
    frac, info = calibrate_export(model_to_nir(active_model("tiny")), "digits", samples=16, headroom=1.5)
    assert (info["samples"], info["headroom"], info["data"]) == (16, 1.5, "digits training split")
    assert set(info["peak_abs_x"]) == set(frac) and all(v == round(v, 6) for v in info["peak_abs_x"].values())
    assert any(v != round(v, 5) for v in info["peak_abs_x"].values())
    assert frame_period({"frame_period_s": 0.05, "dataset": "digits"}) == 0.05
    assert frame_period({"dataset": "digits"}) == 0.001 and frame_period({"dataset": "x"}) is None
    save_checkpoint(tmp_path / "a.pt", active_model("tiny"), {"frame_period_s": 0.05})
    save_checkpoint(tmp_path / "b.pt", active_model("tiny"), {})
    assert checkpoint_frame_period(str(tmp_path / "a.pt")) == 0.05
    assert checkpoint_frame_period(str(tmp_path / "b.pt")) == ExportOptions().dt
    m = load_model(str(tmp_path / "a.pt"))
    ref = active_model("tiny")
    assert not m.training
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), ref.parameters(), strict=True))
    p0, p1 = load_model(preset_name="tiny"), load_model(preset_name="tiny", seed=0)
    assert all(torch.equal(p, q) for p, q in zip(p0.parameters(), p1.parameters(), strict=True))
    with pytest.raises(UserError, match="nonesuch"):
        load_model(preset_name="nonesuch")
    g = pin_current_frac(model_to_nir(active_model("tiny")), {"head.lif": 12})
    md = GraphMetadata.of(g)
    assert md.current_frac == {"head.lif": 12}
    assert md.current_calibration == {"data": "pinned by lmuf finetune"}
