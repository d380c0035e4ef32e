"""Calibrated current grids per spiking population (``backends/fixed_point.py``'s docstring): the
rule by hand, the grids through the graph metadata (NIR file round trip), the static fallback,
the export job's calibration and the emulator's report of a_in beyond 16 bits."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from backends.base import simulate
from backends.emulator import Emulator, calibrate_current_frac, current_peaks
from backends.fixed_point import Population, calibrated_current_frac, current_frac_for, lower
from export.io import read_graph, write_graph
from export.metadata import GraphMetadata, with_current_frac
from lmuformer.checkpoint import save_checkpoint
from lmuformer.errors import UserError
from lmuformer.jobs.export import calibrate_export, export_model
from tests.graphs import active_model, edge_graph, one_lif_graph


def _pop(dv: int = 2048, du: int = 4095, bias: float = 0.0) -> Population:
    return Population("a", "lif", 1, du=du, dv=dv, bias_f=np.full(1, bias))


@pytest.mark.parametrize("peak, headroom, pop, k", [
    (0.5, 2.0, _pop(), 14),  # 1 * 2**14 fits 2**15 - 1, 2**15 does not
    (7.99, 2.0, _pop(), 11),  # 15.98 * 2**11 = 32727 fits
    (8.0, 2.0, _pop(), 10),  # 16 * 2**11 = 32768 does not
    (9.0, 1.0, _pop(), 11),
    (100.0, 2.0, _pop(), 10),  # nothing fits: the static grid, never coarser
    (float("inf"), 2.0, _pop(), 10),
    (0.0, 2.0, _pop(), 15),  # no input: the finest grid
    (0.5, 2.0, _pop(dv=256), 12),  # tau = 16 dt: |V| <= 16 |U| must fit 24 bits (k = 13 gives 2**23)
    (0.0, 2.0, _pop(bias=1.0), 12),  # the bias: rint(2**(k+6) / 2**7) <= 4095
    (0.25, 2.0, _pop(du=511, dv=4095), 14),  # a current stage (CubaLIF): |U| <= 8 * 64 a_in = 2**23 at 15
])
def test_grid_rule_by_hand(peak, headroom, pop, k):
    assert current_frac_for(peak, pop, headroom) == k


def test_peaks_and_grids_through_the_metadata(tmp_path):
    g = one_lif_graph()
    x = np.full((2, 3, 1), 0.5)
    x[1, 1, 0] = -0.625  # the peak |x| of a: 13/16 * 0.625
    assert current_peaks(g, x) == {"a": 13 / 16 * 0.625}
    frac, peaks = calibrate_current_frac(g, x)
    assert frac == {"a": 14} and frac == calibrated_current_frac(g, peaks)  # 2 * 0.508 * 2**14 < 2**15
    assert lower(g).populations["a"].frac == 10  # no metadata: the static grid
    with_current_frac(g, frac, {"headroom": 2.0})
    p = lower(g).populations["a"]
    assert (p.frac, p.vth) == (14, 2**15)  # vth = 1 * 2**k / alpha
    assert lower(g, current_frac={}).populations["a"].frac == 10  # {}: static, whatever the metadata
    assert lower(g, current_frac={"a": 12}).populations["a"].frac == 12
    write_graph(g, tmp_path / "g.nir")
    back = read_graph(tmp_path / "g.nir")
    md = GraphMetadata.of(back)
    assert md.current_frac == {"a": 14} and md.current_calibration == {"headroom": 2.0}
    assert lower(back).populations["a"].frac == 14
    # the emulator lowers the file's grid: the run equals the one lowered with the grid given
    a = simulate(back, x, backend="emulator", precision="fixed", progress=False, record=True)
    assert a.extra["network"]["frac"]["a"] == 14 and a.extra["a_in_overflow"] == {}
    with_current_frac(back, None)
    assert "current_frac" not in back.metadata and lower(back).populations["a"].frac == 10


@pytest.mark.parametrize("grids, message", [
    ({"zz": 12}, "not a spiking population"),
    ({"readout": 12}, "not a spiking population"),
    ({"a": 16}, "integer k in 0..15"),
    ({"a": 1.5}, "integer k in 0..15"),
])
def test_bad_grids_are_one_error(grids, message):
    with pytest.raises(UserError, match=message):
        lower(one_lif_graph(), current_frac=grids)


def test_input_beyond_the_calibrated_range_is_reported():
    g = with_current_frac(one_lif_graph(exponent=0), {"a": 14})  # weight 13: |x| < 2**15 / 13 / 2**14 fits
    ok = simulate(g, np.full((1, 2, 1), 0.15), backend="emulator", precision="fixed", progress=False)
    assert ok.extra["a_in_overflow"] == {} and ok.extra["peak_abs_a_in"]["a"] == round(13 * 0.15 * 2**14)
    x = np.array([[[0.15], [0.2], [0.0], [-0.2]]])  # 13 * 0.2 * 2**14 = 42598 > 2**15 - 1, twice
    r = simulate(g, x, backend="emulator", precision="fixed", progress=False)
    assert r.extra["a_in_overflow"] == {"a": 0.5}
    assert simulate(with_current_frac(g, None), x, backend="emulator", precision="fixed",
                    progress=False).extra["a_in_overflow"] == {}  # 2**-10: 2663 fits


def test_export_job_calibrates_a_checkpoint_on_its_training_split(tmp_path):
    model = active_model("tiny")
    save_checkpoint(tmp_path / "d.pt", model, {"dataset": "digits"})
    save_checkpoint(tmp_path / "none.pt", model, {})
    s = export_model(str(tmp_path / "d.pt"), output=str(tmp_path / "d.nir"))
    md = GraphMetadata.of(read_graph(tmp_path / "d.nir"))
    from export.graph import model_to_nir

    frac, info = calibrate_export(model_to_nir(model), "digits")
    assert md.current_frac == frac == s["current_grids"]["frac"] and set(frac.values()) - {10}
    assert md.current_calibration == info and info["data"] == "digits training split"
    assert s["current_grids"]["source"].startswith("calibrated on 1024 samples of the digits training split")
    # no known data set, a preset, a float export: the static grid
    export_model(str(tmp_path / "none.pt"), output=str(tmp_path / "n.nir"))
    export_model(preset_name="tiny", output=str(tmp_path / "p.nir"))
    export_model(str(tmp_path / "d.pt"), output=str(tmp_path / "f.nir"), quantize=False)
    for name in ("n", "p", "f"):
        assert GraphMetadata.of(read_graph(tmp_path / f"{name}.nir")).current_frac is None, name


def _bare(du: int = 4095, dv: int = 0, vth_f: float = 0.0, bias_f: np.ndarray | None = None) -> Population:
    return Population("a", "lif", 1, du=du, dv=dv, vth_f=vth_f, bias_f=bias_f)


@pytest.mark.parametrize("peak, headroom, pop, k", [
    # a_in exactly A_IN_MAX fits: 32767 / 2**15 * 2**15 (u = 64 a_in, v = 0 with dv = 0)
    (32767 / 2**15, 1.0, _bare(), 15),
    # u exactly 2**23 does not fit: 64 * 2**14 * 4096 / 512 at k = 15; at 14 it is 2**22
    (0.25, 2.0, _bare(du=511), 14),
    # du + 1 = 512 (not du - 1): 64 * 16383 * 4096 / 512 = 8388096 < 2**23 at k = 15
    (16383 / 2**15, 1.0, _bare(du=511), 15),
    # vth_f 2**k exactly 2**17 does not fit 17 bits: 4 * 2**15; 4 * 2**14 does
    (0.0, 2.0, _bare(vth_f=4.0), 14),
    (0.0, 2.0, _bare(vth_f=4.0 - 2**-20), 15),
    # the bias in the v bound: 2**-10 * 2**(k + 6) * 4096 / dv (dv = 1) < 2**23 needs k <= 14
    (0.0, 2.0, _bare(dv=1, bias_f=np.full(1, 2**-10)), 14),
    (0.0, 2.0, _bare(dv=1, bias_f=np.full(1, -(2**-10))), 14),  # |bias|
    # no bias (None or no neurons): bias 0 in the v bound, even with dv = 1
    (0.0, 2.0, _bare(dv=1), 15),
    (0.0, 2.0, Population("a", "lif", 0, dv=1, bias_f=np.zeros(0)), 15),
    # dv = 0 (no leak): no static v bound (dv = 1 would give 64 a_in 4096 >= 2**23 down to k = 10)
    (0.25, 1.0, _bare(dv=0), 15),
    (0.25, 1.0, _bare(dv=1), 10),
    # a non-finite peak, whatever its sign or the headroom's: the static grid
    (-math.inf, 2.0, _bare(), 10),
    (math.inf, -1.0, _bare(), 10),
    (math.nan, 2.0, _bare(), 10),
])
def test_grid_rule_at_the_edges(peak, headroom, pop, k):
    assert current_frac_for(peak, pop, headroom) == k


def test_grid_rule_default_headroom_is_two():
    # 2 * 0.75 * 2**15 = 49152 > 2**15 - 1; 2 * 0.75 * 2**14 = 24576 fits (1.0 would give 15)
    assert current_frac_for(0.75, _bare()) == 14
    assert current_frac_for(0.75, _bare(), 1.0) == 15


def test_calibration_headroom_missing_peaks_and_a_stale_grid():
    g = one_lif_graph()
    assert calibrated_current_frac(g, {}) == {"a": 15}  # a population missing from peaks: peak 0
    assert calibrated_current_frac(g, {"a": 0.75}) == {"a": 14}  # the default headroom 2
    assert calibrated_current_frac(g, {"a": 0.75}, 1.0) == {"a": 15}
    # the metadata's grids are not used (nor checked) to recalibrate: a stale one is replaced
    for stale in ({"zz": 12}, {"a": 16}):
        assert calibrated_current_frac(with_current_frac(g, stale), {"a": 0.75}) == {"a": 14}


@pytest.mark.parametrize("k", [0, 15])
def test_grid_bounds_are_accepted(k):
    p = lower(one_lif_graph(), current_frac={"a": k}).populations["a"]
    assert (p.frac, p.vth) == (k, 2 ** (k + 1))  # vth_f = 2


@pytest.mark.parametrize("k", [-1, 16, True])
def test_grid_out_of_range_message(k):
    message = f"a: current grid 2**-k needs an integer k in 0..15, got {k!r}"
    with pytest.raises(UserError, match=re.escape(message)):
        lower(one_lif_graph(), current_frac={"a": k})


def test_peaks_cover_every_sample_and_batch():
    g = edge_graph()  # identity into a(2): a_in = x
    x = np.zeros((3, 4, 2))
    x[0, 1, 1], x[2, 2, 0] = -0.75, 0.5
    assert current_peaks(g, x) == {"a": 0.75}  # in the first sample
    assert current_peaks(g, x, batch_size=1) == {"a": 0.75}
    x[0, 1, 1] = 0.0
    assert current_peaks(g, x, batch_size=1) == current_peaks(g, x, batch_size=2) == {"a": 0.5}  # the last
    x[2, 2, 0] = -0.75  # 2 * 0.75 * 2**15 > 2**15 - 1; 1 * 0.75 * 2**15 fits
    assert calibrate_current_frac(g, x) == ({"a": 14}, {"a": 0.75})  # the default headroom 2
    assert calibrate_current_frac(g, x, 1.0) == ({"a": 15}, {"a": 0.75})
    net = lower(g, steps=5)  # an empty batch in float: peak 0
    assert Emulator(net, fixed=False).run(np.zeros((0, 4, 2)), 5)["peak_a_in"] == {"a": 0}


def test_a_in_of_exactly_16_bits_is_no_overflow():
    g = with_current_frac(edge_graph(), {"a": 15})
    x = np.array([[[1 - 2**-15, -(1 - 2**-15)], [0.0, 0.0]]])  # on the input grid 2**-15: a_in = +-32767
    r = simulate(g, x, backend="emulator", precision="fixed", progress=False, input_frac_bits=15)
    assert r.extra["network"]["frac"]["a"] == 15
    assert r.extra["peak_abs_a_in"] == {"a": 2**15 - 1} and r.extra["a_in_overflow"] == {}
