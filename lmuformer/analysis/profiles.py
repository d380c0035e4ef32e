"""Hardware energy profiles: joules per operation, with the source of every figure.

An operation is one of: ``sop`` (a binary spike delivered through one nonzero synapse: one
accumulate), ``mac`` (a real-valued or graded value through one nonzero synapse: one
multiply-accumulate), ``neuron_update`` (one neuron advanced by one time step without
spiking) and ``neuron_update_active`` (one that spikes, or a graded neuron that sends).
A figure of ``None`` means the profile does not price that operation (it adds 0 J and the
report lists it as unpriced).

Built in:

- ``45nm``: E_AC 0.9 pJ, E_MAC 4.6 pJ (Horowitz, ISSCC 2014), the convention of the SNN
  literature; neuron updates are not priced by that convention.
- ``loihi``: Loihi 1, 23.6 pJ per synaptic op (a minimum), 52 pJ per inactive and 81 pJ per
  active neuron update (Davies et al., IEEE Micro 2018).
- ``spinnaker2``: 450 pJ per synaptic op, 2.19 nJ per neuron update (Hoppner et al. 2019).

No per-operation energy figure is published for Loihi 2: Intel reports whole-system
measurements only (e.g. Shrestha et al., ICASSP 2024), so there is no ``loihi2`` profile.

User profiles come from a small TOML or JSON file (figures in picojoules)::

    name = "myhw"                 # optional, defaults to the file's stem
    source = "Vendor datasheet, 2024"
    sop_pj = 1.5
    mac_pj = 4.0                  # optional
    neuron_update_pj = 10.0       # optional
    neuron_update_active_pj = 12  # optional, defaults to neuron_update_pj
    notes = "anything"            # optional
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmuformer.errors import UserError
from lmuformer.files import read_table
from lmuformer.validation import number

PJ = 1e-12
MAX_PJ = 1e9  # 1 mJ per operation: far above any hardware, small enough that totals stay finite

LOIHI2_NOTE = (
    "No per-operation energy figure is published for Loihi 2 (Intel reports whole-system "
    "measurements only, e.g. Shrestha et al., ICASSP 2024); the 'loihi' profile is Loihi 1."
)

OPERATIONS = ("sop", "mac", "neuron_update", "neuron_update_active")


@dataclass(frozen=True)
class Profile:
    """Energy per operation in joules (None: not priced) and where the figures come from."""

    name: str
    source: str
    sop_j: float | None = None
    mac_j: float | None = None
    neuron_update_j: float | None = None
    neuron_update_active_j: float | None = None
    notes: str = ""

    def figure(self, op: str) -> float | None:
        if op not in OPERATIONS:
            raise KeyError(op)
        value = getattr(self, f"{op}_j")
        if op == "neuron_update_active" and value is None:
            return self.neuron_update_j
        return value

    def unpriced(self) -> list[str]:
        return [op for op in OPERATIONS if self.figure(op) is None]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "figures_j": {op: self.figure(op) for op in OPERATIONS},
            "unpriced": self.unpriced(),
            "notes": self.notes,
        }


BUILTIN: dict[str, Profile] = {
    "45nm": Profile(
        name="45nm",
        source="Horowitz, ISSCC 2014 (45 nm CMOS; the SNN literature's convention)",
        sop_j=0.9 * PJ,
        mac_j=4.6 * PJ,
        notes="E_AC = 0.9 pJ per SOP, E_MAC = 4.6 pJ per MAC; neuron updates not priced (convention).",
    ),
    "loihi": Profile(
        name="loihi",
        source="Davies et al., IEEE Micro 2018 (Loihi 1)",
        sop_j=23.6 * PJ,
        mac_j=23.6 * PJ,
        neuron_update_j=52 * PJ,
        neuron_update_active_j=81 * PJ,
        notes="23.6 pJ per synaptic op is a minimum. Assumption: a graded message through one synapse "
        "is priced as one synaptic op (no published figure). " + LOIHI2_NOTE,
    ),
    "spinnaker2": Profile(
        name="spinnaker2",
        source="Hoppner et al. 2019 (SpiNNaker 2)",
        sop_j=450 * PJ,
        mac_j=450 * PJ,
        neuron_update_j=2190 * PJ,
        notes="Assumption: a graded message through one synapse is priced as one synaptic op.",
    ),
}

_FILE_KEYS = {"name", "source", "notes", *(f"{op}_pj" for op in OPERATIONS)}


def load_profile_file(path: str | Path) -> Profile:
    """A profile from a TOML (``.toml``) or JSON file; UserError on a bad file."""
    path = Path(path)
    data = read_table(path, "profile")
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown profile keys {unknown}; known: {sorted(_FILE_KEYS)}")
    figures: dict[str, float | None] = {}
    for op in OPERATIONS:
        v = data.get(f"{op}_pj")
        if v is not None:
            v = number(v, f"{op}_pj", float, 0.0, MAX_PJ, where=str(path)) * PJ
        figures[f"{op}_j"] = v
    if all(v is None for v in figures.values()):
        raise UserError(f"{path}: a profile needs at least one of {', '.join(k + '_pj' for k in OPERATIONS)}")
    source = data.get("source")
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"{path}: a profile needs a 'source' string (where its figures come from)")
    for key in ("name", "notes"):
        if key in data and not isinstance(data[key], str):
            raise UserError(f"{path}: {key} = {data[key]!r} is not a string")
    name = str(data.get("name") or path.stem)
    if not name.strip() or len(name) > 100 or any(not c.isprintable() for c in name):
        raise UserError(f"{path}: name = {name[:40]!r} must be 1 to 100 printable characters")
    return Profile(name=name, source=source, notes=str(data.get("notes", "")), **figures)


def get_profile(name_or_file: str) -> Profile:
    """A built-in profile by name, or a profile file (a path ending in .toml or .json)."""
    if name_or_file in BUILTIN:
        return BUILTIN[name_or_file]
    if name_or_file.lower().replace(" ", "").replace("-", "") in ("loihi2",):
        raise UserError(LOIHI2_NOTE + " Use 'loihi' or a profile file.")
    if Path(name_or_file).suffix.lower() in (".toml", ".json") or Path(name_or_file).exists():
        return load_profile_file(name_or_file)
    raise UserError(
        f"unknown profile {name_or_file!r}; built in: {', '.join(BUILTIN)}, or a .toml/.json file"
    )


def resolve_profiles(names: list[str] | tuple[str, ...] | None) -> list[Profile]:
    """Profiles for ``names`` (all built-ins when empty); UserError on duplicate names."""
    profiles = [get_profile(n) for n in names] if names else list(BUILTIN.values())
    seen: set[str] = set()
    for p in profiles:
        if p.name in seen:
            raise UserError(f"profile {p.name!r} given twice")
        seen.add(p.name)
    return profiles
