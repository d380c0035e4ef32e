"""Models and hand-made NIR graphs shared by the emulator, fixed-point, Lava, taps, fine-tuning
and robustness tests (a helper module, not a test module)."""

from __future__ import annotations

import nir
import numpy as np
import torch

from lmuformer import build_model
from lmuformer.model.calibrate import activate


def active_model(preset: str, seed: int = 0):
    """An activated model whose LMU input neuron spikes too (so the memory path is exercised)."""
    torch.manual_seed(seed)
    model = activate(build_model(preset), seed=seed)
    for lmu, _ in model.blocks:
        lmu.to_u[1].bias.data += 3.0
    return model


def inputs(n: int, frames: int = 8, features: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, frames, features)).astype(np.float32)


# ---- hand-made graphs whose fixed-point run is exact, so the spikes and the readout are known by hand ----

def _lif(n: int) -> nir.LIF:
    """tau = 2 dt, r = 1, threshold 1: v <- v + (x - v) / 2, spike iff v > 1 (strict), reset to 0."""
    return nir.LIF(tau=np.full(n, 2.0), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


def _linear(mantissa, exponent: int) -> nir.Linear:
    m = np.asarray(mantissa, dtype=np.int64)
    return nir.Linear(weight=m * 2.0**exponent,
                      metadata={"weight_mantissa": m, "weight_exponent": exponent, "weight_bits": 10})


def one_lif_graph(exponent: int = -4) -> nir.NIRGraph:
    """input(1) -> 13 * 2**exponent -> LIF a(1) -> 1 -> readout I(1) -> output."""
    nodes = {"input": nir.Input(input_type={"input": np.array([1])}), "a.in": _linear([[13]], exponent),
             "a": _lif(1), "r.in": _linear([[1]], 0), "readout": nir.I(r=np.ones(1)),
             "output": nir.Output(output_type={"output": np.array([1])})}
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "r.in"), ("r.in", "readout"), ("readout", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0, "latency_frames": 0})


# readout weights with mantissas wider than 8 bits: each row needs two 8-bit Dense terms
WIDE = [[300, -173], [129, 0]]


def edge_graph() -> nir.NIRGraph:
    """input(2) -> identity -> LIF a(2) -> [300 -173; 129 0] * 2**-8 -> readout I(2) -> output."""
    nodes = {
        "input": nir.Input(input_type={"input": np.array([2])}),
        "a.in": _linear(np.eye(2), 0),
        "a": _lif(2),
        "readout.in": _linear(WIDE, -8),
        "readout": nir.I(r=np.ones(2)),
        "output": nir.Output(output_type={"output": np.array([2])}),
    }
    edges = [("input", "a.in"), ("a.in", "a"), ("a", "readout.in"), ("readout.in", "readout"),
             ("readout", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0, "latency_frames": 1})


# neuron 0: v = 1.0 (== threshold: no spike), 0.5, 1.25 (spike, reset), 1.0 (tie again), 0.5
# neuron 1: v = 1 + 2**-9 (one input step above the tie: spike), then 0
EDGE_X = np.array([[[2.0, 2.0 + 2**-8], [0.0, 0.0], [2.0, 0.0], [2.0, 0.0]]], dtype=np.float64)
EDGE_SPIKES = np.array([[[0, 1], [0, 0], [1, 0], [0, 0], [0, 0]]], dtype=bool)


def edge_trace() -> np.ndarray:
    """The readout by hand: the running sum of W @ spikes, W = WIDE * 2**-8 (exact in binary)."""
    w = np.array(WIDE, dtype=np.float64) / 256
    return np.cumsum(EDGE_SPIKES[0].astype(float) @ w.T, axis=0)[None]


def wrap_graph() -> nir.NIRGraph:
    """input(1) -> [1] -> readout I(1): an integrator fed a graded input has no static bound and
    wraps at 24 bits (two's complement) in fixed point."""
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1])}),
        "readout.in": _linear([[1]], 0),
        "readout": nir.I(r=np.ones(1)),
        "output": nir.Output(output_type={"output": np.array([1])}),
    }
    edges = [("input", "readout.in"), ("readout.in", "readout"), ("readout", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": 1.0, "latency_frames": 0})


WRAP_X = np.array([[[100.0], [100.0], [27.5]]])


def wrapped_trace(frac: int) -> np.ndarray:
    """The fixed-point readout by hand: running sums on the 2**-frac grid, wrapped to 24 bits."""
    total = np.cumsum(WRAP_X[0, :, 0]) * 2**frac
    assert total.max() >= 2**23  # the wrap is reached
    wrapped = (total + 2**23) % 2**24 - 2**23
    return (wrapped / 2**frac)[None, :, None]
