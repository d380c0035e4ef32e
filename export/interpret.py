"""Run a NIR graph step by step in PyTorch (the re-import of our exports).

Discrete-time reading of NIR, with the frame period ``dt`` from the graph metadata:
at step t a node's input is the sum of its sources' outputs at step t; nodes run in
topological order with the edges that leave Delay nodes cut; Delay(d) outputs its
input from ``d/dt`` steps earlier; LIF/LI: ``v <- v + dt/tau (v_leak - v + r x)``;
I/IF: ``v <- v + dt r x``; LIF/IF spike when ``v > v_threshold`` and reset to v_reset;
Threshold: ``x > theta``; Affine/Linear/Scale are memoryless.  All states start at zero.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import nir
import numpy as np
import torch

from export.io import check_supported
from export.metadata import GraphMetadata
from lmuformer.errors import UserError


@dataclass
class RunResult:
    """readout: (batch, outputs) at the last step; trace: (batch, steps, outputs) per step;
    spikes: population name -> (batch,) spike counts over the run; neurons: name -> size."""

    readout: torch.Tensor
    trace: torch.Tensor
    spikes: dict[str, torch.Tensor]
    neurons: dict[str, int]
    steps: int


def topological_order(graph: nir.NIRGraph) -> list[str]:
    """Nodes in evaluation order, edges leaving Delay nodes cut; UserError on a cycle."""
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for src, dst in graph.edges:
        if not isinstance(graph.nodes[src], nir.Delay):
            preds[dst].append(src)
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        stack = [(n, iter(preds[n]))]
        state[n] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[node] = 2
                order.append(node)
            elif state.get(nxt) == 1:
                raise UserError(f"the graph has a cycle through {nxt!r} without a Delay node")
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(preds[nxt])))

    for n in graph.nodes:
        if n not in state:
            visit(n)
    return order


def _t(a, dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype)


class GraphRunner:
    """Executes a NIR graph on batches of sequences, in float64 by default."""

    def __init__(self, graph: nir.NIRGraph, dtype: torch.dtype = torch.float64):
        check_supported(graph)
        self.graph = graph
        self.dtype = dtype
        meta = GraphMetadata.of(graph)
        self.dt = meta.dt
        self.order = topological_order(graph)
        self.preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
        for src, dst in graph.edges:
            self.preds[dst].append(src)
        inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
        outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(
                f"need exactly one Input and one Output node, found {len(inputs)} and {len(outputs)}"
            )
        self.input, self.output = inputs[0], outputs[0]
        self.params = {n: self._params(node) for n, node in graph.nodes.items()}
        self.latency = meta.latency_frames

    def _params(self, node: nir.NIRNode) -> dict[str, torch.Tensor]:
        d = self.dtype
        if isinstance(node, nir.Affine):
            return {"w": _t(node.weight, d), "b": _t(node.bias, d)}
        if isinstance(node, nir.Linear):
            return {"w": _t(node.weight, d)}
        if isinstance(node, nir.Scale):
            return {"s": _t(node.scale, d)}
        if isinstance(node, nir.Delay):
            steps = np.asarray(node.delay, dtype=np.float64) / self.dt
            k = int(round(float(steps.flat[0])))
            if k < 1 or not np.allclose(steps, k, rtol=0, atol=1e-6):
                raise UserError(f"Delay of {node.delay.flat[0]} s is not a positive whole number of steps")
            return {"k": k}
        if isinstance(node, (nir.LIF, nir.LI)):
            return {"k": _t(self.dt / np.asarray(node.tau), d), "r": _t(node.r, d),
                    "v_leak": _t(node.v_leak, d),
                    **({"v_th": _t(node.v_threshold, d), "v_reset": _t(node.v_reset, d)}
                       if isinstance(node, nir.LIF) else {})}
        if isinstance(node, nir.I):
            return {"k": _t(self.dt * np.asarray(node.r), d)}
        if isinstance(node, nir.IF):
            return {"k": _t(self.dt * np.asarray(node.r), d), "v_th": _t(node.v_threshold, d),
                    "v_reset": _t(node.v_reset, d)}
        if isinstance(node, nir.Threshold):
            return {"theta": _t(node.theta, d)}
        return {}

    def run(self, x: torch.Tensor, steps: int | None = None) -> RunResult:
        """x: (batch, frames, features); runs ``frames + latency`` steps unless ``steps``
        is given, feeding zeros after the last frame."""
        x = x.to(self.dtype)
        batch, frames, _ = x.shape
        steps = frames + self.latency if steps is None else steps
        nodes = self.graph.nodes
        state: dict[str, torch.Tensor] = {}
        buffers: dict[str, deque] = {}
        spikes: dict[str, torch.Tensor] = {}
        neurons: dict[str, int] = {}
        for n in self.order:  # populations in evaluation order, input first
            node = nodes[n]
            if isinstance(node, nir.Delay):
                zero = torch.zeros(batch, *np.shape(node.delay), dtype=self.dtype)
                buffers[n] = deque([zero] * self.params[n]["k"], maxlen=self.params[n]["k"])
            if isinstance(node, (nir.LIF, nir.IF)):
                spikes[n] = torch.zeros(batch, dtype=self.dtype)
                neurons[n] = int(np.asarray(node.v_threshold).size)
        trace = []
        out: dict[str, torch.Tensor] = {}
        for t in range(steps):
            out = {}
            for n, node in nodes.items():
                if isinstance(node, nir.Delay):
                    out[n] = buffers[n][0]
            for n in self.order:
                node = nodes[n]
                if isinstance(node, nir.Delay):
                    continue
                if isinstance(node, nir.Input):
                    out[n] = x[:, t] if t < frames else x.new_zeros(batch, x.shape[2])
                    continue
                inp = sum((out[p] for p in self.preds[n]), torch.zeros((), dtype=self.dtype))
                out[n] = self._step(n, node, inp, state)
                if n in spikes:
                    spikes[n] += out[n].reshape(batch, -1).sum(dim=1)
            for n, node in nodes.items():
                if isinstance(node, nir.Delay):
                    inp = sum((out[p] for p in self.preds[n]), torch.zeros((), dtype=self.dtype))
                    buffers[n].append(inp)
            trace.append(out[self.output])
        trace_t = torch.stack(trace, dim=1)
        return RunResult(trace_t[:, -1], trace_t, spikes, neurons, steps)

    def _step(self, n: str, node: nir.NIRNode, x, state: dict[str, torch.Tensor]) -> torch.Tensor:
        p = self.params[n]
        if isinstance(node, nir.Affine):
            return x @ p["w"].T + p["b"]
        if isinstance(node, nir.Linear):
            return x @ p["w"].T
        if isinstance(node, nir.Scale):
            return x * p["s"]
        if isinstance(node, nir.Output):
            return x
        if isinstance(node, nir.Threshold):
            return (x > p["theta"]).to(self.dtype)
        v = state.get(n)
        if v is None:
            v = torch.zeros_like(torch.as_tensor(x) + p["k"])
        if isinstance(node, (nir.LIF, nir.LI)):
            v = v + p["k"] * (p["v_leak"] - v + p["r"] * x)
        else:  # I, IF
            v = v + p["k"] * x
        if isinstance(node, (nir.LIF, nir.IF)):
            z = (v > p["v_th"]).to(self.dtype)
            state[n] = torch.where(z.bool(), p["v_reset"], v)
            return z
        state[n] = v
        return v

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model logits: the accumulated readout divided by the number of steps."""
        r = self.run(x)
        return r.readout / r.steps
