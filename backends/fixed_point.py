"""NIR graph -> integer (Loihi-style) parameters, shared by the emulator and the Lava lowering.

Pure functions, no Lava import.  :func:`lower` turns an lmuformer NIR graph into a
:class:`Network`: populations (the Input, every LIF, every I), and synapses (every
Affine/Linear node, with the Delay nodes in front of it folded into an integer delay in
steps).  Both the fixed-point and the float parameters are computed; a backend uses one set.

Notation: the NIR discrete-time reading of ``export/interpret.py``; ``alpha = dt/tau``;
``floor`` = arithmetic right shift (rounds towards -inf); ``trunc`` rounds towards 0.

Integer units (one per population, ``frac`` = k):
    * Input: a real sample x is sent as the graded value ``X = clip(rint(x * 2**q),
      -2**(B-1), 2**(B-1)-1)`` with B = ``input_bits`` (default 16) and q = ``input_frac_bits``
      (default 8): resolution 2**-8, range +-128.  rint rounds half to even.
    * LIF population: its synaptic input current ``x`` (the NIR node's input, bias excluded)
      arrives as the integer ``a_in = x * 2**k``.  k = ``max_frac`` = ``min_frac`` = 10 for
      every LIF (Loihi's 16-bit a_in then holds |x| < 32, and u's 24 bits |x| < 128; the
      trained digits model peaks at |x| ~ 9), lowered while the threshold or a bias would not
      fit (below).  Graded-only targets (the first patch stage, the memory readout) used to
      get 2**-8; the finer grid quarters their rounding error.  With one 8-bit term
      per learned matrix (exponents about -6..-10) spike synapses are exact; the finer second
      term of a two-term export (about 2**-14) is floor-rounded to the 2**-k grid once per
      Dense and step (a note says so).
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
    * input encoding: rint, |e| <= 2**-(q+1) = 2**-9 per value (half to even, unbiased);
    * graded synapse term: round half up, -2**-(k+1) < e <= 2**-(k+1) (2**-11 at k = 10),
      mean 0 over the residues (T).  Before this (floor): -2**-k < e <= 0, every graded
      layer fired ~1 % less and digits agreement was 99.44 %, now 100 % (benchmarks/);
    * spike synapse term finer than the grid (second term of a two-term export): floor,
      -2**-k < e <= 0 (T), biased, not compensated: a bias current would add 2**-(k+1)
      in steps where no spike arrives too, and Lava's Dense has no other place to add it;
      measured ~1 % fewer spikes in those layers.  One-term exports have none;
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
Memory / readout integrator (our ``GradedIntegrator`` process, Lava has no resettable one):
    ``M <- wrap24(M + a_in + bias)`` (two's complement wrap at 24 bits), output M as a graded
    message; ``bias = rint(b * dt * r * 2**k)``.  Readout value = M * 2**-k.

Float mode (Lava ``floating_pt`` models, the emulator's float mode): the same structure with
the NIR float weights, ``u = a_in`` (du = 1), ``v <- (1 - alpha) v + u + b`` with vth / (alpha
r) and b + v_leak / r; the integrator adds ``dt r (W x + b)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import nir
import numpy as np

from export.io import check_supported
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


def wrap24(a: np.ndarray) -> np.ndarray:
    """Two's complement wrap of integers to ``STATE_BITS`` (24) bits (the integrator's state)."""
    return ((a + STATE_MAX) & (2 * STATE_MAX - 1)) - STATE_MAX


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
    kind: str  # "input" | "lif" | "integrator"
    size: int
    frac: int = 0
    # float parameters
    bias_f: np.ndarray | None = None
    vth_f: float = 0.0
    dv_f: float = 0.0
    # fixed-point parameters
    du: int = 4095
    dv: int = 0
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
        return 2.0 ** -self.populations[self.readout].frac

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


def _size(node: nir.NIRNode) -> int:
    if isinstance(node, nir.Input):
        return int(np.prod(next(iter(node.input_type.values()))))
    if isinstance(node, nir.LIF):
        return int(np.asarray(node.v_threshold).size)
    if isinstance(node, nir.I):
        return int(np.asarray(node.r).size)
    raise UserError(f"unsupported population type {type(node).__name__}")


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
    if "weight_mantissa" in md and "weight_exponent" in md and p == int(p):
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


@dataclass
class _Graph:
    """A NIR graph with its edge lists and dt (s), as the lowering reads it."""

    nodes: dict[str, nir.NIRNode]
    preds: dict[str, list[str]]
    succs: dict[str, list[str]]
    edges: list[tuple[str, str]]
    dt: float

    @classmethod
    def of(cls, graph: nir.NIRGraph) -> _Graph:
        preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
        succs: dict[str, list[str]] = {n: [] for n in graph.nodes}
        for a, b in graph.edges:
            preds[b].append(a)
            succs[a].append(b)
        return cls(graph.nodes, preds, succs, list(graph.edges), float(graph.metadata["dt"]))

    def resolve(self, name: str) -> tuple[str, int]:
        """Follow Delay nodes back to a population; the total delay in steps."""
        delay = 0
        while isinstance(self.nodes[name], nir.Delay):
            k = np.asarray(self.nodes[name].delay, np.float64) / self.dt
            d = int(round(float(k.flat[0])))
            if d < 1 or not np.allclose(k, d, rtol=0, atol=1e-6):
                raise UserError(f"{name}: delay is not a positive whole number of steps")
            delay += d
            if len(self.preds[name]) != 1:
                raise UserError(f"{name}: a Delay node needs exactly one input")
            name = self.preds[name][0]
        if not isinstance(self.nodes[name], (nir.Input, nir.LIF, nir.I)):
            raise UserError(f"{name} ({type(self.nodes[name]).__name__}) cannot feed a synapse here")
        return name, delay


def _io_nodes(g: _Graph) -> tuple[str, str]:
    """The Input node and the readout (the I node feeding the Output)."""
    inputs = [n for n, v in g.nodes.items() if isinstance(v, nir.Input)]
    outputs = [n for n, v in g.nodes.items() if isinstance(v, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(f"need exactly one Input and one Output node, found {len(inputs)} and {len(outputs)}")
    out_src = g.preds[outputs[0]]
    if len(out_src) != 1 or not isinstance(g.nodes[out_src[0]], nir.I):
        raise UserError("the Output node must be fed by one I node (the readout integrator)")
    return inputs[0], out_src[0]


def _populations(g: _Graph, input_frac_bits: int) -> dict[str, Population]:
    """One population per Input, LIF and I node (parameters filled in later)."""
    pops: dict[str, Population] = {}
    for n, node in g.nodes.items():
        if isinstance(node, nir.Input):
            pops[n] = Population(n, "input", _size(node), frac=input_frac_bits)
        elif isinstance(node, nir.LIF):
            pops[n] = Population(n, "lif", _size(node))
        elif isinstance(node, nir.I):
            pops[n] = Population(n, "integrator", _size(node))
        elif type(node).__name__ in ("LI", "IF", "Scale", "Threshold"):
            raise UserError(f"{n}: {type(node).__name__} nodes are not supported by the fixed-point backends")
    return pops


def _target_scale(g: _Graph, target: str) -> float:
    """The factor folded into a synapse's weight: ``dt * r`` for an I target, else 1."""
    tnode = g.nodes[target]
    return _uniform(np.asarray(tnode.r) * g.dt, "r", target) if isinstance(tnode, nir.I) else 1.0


def _synapse(name: str, source: str, target: str, delay: int, weight_node: nir.NIRNode, scale: float,
             pops: dict[str, Population]) -> tuple[Synapse, str | None]:
    """The synapse ``weight_node`` (its weight times ``scale``) with its integer terms (exponents
    only; ``weight_exp`` is set by :func:`_set_dense_terms`), and a quantisation note."""
    w = np.asarray(weight_node.weight, np.float64)
    terms, note = _weight_terms(weight_node, scale)
    syn = Synapse(name, source, target, delay, pops[source].kind != "lif", w * scale)
    syn.terms = [DenseTerm((2 * m).astype(np.int32), 0, e) for m, e in terms]
    return syn, note


def _synapses(g: _Graph, pops: dict[str, Population], notes: list[str]
              ) -> tuple[list[Synapse], dict[str, np.ndarray]]:
    """Every Affine/Linear node, and every direct population -> population edge (an identity
    weight), as a synapse; the Affine biases summed per target (times the target's scale)."""
    synapses: list[Synapse] = []
    raw_bias: dict[str, np.ndarray] = {n: np.zeros(p.size) for n, p in pops.items()}
    for n, node in g.nodes.items():
        if not isinstance(node, (nir.Affine, nir.Linear)):
            continue
        if len(g.preds[n]) != 1 or len(g.succs[n]) != 1:
            raise UserError(f"{n}: a synapse needs exactly one source and one target")
        target = g.succs[n][0]
        if target not in pops or pops[target].kind == "input":
            raise UserError(f"{n}: its target {target} is not a LIF or I population")
        source, delay = g.resolve(g.preds[n][0])
        scale = _target_scale(g, target)
        syn, note = _synapse(n, source, target, delay, node, scale, pops)
        if note:
            notes.append(f"{n}: {note}")
        synapses.append(syn)
        if isinstance(node, nir.Affine):
            raw_bias[target] = raw_bias[target] + np.asarray(node.bias, np.float64) * scale
    for a, b in g.edges:
        if b in pops and pops[b].kind != "input" and not isinstance(g.nodes[a], (nir.Affine, nir.Linear)):
            source, delay = g.resolve(a)
            eye = nir.Linear(weight=np.eye(pops[b].size))
            syn, _ = _synapse(f"{a}->{b}", source, b, delay, eye, _target_scale(g, b), pops)
            synapses.append(syn)
    return synapses, raw_bias


def _lower_lif(n: str, node: nir.LIF, p: Population, g: _Graph, synapses: list[Synapse],
               raw_bias: np.ndarray, min_frac: int, max_frac: int, notes: list[str]) -> None:
    """A LIF population's float and fixed-point parameters (see the module docstring)."""
    alpha = g.dt / _uniform(node.tau, "tau", n)
    r = _uniform(node.r, "r", n)
    vth = _uniform(node.v_threshold, "v_threshold", n)
    if not np.allclose(np.asarray(node.v_reset), 0.0):
        raise UserError(f"{n}: v_reset must be 0 (Lava's LIF resets to 0)")
    if not 0 < alpha <= 1 or r <= 0:
        raise UserError(f"{n}: need 0 < dt/tau <= 1 and r > 0 (got dt/tau={alpha}, r={r})")
    b = raw_bias + np.asarray(node.v_leak, np.float64).ravel() / r
    p.bias_f, p.vth_f, p.dv_f = b, vth / (alpha * r), alpha
    p.dv = int(np.rint(alpha * 2**DECAY_BITS))
    if p.dv != alpha * 2**DECAY_BITS:
        notes.append(f"{n}: dv = {p.dv}/4096 rounds dt/tau = {alpha}")
    p.dv = min(p.dv, 2**DECAY_BITS - 1) if alpha < 1 else 2**DECAY_BITS - 1
    binary = [-t.exponent for s in synapses if s.target == n and not s.graded for t in s.terms]
    k = min(max([min_frac, *binary]), max(max_frac, min_frac))
    while k > 0 and (vth * 2.0**k / (alpha * r) >= 2**VTH_BITS or not _bias_fits(b, k)):
        k -= 1
    if binary and k < max(binary):
        notes.append(f"{n}: current grid 2**-{k}; finer spike synapse terms (2**{-max(binary)}) rounded")
    p.frac = k
    p.vth = int(np.rint(vth * 2.0**k / (alpha * r)))
    p.bias_mant, p.bias_exp = _bias_parts(b, k)
    if not np.array_equal(p.bias_mant * 2.0**p.bias_exp, b * 2.0 ** (k + ACT_SHIFT)):
        notes.append(f"{n}: bias rounded to bias_mant << bias_exp")


def _lower_integrator(n: str, p: Population, synapses: list[Synapse], raw_bias: np.ndarray, steps: int,
                      fine_state: bool, max_state_frac: int, notes: list[str]) -> None:
    """An I population's state grid (exact for its spike inputs, within 24 bits by a static
    bound) and its integer bias."""
    p.bias_f = raw_bias
    incoming = [s for s in synapses if s.target == n]
    binary = [-t.exponent for s in incoming if not s.graded for t in s.terms]
    k = max(binary) if binary else 16
    bound = _state_bound(incoming, p, steps)
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
) -> Network:
    """The :class:`Network` of an lmuformer NIR graph (see the module docstring).

    ``steps``: steps per sample (frames + latency; the graph's metadata when None), used
    for the integrators' static state bound.
    """
    check_supported(graph)
    if not 2 <= input_bits <= STATE_BITS:
        raise UserError(f"input bits must be between 2 and {STATE_BITS}, got {input_bits}")
    g = _Graph.of(graph)
    latency = int(graph.metadata.get("latency_frames", 0))
    if steps is None:
        steps = int(graph.metadata.get("frames", 0)) + latency
    inp, readout = _io_nodes(g)
    notes: list[str] = []
    pops = _populations(g, input_frac_bits)
    synapses, raw_bias = _synapses(g, pops, notes)
    net = Network(pops, synapses, inp, readout, latency, g.dt, input_bits, input_frac_bits, notes)
    for n, p in pops.items():
        if p.kind == "lif":
            _lower_lif(n, g.nodes[n], p, g, synapses, raw_bias[n], min_frac, max_frac, notes)
    for n, p in pops.items():
        if p.kind == "integrator":
            _lower_integrator(n, p, synapses, raw_bias[n], steps, fine_state, max_state_frac, notes)
    _set_dense_terms(net, round_graded)
    order = _population_order(net)
    net.populations = {n: pops[n] for n in order}
    return net


def _population_order(net: Network) -> list[str]:
    """Input first, then populations such that every zero-delay source comes first."""
    deps = {n: {s.source for s in net.synapses if s.target == n and s.delay == 0} for n in net.populations}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(deps):
        ready = [n for n in deps if n not in done and deps[n] <= done]
        if not ready:
            raise UserError("the graph has a cycle without a Delay node")
        ready.sort(key=lambda n: (net.populations[n].kind != "input", list(net.populations).index(n)))
        for n in ready:
            order.append(n)
            done.add(n)
    return order


def lower_for_input(
    graph: nir.NIRGraph, x: np.ndarray, precision: str, input_bits: int = 16, input_frac_bits: int = 8
) -> tuple[Network, np.ndarray, int]:
    """Check a batch x (samples, frames, features) against the graph and lower the graph for
    ``frames + latency`` steps: (network, x as an array, steps).  UserError on bad input."""
    if precision not in ("fixed", "float"):
        raise UserError(f"precision must be 'fixed' or 'float', not {precision!r}")
    x = np.asarray(x)
    if x.ndim != 3:
        raise UserError(f"input must be (samples, frames, features), got shape {x.shape}")
    steps = x.shape[1] + int(graph.metadata.get("latency_frames", 0))
    net = lower(graph, steps=steps, input_bits=input_bits, input_frac_bits=input_frac_bits)
    features = net.populations[net.input].size
    if x.shape[2] != features:
        raise UserError(f"input has {x.shape[2]} features, the graph expects {features}")
    return net, x, steps
