"""Place a lowered network (:class:`backends.fixed_point.Network`) on neuro-cores and chips.

What is placed.  Every LIF and integrator population is a set of neurons; the Input is sent
by the host (the embedded processors) and takes no neuro-core, nor does the constant population
behind current biases (kind "const": a RingBuffer of ones in Lava, a host-side source sending
the value 1 every step; its synapses are stored on their targets' cores like any other).
A neuron is stored on the core together with all its incoming synapses (every Dense term of
every synapse node into it, each delayed tap included), as on Loihi, where a core holds the
fan-in of its neurons.

Synaptic memory of one stored synapse (bits): ``w`` = 8 (the lowering's terms are 8-bit
mantissas; a target with narrower weights needs ``ceil(8 / weight_bits)`` synapses per term),
plus ``delay_bits`` for a synapse with a delay when delays are per synapse.  Encodings:

* ``dense``: every entry of the term's (rows on the core x source neurons) block is stored,
  zeros included: ``rows x sources x (w + d)`` bits;
* ``sparse``: only nonzero entries, each with the target's index within the core
  (``ceil(log2(neurons_per_core))`` bits): ``nnz x (w + index + d)``;
* ``auto`` (the ``sparse`` optimisation): each term in whichever of the two is smaller.

Input axons (fan-in) of a core: the distinct source neurons with at least one stored synapse
on it (one axon per source neuron; all terms and delayed taps of one source share it when
delays are per synapse; with axon delays each (source, delay) pair is its own axon and the
synapses carry no delay field).  Dense terms need an axon for every source neuron.

Algorithm (deterministic, two passes).

1. *Split*: each population, in evaluation order, is cut into contiguous slices, greedily:
   a slice grows neuron by neuron while its neurons, its synaptic memory and its input axons
   fit one core.  For a fixed neuron order this gives the fewest slices (each constraint is
   monotone in the slice's length).  A single neuron that does not fit a core is an error,
   as is a population that needs several cores when splitting is off.
2. *Pack*: first-fit decreasing bin packing of the slices (largest synaptic memory first)
   into cores, a slice joining the first open core that holds the same kind of neuron (LIF
   or integrator) and still has room for its neurons, memory and axons (axons of a shared
   source counted once); else a new core.  Cores are then numbered in network order and
   filled into chips in that order (``chip = core // cores_per_chip``).
   Convolutions along time are delayed dense taps: they share the source and the target,
   so all taps of a neuron land on its core and share its axons; there is no spatial
   weight sharing in these graphs.

Activity (from a run's per-neuron spike rates; graded sources send every step):

* messages received per step by a core = sum over its input axons of the source neuron's
  rate (one message per spike per destination core, multicast);
* synaptic operations per step = sum over stored synapses of the source neuron's rate (a
  dense term processes its zeros too);
* time per step of a core = SOPs x t_synop + neurons x t_neuron + spikes x (t_active -
  t_neuron); the step takes the slowest core's time plus the barrier; times the steps of
  one inference.  Without a run every source is taken to fire every step (a worst case).
  A graded message through one synapse is assumed to cost one synaptic operation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np

from backends.fixed_point import Network
from lmuformer.analysis.mapping.hardware import Hardware
from lmuformer.errors import UserError

TERM_BITS = 8  # the lowering's Dense terms: 8-bit signed mantissas
HOST_SOURCES = ("input", "const")  # populations sent from outside the neuro-cores
ENCODINGS = ("dense", "sparse", "auto")


@dataclass(frozen=True)
class Options:
    """encoding: dense | sparse | auto; terms: all | one (leading term only); delays:
    synapse (a delay field per synapse) | axon (one axon per source and delay); split:
    populations may span cores; share_cores: small populations of one kind share cores."""

    encoding: str = "dense"
    terms: str = "all"
    delays: str = "synapse"
    split: bool = True
    share_cores: bool = True

    def check(self) -> None:
        if self.encoding not in ENCODINGS:
            raise UserError(f"encoding must be one of {', '.join(ENCODINGS)}, not {self.encoding!r}")
        if self.terms not in ("all", "one"):
            raise UserError(f"terms must be 'all' or 'one', not {self.terms!r}")
        if self.delays not in ("synapse", "axon"):
            raise UserError(f"delays must be 'synapse' or 'axon', not {self.delays!r}")


OPTIMISATIONS: dict[str, dict] = {
    "sparse": {"encoding": "auto"},
    "one-term": {"terms": "one"},
    "axon-delays": {"delays": "axon"},
}
OPTIMISATION_HELP = {
    "sparse": "store each weight term densely or sparsely, whichever is smaller",
    "one-term": "keep only the leading 8-bit term of each matrix (as a one-term export; costs accuracy)",
    "axon-delays": "delays on axons (one axon per source and delay) instead of a field per synapse",
}


def with_optimisations(base: Options, names: list[str] | tuple[str, ...]) -> Options:
    opts = base
    for n in names:
        if n not in OPTIMISATIONS:
            raise UserError(f"unknown optimisation {n!r}; choose from {', '.join(OPTIMISATIONS)}")
        opts = replace(opts, **OPTIMISATIONS[n])
    return opts


@dataclass
class _Term:
    synapse: str
    source: str
    key: tuple[str, int]  # input-axon key: (source, delay or 0)
    nz: np.ndarray  # (rows, sources) bool: stored entries
    bits: int  # bits per stored entry
    dense: bool


@dataclass
class _Slice:
    population: str
    kind: str
    order: int
    start: int
    stop: int
    bits: int
    synapses: int
    axons: dict[tuple[str, int], np.ndarray]  # key -> (sources,) bool
    columns: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (source, stored per column)

    @property
    def neurons(self) -> int:
        return self.stop - self.start


def secondary_terms(net: Network) -> set[str]:
    """Synapse nodes that are a less significant term of a multi-term matrix: the export
    writes term k of matrix ``X`` as node ``X.termk``; all but the one with the largest
    exponent (the leading term) are secondary."""
    groups: dict[tuple[str, str, int, str], list] = {}
    for s in net.synapses:
        m = re.fullmatch(r"(.*)\.term\d+", s.name)
        if m and s.terms:
            groups.setdefault((m.group(1), s.source, s.delay, s.target), []).append(s)
    out = set()
    for members in groups.values():
        lead = max(members, key=lambda s: max(t.exponent for t in s.terms))
        out |= {s.name for s in members if s is not lead}
    return out


def _population_terms(net: Network, name: str, hw: Hardware, opts: Options) -> list[_Term]:
    skip = secondary_terms(net) if opts.terms == "one" else set()
    wbits = hw.get("weight_bits")
    sub = math.ceil(TERM_BITS / wbits)  # synapses per 8-bit term on a narrower target
    dbits = hw.get("delay_bits", 0)
    max_delay = hw.get("max_delay", 0)
    out = []
    for s in net.incoming(name):
        if s.name in skip:
            continue
        if s.delay > max_delay and s.delay > 0:
            raise UserError(f"{s.name}: delay of {s.delay} steps exceeds the target's max_delay {max_delay}")
        terms = s.terms[:1] if opts.terms == "one" else s.terms
        d = dbits if (s.delay > 0 and opts.delays == "synapse") else 0
        key = (s.source, s.delay if opts.delays == "axon" else 0)
        for t in terms:
            nz = np.asarray(t.weights) != 0
            rows, cols = nz.shape
            dense_bits = rows * cols * (TERM_BITS + d) * sub
            sparse_bits = int(nz.sum()) * (TERM_BITS + hw.index_bits + d) * sub
            dense = opts.encoding == "dense" or (opts.encoding == "auto" and dense_bits <= sparse_bits)
            stored = np.ones_like(nz) if dense else nz
            bits = (TERM_BITS + d) * sub if dense else (TERM_BITS + hw.index_bits + d) * sub
            out.append(_Term(s.name, s.source, key, stored, bits, dense))
    return out


def _fan_in(terms: list[_Term], a: int, b: int) -> dict[tuple[str, int], np.ndarray]:
    axons: dict[tuple[str, int], np.ndarray] = {}
    for t in terms:
        m = t.nz[a:b].any(axis=0)
        axons[t.key] = axons[t.key] | m if t.key in axons else m
    return axons


def _count(axons: dict) -> int:
    return int(sum(int(m.sum()) for m in axons.values()))


def split_population(net: Network, name: str, order: int, hw: Hardware, opts: Options) -> list[_Slice]:
    """Step 1: the fewest contiguous slices of population ``name`` that each fit one core."""
    pop = net.populations[name]
    terms = _population_terms(net, name, hw, opts)
    n = pop.size
    row_bits = np.zeros(n, np.int64)
    for t in terms:
        row_bits += t.nz.sum(axis=1).astype(np.int64) * t.bits
    cum = np.concatenate([[0], np.cumsum(row_bits)])
    n_max, mem = int(hw.get("neurons_per_core")), int(hw.get("synaptic_memory_bits"))
    fan_max = hw.get("fan_in_axons")
    slices = []
    a = 0
    while a < n:
        b = min(n, a + n_max)
        b = min(b, int(np.searchsorted(cum, cum[a] + mem, side="right")) - 1)
        if fan_max is not None and b > a and _count(_fan_in(terms, a, b)) > fan_max:
            lo, hi = a, b  # largest b' in (a, b] with fan-in <= fan_max: invariant fits(lo), not fits(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if _count(_fan_in(terms, a, mid)) <= fan_max:
                    lo = mid
                else:
                    hi = mid
            b = lo
        if b <= a:
            need = int(row_bits[a])
            fan = _count(_fan_in(terms, a, a + 1))
            raise UserError(
                f"population {name}: neuron {a} alone needs {need:,} bits of synaptic memory and {fan:,} "
                f"input axons; a {hw.name} core holds {mem:,} bits and {fan_max or 'any number of'} axons "
                "(try --opt sparse or --opt one-term)")
        slices.append(_Slice(name, pop.kind, order, a, b, int(cum[b] - cum[a]),
                             int(sum(int(t.nz[a:b].sum()) for t in terms)), _fan_in(terms, a, b),
                             [(t.source, t.nz[a:b].sum(axis=0)) for t in terms]))
        a = b
    if len(slices) > 1 and not opts.split:
        raise UserError(f"population {name} ({n:,} neurons) needs {len(slices)} {hw.name} cores and "
                        "splitting is off")
    return slices


@dataclass
class Core:
    index: int
    slices: list[_Slice]

    @property
    def kind(self) -> str:
        return self.slices[0].kind

    @property
    def neurons(self) -> int:
        return sum(s.neurons for s in self.slices)

    @property
    def bits(self) -> int:
        return sum(s.bits for s in self.slices)

    @property
    def synapses(self) -> int:
        return sum(s.synapses for s in self.slices)

    def axons(self) -> dict[tuple[str, int], np.ndarray]:
        out: dict[tuple[str, int], np.ndarray] = {}
        for s in self.slices:
            for k, m in s.axons.items():
                out[k] = out[k] | m if k in out else m
        return out


def pack(slices: list[_Slice], hw: Hardware, opts: Options) -> list[Core]:
    """Step 2: first-fit decreasing by synaptic memory; cores renumbered in network order."""
    n_max, mem = int(hw.get("neurons_per_core")), int(hw.get("synaptic_memory_bits"))
    fan_max = hw.get("fan_in_axons")
    cores: list[Core] = []
    for s in sorted(slices, key=lambda s: (-s.bits, -s.neurons, s.order, s.start)):
        placed = False
        if opts.share_cores:
            for c in cores:
                if c.kind != s.kind or c.neurons + s.neurons > n_max or c.bits + s.bits > mem:
                    continue
                if fan_max is not None:
                    merged = c.axons()
                    for k, m in s.axons.items():
                        merged[k] = merged[k] | m if k in merged else m
                    if _count(merged) > fan_max:
                        continue
                c.slices.append(s)
                placed = True
                break
        if not placed:
            cores.append(Core(0, [s]))
    for c in cores:
        c.slices.sort(key=lambda s: (s.order, s.start))
    cores.sort(key=lambda c: (c.slices[0].order, c.slices[0].start))
    for i, c in enumerate(cores):
        c.index = i
    return cores


def source_rates(net: Network, spike_trains: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    """Per source population, messages per neuron per step: the mean spike rate of a LIF
    population over samples and steps (from ``(samples, steps, neurons)`` trains), 1 for the
    graded input, the const population and integrators (they send every step).  None without
    trains."""
    if spike_trains is None:
        return None
    rates = {}
    for n, p in net.populations.items():
        if p.kind == "lif":
            if n not in spike_trains:
                raise UserError(f"the run recorded no spike trains for {n}")
            tr = np.asarray(spike_trains[n], dtype=np.float64)
            rates[n] = tr.reshape(-1, p.size).mean(axis=0) if tr.size else np.zeros(p.size)
        else:
            rates[n] = np.ones(p.size)
    return rates


def _timing(hw: Hardware, sops: float, neurons: int, spikes: float) -> float | None:
    ts, tn = hw.get("t_synop_ns"), hw.get("t_neuron_ns")
    if ts is None or tn is None:
        return None
    ta = hw.get("t_neuron_active_ns", tn)
    return (sops * ts + neurons * tn + spikes * (ta - tn)) * 1e-9


def place(net: Network, hw: Hardware, opts: Options | None = None,
          rates: dict[str, np.ndarray] | None = None, steps: int | None = None) -> dict:
    """The placement of ``net`` on ``hw`` as a JSON-ready dict (see the module docstring).
    ``rates``: :func:`source_rates` of a run (None: worst case, every neuron fires every step);
    ``steps``: steps per inference (for the time per inference)."""
    opts = opts or Options()
    opts.check()
    order = [n for n, p in net.populations.items() if p.kind not in HOST_SOURCES]
    slices = [s for i, n in enumerate(order) for s in split_population(net, n, i, hw, opts)]
    cores = pack(slices, hw, opts)
    measured = rates is not None
    if rates is None:
        rates = {n: np.ones(p.size) for n, p in net.populations.items()}
    n_max, mem = int(hw.get("neurons_per_core")), int(hw.get("synaptic_memory_bits"))
    per_chip = int(hw.get("cores_per_chip"))
    rows = []
    for c in cores:
        axons = c.axons()
        msgs = sum(float(rates[k[0]] @ m) for k, m in axons.items())
        slice_sops = [sum(float(rates[src] @ col) for src, col in s.columns) for s in c.slices]
        sops = sum(slice_sops)
        spikes = sum(float(rates[s.population][s.start:s.stop].sum()) for s in c.slices
                     if net.populations[s.population].kind == "lif")
        t = _timing(hw, sops, c.neurons, spikes)
        rows.append({
            "core": c.index,
            "chip": c.index // per_chip,
            "kind": c.kind,
            "populations": [{"name": s.population, "start": s.start, "stop": s.stop, "memory_bits": s.bits,
                             "synapses": s.synapses, "sops_per_step": o}
                            for s, o in zip(c.slices, slice_sops, strict=True)],
            "neurons": c.neurons,
            "synapses": c.synapses,
            "memory_bits": c.bits,
            "memory_used": c.bits / mem,
            "neurons_used": c.neurons / n_max,
            "fan_in": _count(axons),
            "messages_per_step": msgs,
            "sops_per_step": sops,
            "spikes_per_step": spikes,
            "time_per_step_s": t,
        })
    n_cores = len(cores)
    chips = math.ceil(n_cores / per_chip) if n_cores else 0
    if any(r["time_per_step_s"] is not None for r in rows):
        busiest = max(rows, key=lambda r: r["time_per_step_s"] or 0.0)
    else:
        busiest = max(rows, key=lambda r: r["sops_per_step"]) if rows else None
    barrier = hw.get("t_barrier_ns")
    step_s = None
    if busiest is not None and busiest["time_per_step_s"] is not None:
        step_s = busiest["time_per_step_s"] + (barrier * 1e-9 if barrier is not None else 0.0)
    # the const population's value 1 is a spike every step: a binary message on any target
    graded = sorted({s.source for s in net.synapses
                     if s.graded and net.populations[s.source].kind != "const"})
    notes = []
    gb = hw.get("graded_bits", 0)
    if graded and not gb:
        notes.append(f"{hw.name} has no graded spikes: {', '.join(graded)} send graded values as lowered, "
                     "which this target cannot carry (not deployable as is).")
    elif graded:
        need = {n: (net.input_bits if net.populations[n].kind == "input" else 24) for n in graded}
        wide = [f"{n} ({b} bits)" for n, b in need.items() if b > gb]
        if wide:
            notes.append(f"graded payloads wider than {gb} bits: {', '.join(wide)}")
    if hw.get("weight_bits") < TERM_BITS:
        notes.append(f"{hw.name} stores {hw.get('weight_bits')}-bit weights: each 8-bit term takes "
                     f"{math.ceil(TERM_BITS / hw.get('weight_bits'))} synapses")
    if barrier is None or step_s is None:
        notes.append(f"no published per-operation timing for {hw.name}: no time estimate")
    total_bits = sum(r["memory_bits"] for r in rows)
    neurons = sum(r["neurons"] for r in rows)
    return {
        "target": hw.name,
        "options": {"encoding": opts.encoding, "terms": opts.terms, "delays": opts.delays,
                    "split": opts.split, "share_cores": opts.share_cores},
        "activity": "measured" if measured else "worst case (every neuron fires every step)",
        "cores": rows,
        "populations": {n: {"kind": net.populations[n].kind, "neurons": net.populations[n].size,
                            "cores": sorted({r["core"] for r in rows for p in r["populations"]
                                             if p["name"] == n})} for n in order},
        "totals": {
            "cores": n_cores,
            "chips": chips,
            "neurons": neurons,
            "synapses": sum(r["synapses"] for r in rows),
            "memory_bits": total_bits,
            "memory_utilisation": total_bits / (n_cores * mem) if n_cores else 0.0,
            "neuron_utilisation": neurons / (n_cores * n_max) if n_cores else 0.0,
            "chip_core_utilisation": n_cores / (chips * per_chip) if chips else 0.0,
            "messages_per_step": sum(r["messages_per_step"] for r in rows),
            "sops_per_step": sum(r["sops_per_step"] for r in rows),
            "busiest_core": busiest["core"] if busiest else None,
            "max_core_memory_bits": max((r["memory_bits"] for r in rows), default=0),
            "time_per_step_s": step_s,
            "steps_per_inference": steps,
            "time_per_inference_s": step_s * steps if (step_s is not None and steps) else None,
        },
        "hardware": hw.to_dict(),
        "notes": notes + list(hw.notes),
    }


def compare(net: Network, hw: Hardware, base: Options, names: list[str] | tuple[str, ...],
            rates: dict[str, np.ndarray] | None = None, steps: int | None = None) -> list[dict]:
    """Totals of the placement as lowered, with each optimisation alone, and with all of them."""
    variants: list[tuple[str, list[str]]] = [("as lowered", [])]
    variants += [(n, [n]) for n in names]
    if len(names) > 1:
        variants.append((" + ".join(names), list(names)))
    out = []
    for label, opt in variants:
        t = place(net, hw, with_optimisations(base, opt), rates, steps)["totals"]
        out.append({"variant": label, **{k: t[k] for k in (
            "cores", "chips", "synapses", "memory_bits", "max_core_memory_bits", "memory_utilisation",
            "messages_per_step", "sops_per_step", "time_per_step_s", "time_per_inference_s")}})
    return out
