"""Reading and writing NIR files, with one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import nir

from lmuformer.errors import UserError
from lmuformer.files import atomic_write
from lmuformer.validation import check_graph, check_hdf5_size

SUPPORTED = ("Input", "Output", "Affine", "Linear", "Scale", "Delay", "LIF", "LI", "I", "IF", "Threshold")


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
    check_supported(graph, path)
    check_graph(graph, str(path))
    return graph


def _short(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, at most ``limit`` characters."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
