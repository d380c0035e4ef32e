"""The jobs over the current grids: ``lmuf export --current-headroom`` and ``lmuf report
--lmu-forms`` of a checkpoint, which lowers its forms on the grids the export job records."""

from __future__ import annotations

import math

import pytest

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
                           "a --float export"),
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
