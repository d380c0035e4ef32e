"""Reading and writing NIR files, with one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import nir

from lmuformer.errors import UserError
from lmuformer.files import atomic_write

SUPPORTED = ("Input", "Output", "Affine", "Linear", "Scale", "Delay", "LIF", "LI", "I", "IF", "Threshold")


def write_graph(graph: nir.NIRGraph, path: str | Path) -> None:
    """Write an HDF5 NIR file atomically (temporary name in the same folder, then rename)."""
    atomic_write(path, lambda tmp: nir.write(tmp, graph))


def read_graph(path: str | Path) -> nir.NIRGraph:
    """Read a NIR file (type-checked) whose nodes we can run; UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"NIR file not found: {path}")
    try:
        graph = nir.read(path, type_check=True)
    except Exception as e:  # h5py/nir raise many types for foreign or corrupt files
        raise UserError(f"{path} is not a readable NIR file ({type(e).__name__}: {e})") from None
    check_supported(graph, path)
    return graph


def check_supported(graph: nir.NIRGraph, where: str | Path = "graph") -> None:
    """UserError naming the first nodes whose types we do not run, and a missing dt."""
    bad = sorted(
        f"{name} ({type(node).__name__})"
        for name, node in graph.nodes.items()
        if type(node).__name__ not in SUPPORTED
    )
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UserError(f"{where}: unsupported NIR nodes: {shown}; supported: {', '.join(SUPPORTED)}")
    if "dt" not in graph.metadata:
        raise UserError(f"{where}: the graph's metadata has no 'dt' (frame period in seconds)")
