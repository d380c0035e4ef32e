"""Edges of the streaming metrics (lmuformer/analysis/streaming.py): exact messages, the bounds of
the frame range, margins by hand on several samples and steps, float64 arithmetic on float32 and
uint8 inputs, ties at the margin and at the 99 % threshold, and summarize on a hand-made case."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from lmuformer.analysis.streaming import (
    accuracy_by_frames,
    early_decisions,
    final_accuracy,
    frames_for_fraction,
    margins,
    per_step_outputs,
    running_means,
    summarize,
)


@pytest.mark.parametrize("shape", [(2, 0, 3), (2, 3)])
def test_outputs_need_a_step_and_three_axes(shape):
    message = f"expected per-step outputs (samples, steps, classes), got {shape}"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        running_means(np.zeros(shape))


def test_one_step_is_enough():
    assert running_means(np.array([[[1, 3]]])).tolist() == [[[1.0, 3.0]]]
    assert running_means(np.array([[[1, 3], [3, 1]]])).tolist() == [[[1.0, 3.0], [2.0, 2.0]]]


def test_per_step_outputs_message():
    with pytest.raises(ValueError, match=r"^expected a trace \(samples, steps, classes\), got \(2, 3\)$"):
        per_step_outputs(np.zeros((2, 3)))
    assert per_step_outputs(np.array([[[1], [3]]], np.int64)).tolist() == [[[1.0], [2.0]]]


def test_accuracy_by_frames_bounds_and_messages():
    out = np.array([[[1.0, 0.0], [0.0, 3.0]], [[0.0, 1.0], [0.0, 1.0]]])  # preds [[0, 1], [1, 1]]
    assert accuracy_by_frames(out, np.array([[1], [1]]), 1).tolist() == [0.5]
    assert accuracy_by_frames(out, [1, 1], 2).tolist() == [0.5, 1.0]
    for frames in (0, 3):
        with pytest.raises(ValueError, match=rf"^frames must be in 1\.\.2, got {frames}$"):
            accuracy_by_frames(out, [1, 1], frames)
    assert final_accuracy(out, np.array([[1], [0]])) == 0.5
    three_steps = np.zeros((2, 3, 2))  # samples != steps: the message names the samples
    with pytest.raises(ValueError, match=r"^3 labels for 2 samples$"):
        accuracy_by_frames(three_steps, [1, 1, 1], 1)
    # final predictions [0, 1]: labels of shape (2, 1) are flattened, not broadcast against them
    assert final_accuracy(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]), np.array([[0], [1]])) == 1.0


def test_frames_for_fraction_tie():
    assert frames_for_fraction([0.5, 0.99, 1.0], 1.0) == 2  # reached exactly
    assert frames_for_fraction(np.array([1, 1]), 1.0, 1.0) == 1
    # exactly at the tolerance's edge, fraction * final - 1e-12, still counts
    assert frames_for_fraction([0.5, 1.0 - 1e-12], 1.0, 1.0) == 2


def test_frames_for_fraction_compares_float32_in_float64():
    # c = 1 - 2**-24 lies 1e-12 below the threshold; in float32 the threshold would round to c
    c = np.float32(1 - 2**-24)
    assert frames_for_fraction(np.array([c], np.float32), float(c) + 2e-12, 1.0) is None
    assert frames_for_fraction(np.array([c], np.float32), float(c), 1.0) == 1


def test_float32_and_uint8_inputs_are_computed_in_float64():
    # float32 would give 1e8 + 1 == 1e8 (its spacing there is 8)
    out = running_means(np.array([[[1e8], [1.0]]], np.float32))
    assert out.dtype == np.float64 and out.tolist() == [[[1e8], [50000000.5]]]
    # a falling uint8 trace: its difference is negative, not wrapped to 254
    steps = per_step_outputs(np.array([[[3], [1]]], np.uint8))
    assert steps.dtype == np.float64 and steps.tolist() == [[[3.0], [-2.0]]]


def test_margins_by_hand():
    # sample 0: running means [ln 3, 0, 0] -> softmax [3/5, 1/5, 1/5]: margin 2/5;
    # sample 1: [0, 0, ln 2] -> [1/4, 1/4, 1/2]: margin 1/4 (max and sort per sample and step)
    out = np.array([[[np.log(3), 0.0, 0.0]], [[0.0, 0.0, np.log(2)]]])
    np.testing.assert_allclose(margins(out), [[0.4], [0.25]], rtol=0, atol=1e-12)
    big = np.array([[[1000.0, 999.0]]])  # exp without subtracting the max overflows
    np.testing.assert_allclose(margins(big), [[np.tanh(0.5)]], rtol=0, atol=1e-12)


def test_margins_subtract_the_max_of_each_sample_and_step():
    # one global max (1000) would underflow every exp of sample 1 to 0 and give 0 / 0
    out = np.array([[[1000.0, 999.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(margins(out), [[np.tanh(0.5)], [np.tanh(0.5)]], rtol=0, atol=1e-12)


def test_early_decisions_tie_and_default_frames():
    flat = np.zeros((1, 3, 2))  # margin 0 at every step (steps 3 != classes 2)
    preds, used = early_decisions(flat, 0.0)  # 0 >= 0: decided at the first frame
    assert preds.tolist() == [0] and used.tolist() == [1]
    preds, used = early_decisions(flat, 0.5)  # never: all 3 steps (frames defaults to the steps)
    assert preds.tolist() == [0] and used.tolist() == [3]


# frames 2, latency 1, classes 2; running means by hand:
#   sample 0 (label 0): [2, 0], [2, 0], [4/3, 0] -> preds 0, 0, 0; margins tanh(1), tanh(1), tanh(2/3)
#   sample 1 (label 1): [0, 0], [0, 0], [0, 1]   -> preds 0, 0, 1; margins 0, 0, tanh(1/2) = 0.46
#   sample 2 (label 1): zeros                    -> preds 0, 0, 0; margins 0, 0, 0
HAND = np.array([[[2.0, 0.0], [2.0, 0.0], [0.0, 0.0]],
                 [[0.0, 0.0], [0.0, 0.0], [0.0, 3.0]],
                 [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])


def test_summarize_by_hand():
    r = summarize(HAND, np.array([[0], [1], [1]]), frames=2, latency=1, margins_=(0.4,))
    assert r.accuracy_by_frames == [1 / 3, 1 / 3] and r.final_accuracy == 2 / 3
    assert r.accuracy_by_steps == [1 / 3, 1 / 3, 2 / 3]
    assert (r.frames_for_99pct, r.reduction, r.steps_for_99pct) == (None, None, 3)
    assert (r.real_frames_mean, r.reduction_real) == (2.0, None)
    # from frame 2 on, within the 2 frames: sample 0 at frame 2; samples 1 and 2 never (sample 1
    # only in the flush step), so they count 2 frames and answer their final predictions 1 and 0
    assert r.early == [{"margin": 0.4, "min_frames": 2, "accuracy": 2 / 3, "mean_frames": 2.0,
                        "decided_early": 0.0}]


def test_summarize_of_no_samples_takes_frames_as_the_real_length():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the accuracies of no samples are nan
        r = summarize(np.zeros((0, 3, 2)), [], frames=2, latency=1, margins_=(0.5,))
    assert (r.samples, r.real_frames_mean, r.frames_for_99pct, r.reduction_real) == (0, 2.0, None, None)
