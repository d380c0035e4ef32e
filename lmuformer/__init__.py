"""lmuformer: train, export to NIR, simulate on Lava and report the Spiking LMUFormer.

Layers, bottom to top (a module imports only from its own layer or below; ``tests/test_layers.py``
holds the table and enforces it): core (:mod:`lmuformer.functional`, ``model``, ``data``,
``checkpoint``, ``training``, ``files``, ``errors``, ``validation``, ``reference_import``) ->
:mod:`export` (model -> NIR, NIR files, typed metadata) -> :mod:`backends` (NIR -> lowered
network -> simulators) -> :mod:`lmuformer.analysis` (counts, energy, streaming metrics, mapping)
-> :mod:`lmuformer.jobs` (workflows that load checkpoints and data sets) -> :mod:`lmuformer.cli`.
"""

from lmuformer.model import PRESETS, LMUFormer, ModelConfig, build_model, preset

__all__ = ["PRESETS", "LMUFormer", "ModelConfig", "build_model", "preset"]
__version__ = "0.1.0"
