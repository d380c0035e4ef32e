"""Reading and writing NIR files, with one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import nir

from lmuformer.errors import UserError
from lmuformer.files import atomic_write
from lmuformer.validation import check_graph, check_hdf5_size

# node types the torch backend (export/interpret.py) runs; the fixed-point backends take a
# subset (backends.base.backend_nodes)
TORCH_NODES = ("Input", "Output", "Affine", "Linear", "Scale", "Conv1d", "Conv2d", "Flatten", "SumPool2d",
               "AvgPool2d", "Delay", "I", "LI", "IF", "LIF", "CubaLI", "CubaLIF", "Threshold")
SUPPORTED = TORCH_NODES


def write_graph(graph: nir.NIRGraph, path: str | Path) -> None:
    """Write an HDF5 NIR file atomically (temporary name in the same folder, then rename)."""
    atomic_write(path, lambda tmp: nir.write(tmp, graph))


def read_graph(path: str | Path) -> nir.NIRGraph:
    """Read a NIR file (type-checked) whose nodes we can run; UserError otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"NIR file not found: {path}")
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    check_hdf5_size(path)  # before nir.read allocates what the file declares
    try:
        graph = nir.read(path, type_check=True)
    except Exception as e:  # h5py/nir raise many types for foreign or corrupt files
        raise UserError(f"{path} is not a readable NIR file ({type(e).__name__}: {_short(e)})") from None
    check_supported(graph, path, need_dt=False)
    check_graph(graph, str(path))
    return graph


def _short(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most ``limit`` characters."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unsupported(graph: nir.NIRGraph, supported: tuple[str, ...], prefix: str = "",
                 depth: int = 0) -> list[str]:
    bad = []
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph) and depth < 32:
            bad += _unsupported(node, supported, f"{prefix}{name}.", depth + 1)
        elif type(node).__name__ not in supported:
            bad.append(f"{prefix}{name} ({type(node).__name__})")
    return bad


def check_supported(graph: nir.NIRGraph, where: str | Path = "graph", backend: str = "torch",
                    supported: tuple[str, ...] = TORCH_NODES, need_dt: bool = True) -> None:
    """UserError naming the first nodes (nested graphs looked into) whose types ``backend``
    does not take, listing the types it takes; and, with ``need_dt``, a missing dt."""
    bad = sorted(_unsupported(graph, supported))
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        plural = "s" if len(bad) > 1 else ""
        raise UserError(f"{where}: the {backend} backend does not take the NIR node{plural} "
                        f"{shown}; it takes: {', '.join(supported)} (and nested NIRGraph nodes)")
    if need_dt and "dt" not in graph.metadata:
        raise UserError(f"{where}: the graph's metadata has no dt (frame period); pass --dt SECONDS")
