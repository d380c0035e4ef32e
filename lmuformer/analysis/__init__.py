"""Per-layer spike, synaptic-operation (SOP) and energy reports of simulation runs.

- :mod:`lmuformer.analysis.profiles`: hardware energy profiles (built-in and from files);
- :mod:`lmuformer.analysis.counts`: per-layer counts from a NIR graph and a simulation result;
- :mod:`lmuformer.analysis.ann`: the MACs and energy of the same architecture's non-spiking version;
- :mod:`lmuformer.analysis.format`: table, JSON, CSV and markdown renderings;
- :mod:`lmuformer.analysis.plot`: stacked energy bars per layer (PNG).

How to read a report and what it leaves out: ``lmuformer/analysis/README.md``.
"""

from lmuformer.analysis.ann import ann_baseline
from lmuformer.analysis.counts import build_report, layer_counts
from lmuformer.analysis.profiles import BUILTIN, Profile, get_profile, load_profile_file, resolve_profiles

__all__ = [
    "BUILTIN",
    "Profile",
    "ann_baseline",
    "build_report",
    "get_profile",
    "layer_counts",
    "load_profile_file",
    "resolve_profiles",
]
