"""The ``emulator`` backend: Loihi-style integer arithmetic in vectorised NumPy.

It runs the :class:`backends.fixed_point.Network` of a graph on a batch of samples, one NIR
step at a time, with exactly the integer operations of Lava's fixed-point process models
(``PyDenseModelBitAcc``, ``PyLifModelBitAcc``/``PyLifResetModelBitAcc`` and our
``GradedIntegrator``) as lowered by :mod:`backends.lava`; its per-population spike trains
equal Lava's ``fixed_pt`` run bit for bit.  Lava delivers every synapse one step later and
runs the populations pipelined; here each population computes its NIR step directly, which
is the same arithmetic on the same operands.

Exactness of the vectorisation: synaptic sums are computed with BLAS in floating point and
converted to integers: binary synapses in float32 (|sum| <= 254 * fan-in < 2**24), graded
ones in float64 (|sum| < 2**53), so every sum is the exact integer.  The int32 casts of
Lava's ports (the Dense output channel, the LIF's int32 arithmetic) are emulated by
wrapping to 32 bits; they never trigger for sane inputs.

Spiking populations (NIR LIF, IF, CubaLIF, Threshold) step as Lava's LIF (a Threshold with
u = v = 0 before every step, as ``LIFReset`` with reset_interval 1); graded ones (I, LI,
CubaLI, the Output's own readout) with :func:`backends.fixed_point.graded_step_fixed`, the
function our Lava ``GradedIntegrator`` runs.  The trace is the readout's value per step: its
spikes (0/1) for a spiking readout.

``precision="float"`` runs the float parameters (Lava's ``floating_pt`` models): NIR float
weights, ``u <- (1 - du) u + a``, ``v <- (1 - alpha) v + u + b``, in float64.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from backends.base import SimulationResult
from backends.fixed_point import (
    A_IN_MAX,
    ACT_SHIFT,
    CURRENT_HEADROOM,
    STATE_MAX,
    Network,
    calibrated_current_frac,
    graded_step_fixed,
    graded_step_float,
    lower_for_input,
    trunc_decay,
)

_F32_EXACT = 2**24


def _wrap32(a: np.ndarray) -> np.ndarray:
    return ((a + 2**31) & (2**32 - 1)) - 2**31


def lif_step_fixed(u, v, a_in, du: int, dv: int, bias_eff, vth: int):
    """One step of Lava's ``PyLifModelBitAcc`` on int64 arrays; returns (u, v, spikes)."""
    act = _wrap32(_wrap32(a_in) << ACT_SHIFT)
    cur = _wrap32(trunc_decay(u, du + 1) + act)
    wrapped = np.where(cur > STATE_MAX, cur - 2 * STATE_MAX, cur)
    u = np.where(wrapped <= -STATE_MAX, cur + 2 * STATE_MAX, wrapped)
    v = _wrap32(trunc_decay(v, dv) + u + bias_eff)
    v = np.clip(v, -STATE_MAX + 1, STATE_MAX - 1)
    s = v > (vth << ACT_SHIFT)
    return u, np.where(s, 0, v), s


class Emulator:
    """Runs a lowered network on batches.  ``fixed``: integer arithmetic, else float64."""

    def __init__(self, net: Network, fixed: bool):
        self.net, self.fixed = net, fixed
        self.order = [n for n, p in net.populations.items() if p.kind not in ("input", "const")]
        self.incoming = {n: net.incoming(n) for n in self.order}
        self.history = max(net.max_delay, 0) + 1
        self.consts = [n for n, p in net.populations.items() if p.kind == "const"]
        self.w: dict[str, list[tuple[np.ndarray, int, int]]] = {}
        for s in net.synapses:
            if fixed:
                peak = sum(int(np.abs(t.weights).sum(axis=1).max(initial=0)) for t in s.terms)
                dt = np.float64 if s.graded or peak >= _F32_EXACT else np.float32
                consts = net.populations[s.source].consts
                self.w[s.name] = [
                    (t.weights.astype(dt).T.copy(), t.weight_exp,
                     0 if t.round_channel is None else 2 * consts[t.round_channel])
                    for t in s.terms
                ]
            else:
                self.w[s.name] = [(s.weight.T.copy(), 0, 0)]
        self.bias_eff = {}
        for n in self.order:
            p = net.populations[n]
            if p.kind == "lif" and fixed:
                self.bias_eff[n] = np.left_shift(p.bias_mant.astype(np.int64), p.bias_exp.astype(np.int64))

    def _synapse(self, name: str, src: np.ndarray, graded: bool) -> np.ndarray:
        out = None
        for w, we, offset in self.w[name]:
            if self.fixed:
                # ``offset``: the constant channel's product (weight 2) in Lava's Dense, 2**(shift-1)
                a = np.rint(src.astype(w.dtype, copy=False) @ w).astype(np.int64) + offset
                a = a << we if we > 0 else a >> -we
                a = _wrap32(a)  # Dense a_out is an int32 port
            else:
                a = src @ w
            out = a if out is None else out + a
        return out

    def run(self, x: np.ndarray, steps: int, record: bool = False) -> dict:
        net, fixed = self.net, self.fixed
        batch, frames, _ = x.shape
        pops = net.populations
        xin = net.encode_input(x).astype(np.int64) if fixed else np.asarray(x, np.float64)
        dtype = np.int64 if fixed else np.float64
        hist = {
            n: [np.zeros((batch, p.size), dtype if p.kind != "lif" else bool) for _ in range(self.history)]
            for n, p in pops.items()
        }
        state = {}
        for n in self.order:
            p = pops[n]
            state[n] = (np.zeros((batch, p.size), dtype), np.zeros((batch, p.size), dtype))
        counts = {n: np.zeros(batch, np.int64) for n in self.order if pops[n].kind == "lif"}
        trains = {n: np.zeros((batch, steps, pops[n].size), bool) for n in counts} if record else {}
        trace = np.zeros((batch, steps, pops[net.readout].size))
        peak_a = {n: 0 for n in counts}  # peak |a_in| (fixed: integer units; float: NIR units)
        over = {n: 0 for n in counts}  # a_in values beyond Loihi's 16 bits (fixed)
        for t in range(steps):
            cur = t % self.history
            frame = xin[:, t] if t < frames else np.zeros_like(xin[:, 0])
            hist[net.input][cur] = frame
            for n in self.consts:  # the constant 1 (frac 0) behind current biases
                hist[n][cur] = np.ones((batch, 1), dtype)
            for n in self.order:
                p = pops[n]
                a = None
                for s in self.incoming[n]:
                    src = hist[s.source][(t - s.delay) % self.history]
                    c = self._synapse(s.name, src, s.graded)
                    a = c if a is None else a + c
                if a is None:
                    a = np.zeros((batch, p.size), dtype)
                u, v = state[n]
                if p.reset_each_step:  # Threshold: no state between steps
                    u, v = np.zeros_like(u), np.zeros_like(v)
                if p.kind == "lif":
                    if fixed:
                        a = _wrap32(a)  # the LIF's a_in sums int32 channels
                        peak_a[n] = max(peak_a[n], int(np.abs(a).max(initial=0)))
                        over[n] += int(np.count_nonzero(np.abs(a) > A_IN_MAX))
                        u, v, spk = lif_step_fixed(u, v, a, p.du, p.dv, self.bias_eff[n], p.vth)
                    else:
                        peak_a[n] = max(peak_a[n], float(np.abs(a).max(initial=0)))
                        u = a if p.du_f == 1.0 else u * (1 - p.du_f) + a
                        v = v * (1 - p.dv_f) + u + p.bias_f
                        spk = v > p.vth_f
                        v = np.where(spk, 0.0, v)
                    state[n] = (u, v)
                    hist[n][cur] = spk
                    counts[n] += spk.sum(axis=1)
                    if record:
                        trains[n][:, t] = spk
                else:
                    if fixed:
                        u, v = graded_step_fixed(u, v, a, p.du, p.dv, p.bias_int)
                    else:
                        u, v = graded_step_float(u, v, a, p.du_f, p.dv_f, p.bias_f)
                    state[n] = (u, v)
                    hist[n][cur] = v
            if pops[net.readout].kind == "lif":
                trace[:, t] = hist[net.readout][cur]
            else:
                trace[:, t] = state[net.readout][1] * (net.readout_scale() if fixed else 1.0)
        return {"trace": trace, "counts": counts, "trains": trains, "peak_a_in": peak_a, "a_in_over": over}


def run(graph, x: np.ndarray, precision: str = "fixed", progress: bool = True, batch_size: int = 64,
        record: bool = False, input_bits: int = 16, input_frac_bits: int | None = None
        ) -> SimulationResult:
    """Run ``graph`` on x (samples, frames, features) for frames + latency steps each.

    ``record``: also return every LIF population's spike trains in ``extra["spike_trains"]``
    (name -> (samples, steps, neurons) bool).  ``input_bits``/``input_frac_bits``: the fixed-point
    input encoding (see :mod:`backends.fixed_point`; None: the finest grid x fits).
    """
    start = time.perf_counter()
    net, x, steps = lower_for_input(graph, x, precision, input_bits, input_frac_bits)
    emu = Emulator(net, precision == "fixed")
    traces, counts, trains = [], {}, {}
    peak: dict[str, int] = {}
    over: dict[str, int] = {}
    with tqdm(total=len(x), desc=f"emulator ({precision})", unit="sample", disable=not progress) as bar:
        for i in range(0, len(x), batch_size):
            r = emu.run(x[i : i + batch_size], steps, record)
            traces.append(r["trace"])
            for k, v in r["counts"].items():
                counts.setdefault(k, []).append(v)
            for k, v in r["trains"].items():
                trains.setdefault(k, []).append(v)
            for k, v in r["peak_a_in"].items():
                peak[k] = max(peak.get(k, 0), v)
            for k, v in r["a_in_over"].items():
                over[k] = over.get(k, 0) + v
            bar.update(len(r["trace"]))
    trace = np.concatenate(traces) if traces else np.zeros((0, steps, net.populations[net.readout].size))
    extra = {"network": net.summary()}
    if precision == "fixed":
        extra["peak_abs_a_in"] = peak
        cells = {n: len(x) * steps * p.size for n, p in net.populations.items() if p.kind == "lif"}
        extra["a_in_overflow"] = {n: v / cells[n] for n, v in over.items() if v}
        extra["input_clipped"] = net.clipped_fraction(x)
    if record:
        extra["spike_trains"] = {k: np.concatenate(v) for k, v in trains.items()}
    return SimulationResult(
        backend="emulator", precision=precision,
        readout=trace[:, -1], trace=trace,
        spikes={k: np.concatenate(v) for k, v in counts.items()},
        neurons={n: p.size for n, p in net.populations.items() if p.kind == "lif"},
        steps=steps, wall_s=time.perf_counter() - start, extra=extra,
    )


def current_peaks(graph, x: np.ndarray, batch_size: int = 64) -> dict[str, float]:
    """Peak |synaptic input| (NIR units, bias excluded; the ``x`` of ``a_in = x 2**k``) of every
    spiking population over a float run of ``graph`` on x (samples, frames, features)."""
    net, x, steps = lower_for_input(graph, x, "float")
    emu = Emulator(net, fixed=False)
    peak: dict[str, float] = {n: 0.0 for n, p in net.populations.items() if p.kind == "lif"}
    for i in range(0, len(x), batch_size):
        for k, v in emu.run(x[i : i + batch_size], steps)["peak_a_in"].items():
            peak[k] = max(peak[k], float(v))
    return peak


def calibrate_current_frac(graph, x: np.ndarray, headroom: float = CURRENT_HEADROOM
                           ) -> tuple[dict[str, int], dict[str, float]]:
    """The current grids (:func:`backends.fixed_point.calibrated_current_frac`) of ``graph``'s
    spiking populations calibrated on x (samples, frames, features), and the peaks they rest on."""
    peaks = current_peaks(graph, x)
    return calibrated_current_frac(graph, peaks, headroom), peaks
