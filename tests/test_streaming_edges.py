"""Edges of the streaming metrics (lmuformer/analysis/streaming.py): exact messages, the bounds of
the frame range, margins by hand on several samples and steps."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lmuformer.analysis.streaming import (
    accuracy_by_frames,
    final_accuracy,
    frames_for_fraction,
    margins,
    per_step_outputs,
    running_means,
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
    with pytest.raises(ValueError, match=r"^3 labels for 2 samples$"):
        accuracy_by_frames(out, [1, 1, 1], 1)
    for frames in (0, 3):
        with pytest.raises(ValueError, match=rf"^frames must be in 1\.\.2, got {frames}$"):
            accuracy_by_frames(out, [1, 1], frames)
    assert final_accuracy(out, np.array([[1], [0]])) == 0.5


def test_frames_for_fraction_tie():
    assert frames_for_fraction([0.5, 0.99, 1.0], 1.0) == 2  # reached exactly
    assert frames_for_fraction(np.array([1, 1]), 1.0, 1.0) == 1


def test_margins_by_hand():
    # sample 0: running means [ln 3, 0, 0] -> softmax [3/5, 1/5, 1/5]: margin 2/5;
    # sample 1: [0, 0, ln 2] -> [1/4, 1/4, 1/2]: margin 1/4 (max and sort per sample and step)
    out = np.array([[[np.log(3), 0.0, 0.0]], [[0.0, 0.0, np.log(2)]]])
    np.testing.assert_allclose(margins(out), [[0.4], [0.25]], rtol=0, atol=1e-12)
    big = np.array([[[1000.0, 999.0]]])  # exp without subtracting the max overflows
    np.testing.assert_allclose(margins(big), [[np.tanh(0.5)]], rtol=0, atol=1e-12)
