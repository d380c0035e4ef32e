"""The metadata of an lmuformer NIR graph, typed: written by :func:`export.graph.model_to_nir`
(:meth:`GraphMetadata.to_nir`) and read by every stage (:meth:`GraphMetadata.of`), here only.

On disk it is NIR's flat metadata table: scalars, and the structured fields (``model_config``,
``quantization_error``, ``lmu_memory``, ``calibration``, ``current_frac``, ``current_calibration``) as
JSON strings; read back from HDF5
a scalar may be a 0-d array or bytes. A foreign graph (not made by lmuformer) may lack any key:
``dt`` is then None (:func:`export.io.read_graph` refuses such a file; hand-made graphs in
memory may lack it), ``latency_frames`` 0 and ``frames`` None. Validation of the raw table
(ranges, JSON) is :func:`lmuformer.validation.check_graph`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import nir
import numpy as np

from lmuformer.errors import UserError

FORMAT = "lmuformer-nir"
FORMAT_VERSION = 1
READOUT = "readout holds sum over all steps of the head output; logits = readout / steps"
_JSON = ("model_config", "quantization_error", "lmu_memory", "calibration", "current_frac",
         "current_calibration")
_ORDER = ("format", "format_version", "dt", "latency_frames", "frames", "readout", "quantized",
          "weight_bits", "weight_terms", "lmu_bits", "lmu_terms", "lmu_form", "model_config",
          "quantization_error", "lmu_memory", "calibration", "current_frac", "current_calibration")


@dataclass(frozen=True)
class GraphMetadata:
    """dt: frame period (s); latency_frames: flush steps after the last frame; frames: frames
    per sample; quantized with ``weight_bits`` x ``weight_terms`` per learned weight and
    ``lmu_bits`` x ``lmu_terms`` per LMU weight (0 for a float export); lmu_form: "recurrent" or
    "taps"; model_config: the model's config dict; quantization_error, lmu_memory: the export's
    reports; calibration: how a preset's batch norms were set (None for a trained model);
    current_frac: spiking population -> its current grid k (a_in = x 2**k) calibrated on data
    (:func:`backends.emulator.calibrate_current_frac`; None: the static grid of
    :func:`backends.fixed_point.lower`), current_calibration: how (data, samples, headroom, peaks)."""

    dt: float | None
    latency_frames: int = 0
    frames: int | None = None
    quantized: bool = False
    weight_bits: int = 0
    weight_terms: int = 0
    lmu_bits: int = 0
    lmu_terms: int = 0
    lmu_form: str = "recurrent"
    model_config: dict = field(default_factory=dict)
    quantization_error: dict | None = None
    lmu_memory: list = field(default_factory=list)
    calibration: dict | None = None
    current_frac: dict | None = None
    current_calibration: dict | None = None
    format: str | None = FORMAT
    format_version: int | None = FORMAT_VERSION
    readout: str | None = READOUT

    def to_nir(self) -> dict[str, Any]:
        """The NIR metadata table (the structured fields as JSON; None fields left out)."""
        values = {key: getattr(self, key) for key in _ORDER}
        return {key: json.dumps(v) if key in _JSON else v for key, v in values.items() if v is not None}

    @classmethod
    def of(cls, graph: nir.NIRGraph) -> GraphMetadata:
        """The metadata of ``graph`` (any NIR graph; missing keys take the defaults above, a
        quantised graph written before ``weight_terms`` existed has one term)."""
        md = {k: _scalar(v) for k, v in (graph.metadata or {}).items()}
        parsed = {k: json.loads(md[k]) for k in _JSON if isinstance(md.get(k), str)}
        quantized = bool(md.get("quantized", False))
        frames = parsed.get("model_config", {}).get("frames") or md.get("frames")
        return cls(
            dt=float(md["dt"]) if md.get("dt") is not None else None,
            latency_frames=int(md.get("latency_frames", 0) or 0),
            frames=int(frames) if frames else None,
            quantized=quantized,
            weight_bits=int(md.get("weight_bits", 0)),
            weight_terms=int(md.get("weight_terms", 1 if quantized else 0)),
            lmu_bits=int(md.get("lmu_bits", 0)),
            lmu_terms=int(md.get("lmu_terms", 0)),
            lmu_form=str(md.get("lmu_form", "recurrent")),
            model_config=parsed.get("model_config", {}),
            quantization_error=parsed.get("quantization_error"),
            lmu_memory=parsed.get("lmu_memory", []),
            calibration=parsed.get("calibration"),
            current_frac=parsed.get("current_frac"),
            current_calibration=parsed.get("current_calibration"),
            format=md.get("format"),
            format_version=int(md["format_version"]) if md.get("format_version") is not None else None,
            readout=md.get("readout"),
        )


def with_current_frac(graph: nir.NIRGraph, frac: dict[str, int] | None,
                      calibration: dict | None = None) -> nir.NIRGraph:
    """``graph`` with its metadata's ``current_frac`` (and ``current_calibration``) set (None:
    removed, the static grid), in place; returned for chaining."""
    md = dict(graph.metadata or {})
    for key, value in (("current_frac", frac), ("current_calibration", calibration if frac else None)):
        md.pop(key, None)
        if value is not None:
            md[key] = json.dumps({k: int(v) for k, v in value.items()} if key == "current_frac" else value)
    graph.metadata = md
    return graph


def _scalar(value: Any) -> Any:
    """A value read back from HDF5 (0-d array, numpy scalar, bytes) as a Python value."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    return value


def graph_input_shape(graph: nir.NIRGraph) -> tuple[int | None, int]:
    """(frames, features) a graph takes: features from its Input node, frames from the
    metadata (None for a foreign graph)."""
    inputs = [n for n in graph.nodes.values() if isinstance(n, nir.Input)]
    if len(inputs) != 1:
        raise UserError(f"the graph has {len(inputs)} Input nodes; need exactly one")
    features = int(np.prod(np.asarray(next(iter(inputs[0].input_type.values())))))
    return GraphMetadata.of(graph).frames, features
