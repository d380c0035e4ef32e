"""``backends.emulator.run`` (the batching, progress and result assembly around the emulator)
on the hand-made graphs of tests/test_emulator.py, whose results are known by hand: defaults,
batches, peaks, the progress bar, the empty input (issue 16).  Each test runs in milliseconds."""

from __future__ import annotations

import numpy as np
import pytest

from backends.emulator import run
from export.metadata import with_current_frac
from tests.graphs import EDGE_SPIKES, EDGE_X, edge_graph, edge_trace, wrap_graph

# sample 0: the edge input (peak |a_in| 2052 in population a); 1: zeros (peak 0); 2: the edge
# input halved (no spike: v stays <= 1; 1 + 2**-9 rounds to 1 on the input grid: peak 1024)
X3 = np.concatenate([EDGE_X, np.zeros_like(EDGE_X), EDGE_X / 2])


def test_result_of_the_edge_graph_by_hand():
    g = edge_graph()
    r = run(g, EDGE_X, progress=False, record=True)
    assert r.backend == "emulator" and r.precision == "fixed"  # the default precision
    assert r.steps == 5 and r.neurons == {"a": 2}
    assert np.array_equal(r.trace, edge_trace())
    assert np.array_equal(r.readout, edge_trace()[:, -1])
    assert r.spikes.keys() == {"a"} and r.spikes["a"].tolist() == [2]
    assert r.extra.keys() == {"network", "peak_abs_a_in", "input_clipped", "a_in_overflow", "spike_trains"}
    assert r.extra["a_in_overflow"] == {}  # 2052 fits Loihi's 16-bit a_in
    # the input grid from the data: max|x| = 2 + 2**-8 fits 16 bits at 2**-13, not 2**-14;
    # lowered for 5 steps: the readout integrator's bound gives it 19 fraction bits
    frac = {"input": 13, "a": 10, "readout": 19}
    assert r.extra["network"] == {"frac": frac, "dense_terms": 3, "notes": []}
    assert r.extra["peak_abs_a_in"] == {"a": 2052}  # (2 + 2**-8) * 2**10, rounded
    assert r.extra["input_clipped"] == 0.0
    assert np.array_equal(r.extra["spike_trains"]["a"], EDGE_SPIKES)
    assert 0.0 <= r.wall_s < 60.0
    assert "spike_trains" not in run(g, EDGE_X, progress=False).extra  # record is off by default


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_batches_give_one_result(batch_size):
    # one input grid (2**-8) for all: the automatic grid follows each call's own peak
    g = edge_graph()
    r = run(g, X3, progress=False, batch_size=batch_size, record=True, input_frac_bits=8)
    one = [run(g, X3[i : i + 1], progress=False, record=True, input_frac_bits=8) for i in range(3)]
    assert r.trace.shape == (3, 5, 2) and r.readout.shape == (3, 2)
    assert np.array_equal(r.trace, np.concatenate([o.trace for o in one]))
    assert np.array_equal(r.trace[0], edge_trace()[0]) and not r.trace[1:].any()
    assert r.spikes["a"].tolist() == [2, 0, 0]
    trains = np.concatenate([EDGE_SPIKES, np.zeros((2, 5, 2), bool)])
    assert np.array_equal(r.extra["spike_trains"]["a"], trains)
    assert r.extra["peak_abs_a_in"] == {"a": 2052}  # the largest over the batches
    assert [o.extra["peak_abs_a_in"]["a"] for o in one] == [2052, 0, 1024]


def test_silent_input_has_peak_zero_and_float_run_has_no_fixed_point_extras():
    g = edge_graph()
    assert run(g, np.zeros((2, 4, 2)), progress=False).extra["peak_abs_a_in"] == {"a": 0}
    r = run(g, X3, precision="float", progress=False)
    assert r.precision == "float" and r.extra.keys() == {"network"}
    assert np.array_equal(r.trace[0], edge_trace()[0])


def test_empty_input():
    r = run(edge_graph(), np.zeros((0, 4, 2)), progress=False, record=True)
    assert r.trace.shape == (0, 5, 2) and r.readout.shape == (0, 2) and r.steps == 5
    assert r.spikes == {} and r.extra["spike_trains"] == {}


def test_input_encoding_grid_from_the_data_or_given():
    """By default the finest grid on which max|x| = 130 fits 16 bits: 2**-7 (nothing clipped);
    given 2**-8, 130 is clipped to 2**15 - 1 steps and 2**-9 rounds to 0 (half to even)."""
    g = wrap_graph()
    x = np.array([[[130.0], [2.0**-9]]])
    r = run(g, x, progress=False)
    assert r.extra["network"]["frac"]["input"] == 7
    assert r.extra["input_clipped"] == 0.0
    r = run(g, x, progress=False, input_bits=16, input_frac_bits=8)
    assert r.trace[0, :, 0].tolist() == [(2**15 - 1) / 256] * 2 and r.extra["input_clipped"] == 0.5
    r = run(g, x, progress=False, input_frac_bits=9)
    assert r.trace[0, :, 0].tolist() == [(2**15 - 1) / 512, 2**14 / 256]
    assert r.readout.tolist() == [[2**14 / 256]]  # the last step's readout


def test_progress_bar(capsys):
    g = edge_graph()
    run(g, X3, batch_size=2)  # progress on by default, on stderr
    err = capsys.readouterr().err
    assert "emulator (fixed): 100%" in err and "3/3" in err and "sample/s" in err
    run(g, X3, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_a_in_overflow_fraction_over_batches(batch_size):
    """On the grid 2**-15 every |x| >= 1 is an a_in beyond 2**15 - 1: sample 0 has 4 such values
    (2, 2 + 2**-8, 2, 2), sample 2 (halved) 4 more (exactly 1: 32768); 8 of 3 samples x 5 steps x 2
    neurons.  Counted over every batch."""
    g = with_current_frac(edge_graph(), {"a": 15})
    r = run(g, X3, progress=False, batch_size=batch_size, input_frac_bits=8)
    assert r.extra["network"]["frac"]["a"] == 15
    assert r.extra["a_in_overflow"] == {"a": 8 / 30}
    assert r.extra["peak_abs_a_in"] == {"a": (2 * 2**8 + 1) * 2**7}  # (2 + 2**-8) * 2**15
