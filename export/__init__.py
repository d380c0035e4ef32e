"""NIR export of the Spiking LMUFormer, and the re-import of such graphs into PyTorch.

- :func:`export.graph.model_to_nir` builds the graph (BN folded, time-axis taps as Delays,
  the LMU memory as an explicit recurrent integrator or as delay taps, an accumulating readout);
- :mod:`export.quantize` holds the pure quantisation functions, :mod:`export.taps` the delay-tap
  form of the LMU memory;
- :class:`export.metadata.GraphMetadata`: the graph's metadata, typed (written and read there only);
- :func:`export.io.write_graph` / :func:`export.io.read_graph` store and load files;
- :func:`export.summary.summarize`: counts and metadata of a graph;
- :func:`export.normalize.prepare` turns any NIR graph into what the backends lower (flat,
  dt set, Delay-less cycles given a one-step Delay);
- :class:`export.interpret.GraphRunner` runs a graph step by step in PyTorch.

The node-by-node mapping and the time alignment are documented in ``export/README.md``.
"""

from export.graph import ExportOptions, model_to_nir
from export.interpret import GraphRunner
from export.io import read_graph, write_graph

__all__ = ["ExportOptions", "GraphRunner", "model_to_nir", "read_graph", "write_graph"]
