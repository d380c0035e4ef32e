"""Analysis of graphs and simulation runs (the layer above ``backends``, below the jobs): it
takes graphs, results and arrays, never a file of a data set or a checkpoint.

- :mod:`lmuformer.analysis.profiles`: hardware energy profiles (built-in and from files);
- :mod:`lmuformer.analysis.counts`: per-layer spikes, SOPs, MACs and energy of a graph's run;
- :mod:`lmuformer.analysis.ann`: the MACs and energy of the same architecture's non-spiking version;
- :mod:`lmuformer.analysis.compare`: the recurrent and taps LMU memory forms side by side;
- :mod:`lmuformer.analysis.spikes`: spikes per population, spike-train identity between runs;
- :mod:`lmuformer.analysis.streaming`: accuracy against frames seen, early decisions;
- :mod:`lmuformer.analysis.format`, :mod:`lmuformer.analysis.plot`: renderings (table, JSON, CSV,
  markdown; PNG);
- :mod:`lmuformer.analysis.mapping`: placement on neuromorphic cores and chips.

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
