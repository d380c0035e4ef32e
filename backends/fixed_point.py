"""NIR graph -> integer (Loihi-style) parameters, shared by the emulator and the Lava lowering.

Pure functions, no Lava import.  :func:`lower` turns a flat NIR graph (nested NIRGraphs
refused: ``export.normalize`` inlines them) into a :class:`Network`: populations and
synapses.  Both the fixed-point and the float parameters are computed; a backend uses one set.
lmuformer's own graphs lower exactly as they did before the generic subset was added.

Graph -> Network:
    * populations: the Input; spiking (Lava LIF): LIF, IF, CubaLIF, Threshold; graded (our
      ``GradedIntegrator``): I, LI, CubaLI, and the Output's own readout (below).
    * synapses: every chain of linear nodes (Affine, Linear, Scale, Conv1d, Conv2d, Flatten,
      SumPool2d, AvgPool2d) and Delays between two populations is composed into one matrix per
      (source population, total delay, target): values are C-order flattened vectors, Flatten
      is the identity, Scale a diagonal, convolutions and pools are unrolled into dense
      matrices (torch applied to the identity basis; at most ``MAX_DENSE`` = 2**24 entries
      per node, e.g. a 3 x 32 x 32 -> 16 x 32 x 32 conv is 5e7 and is refused); paths summed
      where a node has several inputs (NIR sums them).  Delays (whole steps of dt, within
      1e-6) add up along the path; a bias in front of a Delay is refused (its first steps would
      differ).  Biases (Affine, Conv per output position) go to the target population.  A
      single Affine/Linear node keeps its exported mantissas (``weight_mantissa``); a composed
      chain is quantised to one 8-bit term here (a note where that is inexact).
    * readout: the node feeding the Output, if it is a population; otherwise (a linear node,
      a Delay, several nodes, the Input) a memoryless graded population named after the
      Output (du = 4095, dv = 4096: v = this step's input).  Its per-step value is the result:
      spikes (0/1) for a spiking readout, v for a graded one.
    * per neuron: biases, v_leak, w_in, r (folded into the synapse rows: a LIF/IF/CubaLIF
      whose r differs between neurons is lowered with r = 1, its rows and Affine biases times
      r_i; one r for all keeps the scaling below) and Threshold thresholds (biases below one
      common vth) may differ between neurons; tau, tau_syn, tau_mem, r of I and v_threshold of
      LIF/IF/CubaLIF must not: Lava's LIF takes one du, dv and vth per population, our
      integrator's grid one dt r (one UserError line naming the node).
    * a bias into a CubaLIF/CubaLI current (Lava's LIF adds its bias to v, not u): a graded
      synapse ``<node>.current_bias`` from a constant population (kind "const", one value 1
      at frac 0, a RingBuffer in Lava) whose weight column is the bias times the row factor
      below, quantised to 16 bits (rint) and split into 8-bit terms, each rounded onto the
      target's grid as any graded term (round half up, 2**-(k+1)).
    * refused, one line naming the node, its type and why: node types outside this set, a
      nested NIRGraph, v_reset != 0, dt/tau outside (0, 1], a shape mismatch along a chain,
      a cycle without Delay.

Notation: the NIR discrete-time reading (Euler at dt, states from 0) of ``export/interpret.py``:
LIF/LI ``v += dt/tau (v_leak - v + r x)``; IF/I ``v += dt r x``; CubaLIF/CubaLI ``i += dt/tau_syn
(w_in x - i)``, then ``v += dt/tau_mem (v_leak - v + r i)`` with the new i (Lava's order: u is
updated before v); Threshold ``x > threshold``; ``alpha = dt/tau`` (tau_mem), ``beta =
dt/tau_syn``.  NIR's continuous-time reading differs by the Euler error (O(alpha**2) per step).
``floor`` = arithmetic right shift (rounds towards -inf); ``trunc`` rounds towards 0.

Integer units (one per population, ``frac`` = k):
    * Input: a real sample x is sent as the graded value ``X = clip(rint(x * 2**q),
      -2**(B-1), 2**(B-1)-1)`` with B = ``input_bits`` (default 16) and q = ``input_frac_bits``.
      rint rounds half to even.  :func:`lower_for_input` (the emulator, Lava) chooses q from the
      data unless given: the finest grid on which the batch's max |x| fits B bits
      (:func:`input_frac_for`: ``q = floor(log2((2**(B-1) - 1) / max|x|))``, clamped to 0..20),
      so nothing is clipped and the input keeps B - 1 significant bits: q = 14 for digits
      (pixels in [0, 1]) and for the normalised log-mel of Speech Commands (|x| < 2).  The grid
      depends on the batch's peak only through its power of two (a batch of quieter samples
      gets a finer grid); pass ``input_frac_bits`` to fix it.  :func:`lower` alone (no data)
      takes q = 8 (range +-128).  The fixed 2**-8 of earlier versions left log-mel inputs
      (|x| ~ 1) with ~8 bits: on a 128-frame synthetic Speech-Commands model 2**-14 lifts
      fixed vs float agreement 91.4 -> 95.2 % (one term) and 84.8 -> 86.7 % (two terms)
      (benchmarks/results/scv2_fidelity_input_bits.json).
    * LIF population: its synaptic input current ``x`` (the NIR node's input, bias excluded)
      arrives as the integer ``a_in = x * 2**k``.  Static grid (no calibration): k =
      ``max_frac`` = ``min_frac`` = 10 for every LIF (Loihi's 16-bit a_in then holds |x| < 32,
      and u's 24 bits |x| < 128; the trained digits model peaks at |x| ~ 9).  Calibrated grid
      (``current_frac``, from the graph metadata; the export job records it for a checkpoint,
      :func:`backends.emulator.calibrate_current_frac`): per population, with P its peak |x|
      over a float run of (at most 1024 samples of) the training split and H the headroom (2;
      ``lmuf export --current-headroom``, >= 1: at 1 the calibration's own peak just fits),
      k = the largest in 10..15 with ``H P 2**k <= 2**15 - 1`` (Loihi's a_in) whose implied
      bounds ``|U| <= 64 H P 2**k 4096 / (du + 1)`` and ``|V| <= (|U| + |b| 2**(k+6)) 4096 / dv``
      fit 24 bits, and vth and the bias fit (below) (:func:`current_frac_for`); 10 where none
      does (the static grid: never coarser).  15 keeps vth = 2**(k+1) within 17 bits.  Worst
      case: an input beyond H P wraps nothing until |x| >= 2**(17-k) (u's 24 bits; 4 at k =
      15) but exceeds Loihi's 16-bit a_in from |x| >= 2**(15-k) (1 at k = 15); the emulator
      counts such a_in values per population (``a_in_overflow``, printed by ``lmuf
      simulate``).  Either grid is lowered while the threshold or a bias would not fit (below).
      A fine-tuned checkpoint pins the grids it was trained on (``finetuned_for["current_frac"]``)
      and its export uses them.
      Graded-only targets (the first patch stage, the memory readout) used to
      get 2**-8; the finer grid quarters their rounding error.  With one 8-bit term
      per learned matrix (the default export; exponents about -5..-10) spike synapses are
      exact; the finer second term of ``--weight-terms 2`` (about 2**-14) is floor-rounded to
      the 2**-k grid once per Dense and step (a note says so).  A finer k cannot make it exact
      within Loihi's 16-bit a_in (2**-14 leaves |x| < 2) nor Lava's 24-bit u and v (|x| < 4;
      the trained models peak at |x| ~ 9..18), and Lava offers no rounding channel for a spike
      source (its ``ConcatPort`` is not implemented), so it stays floored (below).
    * I population (the LMU memory, the readout): the state ``m`` is the integer
      ``M = m * 2**k``: k = the finest grid on which a static bound on ``|m|`` over the run
      (see ``_state_bound``) fits 24 bits, at most ``max_state_frac`` (20), at least the
      largest ``-e`` over its binary synapse terms (exact input) unless the bound forces it
      lower (noted).  The fine grid makes the memory's rounded recurrence (below) nearly
      exact: a one-term digits export then spikes exactly as its float graph on all 360 test
      samples (140 of them differed with k = the largest ``-e``).
      ``fine_state=False`` restores k = the largest ``-e``.

Synapses (Lava ``Dense``/``DelayDense``, fixed-point model, ``num_weight_bits=8``):
    * Each synapse term is ``mantissa * 2**e`` (from the node's metadata ``weight_mantissa``,
      ``weight_exponent``; without metadata the weight is quantised to one 8-bit term, rint).
      Mantissas wider than 8 bits are split exactly into several 8-bit terms.  Each term is
      one Dense process with weights ``W = 2 * mantissa`` (|W| <= 254): Lava's fixed-point
      Dense clips to [-256, 255] and, for mixed-sign matrices, drops the lowest weight bit;
      an even W passes both unchanged.
    * ``weight_exp = e - s + k - 1`` (s = the source's frac: 0 for spikes, q for the input,
      the memory's k for the memory; k = the target's frac): the Dense output is
      ``(sum_j W_ij s_j) << weight_exp`` for weight_exp > 0, else ``>> -weight_exp`` (floor).
      For spikes weight_exp >= -1 whenever k >= -e, and the even W makes the shift exact.
      Products are accumulated in int64 for the memory (its messages are 24-bit states) and
      in int32 for the input (bounded: 254 * 2**15 * fan-in + 2**23 < 2**31).
    * For an I target ``dt * r`` is folded into the exponent (a power of two; 1 in our graphs).
    * Graded synapses (input, memory) are rounded half up onto the target's grid: the source
      population sends constant channels ``consts`` after its outputs (``Population.consts``:
      the input RingBuffer's extra rows, the integrator's extra message entries), one per
      distinct shift, of value ``2**(shift - 2)``; each term's Dense has weight 2 on its
      channel (``DenseTerm.round_channel``), so Lava's Dense computes
      ``(sum_j W_ij s_j + 2**(shift - 1)) >> shift`` = round half up, exactly.  A zero sum
      stays 0 (so the channels may run outside a sample's window).  A shift of 1 (never in
      our graphs) stays a floor (a note says so).  ``round_graded=False`` restores the floor.

Worst-case error of each rounding, per term (T) or population (P) and step, in the NIR units:
    * input encoding: rint, |e| <= 2**-(q+1) per value (2**-15 at q = 14; half to even,
      unbiased); none clipped with the data-chosen q (``Network.clipped_fraction`` says so
      otherwise, and the emulator reports it as ``input_clipped``);
    * graded synapse term: round half up, -2**-(k+1) < e <= 2**-(k+1) (2**-11 at k = 10, the
      static grid; 2**-16 at the finest calibrated k = 15), mean 0 over the residues (T).
      Before this (floor): -2**-k < e <= 0, every graded layer fired ~1 % less and digits
      agreement was 99.44 %, now 100 % (benchmarks/);
    * spike synapse term finer than the grid (second term of ``--weight-terms 2``): floor,
      -2**-k < e <= 0 (T), biased, not compensated: a bias current would add 2**-(k+1)
      in steps where no spike arrives too, and Lava's Dense has no other place to add it;
      measured ~1 % fewer spikes in those layers, digits agreement 99.44 % (trained model,
      seed 0).  The default (one term per learned matrix) has none: digits 100 % agreement and
      identical spike trains on 360/360 samples (3 training seeds: 100 % agreement each);
    * LIF decay: Lava's ``trunc(v * (4096 - dv) / 4096)`` rounds towards 0, |e| < 1 unit of
      V = alpha * r * 2**-(k+6) in v (2**-17 at k = 10, alpha = 1/2), 64 times finer than
      the current grid (P); Lava's LIF has no rounding mode, so it is left as is;
    * threshold: rint, exact for thresholds on the 2**-(k+1) grid (1.0 in our graphs);
    * LIF bias: rint to ``bias_mant << bias_exp``, |e| <= 2**(bias_exp - 1) * 2**-(k+6) (P);
    * integrator: spike synapses exact on its grid (unless lowered to fit 24 bits: floor,
      noted), bias rint |e| <= 2**-(k+1) (P).

LIF neurons (Lava ``LIF``/``LIFReset``, fixed-point model ``PyLifModelBitAcc``):
    * ``du = 4095`` (Lava adds 1: u is exactly this step's ``a_in << 6``), ``dv =
      rint(4096 * alpha)`` (2048 for tau = 2 dt); v <- trunc(v * (4096 - dv) / 4096) + u +
      bias, clipped to +-(2**23 - 1); u wraps at 24 bits as Lava does; spike if v > vth << 6;
      then v <- 0 (v_reset must be 0).
    * The NIR state v maps to ``V = v * 2**(k+6) / (alpha * r)`` (so ``u = a_in << 6`` is the
      scaled ``alpha * r * x``); with alpha = 1/2, r = 1: V = v * 2**(k+7).
      The float V' = (1 - alpha) V + u + bias is exact up to the trunc of the decay.
    * ``vth = rint(v_threshold * 2**k / (alpha r))`` (17-bit unsigned; 2**(k+1) for threshold 1).
    * bias (the Affine bias plus ``v_leak / r``) = ``bias_mant << bias_exp``: the smallest
      bias_exp in 0..7 with |rint(b * 2**(k+6) / 2**bias_exp)| <= 4095 (13-bit mantissa);
      exact for biases on the 2**-k grid (the export puts them on its finest weight grid).
Other spiking nodes, the same Lava LIF (its V = v * 2**(k+6) / g, vth = rint(v_threshold *
2**k / g), g = alpha r above):
    * IF: dv = 0 and g = dt r (``v += dt r x`` scaled); no leak.
    * CubaLIF: ``du = rint(4096 beta) - 1`` (u <- trunc(u (4096 - du - 1) / 4096) + a_in << 6:
      U = i * 2**(k+6) exactly as Lava's current), the synapse rows scaled by ``beta w_in``
      (per neuron), dv and g = alpha r as LIF; bias = v_leak / r (an Affine bias goes to u
      through the constant population, above).
    * Threshold: dv = 4095 and ``LIFReset`` with reset_interval 1 (u = v = 0 before every step:
      v = this step's a_in << 6 + bias); vth = rint(max(theta, 0) 2**k), bias_i =
      max(theta, 0) - theta_i, so a neuron spikes when x > theta_i (exact for x, theta on 2**-k).
Graded populations (our ``GradedIntegrator`` process, Lava has no resettable graded one):
    ``U <- wrap24(trunc_decay(U, du + 1) + a_in)``, ``M <- wrap24(trunc_decay(M, dv) + U +
    bias)`` (``trunc_decay(x, d) = trunc(x (4096 - d) / 4096)``, the LIF's; two's complement
    wrap at 24 bits), output M as a graded message; value = M * 2**-k.  The synapse rows carry
    the NIR factor in front of x, the bias ``rint(b * 2**k)``:
    * I (the LMU memory, the readout): du = 4095, dv = 0, so ``M <- wrap24(M + a_in + bias)``;
      rows times dt r, b = dt r (Affine bias).
    * LI: dv = rint(4096 alpha) (4096 at alpha = 1), rows times alpha r, b = alpha (r c + v_leak).
    * CubaLI: du = rint(4096 beta) - 1, dv as LI, rows times alpha r beta w_in, b = alpha v_leak
      (an Affine bias goes to U through the constant population, as for CubaLIF).
    * the Output's own readout: du = 4095, dv = 4096 (M = this step's a_in + bias).
    State grid k: I as above (static bound); LI/CubaLI fed by spikes only: the bound
    ``(sum |W| min(steps, 4096/(du+1)) + |b|) min(steps, 4096/dv)``; fed by graded values:
    k = 16 (noted: may wrap at 24 bits).

Float mode (Lava ``floating_pt`` models, the emulator's float mode): the same structure with
the NIR float weights (times the same row factors), ``u <- (1 - du_f) u + a_in`` (du_f = beta,
1 without a current stage), ``v <- (1 - alpha) v + u + b`` with vth / g and b + v_leak / r; the
graded populations ``u <- (1 - du_f) u + a_in``, ``v <- (1 - dv_f) v + u + b`` (I: v + a_in + b).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import nir
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from export.metadata import GraphMetadata
from export.normalize import output_shape
from export.quantize import quantize_term
from lmuformer.errors import UserError

STATE_BITS = 24  # u, v, integrator state
DECAY_BITS = 12  # du, dv
ACT_SHIFT = 6  # a_in << 6 and vth << 6 inside Lava's fixed-point LIF
VTH_BITS = 17  # unsigned
WEIGHT_BITS = 8  # Dense num_weight_bits
BIAS_MANT_MAX = 4095  # 13-bit signed
BIAS_EXP_MAX = 7  # 3-bit unsigned
STATE_MAX = 2 ** (STATE_BITS - 1)
A_IN_MAX = 2**15 - 1  # Loihi's signed 16-bit synaptic input a_in (Lava itself wraps only u at 24 bits)
CURRENT_FRAC_MIN, CURRENT_FRAC_MAX = 10, 15  # calibrated current grids 2**-k (the module docstring)
CURRENT_HEADROOM = 2.0  # calibrated peak |x| times this must fit A_IN_MAX


def wrap24(a: np.ndarray) -> np.ndarray:
    """Two's complement wrap of integers to ``STATE_BITS`` (24) bits (the integrator's state)."""
    return ((a + STATE_MAX) & (2 * STATE_MAX - 1)) - STATE_MAX


def trunc_decay(x: np.ndarray, d: int) -> np.ndarray:
    """Lava's fixed-point decay ``sign(x) * (|x * (4096 - d)| >> 12)`` on int64 arrays (rounds
    towards 0; d = 4096 gives 0)."""
    y = x * (2**DECAY_BITS - d)
    return np.sign(y) * (np.abs(y) >> DECAY_BITS)


def graded_step_fixed(u: np.ndarray, v: np.ndarray, a_in: np.ndarray, du: int, dv: int, bias: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One step of a graded population (our ``GradedIntegrator``), int64: ``u <- wrap24(decay(u,
    du + 1) + a_in)``, ``v <- wrap24(decay(v, dv) + u + bias)``; du = 4095, dv = 0 is the plain
    integrator ``v <- wrap24(v + a_in + bias)``."""
    if du == 2**DECAY_BITS - 1 and dv == 0:
        return u, wrap24(v + a_in + bias)
    u = wrap24(trunc_decay(u, du + 1) + a_in)
    return u, wrap24(trunc_decay(v, dv) + u + bias)


def graded_step_float(u, v, a_in, du: float, dv: float, bias):
    """The float reading of :func:`graded_step_fixed`: ``u <- (1 - du) u + a_in``, ``v <- (1 - dv) v
    + u + bias`` (du = 1, dv = 0: ``v + a_in + bias``)."""
    if du == 1.0 and dv == 0.0:
        return u, v + a_in + bias
    u = u * (1 - du) + a_in
    return u, v * (1 - dv) + u + bias


@dataclass
class DenseTerm:
    """One Dense process: integer weights ``2 * mantissa`` and the shift ``weight_exp``."""

    weights: np.ndarray  # int32 (out, in)
    weight_exp: int
    exponent: int  # e of ``mantissa * 2**e``
    round_channel: int | None = None  # graded source: index of its constant channel 2**(shift - 2)

    @property
    def shift(self) -> int:
        """Right shift of the Dense output (0 for a left shift)."""
        return max(-self.weight_exp, 0)


@dataclass
class Synapse:
    """NIR synapse node ``name``: ``target += weight @ source[t - delay] (+ bias)``."""

    name: str
    source: str
    target: str
    delay: int
    graded: bool
    weight: np.ndarray  # float64 (out, in): the float weight (dt*r folded in for I targets)
    terms: list[DenseTerm] = field(default_factory=list)


@dataclass
class Population:
    """An Input, LIF or I node.  ``frac``: the integer unit is 2**-frac (see module doc)."""

    name: str
    kind: str  # "input" | "lif" | "integrator" | "const" (the constant 1 behind current biases)
    size: int
    frac: int = 0
    # float parameters
    bias_f: np.ndarray | None = None
    vth_f: float = 0.0
    dv_f: float = 0.0
    # fixed-point parameters
    du: int = 4095  # current decay (Lava adds 1): 4095 = no current state, u = this step's input
    dv: int = 0  # voltage decay; 4096 (graded populations only): no state, v = this step's u + bias
    du_f: float = 1.0
    reset_each_step: bool = False  # Threshold: u = v = 0 before every step
    vth: int = 0
    bias_mant: np.ndarray | None = None
    bias_exp: np.ndarray | None = None
    bias_int: np.ndarray | None = None  # integrator bias per step, state units
    state_bound: float = 0.0  # integrator: static bound on |state| (real units)
    consts: list[int] = field(default_factory=list)  # graded source: constant channels after its outputs


@dataclass
class Network:
    """The lowered graph; ``populations`` in evaluation order (the input first)."""

    populations: dict[str, Population]
    synapses: list[Synapse]
    input: str
    readout: str
    latency: int
    dt: float
    input_bits: int
    input_frac: int
    notes: list[str] = field(default_factory=list)

    def incoming(self, target: str) -> list[Synapse]:
        return [s for s in self.synapses if s.target == target]

    @property
    def max_delay(self) -> int:
        return max((s.delay for s in self.synapses), default=0)

    def encode_input(self, x: np.ndarray) -> np.ndarray:
        """Real input -> graded integers (int32), rint then clip to ``input_bits``."""
        lim = 2 ** (self.input_bits - 1)
        scaled = np.rint(np.asarray(x, np.float64) * 2.0**self.input_frac)
        return np.clip(scaled, -lim, lim - 1).astype(np.int32)

    def clipped_fraction(self, x: np.ndarray) -> float:
        """Fraction of input values outside the encodable range (clipped by :meth:`encode_input`)."""
        lim = 2 ** (self.input_bits - 1)
        scaled = np.rint(np.asarray(x, np.float64) * 2.0**self.input_frac)
        return float(np.mean((scaled < -lim) | (scaled > lim - 1))) if scaled.size else 0.0

    def readout_scale(self) -> float:
        """Real value of one readout unit (1 for a spiking readout: its spikes)."""
        p = self.populations[self.readout]
        return 1.0 if p.kind == "lif" else 2.0**-p.frac

    def summary(self) -> dict:
        return {
            "frac": {n: p.frac for n, p in self.populations.items()},
            "dense_terms": sum(len(s.terms) for s in self.synapses),
            "notes": list(self.notes),
        }


def _uniform(a, what: str, name: str) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size and not np.allclose(a, a[0], rtol=1e-9, atol=0):
        raise UserError(f"{name}: {what} differs between neurons; Lava's LIF takes one value per population")
    return float(a[0]) if a.size else 0.0


def _per_neuron_r(node: nir.NIRNode) -> np.ndarray | None:
    """r of a LIF/IF/CubaLIF where it differs between neurons (folded into the synapse rows and
    the bias, see the module docstring), else None."""
    if not isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
        return None
    r = np.asarray(node.r, np.float64).ravel()
    return None if not r.size or np.allclose(r, r[0], rtol=1e-9, atol=0) else r


def split_terms(mantissa: np.ndarray, exponent: int) -> list[tuple[np.ndarray, int]]:
    """Exact split of ``mantissa * 2**exponent`` into terms with |m| <= 127 (8-bit signed):
    balanced base-128 digits in [-64, 63], most significant first."""
    m = np.asarray(mantissa, dtype=np.int64)
    if m.size == 0 or int(np.max(np.abs(m))) <= 127:
        return [(m, exponent)]
    out = []
    rest, j = m.copy(), 0
    while np.any(rest):
        c = ((rest + 64) & 127) - 64
        if np.any(c):
            out.append((c, exponent + 7 * j))
        rest = (rest - c) >> 7
        j += 1
    return out[::-1]


def _weight_terms(node: nir.NIRNode, scale: float) -> tuple[list[tuple[np.ndarray, int]], str | None]:
    """Integer terms of ``scale * weight`` and a note when the weight had to be quantised here."""
    w = np.asarray(node.weight, dtype=np.float64) * scale
    md = node.metadata or {}
    p = math.log2(scale) if scale > 0 else float("nan")
    if "weight_mantissa" in md and "weight_exponent" in md and p.is_integer():
        m = np.asarray(md["weight_mantissa"]).astype(np.int64)
        e = int(md["weight_exponent"]) + int(p)
        if m.shape == w.shape and np.array_equal(m.astype(np.float64) * 2.0**e, w):
            return split_terms(m, e), None
    t = quantize_term(w, WEIGHT_BITS)
    err = float(np.max(np.abs(t.value - w))) if w.size else 0.0
    what = "quantised" if "weight_mantissa" not in md else "re-quantised"
    note = f"{what} to 8 bits (max abs error {err:.3g})"
    return [(t.mantissa.astype(np.int64), t.exponent)], note


def _bias_fits(b: np.ndarray, k: int) -> bool:
    return bool(np.all(np.abs(np.rint(b * 2.0 ** (k + ACT_SHIFT) / 2**BIAS_EXP_MAX)) <= BIAS_MANT_MAX))


def _spiking_params_fit(p: Population, k: int) -> bool:
    """Whether a spiking population's threshold (``vth_f 2**k``: 17 bits unsigned) and bias
    (:func:`_bias_fits`; none set: nothing to fit) fit on the current grid 2**-k."""
    return p.vth_f * 2.0**k < 2**VTH_BITS and (p.bias_f is None or _bias_fits(p.bias_f, k))


def _bias_parts(b: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron the smallest bias_exp in 0..7 whose rounded mantissa fits 13 bits."""
    scaled = b * 2.0 ** (k + ACT_SHIFT)
    mant = np.zeros(b.shape, np.int64)
    exp = np.full(b.shape, BIAS_EXP_MAX, np.int64)
    done = np.zeros(b.shape, bool)
    for e in range(BIAS_EXP_MAX + 1):
        m = np.rint(scaled / 2**e)
        ok = ~done & (np.abs(m) <= BIAS_MANT_MAX)
        mant[ok], exp[ok] = m[ok], e
        done |= ok
    mant[~done] = np.clip(np.rint(scaled[~done] / 2**BIAS_EXP_MAX), -BIAS_MANT_MAX, BIAS_MANT_MAX)
    return mant, exp


def _state_bound(net_syn: list[Synapse], pop: Population, steps: int) -> float | None:
    """Bound on |m| over ``steps`` steps for an integrator fed by spikes (0 or 1) and at most
    one self-recurrent synapse of delay 1 (A = I + W_rec):
    ``max_i sum_j (sum_l |(A^j W_in)_il| + |(A^j b)_i|)``, the worst case over all spike
    trains.  None when another graded source feeds it."""
    n = pop.size
    a = np.eye(n)
    w_in = []
    for s in net_syn:
        if s.source == pop.name and s.delay == 1:
            a = a + s.weight
        elif s.graded:
            return None
        else:
            w_in.append(s.weight)
    bias = pop.bias_f if pop.bias_f is not None else np.zeros(n)
    x = np.concatenate([*w_in, bias[:, None]], axis=1) if w_in else bias[:, None].copy()
    identity = np.allclose(a, np.eye(n))
    total = np.zeros(n)
    for _ in range(steps):
        total += np.abs(x).sum(axis=1)
        if identity:
            return float(np.max(total) * steps) if n else 0.0
        x = a @ x
    return float(np.max(total)) if n else 0.0


NEURONS = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold, nir.I, nir.LI, nir.CubaLI)
LINEAR = (nir.Affine, nir.Linear, nir.Scale, nir.Conv1d, nir.Conv2d, nir.Flatten, nir.SumPool2d,
          nir.AvgPool2d)
SUPPORTED = ("Input", "Output", "Delay", *(c.__name__ for c in LINEAR + NEURONS))
SPIKING = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold)  # lowered to Lava LIF populations
MAX_DENSE = 2**24  # entries of one composed synapse matrix (float64: 128 MiB)


@dataclass
class _Graph:
    """A NIR graph with its edge lists and dt (s), as the lowering reads it."""

    nodes: dict[str, nir.NIRNode]
    preds: dict[str, list[str]]
    succs: dict[str, list[str]]
    edges: list[tuple[str, str]]
    dt: float
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    unrolled: dict[str, _Unrolled] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: nir.NIRGraph) -> _Graph:
        preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
        succs: dict[str, list[str]] = {n: [] for n in graph.nodes}
        for a, b in graph.edges:
            preds[b].append(a)
            succs[a].append(b)
        return cls(graph.nodes, preds, succs, list(graph.edges), float(graph.metadata["dt"]))

    def delay_steps(self, name: str) -> int:
        k = np.asarray(self.nodes[name].delay, np.float64) / self.dt
        d = int(round(float(k.flat[0]))) if k.size else 0
        if d < 1 or not np.allclose(k, d, rtol=0, atol=1e-6):
            raise UserError(f"{name}: delay is not a positive whole number of steps")
        return d

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of what node ``name`` sends (C order: populations hold it flattened)."""
        if name not in self.shapes:
            self.shapes[name] = (-1,)  # a cycle of shapeless nodes ends here
            self.shapes[name] = _out_shape(self, name)
        return self.shapes[name]


def _out_shape(g: _Graph, name: str) -> tuple[int, ...]:
    node = g.nodes[name]
    if isinstance(node, nir.Input):
        return tuple(int(v) for v in next(iter(node.input_type.values())))
    if isinstance(node, (nir.Affine, nir.Linear)):
        return (np.asarray(node.weight).shape[0],)
    if isinstance(node, nir.Scale):
        return np.asarray(node.scale).shape
    if isinstance(node, (nir.Conv1d, nir.Conv2d, nir.SumPool2d, nir.AvgPool2d)):
        return _unrolled(g, name).shape_out
    if isinstance(node, (nir.Delay, nir.Flatten)):
        up = g.shape(g.preds[name][0]) if g.preds[name] else (0,)
        return up if isinstance(node, nir.Delay) else (int(np.prod(up)),)
    if isinstance(node, nir.I):
        shape = np.asarray(node.r).shape
    elif isinstance(node, (nir.LI, nir.CubaLI)):
        shape = np.asarray(node.tau_mem if isinstance(node, nir.CubaLI) else node.tau).shape
    elif isinstance(node, nir.Threshold):
        shape = np.asarray(node.threshold).shape
    else:
        shape = np.asarray(node.v_threshold).shape
    if shape:
        return shape
    # 0-d (shared) parameters, as Norse writes them: the node's output type, else its input's shape
    typed = output_shape(node)
    if typed:
        return typed
    return g.shape(g.preds[name][0]) if g.preds[name] else (1,)


@dataclass
class _Unrolled:
    """A convolution or pooling node as a dense matrix on C-order flattened vectors."""

    weight: np.ndarray  # (out, in) float64
    bias: np.ndarray  # (out,)
    shape_out: tuple[int, ...]


def _pair(v, n: int) -> tuple[int, ...]:
    a = np.asarray(v).ravel()
    return tuple(int(a[0]) for _ in range(n)) if a.size == 1 else tuple(int(x) for x in a)


def _unrolled(g: _Graph, name: str) -> _Unrolled:
    """Conv1d/Conv2d/SumPool2d/AvgPool2d applied to the identity basis (torch, float64)."""
    if name not in g.unrolled:
        g.unrolled[name] = _unroll(g, name)
    return g.unrolled[name]


def _unroll(g: _Graph, name: str) -> _Unrolled:
    node = g.nodes[name]
    kind = type(node).__name__
    if len(g.preds[name]) != 1:
        raise UserError(f"{name} ({kind}): needs exactly one input")
    up = g.shape(g.preds[name][0])
    if isinstance(node, nir.Conv1d):
        length = node.input_shape if node.input_shape is not None else (up[-1] if len(up) == 2 else None)
        channels = np.asarray(node.weight).shape[1] * int(node.groups)  # weight: (out, in / groups, k)
        shape_in = (channels, int(np.asarray(length).ravel()[0])) if length else None
    elif isinstance(node, nir.Conv2d):
        hw = node.input_shape if node.input_shape is not None else (up[-2:] if len(up) == 3 else None)
        channels = np.asarray(node.weight).shape[1] * int(node.groups)
        shape_in = (channels, *_pair(hw, 2)) if hw is not None else None
    else:
        shape_in = up if len(up) == 3 else None
    if shape_in is None:
        raise UserError(f"{name} ({kind}): its input shape is not known (set input_shape)")
    n_in = int(np.prod(shape_in))
    if up != (-1,) and int(np.prod(up)) != n_in:
        raise UserError(f"{name} ({kind}): expects {n_in} inputs {shape_in}, gets {int(np.prod(up))}")
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape_in)
    bias = None
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        w = torch.as_tensor(np.asarray(node.weight, np.float64))
        pad = node.padding if isinstance(node.padding, str) else _pair(node.padding, w.ndim - 2)
        conv = F.conv1d if isinstance(node, nir.Conv1d) else F.conv2d
        try:
            out = conv(eye, w, None, _pair(node.stride, w.ndim - 2), pad, _pair(node.dilation, w.ndim - 2),
                       int(node.groups))
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{name} ({kind}): {str(e).splitlines()[0]}") from None
        bias = np.repeat(np.asarray(node.bias, np.float64).ravel(), int(np.prod(out.shape[2:])))
    else:
        k, st, pd = (_pair(getattr(node, a), 2) for a in ("kernel_size", "stride", "padding"))
        try:
            out = F.avg_pool2d(eye, k, st, pd, count_include_pad=True,
                               divisor_override=1 if isinstance(node, nir.SumPool2d) else None)
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{name} ({kind}): {str(e).splitlines()[0]}") from None
    shape_out = tuple(int(v) for v in out.shape[1:])
    if n_in * int(np.prod(shape_out)) > MAX_DENSE:
        raise UserError(f"{name} ({kind}): its dense matrix ({int(np.prod(shape_out))} x {n_in}) exceeds "
                        f"{MAX_DENSE} entries")
    weight = out.reshape(n_in, -1).T.numpy().copy()
    return _Unrolled(weight, bias if bias is not None else np.zeros(weight.shape[0]), shape_out)


def _check_nodes(graph: nir.NIRGraph) -> None:
    """UserError for the first node the fixed-point backends cannot lower, and a missing dt."""
    for n, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            raise UserError(f"{n} (NIRGraph): a nested graph; flatten it first (export.normalize.flatten)")
        if type(node).__name__ not in SUPPORTED:
            raise UserError(f"{n}: {type(node).__name__} nodes are not supported by the fixed-point backends")
    if "dt" not in graph.metadata:
        raise UserError("graph: the graph's metadata has no 'dt' (frame period in seconds)")


def _io_nodes(g: _Graph) -> tuple[str, str, str]:
    """The Input node, the Output node and the node feeding the Output."""
    inputs = [n for n, v in g.nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in g.nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(f"need exactly one Input and one Output node, found {len(inputs)} and {len(outputs)}")
    out_src = g.preds[outputs[0]]
    if not out_src:
        raise UserError(f"{outputs[0]} (Output): nothing feeds it")
    return inputs[0], outputs[0], out_src[0]


def _populations(g: _Graph, input_frac_bits: int, output: str, readout: str
                 ) -> tuple[dict[str, Population], str]:
    """One population per Input and neuron node (parameters filled in later), and the readout:
    the node feeding the Output, or a memoryless graded population named after the Output
    where a linear node, a Delay or several nodes feed it."""
    pops: dict[str, Population] = {}
    for n, node in g.nodes.items():
        if isinstance(node, nir.Input):
            pops[n] = Population(n, "input", _size(g, n), frac=input_frac_bits)
        elif isinstance(node, SPIKING):
            pops[n] = Population(n, "lif", _size(g, n), reset_each_step=isinstance(node, nir.Threshold))
        elif isinstance(node, (nir.I, nir.LI, nir.CubaLI)):
            pops[n] = Population(n, "integrator", _size(g, n))
    if readout not in pops or len(g.preds[output]) != 1 or pops[readout].kind == "input":
        readout = output
        pops[output] = Population(output, "integrator", _size(g, g.preds[output][0]), dv=2**DECAY_BITS,
                                  dv_f=1.0)
    return pops, readout


def _size(g: _Graph, name: str) -> int:
    return int(np.prod(g.shape(name)))


def _per(dt: float, tau: float) -> float:
    """``dt / tau``; inf for tau = 0 (or no neurons), which the callers' ``0 < dt/tau <= 1`` refuses."""
    return dt / tau if tau else math.inf


def _rate(dt: float, tau, what: str, name: str) -> float:
    """``dt / tau`` of a uniform time constant, refused (one line) outside (0, 1]."""
    rate = _per(dt, _uniform(tau, what, name))
    if not 0 < rate <= 1:
        raise UserError(f"{name}: need 0 < dt/{what} <= 1 (got dt/{what}={rate})")
    return rate


def _target_scale(g: _Graph, target: str) -> np.ndarray:
    """Per target neuron, the factor folded into its synapses' weights and Affine biases (see
    the module docstring): ``dt r`` (I), ``dt/tau r`` (LI), ``dt/tau_syn w_in`` (CubaLIF), the
    product of both (CubaLI), 1 otherwise; times r for a LIF/IF/CubaLIF whose r differs between
    neurons."""
    node, dt, n = g.nodes.get(target), g.dt, None
    if isinstance(node, nir.I):
        return np.full(1, _uniform(np.asarray(node.r) * dt, "r", target))
    if isinstance(node, nir.LI):
        return np.full(1, _rate(dt, node.tau, "tau", target)) * np.asarray(node.r, np.float64).ravel()
    if isinstance(node, (nir.CubaLIF, nir.CubaLI)):
        n = _rate(dt, node.tau_syn, "tau_syn", target) * np.asarray(node.w_in, np.float64).ravel()
        if isinstance(node, nir.CubaLI):
            n = n * _rate(dt, node.tau_mem, "tau_mem", target) * np.asarray(node.r, np.float64).ravel()
        if isinstance(node, nir.CubaLIF) and _per_neuron_r(node) is not None:
            n = n * _per_neuron_r(node)
        return n
    r = _per_neuron_r(node)
    return np.ones(1) if r is None else r


@dataclass
class _Path:
    """``target += weight @ source[t - delay]`` through linear nodes; ``chain``: their names."""

    source: str
    delay: int
    weight: np.ndarray  # (out, source size)
    chain: list[str]


def _linear_matrix(g: _Graph, name: str, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight (out, n_in), bias (out,)) of a linear node on C-order flattened vectors."""
    node = g.nodes[name]
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight, np.float64)
        b = np.asarray(node.bias, np.float64).ravel() if isinstance(node, nir.Affine) else np.zeros(len(w))
    elif isinstance(node, nir.Scale):
        s = np.asarray(node.scale, np.float64).ravel()
        if s.size not in (1, n_in):
            raise UserError(f"{name} (Scale): {s.size} factors for {n_in} inputs")
        w, b = np.diag(s) if s.size == n_in else np.eye(n_in) * s, np.zeros(n_in)
    elif isinstance(node, nir.Flatten):
        w, b = np.eye(n_in), np.zeros(n_in)
    else:
        u = _unrolled(g, name)
        w, b = u.weight, u.bias
    if w.ndim != 2:
        raise UserError(f"{name} ({type(node).__name__}): its weight is not a matrix (shape {w.shape})")
    if w.shape[1] != n_in:
        raise UserError(f"{name} ({type(node).__name__}): expects {w.shape[-1]} inputs, gets {n_in}")
    return w, b


def _paths(g: _Graph, name: str, pops: dict[str, Population], seen: tuple[str, ...] = ()
           ) -> tuple[list[_Path], np.ndarray]:
    """What node ``name`` sends, as a sum of delayed linear maps of populations plus a constant."""
    node = g.nodes[name]
    if name in pops:
        return [_Path(name, 0, np.eye(pops[name].size), [])], np.zeros(pops[name].size)
    if name in seen:
        raise UserError("the graph has a cycle without a Delay node")
    if not isinstance(node, (nir.Delay, *LINEAR)):
        raise UserError(f"{name} ({type(node).__name__}) cannot feed a synapse here")
    if isinstance(node, nir.Delay) and len(g.preds[name]) != 1:
        raise UserError(f"{name}: a Delay node needs exactly one input")
    if not g.preds[name]:
        raise UserError(f"{name}: a synapse needs exactly one source and one target")
    paths: list[_Path] = []
    bias = None
    for p in g.preds[name]:
        ps, b = _paths(g, p, pops, (*seen, name))
        if bias is not None and len(b) != len(bias):
            raise UserError(f"{name} ({type(node).__name__}): its inputs have different sizes "
                            f"({len(bias)} and {len(b)})")
        paths += ps
        bias = b if bias is None else bias + b
    if isinstance(node, nir.Delay):
        if np.any(bias):
            raise UserError(f"{name}: a bias in front of a Delay node is not supported (its first steps "
                            "would differ)")
        d = g.delay_steps(name)
        return [_Path(p.source, p.delay + d, p.weight, p.chain) for p in paths], bias
    w, b = _linear_matrix(g, name, len(bias))
    return [_Path(p.source, p.delay, w @ p.weight, [*p.chain, name]) for p in paths], w @ bias + b


def _synapse(name: str, path: _Path, target: str, weight_node: nir.NIRNode, scale: np.ndarray,
             pops: dict[str, Population]) -> tuple[Synapse, str | None]:
    """The synapse of ``path`` (``weight_node``'s weight times ``scale`` per target neuron) with its
    integer terms (exponents only; ``weight_exp`` is set by :func:`_set_dense_terms`), and a note."""
    w = np.asarray(weight_node.weight, np.float64)
    if bool(np.all(scale == scale[0])):
        terms, note = _weight_terms(weight_node, float(scale[0]))
        scaled = w * float(scale[0])
    else:
        scaled = w * scale[:, None]
        terms, note = _weight_terms(nir.Linear(weight=scaled), 1.0)
    syn = Synapse(name, path.source, target, path.delay, pops[path.source].kind != "lif", scaled)
    syn.terms = [DenseTerm((2 * m).astype(np.int32), 0, e) for m, e in terms]
    return syn, note


def _synapses(g: _Graph, pops: dict[str, Population], notes: list[str]
              ) -> tuple[list[Synapse], dict[str, np.ndarray]]:
    """One synapse per (linear node feeding a population, source population, delay): the chain
    of linear nodes and Delays behind it composed into one matrix; and one per direct
    population (or Delay) -> population edge (an identity weight).  The constant terms
    (Affine/Conv biases) summed per target, times the target's scale."""
    synapses: list[Synapse] = []
    raw_bias: dict[str, np.ndarray] = {n: np.zeros(p.size) for n, p in pops.items()}
    names: set[str] = set()

    def add(path: _Path, target: str, base: str, weight_node: nir.NIRNode | None, note: bool) -> None:
        if path.weight.shape != (pops[target].size, pops[path.source].size):
            raise UserError(f"{base}: sends {path.weight.shape[0]} values from {path.source} to {target}, "
                            f"which has {pops[target].size} neurons")
        name = base if base not in names else f"{base}<{path.source}@{path.delay}"
        names.add(name)
        node = weight_node if weight_node is not None else nir.Linear(weight=path.weight)
        syn, text = _synapse(name, path, target, node, _target_scale(g, target), pops)
        if text and (note or "max abs error 0)" not in text):
            notes.append(f"{name}: {text}")
        synapses.append(syn)

    for n, node in g.nodes.items():
        if not isinstance(node, LINEAR):
            continue
        if not g.succs[n] or not g.preds[n]:
            raise UserError(f"{n}: a synapse needs exactly one source and one target")
        into_input = [b for b in g.succs[n] if b in pops and pops[b].kind == "input"]
        if into_input:
            raise UserError(f"{n}: its target {into_input[0]} is not a LIF or I population")
        outs = [b for b in g.succs[n] if b in pops]
        if not outs:
            continue
        paths, bias = _paths(g, n, pops)
        merged: dict[tuple[str, int], _Path] = {}
        for p in paths:
            key = (p.source, p.delay)
            if key in merged:
                p = _Path(p.source, p.delay, merged[key].weight + p.weight, p.chain)
            merged[key] = p
        single = isinstance(node, (nir.Affine, nir.Linear)) and len(paths) == 1 and paths[0].chain == [n]
        for b in outs:
            for p in merged.values():
                add(p, b, n, node if single else None, single)
            raw_bias[b] = raw_bias[b] + bias * _target_scale(g, b)
    for a, b in g.edges:  # direct population (or Delay) -> population edges: identity synapses
        if b in pops and pops[b].kind != "input" and not isinstance(g.nodes[a], LINEAR):
            paths, _ = _paths(g, a, pops)
            for p in paths:
                add(p, b, f"{a}->{b}", None, False)
    return synapses, raw_bias


def _lif_constants(n: str, node: nir.NIRNode, dt: float
                   ) -> tuple[float, float, float, np.ndarray | float, float]:
    """(alpha = dt/tau_mem, gain g (a_in = x 2**k, V = v 2**(k+6) / g), threshold, leak bias
    v_leak / r, beta = dt/tau_syn (1: no current stage)) of a spiking node."""
    if isinstance(node, nir.Threshold):  # per-neuron thresholds as biases below one common vth
        theta = np.asarray(node.threshold, np.float64).ravel()
        ref = max(float(theta.max(initial=0.0)), 0.0)
        return 1.0, 1.0, ref, ref - theta, 1.0
    vth = _uniform(node.v_threshold, "v_threshold", n)
    r_rows = _per_neuron_r(node)  # folded into the rows: the population sees r = 1
    if r_rows is not None and np.any(r_rows <= 0):
        raise UserError(f"{n}: need r > 0 (got r={float(r_rows.min())})")
    r = 1.0 if r_rows is not None else _uniform(node.r, "r", n)
    if not np.allclose(np.asarray(node.v_reset), 0.0):
        raise UserError(f"{n}: v_reset must be 0 (Lava's LIF resets to 0)")
    if isinstance(node, nir.IF):
        if r <= 0:
            raise UserError(f"{n}: need r > 0 (got r={r})")
        return 0.0, dt * r, vth, 0.0, 1.0
    tau = node.tau if isinstance(node, nir.LIF) else node.tau_mem
    alpha = _per(dt, _uniform(tau, "tau" if isinstance(node, nir.LIF) else "tau_mem", n))
    if not 0 < alpha <= 1 or r <= 0:
        raise UserError(f"{n}: need 0 < dt/tau <= 1 and r > 0 (got dt/tau={alpha}, r={r})")
    beta = 1.0
    if isinstance(node, nir.CubaLIF):
        beta = _per(dt, _uniform(node.tau_syn, "tau_syn", n))
        if not 0 < beta <= 1:
            raise UserError(f"{n}: need 0 < dt/tau_syn <= 1 (got {beta})")
    leak = np.asarray(node.v_leak, np.float64).ravel() / r
    return alpha, alpha * r, vth, leak, beta


def _decay(n: str, what: str, x: float, notes: list[str], full: int = 2**DECAY_BITS - 1) -> int:
    """``rint(4096 x)`` (a note where inexact), at most 4095 below x = 1, ``full`` at x = 1."""
    d = int(np.rint(x * 2**DECAY_BITS))
    if d != x * 2**DECAY_BITS:
        ratio = "dt/tau_syn" if what.startswith("du") else "dt/tau"
        notes.append(f"{n}: {what} = {d}/4096 rounds {ratio} = {x}")
    return min(d, 2**DECAY_BITS - 1) if x < 1 else full


CONST = "const.one"  # the constant population's name (``const.one.1`` ... where a node has it)


def _current_biases(g: _Graph, pops: dict[str, Population], synapses: list[Synapse],
                    raw_bias: dict[str, np.ndarray]) -> None:
    """A bias into a CubaLIF/CubaLI current (Lava's LIF adds its bias to v, not u): a graded
    synapse from a constant population (value 1, frac 0) whose weight column is the bias
    (times the target's scale), quantised to 16 bits and split into 8-bit terms; the target's
    v bias keeps only its v_leak part."""
    targets = [n for n, b in raw_bias.items() if isinstance(g.nodes.get(n), (nir.CubaLIF, nir.CubaLI))
               and np.any(b)]
    if not targets:
        return
    name, i = CONST, 0
    while name in g.nodes:
        i += 1
        name = f"{CONST}.{i}"
    pops[name] = Population(name, "const", 1)
    for n in targets:
        w = raw_bias[n][:, None]
        t = quantize_term(w, 16)
        syn = Synapse(f"{n}.current_bias", name, n, 0, True, w)
        syn.terms = [DenseTerm((2 * m).astype(np.int32), 0, e)
                     for m, e in split_terms(t.mantissa.astype(np.int64), t.exponent)]
        synapses.append(syn)
        raw_bias[n] = np.zeros_like(raw_bias[n])


def _lower_lif(n: str, node: nir.NIRNode, p: Population, g: _Graph, synapses: list[Synapse],
               raw_bias: np.ndarray, min_frac: int, max_frac: int, notes: list[str]) -> None:
    """A spiking population's float and fixed-point parameters (see the module docstring)."""
    alpha, gain, vth, leak, beta = _lif_constants(n, node, g.dt)
    b = raw_bias + leak
    p.bias_f, p.vth_f, p.dv_f = b, vth / gain, alpha
    p.dv = _decay(n, "dv", alpha, notes) if alpha > 0 else 0
    if isinstance(node, nir.CubaLIF):
        p.du, p.du_f = _decay(n, "du + 1", beta, notes, 2**DECAY_BITS) - 1, beta
    binary = [-t.exponent for s in synapses if s.target == n and not s.graded for t in s.terms]
    k = min(max([min_frac, *binary]), max(max_frac, min_frac))
    while k > 0 and not _spiking_params_fit(p, k):
        k -= 1
    if binary and k < max(binary):
        notes.append(f"{n}: current grid 2**-{k}; finer spike synapse terms (2**{-max(binary)}) rounded")
    p.frac = k
    p.vth = int(np.rint(vth * 2.0**k / gain))
    p.bias_mant, p.bias_exp = _bias_parts(b, k)
    if not np.array_equal(p.bias_mant * 2.0**p.bias_exp, b * 2.0 ** (k + ACT_SHIFT)):
        notes.append(f"{n}: bias rounded to bias_mant << bias_exp")


def _graded_constants(n: str, node: nir.NIRNode | None, p: Population, dt: float, notes: list[str]
                      ) -> np.ndarray:
    """Decays of an LI/CubaLI population (I: none; the Output's own readout keeps dv = 4096); its
    leak bias ``dt/tau v_leak`` per neuron."""
    if not isinstance(node, (nir.LI, nir.CubaLI)):
        return np.zeros(p.size)
    li = isinstance(node, nir.LI)
    alpha = _rate(dt, node.tau if li else node.tau_mem, "tau" if li else "tau_mem", n)
    p.dv, p.dv_f = _decay(n, "dv", alpha, notes, 2**DECAY_BITS), alpha
    if isinstance(node, nir.CubaLI):
        beta = _rate(dt, node.tau_syn, "tau_syn", n)
        p.du, p.du_f = _decay(n, "du + 1", beta, notes, 2**DECAY_BITS) - 1, beta
    return alpha * np.asarray(node.v_leak, np.float64).ravel() * np.ones(p.size)


def _leaky_bound(incoming: list[Synapse], p: Population, steps: int) -> float | None:
    """Bound on |v| of a leaky graded population fed by spikes (or the constant 1) only: the input bound times
    ``min(steps, 4096 / (du + 1))`` (current) and ``min(steps, 4096 / dv)`` (trunc only shrinks)."""
    if any((s.graded and not s.source.startswith(CONST)) or s.source == p.name for s in incoming):
        return None
    x = sum((np.abs(s.weight).sum(axis=1) for s in incoming), np.zeros(p.size))
    cur = x * min(steps, 2**DECAY_BITS / (p.du + 1))
    v = (cur + np.abs(p.bias_f)) * (min(steps, 2**DECAY_BITS / p.dv) if p.dv else steps)
    return float(np.max(v)) if p.size else 0.0


def _lower_integrator(n: str, p: Population, g: _Graph, synapses: list[Synapse], raw_bias: np.ndarray,
                      steps: int, fine_state: bool, max_state_frac: int, notes: list[str]) -> None:
    """A graded population's decays, state grid (exact for its spike inputs, within 24 bits by
    a static bound) and integer bias."""
    node = None if isinstance(g.nodes[n], nir.Output) else g.nodes[n]
    p.bias_f = raw_bias + _graded_constants(n, node, p, g.dt, notes)
    incoming = [s for s in synapses if s.target == n]
    binary = [-t.exponent for s in incoming if not s.graded for t in s.terms]
    k = max(binary) if binary else 16
    plain = p.du == 2**DECAY_BITS - 1 and p.dv == 0
    bound = _state_bound(incoming, p, steps) if plain else _leaky_bound(incoming, p, steps)
    if bound is not None and bound > 0:
        p.state_bound = bound
        fit = int(math.floor(math.log2((STATE_MAX - 1) / (bound * 1.001))))
        k = max(k, min(fit, max_state_frac)) if fine_state else k
        k = min(k, fit)
    elif bound is None:
        notes.append(f"{n}: no static state bound (graded inputs); state may wrap at 24 bits")
    p.frac = k
    p.bias_int = np.rint(p.bias_f * 2.0**k).astype(np.int64)
    if binary and k < max(binary):
        notes.append(f"{n}: state grid 2**-{k} to fit 24 bits (bound |m| <= {bound:.4g})")


def _set_dense_terms(net: Network, round_graded: bool) -> None:
    """Each term's ``weight_exp = e - s + k - 1`` and, for graded sources, its rounding channel;
    UserError where the input's int32 accumulator could overflow."""
    pops = net.populations
    for s in net.synapses:
        src_frac = pops[s.source].frac if s.graded else 0
        k = pops[s.target].frac
        for t in s.terms:
            t.weight_exp = t.exponent - src_frac + k - 1
            if s.graded and round_graded and t.shift >= 2:
                consts = pops[s.source].consts
                c = 2 ** (t.shift - 2)
                if c not in consts:
                    consts.append(c)
                t.round_channel = consts.index(c)
            elif s.graded and t.shift == 1:
                net.notes.append(f"{s.name}: a right shift by 1 stays floor-rounded")
        if s.source == net.input:
            fan = s.weight.shape[1]
            peak = max(int(np.max(np.abs(t.weights))) for t in s.terms) if s.terms else 0
            if peak * 2 ** (net.input_bits - 1) * fan + 2 ** (STATE_BITS - 1) >= 2**31:
                raise UserError(f"{s.name}: a {net.input_bits}-bit input overflows the int32 accumulator")


def lower(
    graph: nir.NIRGraph,
    steps: int | None = None,
    input_bits: int = 16,
    input_frac_bits: int = 8,
    min_frac: int = 10,
    max_frac: int = 10,
    round_graded: bool = True,
    fine_state: bool = True,
    max_state_frac: int = 20,
    current_frac: Mapping[str, int] | None = None,
) -> Network:
    """The :class:`Network` of an lmuformer NIR graph (see the module docstring).

    ``steps``: steps per sample (frames + latency; the graph's metadata when None), used
    for the integrators' static state bound.  ``current_frac``: spiking population -> its
    current grid k (calibrated, :func:`current_frac_for`); None: the graph metadata's
    ``current_frac``; populations it does not name take ``min_frac`` .. ``max_frac``.
    """
    _check_nodes(graph)
    if current_frac is None:
        current_frac = GraphMetadata.of(graph).current_frac or {}
    if not 2 <= input_bits <= STATE_BITS:
        raise UserError(f"input bits must be between 2 and {STATE_BITS}, got {input_bits}")
    g = _Graph.of(graph)
    latency = int(graph.metadata.get("latency_frames", 0))
    if steps is None:
        steps = int(graph.metadata.get("frames", 0)) + latency
    inp, output, readout = _io_nodes(g)
    notes: list[str] = []
    pops, readout = _populations(g, input_frac_bits, output, readout)
    synapses, raw_bias = _synapses(g, pops, notes)
    _current_biases(g, pops, synapses, raw_bias)
    net = Network(pops, synapses, inp, readout, latency, g.dt, input_bits, input_frac_bits, notes)
    _check_current_frac(current_frac, pops)
    for n, p in pops.items():
        if p.kind == "lif":
            lo, hi = (current_frac[n], current_frac[n]) if n in current_frac else (min_frac, max_frac)
            _lower_lif(n, g.nodes[n], p, g, synapses, raw_bias[n], lo, hi, notes)
    for n, p in pops.items():
        if p.kind == "integrator":
            _lower_integrator(n, p, g, synapses, raw_bias[n], steps, fine_state, max_state_frac, notes)
    _set_dense_terms(net, round_graded)
    order = _population_order(net)
    net.populations = {n: pops[n] for n in order}
    return net


def _check_current_frac(current_frac: Mapping[str, int], pops: dict[str, Population]) -> None:
    """UserError unless every entry names a spiking population with a grid in 0..``CURRENT_FRAC_MAX``."""
    for n, k in current_frac.items():
        if n not in pops or pops[n].kind != "lif":
            raise UserError(f"current grid given for {n!r}, which is not a spiking population of the graph")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= CURRENT_FRAC_MAX:
            raise UserError(f"{n}: current grid 2**-k needs an integer k in 0..{CURRENT_FRAC_MAX}, got {k!r}")


def current_frac_for(peak: float, p: Population, headroom: float = CURRENT_HEADROOM) -> int:
    """The finest current grid k in ``CURRENT_FRAC_MIN`` .. ``CURRENT_FRAC_MAX`` for the spiking
    population ``p`` (as lowered: du, dv, bias_f) whose synaptic input peaks at |x| = ``peak`` (NIR
    units) on calibration data: ``headroom * peak`` on 2**-k fits Loihi's 16-bit a_in, the
    static bounds it implies on u (``64 a_in 4096 / (du + 1)``) and v (``(|u| + |bias|) 4096 / dv``)
    fit 24 bits, vth (``vth_f 2**k``) 17 bits and the bias 13 + 3 bits; ``CURRENT_FRAC_MIN`` where
    none does (the module docstring)."""
    a = headroom * peak if math.isfinite(peak) else math.inf
    bias = float(np.max(np.abs(p.bias_f))) if p.bias_f is not None and np.size(p.bias_f) else 0.0
    for k in range(CURRENT_FRAC_MAX, CURRENT_FRAC_MIN, -1):
        a_in = a * 2.0**k
        u = 2**ACT_SHIFT * a_in * 2**DECAY_BITS / (p.du + 1)
        v = (u + bias * 2.0 ** (k + ACT_SHIFT)) * 2**DECAY_BITS / p.dv if p.dv else 0.0
        if a_in <= A_IN_MAX and u < STATE_MAX and v < STATE_MAX and _spiking_params_fit(p, k):
            return k
    return CURRENT_FRAC_MIN


def calibrated_current_frac(graph: nir.NIRGraph, peaks: Mapping[str, float],
                            headroom: float = CURRENT_HEADROOM) -> dict[str, int]:
    """Spiking population -> :func:`current_frac_for` its observed peak |synaptic input|
    (``peaks``, e.g. :func:`backends.emulator.current_peaks`; a population it lacks: peak 0)."""
    net = lower(graph, current_frac={})
    return {n: current_frac_for(float(peaks.get(n, 0.0)), p, headroom)
            for n, p in net.populations.items() if p.kind == "lif"}


def _population_order(net: Network) -> list[str]:
    """Input first, then populations such that every zero-delay source comes first."""
    deps = {n: {s.source for s in net.synapses if s.target == n and s.delay == 0} for n in net.populations}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(deps):
        ready = [n for n in deps if n not in done and deps[n] <= done]
        if not ready:
            raise UserError("the graph has a cycle without a Delay node")
        ready.sort(key=lambda n: (net.populations[n].kind not in ("input", "const"),
                                  list(net.populations).index(n)))
        for n in ready:
            order.append(n)
            done.add(n)
    return order


MAX_INPUT_FRAC = 20


def input_frac_for(x: np.ndarray, input_bits: int = 16) -> int:
    """The finest input grid 2**-q (q in 0..``MAX_INPUT_FRAC``) on which every value of x fits
    ``input_bits`` signed bits after rint: ``rint(max|x| * 2**q) <= 2**(input_bits-1) - 1``."""
    peak = float(np.max(np.abs(x))) if np.size(x) else 0.0
    lim = 2 ** (input_bits - 1) - 1
    if not peak > 0 or not math.isfinite(peak):
        return MAX_INPUT_FRAC
    q = min(max(int(math.floor(math.log2(lim / peak))) + 1, 0), MAX_INPUT_FRAC)  # + 1: rint may still fit
    while q > 0 and np.rint(peak * 2.0**q) > lim:
        q -= 1
    return q


def lower_for_input(
    graph: nir.NIRGraph, x: np.ndarray, precision: str, input_bits: int = 16,
    input_frac_bits: int | None = None,
) -> tuple[Network, np.ndarray, int]:
    """Check a batch x (samples, frames, features) against the graph and lower the graph for
    ``frames + latency`` steps: (network, x as an array, steps).  UserError on bad input.
    ``input_frac_bits`` None: :func:`input_frac_for` of x (the module docstring)."""
    if precision not in ("fixed", "float"):
        raise UserError(f"precision must be 'fixed' or 'float', not {precision!r}")
    x = np.asarray(x)
    if x.ndim != 3:
        raise UserError(f"input must be (samples, frames, features), got shape {x.shape}")
    steps = x.shape[1] + int(graph.metadata.get("latency_frames", 0))
    if input_frac_bits is None:
        if not 2 <= input_bits <= STATE_BITS:
            raise UserError(f"input bits must be between 2 and {STATE_BITS}, got {input_bits}")
        input_frac_bits = input_frac_for(x, input_bits)
    net = lower(graph, steps=steps, input_bits=input_bits, input_frac_bits=input_frac_bits)
    features = net.populations[net.input].size
    if x.shape[2] != features:
        raise UserError(f"input has {x.shape[2]} features, the graph expects {features}")
    return net, x, steps


def composed_synapses(graph: nir.NIRGraph) -> tuple[dict[str, Population], list[Synapse]]:
    """The populations (sizes only) and synapses of :func:`lower`, before any fixed-point
    parameter: every chain of linear nodes and Delays between two populations composed into one
    float matrix (out, source size) with its delay in steps, as the emulator and Lava execute it
    (``lmuformer.analysis.counts`` counts SOPs from it).  UserError where :func:`lower` refuses
    the graph's structure (node types, shapes, cycles, dt)."""
    _check_nodes(graph)
    g = _Graph.of(graph)
    _, output, readout = _io_nodes(g)
    pops, _ = _populations(g, 0, output, readout)
    synapses, _ = _synapses(g, pops, [])
    return pops, synapses
