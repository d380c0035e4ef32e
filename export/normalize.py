"""Normalising any NIR graph into the form every backend lowers: flat, acyclic but for
Delay nodes, with ``metadata["dt"]`` set.

- :func:`flatten` inlines nested :class:`nir.NIRGraph` nodes recursively.  Inner nodes are
  named ``"outer.inner"``; the nested graph's own Input/Output nodes are removed and every
  edge into them rewired (each source of an inner Input feeds each of its targets; likewise
  for Output).  An edge may name a nested graph as a whole (``"sub"``: its single Input as a
  target, its single Output as a source) or one of its nodes by a dotted name
  (``"sub.input"``, ``"sub.lif"``), as NIR and nirtorch write them.
- :func:`topological_order` is the evaluation order: edges leaving Delay nodes are cut.
- :func:`prepare` is what the backends get: the flat graph, each cycle that does not pass
  through a Delay node given an explicit one-step Delay (on its first edge leaving a neuron
  population; the discrete-time reading of snnTorch's ``RLeaky``/``RSynaptic`` and of
  nirtorch recurrent exports: the recurrent input at step t is computed from the population's
  output at step t - 1, zero before the first step), and the metadata's
  ``dt`` (the graph's own, else the given one) and ``frames`` (where given).  What was done is
  listed in ``metadata["notes"]`` (one line each).
"""

from __future__ import annotations

import nir
import numpy as np

from lmuformer.errors import UserError
from lmuformer.validation import check_graph, depth_first

MAX_DEPTH = 32  # nesting levels of NIRGraph nodes


def _resolve(graph: nir.NIRGraph, end: str, role: str, where: str) -> str:
    """The local node name an edge end refers to: ``end`` itself, or for a nested graph
    ``"sub"`` / ``"sub.inner..."`` the dotted name of its Input (role "dst") / Output ("src")."""
    nodes = graph.nodes
    if end in nodes and not isinstance(nodes[end], nir.NIRGraph):
        return end
    if end in nodes:  # a nested graph as a whole
        sub = nodes[end]
        kind = nir.Input if role == "dst" else nir.Output
        found = [n for n, v in sub.nodes.items() if isinstance(v, kind)]
        if len(found) != 1:
            raise UserError(f"{where}: edge end {end!r} is a nested graph with {len(found)} "
                            f"{kind.__name__} nodes; name one as {end}.NAME")
        return f"{end}.{_resolve(sub, found[0], role, where)}"
    head, dot, rest = end.partition(".")
    while dot:
        if head in nodes and isinstance(nodes[head], nir.NIRGraph):
            return f"{head}.{_resolve(nodes[head], rest, role, where)}"
        nxt, dot, rest = rest.partition(".")
        head = f"{head}.{nxt}"
    raise UserError(f"{where}: an edge names a missing node {end!r}")


def _inline(graph: nir.NIRGraph, prefix: str, depth: int, where: str,
            nodes: dict[str, nir.NIRNode], edges: list[tuple[str, str]], passthrough: set[str]) -> None:
    if depth > MAX_DEPTH:
        raise UserError(f"{where}: NIRGraph nodes nested deeper than {MAX_DEPTH} levels")
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            _inline(node, f"{prefix}{name}.", depth + 1, where, nodes, edges, passthrough)
            continue
        full = prefix + name
        if full in nodes:
            raise UserError(f"{where}: two nodes are named {full!r} once nested graphs are inlined")
        nodes[full] = node
        if depth > 0 and isinstance(node, (nir.Input, nir.Output)):
            passthrough.add(full)
    for edge in graph.edges:
        if len(edge) != 2:
            raise UserError(f"{where}: edge {edge!r} is not a (source, target) pair")
        src, dst = (str(e) for e in edge)
        edges.append((prefix + _resolve(graph, src, "src", where),
                      prefix + _resolve(graph, dst, "dst", where)))


def flatten(graph: nir.NIRGraph, where: str = "graph") -> nir.NIRGraph:
    """A copy of ``graph`` without nested NIRGraph nodes (see the module docstring); the
    metadata is copied, node objects are shared.  UserError on an edge naming no node."""
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    passthrough: set[str] = set()
    _inline(graph, "", 0, where, nodes, edges, passthrough)
    for p in sorted(passthrough):
        ins = [s for s, d in edges if d == p]
        outs = [d for s, d in edges if s == p]
        edges = [e for e in edges if p not in e] + [(s, d) for s in ins for d in outs]
        del nodes[p]
    unique = list(dict.fromkeys(edges))
    md = dict(graph.metadata) if isinstance(graph.metadata, dict) else {}
    return nir.NIRGraph(nodes=nodes, edges=unique, metadata=md, type_check=False)


def _preds(graph: nir.NIRGraph) -> dict[str, list[str]]:
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if src not in graph.nodes or dst not in graph.nodes:
            raise UserError(f"edge {src} -> {dst} names a missing node")
        if not isinstance(graph.nodes[src], nir.Delay):
            preds[dst].append(src)
    return preds


def topological_order(graph: nir.NIRGraph) -> list[str]:
    """Nodes of a flat graph in evaluation order, edges leaving Delay nodes cut; UserError on
    a cycle without a Delay node."""
    order, cycle = depth_first(_preds(graph), graph.nodes)
    if cycle is not None:
        raise UserError(f"the graph has a cycle through {cycle[0]!r} without a Delay node")
    return order


STATEFUL = (nir.LIF, nir.LI, nir.IF, nir.I, nir.CubaLIF, nir.CubaLI)


def delayless_cycle(graph: nir.NIRGraph) -> list[str] | None:
    """The nodes of one cycle that passes through no Delay node (``[a, b, ..., a]``), found by
    depth-first search along the edges from the Input nodes first; None if there is none."""
    succ: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if not isinstance(graph.nodes[src], nir.Delay):
            succ[src].append(dst)
    starts = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)] + list(graph.nodes)
    return depth_first(succ, starts)[1]


def _delayed_edge(graph: nir.NIRGraph, cycle: list[str]) -> tuple[str, str]:
    """The edge of a Delay-less cycle that gets the one-step Delay: the first one leaving a
    neuron population of known size (its output before the first step is 0, as in snnTorch's
    RLeaky, whose recurrent Affine adds its bias from the first step on), else the closing one."""
    edges = list(zip(cycle, cycle[1:], strict=False))
    for src, dst in edges:
        if isinstance(graph.nodes[src], STATEFUL) and output_shape(graph.nodes[src]) is not None:
            return src, dst
    return edges[-1]


def output_shape(node: nir.NIRNode) -> tuple[int, ...] | None:
    """The shape a node emits per step, where its type or parameters tell it."""
    out = getattr(node, "output_type", None)
    if isinstance(out, dict) and len(out) == 1:
        shape = np.asarray(next(iter(out.values())))
        if shape.ndim == 1 and shape.size and np.all(shape > 0):
            return tuple(int(s) for s in shape)
    if isinstance(node, (nir.Affine, nir.Linear)):
        return (int(np.shape(node.weight)[0]),)
    for attr in ("v_threshold", "tau", "tau_mem", "r", "scale", "delay"):
        if hasattr(node, attr) and np.ndim(getattr(node, attr)) >= 1:
            return tuple(int(s) for s in np.shape(getattr(node, attr)))
    return None


def _dt(value, what: str, where: str) -> float:
    try:
        v = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise UserError(f"{where}: {what} = {value!r} is not a number of seconds") from None
    if not (np.isfinite(v) and 0 < v <= 1e6):
        raise UserError(f"{where}: {what} = {v} is out of range; allowed: a finite number in (0, 1e6]")
    return v


def prepare(graph: nir.NIRGraph, dt: float | None = None, frames: int | None = None,
            where: str = "graph") -> nir.NIRGraph:
    """The graph as the backends take it: flat, every Delay-less cycle given an explicit
    one-step Delay on its closing edge, ``metadata["dt"]`` (the graph's own dt wins over the
    given one; UserError if neither) and ``metadata["frames"]`` if given and the graph has
    none.  ``metadata["notes"]`` lists, one line each, the dt used where ``dt`` was given and the
    delays inserted."""
    check_graph(graph, where)  # numbers and sizes (read_graph has checked files already)
    flat = flatten(graph, where)
    md = flat.metadata
    notes: list[str] = []
    if "dt" in md:
        step = _dt(md["dt"], "metadata dt", where)
        if dt is not None:
            _dt(dt, "--dt", where)
            notes.append(f"dt = {step:g} s (the graph's; --dt ignored)")
    elif dt is not None:
        step = _dt(dt, "--dt", where)
        notes.append(f"dt = {step:g} s (given by --dt)")
    else:
        raise UserError(f"{where}: the graph's metadata has no dt (frame period); pass --dt SECONDS")
    md["dt"] = step
    if frames is not None and "frames" not in md:
        md["frames"] = int(frames)
    nodes, edges = dict(flat.nodes), list(flat.edges)
    for _ in range(len(edges)):
        cycle = delayless_cycle(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))
        if cycle is None:
            break
        src, dst = _delayed_edge(flat, cycle)
        shape = output_shape(nodes[src])
        if shape is None:
            raise UserError(f"{where}: the cycle {' -> '.join(cycle[:6])} has no Delay node and the size "
                            f"of {src} ({type(nodes[src]).__name__}) is unknown")
        name = f"{src}.delay_to.{dst}"
        while name in nodes:
            name += "_"
        nodes[name] = nir.Delay(delay=np.full(shape, step))
        edges.remove((src, dst))
        edges += [(src, name), (name, dst)]
        shown = " -> ".join(cycle[:6]) + (" -> ..." if len(cycle) > 6 else "")
        notes.append(f"the cycle {shown} has no Delay node: read {src} -> {dst} as a one-step delay")
    md["notes"] = notes
    out = nir.NIRGraph(nodes=nodes, edges=edges, metadata=md, type_check=False)
    topological_order(out)  # cannot fail now; keeps the invariant checked
    return out
