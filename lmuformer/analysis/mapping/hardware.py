"""Neuromorphic hardware described as data: capacities and timings, each with its source.

A :class:`Hardware` holds :class:`Figure` records (value, source, assumption flag).  Figures:

==========================  =====================================================  ========
key                         meaning                                                required
==========================  =====================================================  ========
``cores_per_chip``          neuro-cores on one chip                                yes
``neurons_per_core``        neurons (compartments) one core can hold               yes
``synaptic_memory_bits``    synaptic memory of one core, bits                      yes
``weight_bits``             widest stored synaptic weight, bits (signed)           yes
``fan_in_axons``            distinct input axons one core accepts                  no
``max_delay``               longest synaptic delay, steps                          no (0)
``delay_bits``              bits of a per-synapse delay field                      no (0)
``graded_bits``             payload of a graded spike, bits (0: binary only)       no (0)
``t_synop_ns``              time of one synaptic operation, ns                     no
``t_neuron_ns``             time of one (inactive) neuron update, ns               no
``t_neuron_active_ns``      time of a neuron update that spikes, ns                no
``t_barrier_ns``            end-of-step barrier synchronisation, ns                no
==========================  =====================================================  ========

A missing optional timing means "not published": the mapping then prints no time estimate
for that term and says so.

Built in: ``loihi2`` (Intel's Loihi 2 technology brief, 2021; Shrestha et al. 2024) and
``loihi1`` (Davies et al., IEEE Micro 2018).  User files (TOML or JSON) give each figure as a
number (then the file's top-level ``source`` applies) or as ``{value = .., source = ..}``;
``assumption = true`` marks a figure that is not published::

    name = "mychip"
    source = "Vendor datasheet, 2025"
    cores_per_chip = 64
    neurons_per_core = 2048
    synaptic_memory_bits = 524288
    weight_bits = 8
    t_synop_ns = {value = 1.0, source = "my estimate", assumption = true}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from lmuformer.errors import UserError
from lmuformer.files import read_table

REQUIRED = ("cores_per_chip", "neurons_per_core", "synaptic_memory_bits", "weight_bits")
OPTIONAL_INT = ("fan_in_axons", "max_delay", "delay_bits", "graded_bits")
TIMINGS = ("t_synop_ns", "t_neuron_ns", "t_neuron_active_ns", "t_barrier_ns")
KEYS = REQUIRED + OPTIONAL_INT + TIMINGS
INTEGER = set(REQUIRED + OPTIONAL_INT)


@dataclass(frozen=True)
class Figure:
    value: float
    source: str
    assumption: bool = False


@dataclass(frozen=True)
class Hardware:
    """A target: figures by key (see the module docstring) and notes."""

    name: str
    description: str
    figures: dict[str, Figure]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def get(self, key: str, default=None):
        f = self.figures.get(key)
        return default if f is None else f.value

    @property
    def index_bits(self) -> int:
        """Bits of a target-neuron index in a sparse synapse entry: ceil(log2(neurons_per_core))."""
        return max(1, math.ceil(math.log2(self.get("neurons_per_core"))))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "figures": {k: {"value": f.value, "source": f.source, "assumption": f.assumption}
                        for k, f in self.figures.items()},
            "index_bits": self.index_bits,
            "notes": list(self.notes),
        }


def check(hw: Hardware, where: str) -> Hardware:
    """UserError unless every required figure is there and every figure is possible."""
    missing = [k for k in REQUIRED if k not in hw.figures]
    if missing:
        raise UserError(f"{where}: missing figure(s) {', '.join(missing)}")
    for k, f in hw.figures.items():
        v = f.value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{where}: {k} must be a number, got {v!r}")
        if k in INTEGER and v != int(v):
            raise UserError(f"{where}: {k} must be a whole number, got {v}")
        positive = k in REQUIRED or k == "fan_in_axons" or k in TIMINGS
        if (positive and v <= 0) or v < 0:
            raise UserError(f"{where}: {k} = {v} is impossible (must be {'> 0' if positive else '>= 0'})")
        if not f.source.strip():
            raise UserError(f"{where}: {k} has no source")
    if hw.get("weight_bits") > 32 or hw.get("graded_bits", 0) > 64:
        raise UserError(f"{where}: weight_bits <= 32 and graded_bits <= 64 expected")
    if hw.get("delay_bits", 0) and hw.get("max_delay", 0) >= 2 ** hw.get("delay_bits"):
        raise UserError(f"{where}: max_delay {hw.get('max_delay')} does not fit delay_bits "
                        f"{hw.get('delay_bits')}")
    if hw.get("synaptic_memory_bits") < hw.get("weight_bits"):
        raise UserError(f"{where}: synaptic_memory_bits is smaller than one weight")
    return hw


BRIEF = "Intel, 'Taking Neuromorphic Computing to the Next Level with Loihi 2', technology brief, 2021"
DAVIES = "Davies et al., 'Loihi: A Neuromorphic Manycore Processor with On-Chip Learning', IEEE Micro 2018"


def _f(value, source, assumption=False) -> Figure:
    return Figure(value, source, assumption)


LOIHI2 = Hardware(
    name="loihi2",
    description="Intel Loihi 2 (Intel 4), one chip = 128 neuro-cores",
    figures={
        "cores_per_chip": _f(128, BRIEF + " (128 neuro-cores per chip)"),
        "neurons_per_core": _f(8192, BRIEF + " ('up to 8,192 neurons per core'; fewer with more state)"),
        "synaptic_memory_bits": _f(128 * 1024 * 8, BRIEF + " (up to 128 KB synaptic memory "
                                                      "of 192 KB per core)"),
        "weight_bits": _f(8, "Lava's fixed-point Dense, num_weight_bits = 8 (lava-nc 0.10), the synapse this "
                             "lowering targets"),
        "fan_in_axons": _f(4096, "assumption: Loihi 1's 4,096 input axons per core (Davies 2018); no Loihi 2 "
                                 "figure is published", True),
        "max_delay": _f(62, "assumption: Loihi 1's largest synaptic delay (Davies 2018, p. 92)", True),
        "delay_bits": _f(6, "assumption: Loihi 1's 6-bit synaptic delay field (Davies 2018, Table 1)", True),
        "graded_bits": _f(24, "Shrestha et al., 'Efficient Video and Audio Processing with Loihi 2', ICASSP "
                              "2024 (graded spikes with 24-bit payloads, Lava's num_message_bits; the brief "
                              "advertises integer payloads of up to 32 bits)"),
        "t_synop_ns": _f(0.7, "derived: Davies 2018 Table 2's 3.5 ns (max) / 5, the brief's '5x for synaptic "
                              "operations'; no Loihi 2 per-operation timing is published", True),
        "t_neuron_ns": _f(2.65, "derived: Davies 2018 Table 2's 5.3 ns / 2, the brief's '2x for neuron "
                                "updates'", True),
        "t_neuron_active_ns": _f(4.2, "derived: Davies 2018 Table 2's 8.4 ns / 2 (brief: '2x')", True),
        "t_barrier_ns": _f(200, "assumption: the per-step synchronisation cost taken as the 'minimum "
                                "chip-wide time steps under 200 ns' of " + BRIEF, True),
    },
    notes=(
        "Capacities are the brief's maxima ('up to'); the real limits depend on the neuron program's state.",
        "No per-operation timing is published for Loihi 2: the timings are Loihi 1's pre-silicon figures "
        "scaled by the brief's speed-up factors, so read the time estimates as orders of magnitude.",
    ),
)

LOIHI1 = Hardware(
    name="loihi1",
    description="Intel Loihi (14 nm), one chip = 128 neuromorphic cores",
    figures={
        "cores_per_chip": _f(128, DAVIES + " (p. 86: 128 neuromorphic cores)"),
        "neurons_per_core": _f(1024, DAVIES + " (p. 89: at most 1,024 compartments per core)"),
        "synaptic_memory_bits": _f(128 * 1024 * 8, DAVIES + " (p. 89: 128 KB synaptic state per core)"),
        "weight_bits": _f(9, DAVIES + " (p. 87: weights of 1 to 9 bits)"),
        "fan_in_axons": _f(4096, DAVIES + " (p. 89: at most 4,096 input axons per core)"),
        "max_delay": _f(62, DAVIES + " (p. 92: delays up to 62 with fewer compartments; 8 guaranteed)"),
        "delay_bits": _f(6, DAVIES + " (Table 1: 6-bit synaptic delay)"),
        "graded_bits": _f(0, BRIEF + " (graded spikes are new in Loihi 2; Loihi 1's neurons send binary "
                             "spikes)"),
        "t_synop_ns": _f(3.5, DAVIES + " (Table 2: 3.5 ns per synaptic spike op, max; pre-silicon, 0.75 V)"),
        "t_neuron_ns": _f(5.3, DAVIES + " (Table 2: 5.3 ns per inactive neuron update)"),
        "t_neuron_active_ns": _f(8.4, DAVIES + " (Table 2: 8.4 ns per active neuron update)"),
        "t_barrier_ns": _f(465, DAVIES + " (Table 2: mesh-wide barrier sync 113-465 ns for 1-32 tiles; "
                                          "the 32-tile figure)"),
    },
    notes=(
        "Loihi 1 has no graded spikes: the LMU memory's graded messages and the real-valued input cannot be "
        "sent as lowered (they would need rate coding or a host); the placement shows the memory footprint "
        "only.",
        "Synaptic memory is modelled as bits per stored synapse; Loihi 1 packs synapses into 64-bit words "
        "with compression (Davies 2018, p. 89), so real counts differ somewhat.",
    ),
)

BUILTIN: dict[str, Hardware] = {"loihi2": check(LOIHI2, "loihi2"), "loihi1": check(LOIHI1, "loihi1")}


def load_hardware_file(path: str | Path) -> Hardware:
    """A target from a TOML or JSON file (see the module docstring); UserError on a bad file."""
    path = Path(path)
    data = read_table(path, "hardware")
    unknown = sorted(set(data) - set(KEYS) - {"name", "source", "description", "notes"})
    if unknown:
        raise UserError(f"{path}: unknown keys {unknown}; known: {', '.join(KEYS)}")
    default_source = data.get("source")
    figures: dict[str, Figure] = {}
    for k in KEYS:
        if k not in data:
            continue
        v = data[k]
        if isinstance(v, dict):
            extra = sorted(set(v) - {"value", "source", "assumption"})
            if extra or "value" not in v:
                raise UserError(f"{path}: {k} must be a number or {{value, source, assumption}}")
            source, assumption = v.get("source", default_source), bool(v.get("assumption", False))
            v = v["value"]
        else:
            source, assumption = default_source, False
        if not isinstance(source, str) or not source.strip():
            raise UserError(f"{path}: {k} needs a source (a top-level 'source' or its own)")
        figures[k] = Figure(v, source, assumption)
    notes = data.get("notes", ())
    notes = (notes,) if isinstance(notes, str) else tuple(str(n) for n in notes)
    hw = Hardware(str(data.get("name") or path.stem), str(data.get("description", "")), figures, notes)
    return check(hw, str(path))


def get_hardware(name_or_file: str) -> Hardware:
    """A built-in target by name, or a .toml/.json file."""
    if name_or_file in BUILTIN:
        return BUILTIN[name_or_file]
    if Path(name_or_file).suffix.lower() in (".toml", ".json") or Path(name_or_file).exists():
        return load_hardware_file(name_or_file)
    raise UserError(f"unknown target {name_or_file!r}; built in: {', '.join(BUILTIN)}, or a .toml/.json file")
