"""The Lava backend: fixed_pt == emulator bit for bit, floating_pt == torch, clean shutdown.

Skipped (with the reason) only where ``import lava`` fails (Python != 3.10); CI runs 3.10.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from backends.base import simulate
from backends.lava.backend import command_line, descendants
from export import model_to_nir
from export.graph import ExportOptions
from lmuformer.errors import UserError
from tests.conftest import skip_without_lava
from tests.graphs import (
    EDGE_SPIKES,
    EDGE_X,
    WRAP_X,
    active_model,
    edge_graph,
    edge_trace,
    inputs,
    wrap_graph,
    wrapped_trace,
)

skip_without_lava(module_level=True)  # lava 0.10 fails to import on Python >= 3.11

# Lava floating_pt vs the torch backend: the same float64 operations up to summation order
# (and the v -> 2v scaling of the LIF), so the readout agrees to 1e-9 of its largest value
# and spike counts and predictions are identical.
FLOAT_RTOL = 1e-9


def _is_resource_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker: one helper per parent for its whole life, not Lava's."""
    return "multiprocessing.resource_tracker" in command_line(pid)


def wait_for_children(before: set[int], timeout: float = 20.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = {p for p in descendants() - before if not _is_resource_tracker(p)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@pytest.fixture(scope="module")
def digits_model():
    return active_model("digits", seed=1)


@pytest.fixture(scope="module")
def digits_graph(digits_model):
    return model_to_nir(digits_model, ExportOptions(quantize=True))


def assert_same_spikes(a, b):
    ta, tb = a.extra["spike_trains"], b.extra["spike_trains"]
    assert set(ta) == set(tb)
    for k in ta:
        assert ta[k].shape == tb[k].shape, k
        assert np.array_equal(ta[k], tb[k]), f"{k}: {int((ta[k] != tb[k]).sum())} spikes differ"
    assert np.array_equal(a.trace, b.trace)


def test_lif_step_matches_lava_model():
    """The emulator's LIF update == Lava's PyLifModelBitAcc on edge cases (wrap, clip, negative)."""
    from lava.proc.lif.models import PyLifModelBitAcc

    from backends.emulator import lif_step_fixed

    rng = np.random.default_rng(0)
    n = 4000
    for du, dv in [(4095, 2048), (0, 2048), (100, 3000), (4095, 0)]:
        m = PyLifModelBitAcc({})
        m.u = rng.integers(-(2**23) + 1, 2**23, n).astype(np.int32)
        m.v = rng.integers(-(2**23) + 1, 2**23, n).astype(np.int32)
        m.du, m.dv, m.vth = du, dv, 1000
        m.bias_mant = rng.integers(-4096, 4096, n).astype(np.int16)
        m.bias_exp = rng.integers(0, 8, n).astype(np.int16)
        a = rng.integers(-(2**17), 2**17, n).astype(np.int32)
        u0, v0 = m.u.astype(np.int64), m.v.astype(np.int64)
        m.scale_bias()
        m.scale_threshold()
        m.subthr_dynamics(activation_in=a.copy())
        s = m.spiking_activation()
        m.reset_voltage(s)
        bias = m.bias_mant.astype(np.int64) << m.bias_exp.astype(np.int64)
        u, v, s2 = lif_step_fixed(u0, v0, a.astype(np.int64), du, dv, bias, 1000)
        assert np.array_equal(u, m.u) and np.array_equal(v, m.v) and np.array_equal(s2, s)


def test_fixed_equals_emulator_digits(digits_graph):
    from backends.fixed_point import lower

    net = lower(digits_graph)  # the input and the memory send rounding channels (graded rounding)
    assert net.populations["input"].consts and net.populations["block0.lmu.memory"].consts
    x = inputs(4, seed=11)
    lava = simulate(digits_graph, x, backend="lava", precision="fixed", progress=False, record=True)
    emu = simulate(digits_graph, x, backend="emulator", precision="fixed", progress=False, record=True)
    assert_same_spikes(lava, emu)
    assert sum(v.sum() for v in lava.spikes.values()) > 1000
    assert lava.spikes["block0.lmu.u.lif"].sum() > 0  # the memory path carries data
    assert np.array_equal(lava.predictions, emu.predictions)


def test_fixed_equals_emulator_with_calibrated_current_grids(digits_model):
    """Current grids calibrated per population (from the graph metadata): Lava lowers them as the
    emulator does and runs bit for bit as it; the grids are not all the static 2**-10."""
    from backends.emulator import calibrate_current_frac
    from export.metadata import with_current_frac

    graph = model_to_nir(digits_model, ExportOptions(quantize=True))
    frac, _ = calibrate_current_frac(graph, inputs(16, seed=3))
    with_current_frac(graph, frac)
    assert len(set(frac.values())) > 1, frac
    x = inputs(3, seed=12)
    lava = simulate(graph, x, backend="lava", precision="fixed", progress=False, record=True)
    emu = simulate(graph, x, backend="emulator", precision="fixed", progress=False, record=True)
    lowered = emu.extra["network"]["frac"]  # as calibrated; below 10 only where vth or a bias needs it
    assert all(lowered[n] == k if k > 10 else lowered[n] <= 10 for n, k in frac.items()), (lowered, frac)
    assert_same_spikes(lava, emu)
    assert sum(v.sum() for v in lava.spikes.values()) > 500


def test_simulate_job_on_lava_counts_a_in_overflow_through_the_emulator(tmp_path):
    """``lmuf simulate --backend lava``: Lava exposes no a_in, so the job takes the overflow count
    of the emulator's run of the same integers, and reports that both predict alike."""
    from export.io import write_graph
    from export.metadata import with_current_frac
    from export.normalize import prepare
    from lmuformer.jobs.simulate import samples_for_graph, simulate_file
    from tests.graphs import one_lif_graph

    g = with_current_frac(one_lif_graph(exponent=0), {"a": 14})  # 13 x on 2**-14: > 16 bits from |x| > 0.154
    write_graph(g, tmp_path / "g.nir")
    res = simulate_file(tmp_path / "g.nir", backend="lava", precision="fixed", dataset=None, random=True,
                        samples=3, frames=6, compare=False, progress=False)
    x, _ = samples_for_graph(prepare(g, frames=6), None, random=True, samples=3)
    emu = simulate(g, x, backend="emulator", precision="fixed", progress=False)
    assert res["a_in_overflow"] == emu.extra["a_in_overflow"] and 0 < res["a_in_overflow"]["a"] < 1
    assert res["emulator_predictions_equal"] == 1.0


def test_threshold_ties_wide_weights_and_wrap_by_hand():
    """Lava fixed_pt on the hand-made graphs: strict threshold at the tie, both 8-bit Dense terms of
    9-bit weights, and the 24-bit wrap of the integrator; equal to the emulator and to the hand values."""
    from backends.fixed_point import lower

    g = edge_graph()
    lava = simulate(g, EDGE_X, backend="lava", precision="fixed", progress=False, record=True)
    emu = simulate(g, EDGE_X, backend="emulator", precision="fixed", progress=False, record=True)
    assert_same_spikes(lava, emu)
    assert np.array_equal(lava.extra["spike_trains"]["a"], EDGE_SPIKES)
    assert np.array_equal(lava.trace, edge_trace())
    g = wrap_graph()
    lava = simulate(g, WRAP_X, backend="lava", precision="fixed", progress=False)
    assert np.array_equal(lava.trace, wrapped_trace(lower(g).populations["readout"].frac))


def test_fixed_equals_emulator_two_chunks_tiny():
    """Several Lava runs (samples_per_run) and samples back to back within one run."""
    g = model_to_nir(active_model("tiny"), ExportOptions(quantize=True))
    x = inputs(5, seed=2)
    lava = simulate(g, x, backend="lava", precision="fixed", progress=False, record=True, samples_per_run=3)
    emu = simulate(g, x, backend="emulator", precision="fixed", progress=False, record=True)
    assert_same_spikes(lava, emu)


def test_float_matches_torch(digits_model):
    g = model_to_nir(digits_model, ExportOptions(quantize=False))
    x = inputs(3, seed=4)
    lava = simulate(g, x, backend="lava", precision="float", progress=False)
    ref = simulate(g, x, backend="torch", progress=False)
    np.testing.assert_allclose(lava.trace, ref.trace, rtol=0, atol=FLOAT_RTOL * np.abs(ref.trace).max())
    assert np.array_equal(lava.predictions, ref.predictions)
    for k, v in ref.spikes.items():
        assert np.array_equal(lava.spikes[k], v), k


def test_fixed_equals_emulator_scv2():
    """One scv2-sized sample (128 frames x 128 features, dim 256, memory 512): about 35 s on 2 cores."""
    g = model_to_nir(active_model("scv2"), ExportOptions(quantize=True))
    x = np.random.default_rng(0).standard_normal((1, 128, 128)).astype(np.float32)
    lava = simulate(g, x, backend="lava", precision="fixed", progress=False, record=True)
    emu = simulate(g, x, backend="emulator", precision="fixed", progress=False, record=True)
    assert_same_spikes(lava, emu)
    assert lava.steps == 133


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_run_leaves_no_processes(digits_graph, monkeypatch, exc):
    import lava.magma.core.run_conditions as rc

    original = rc.RunSteps
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the runtime is up and has run one sample
            raise exc("interrupted")
        return original(*args, **kwargs)

    before = descendants()
    monkeypatch.setattr(rc, "RunSteps", failing)
    with pytest.raises(exc):
        simulate(digits_graph, inputs(3), backend="lava", precision="fixed", progress=False)
    assert calls["n"] == 2
    assert not wait_for_children(before), "Lava processes left behind"


def test_ctrl_c_mid_run_stops_lava(digits_graph):
    """SIGINT to this process and to every Lava child while steps run (what a terminal Ctrl-C
    does): KeyboardInterrupt, and no process is left behind."""
    import signal
    import threading

    before = descendants()
    sent = threading.Event()

    def interrupt():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(descendants() - before) < 20:
            time.sleep(0.1)
        time.sleep(1.5)  # let it run some steps
        for pid in descendants() - before:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        sent.set()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        simulate(digits_graph, inputs(16), backend="lava", precision="fixed", progress=False)
    assert sent.is_set()
    assert not wait_for_children(before), "Lava processes left behind"


def test_bad_input_shape_raises_before_starting(digits_graph):
    before = descendants()
    with pytest.raises(UserError, match="features"):
        simulate(digits_graph, np.zeros((1, 8, 3)), backend="lava", precision="fixed", progress=False)
    assert not wait_for_children(before, timeout=2)


def test_missing_lava_is_a_user_error(digits_graph, monkeypatch):
    for name in [m for m in sys.modules if m == "lava" or m.startswith("lava.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lava", None)
    for name in [m for m in sys.modules if m.startswith("backends.lava")]:
        monkeypatch.delitem(sys.modules, name)
    message = r"needs lava-nc 0\.10, which runs on Python 3\.10 only \(this is Python \d+\.\d+\)$"
    with pytest.raises(UserError, match=message):
        simulate(digits_graph, inputs(1), backend="lava", progress=False)
