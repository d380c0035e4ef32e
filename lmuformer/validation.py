"""Checks of every number that crosses a boundary, before it reaches arithmetic or allocation.

Each failure is one :class:`~lmuformer.errors.UserError` line naming where, the field, the
value and the allowed range, e.g. ``model.ckpt: config memory_size = 1000000 is out of range;
allowed: an integer in [1, 16384]``.  Sizes are compared with a memory estimate (bytes)
against :func:`memory_budget` before anything is allocated.

Boundaries: model configs (checkpoints, training settings, NIR metadata) ->
:func:`check_model_config`; NIR graphs and metadata -> :func:`check_graph`; input frames
(Python API) -> :func:`check_frames`; input sizes (``--samples``) -> :func:`check_input_size`.
The training options and energy profiles use :func:`number` in their own modules.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from lmuformer.errors import UserError
from lmuformer.model.config import ModelConfig

GiB = 1024**3

# Model config: field -> (kind, low, high); ints are inclusive ranges, theta/u_threshold > 0.
MODEL_LIMITS: dict[str, tuple[type, float, float]] = {
    "in_features": (int, 1, 65536),
    "frames": (int, 1, 10**6),
    "num_classes": (int, 1, 100000),
    "dim": (int, 1, 16384),
    "memory_size": (int, 1, 16384),
    "theta": (float, 0.0, 1e9),  # (0, 1e9]
    "mlp_ratio": (int, 1, 64),
    "depth": (int, 1, 64),
    "u_threshold": (float, 0.0, 1e6),  # (0, 1e6]
}
VARIANTS = ("spiking", "ann")
MAX_NEURONS = 10**7  # per NIR node (an input type, a population)


def memory_budget() -> int:
    """Bytes a single allocation plan may use: ``LMUF_MEMORY_LIMIT`` (GiB) if set, otherwise
    the memory available now (``MemAvailable``), or 8 GiB where that cannot be read."""
    env = os.environ.get("LMUF_MEMORY_LIMIT")
    if env:
        try:
            return int(float(env) * GiB)
        except ValueError:
            raise UserError(f"LMUF_MEMORY_LIMIT = {env!r} is not a number of GiB") from None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * GiB


def check_memory(nbytes: float, what: str) -> None:
    """UserError if ``what`` would need more than :func:`memory_budget` bytes."""
    budget = memory_budget()
    if not nbytes <= budget:
        raise UserError(f"{what} needs about {nbytes / GiB:.3g} GiB of memory; "
                        f"{budget / GiB:.3g} GiB is available (LMUF_MEMORY_LIMIT sets the limit)")


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def number(value: Any, field: str, kind: type = float, low: float | None = None, high: float | None = None,
           low_open: bool = False, where: str | None = None) -> Any:
    """``value`` as a finite ``kind`` (int or float) in [low, high] ((low, high] with
    ``low_open``); UserError naming ``field``, the value and the range otherwise.  A bool is
    not a number; an int is accepted for a float, an integral float for an int."""
    lo = "(" if low_open else "["
    rng = f"{lo}{'-inf' if low is None else _fmt(low)}, {'inf' if high is None else _fmt(high)}]"
    allowed = f"{'an integer' if kind is int else 'a finite number'} in {rng}"
    bad = f"{_prefix(where)}{field} = {_show(value)} is out of range; allowed: {allowed}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UserError(f"{_prefix(where)}{field} = {_show(value)} is not a number; allowed: {allowed}")
    if not math.isfinite(float(value)):
        raise UserError(bad)
    if kind is int:
        if float(value) != int(value):
            raise UserError(bad)
        value = int(value)
    else:
        value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        raise UserError(bad)
    if high is not None and value > high:
        raise UserError(bad)
    return value


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e20 else f"{x:g}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_model_config(config: Any, where: str | None = None) -> dict[str, Any]:
    """A model config dict (or ModelConfig) checked field by field and against the memory its
    model needs; returns the dict with numbers of the right type (unknown keys are left to
    ``ModelConfig.from_dict``)."""
    d = config.to_dict() if hasattr(config, "to_dict") else config
    if not isinstance(d, dict):
        raise UserError(f"{_prefix(where)}the model config is a {type(d).__name__}, not a table")
    d = dict(d)
    if "variant" in d and d["variant"] not in VARIANTS:
        raise UserError(f"{_prefix(where)}config variant = {_show(d['variant'])} is not one of "
                        f"{', '.join(VARIANTS)}")
    for name, (kind, low, high) in MODEL_LIMITS.items():
        if name in d:
            d[name] = number(d[name], f"config {name}", kind, low, high, low_open=kind is float,
                             where=where)
    check_memory(model_bytes(d), f"{_prefix(where)}the model (config {_brief(d)})")
    return d


def _brief(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={d[k]}" for k in ("dim", "memory_size", "frames", "depth") if k in d)


def model_bytes(d: dict[str, Any]) -> float:
    """Bytes to build one model of config ``d`` (float32 weights with gradients and Adam
    moments, the float64 LMU matrices and their matrix exponential, the impulse response)."""
    dflt = ModelConfig()
    g = {k: d.get(k, getattr(dflt, k)) for k in MODEL_LIMITS}
    dim, m, f = g["dim"], g["memory_size"], g["in_features"]
    hidden = dim * g["mlp_ratio"]
    params = 3 * f * dim + 7 * 3 * dim * dim + g["depth"] * ((m + dim) * dim + dim * dim + 2 * dim * hidden) \
        + dim * g["num_classes"]
    lmu = 8 * (8 * (m + 1) ** 2 + g["frames"] * m)  # expm works on ~6 copies of the augmented matrix
    return 4.0 * 4 * params + lmu


# ----------------------------------------------------------------------------- NIR


def check_hdf5_size(path: str | os.PathLike) -> None:
    """Before reading a NIR file: every array it declares, uncompressed, must fit the memory
    budget, and no ``input_type``/``output_type`` may declare more than MAX_NEURONS values
    (a small compressed file can declare gigabytes)."""
    import h5py

    total = 0
    big_type: list[str] = []

    def visit(name: str, obj: Any) -> None:
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += int(np.prod(obj.shape, dtype=np.float64)) * obj.dtype.itemsize
            parts = name.split("/")
            declares = parts[-1] == "shape" or (len(parts) >= 2
                                                and parts[-2] in ("input_type", "output_type"))
            if declares and obj.size <= 8 and obj.dtype.kind in "iuf":
                vals = np.asarray(obj[()], dtype=np.float64).ravel()
                if not np.all(np.isfinite(vals)) or float(np.prod(vals)) > MAX_NEURONS or np.any(vals < 0):
                    big_type.append(f"{name} = {vals.tolist()}")

    missing = None
    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
            root = f["node"] if "node" in f else f
            if isinstance(root.get("edges"), h5py.Dataset) and isinstance(root.get("nodes"), h5py.Group):
                names = set(root["nodes"])
                edges = root["edges"][()]
                if edges.ndim == 2 and edges.shape[1] == 2 and edges.shape[0] <= 10**6:
                    for src, dst in edges:
                        ends = [x.decode(errors="replace") if isinstance(x, bytes) else str(x)
                                for x in (src, dst)]
                        absent = [x for x in ends if x not in names and x.split(".")[0] not in names]
                        if absent:
                            missing = f"edge {ends[0]} -> {ends[1]} names a missing node {_show(absent[0])}"
                            break
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return  # not HDF5, or damaged: nir.read reports it
    if missing:
        raise UserError(f"{path}: {missing}")
    if big_type:
        raise UserError(f"{path}: {big_type[0]} declares an impossible size; allowed: at most "
                        f"{MAX_NEURONS} non-negative values per node")
    check_memory(total, f"{path} (its arrays uncompressed)")


# per NIR node type: parameters that must be finite, and those that must also be > 0
_POSITIVE = {"tau", "tau_mem", "tau_syn", "delay"}


def _names_node(nodes: dict, end: Any) -> bool:
    """An edge end names a node: itself, or ``"sub.inner"`` of a nested graph ``sub``."""
    if not isinstance(end, str):
        return False
    if end in nodes:
        return True
    head, dot, rest = end.partition(".")
    while dot:
        if head in nodes and hasattr(nodes[head], "nodes"):
            return _names_node(nodes[head].nodes, rest) or rest == ""
        nxt, dot, rest = rest.partition(".")
        head = f"{head}.{nxt}"
    return False


def check_structure(graph: Any, where: str = "graph", allow_cycles: bool = False) -> None:
    """Edges between existing nodes (dotted names reach into nested graphs) and, unless
    ``allow_cycles``, no cycle that does not pass through a Delay node."""
    nodes = graph.nodes
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for edge in graph.edges:
        if len(edge) != 2:
            raise UserError(f"{where}: edge {_show(edge)} is not a (source, target) pair")
        src, dst = edge
        for end in (src, dst):
            if not _names_node(nodes, end):
                raise UserError(f"{where}: edge {src} -> {dst} names a missing node {_show(end)}")
        if src in nodes and dst in nodes and type(nodes[src]).__name__ != "Delay":
            preds[dst].append(src)
    if allow_cycles:
        return
    cycle = depth_first(preds, nodes)[1]
    if cycle is not None:
        cycle = cycle[::-1]  # found along the predecessors: reversed, it runs along the edges
        shown = " -> ".join(cycle[:6]) + (" -> ..." if len(cycle) > 6 else "")
        raise UserError(f"{where}: the graph has a cycle without a Delay node ({shown}); "
                        "a recurrent edge must leave a Delay node")


def depth_first(adjacency: dict[str, list[str]], starts: Iterable[str]
                ) -> tuple[list[str], list[str] | None]:
    """A depth-first search along ``adjacency`` (node -> next nodes) from each of ``starts`` not
    yet reached: the nodes in post-order (a node after all it reaches), and the first cycle met
    as ``[a, b, ..., a]`` along the adjacency (None if none; the order then stops there)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for start in starts:
        if start in state:
            continue
        stack, path = [(start, iter(adjacency[start]))], [start]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
                order.append(node)
            elif state.get(nxt) == 1:
                return order, path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(adjacency[nxt])))
                path.append(nxt)
    return order, None


def check_graph(graph: Any, where: str = "graph") -> None:
    """Structure (:func:`check_structure`; a cycle without a Delay node is allowed here:
    :func:`export.normalize.prepare` reads it as a one-step delay), metadata numbers, node
    parameters (finite; time constants > 0) and node sizes of a NIR graph, nested graphs
    included; UserError naming node, parameter and value."""
    check_structure(graph, where, allow_cycles=True)
    md = graph.metadata
    if not isinstance(md, dict):
        raise UserError(f"{where}: the graph's metadata is not a table")
    if "dt" in md:
        number(_scalar(md["dt"]), "metadata dt", float, 0.0, 1e6, low_open=True, where=where)
    for key, low, high in (("frames", 1, 10**6), ("latency_frames", 0, 10**4)):
        if key in md:
            number(_scalar(md[key]), f"metadata {key}", int, low, high, where=where)
    raw = md.get("model_config")
    if raw is not None:
        try:
            cfg = json.loads(raw if isinstance(raw, str) else bytes(raw).decode())
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            raise UserError(f"{where}: metadata model_config is not valid JSON ({str(e).splitlines()[0]})") \
                from None
        check_model_config(cfg, where=f"{where} metadata")
    _check_nodes(graph, where, "", 0)


def _check_nodes(graph: Any, where: str, prefix: str, depth: int) -> None:
    for short, node in graph.nodes.items():
        name = prefix + short
        if hasattr(node, "nodes") and hasattr(node, "edges"):  # a nested NIRGraph
            if depth >= 32:
                raise UserError(f"{where}: NIRGraph nodes nested deeper than 32 levels")
            check_structure(node, f"{where} (in {name})", allow_cycles=True)
            _check_nodes(node, where, f"{name}.", depth + 1)
            continue
        for key, value in vars(node).items():
            if key in ("metadata", "input_type", "output_type"):
                continue
            if isinstance(value, (np.ndarray, int, float, np.number)) and not isinstance(value, bool):
                arr = np.asarray(value)
                if arr.dtype.kind not in "iufb":
                    raise UserError(f"{where}: node {name} {key} has non-numeric type {arr.dtype}")
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    bad = arr[~np.isfinite(arr)].ravel()[0]
                    raise UserError(f"{where}: node {name} {key} holds {bad}; allowed: finite numbers")
                if key in _POSITIVE and arr.size and not np.all(arr > 0):
                    bad = arr[~(arr > 0)].ravel()[0]
                    raise UserError(f"{where}: node {name} {key} = {bad} is out of range; allowed: > 0")
        for key in ("input_type", "output_type"):
            for port, shape in (getattr(node, key, None) or {}).items():
                if shape is None:  # not yet inferred (conv, pooling): the backends infer it
                    continue
                vals = np.asarray(shape).ravel()
                if vals.dtype.kind not in "iuf" or not np.all(np.isfinite(vals)) or np.any(vals < 0) \
                        or float(np.prod(vals.astype(np.float64))) > MAX_NEURONS:
                    raise UserError(f"{where}: node {name} {key}[{port!r}] = {_show(vals.tolist())} is out "
                                    f"of range; allowed: at most {MAX_NEURONS} non-negative values")


def _scalar(value: Any) -> Any:
    """A metadata value read back from HDF5 (0-d array, numpy scalar, bytes) as a Python value."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    return value


# ----------------------------------------------------------------------------- inputs


def check_input_size(samples: int, frames: int, features: int, what: str = "the input",
                     outputs: int = 0) -> None:
    """``samples`` x ``frames`` x ``features`` input (float32, and a float64 copy) and the
    per-step readout trace of ``outputs`` values (float64, twice: result and comparison)
    must fit the memory budget."""
    for name, v in (("samples", samples), ("frames", frames), ("features", features)):
        number(v, name, int, 1, None, where=what)
    nbytes = 12.0 * samples * frames * features + 16.0 * samples * frames * outputs
    check_memory(nbytes, f"{what} ({samples} samples x {frames} frames x {features} features)")


def check_frames(x: Any, where: str = "input") -> np.ndarray:
    """Input frames (samples, frames, features) as an array: 3-d, at least one sample, frame
    and feature, finite real numbers; UserError otherwise."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: not an array of frames ({e})") from None
    if arr.ndim != 3:
        raise UserError(f"{where}: frames must be (samples, frames, features), got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise UserError(f"{where}: shape {arr.shape} is empty; need at least 1 sample, frame and feature")
    if arr.dtype.kind not in "iufb":
        raise UserError(f"{where}: frames must be real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise UserError(f"{where}: {n} values are NaN or infinite; allowed: finite numbers")
    return arr
