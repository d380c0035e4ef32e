"""Run a NIR graph step by step in PyTorch (the re-import of our exports, and the ``torch``
backend for any graph of the common NIR subset).

The graph is first :func:`export.normalize.prepare`-d (flat, ``metadata["dt"]`` set, every
Delay-less cycle given a one-step Delay).  Discrete-time reading of NIR at the frame period
``dt`` (forward Euler, one step per frame), all states starting at zero:

- a node's input at step t is the sum of its sources' outputs at step t; nodes run in
  topological order with the edges that leave Delay nodes cut; values flow as
  (batch, *shape) tensors, the Input node's frames reshaped to its ``input_type``;
- Delay(d): its input from ``d/dt`` steps earlier (a positive whole number of steps);
- Affine ``W x + b``, Linear ``W x``, Scale ``s * x``, Conv1d/Conv2d (``torch`` cross-
  correlation with the node's stride, padding, dilation, groups, plus bias), Flatten (dims
  counted without the batch), SumPool2d (window sums), AvgPool2d (window means, padding
  counted): memoryless;
- LI / LIF: ``v <- v + dt/tau (v_leak - v + r x)``; I: ``v <- v + dt r x``; IF:
  ``v <- v + dt r x``;
- CubaLI / CubaLIF: ``i <- i + dt/tau_syn (w_in x - i)`` then
  ``v <- v + dt/tau_mem (v_leak - v + r i)`` with the new ``i``;
- LIF / IF / CubaLIF spike where ``v > v_threshold`` (after the update) and set ``v`` to
  ``v_reset`` there; Threshold: ``x > threshold``.  Spiking nodes output 0/1;
- the Output node's input at each step is the result (``trace``); the readout is its last
  step.

Where NIR's continuous-time reading differs: Euler is exact only as ``dt/tau -> 0``; the
exact solution of the same ODE over one frame would use ``1 - exp(-dt/tau)`` for ``dt/tau``
and hold the input constant over the frame.  NIR's Delay is continuous (any delay); here it
must be a whole number of frames.  A spike in continuous time is a Dirac impulse whose
effect on a downstream integrator is ``w``; here it is a 0/1 value held for one step, whose
effect is ``dt/tau w`` (peers that add spikes as jumps, such as snnTorch's export, write
``r`` or ``w_in`` so that this product is their weight).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import nir
import numpy as np
import torch
import torch.nn.functional as F

from export.io import TORCH_NODES, check_supported
from export.metadata import GraphMetadata
from export.normalize import output_shape, prepare, topological_order
from lmuformer.errors import UserError

SPIKING = (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold)


@dataclass
class RunResult:
    """readout: (batch, outputs) at the last step; trace: (batch, steps, outputs) per step;
    spikes: population name -> (batch,) spike counts over the run; neurons: name -> size."""

    readout: torch.Tensor
    trace: torch.Tensor
    spikes: dict[str, torch.Tensor]
    neurons: dict[str, int]
    steps: int


def _t(a, dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=dtype)


def _ints(v, n: int, what: str) -> tuple[int, ...] | str:
    """A conv/pool hyper-parameter as n ints (an int is repeated), or "same"/"valid"."""
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    if isinstance(v, np.ndarray) and v.dtype.kind in "SUO":
        v = v.reshape(-1)[0] if v.size == 1 else v
        v = v.decode(errors="replace") if isinstance(v, bytes) else v
    if isinstance(v, str):
        if v in ("same", "valid"):
            return v
        raise UserError(f"{what} = {v!r}; allowed: integers, 'same' or 'valid'")
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    arr = np.asarray(v, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, n)
    if arr.size != n or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any(arr < 0):
        raise UserError(f"{what} = {np.asarray(v).tolist()}; allowed: {n} non-negative integers")
    return tuple(int(a) for a in arr)


def input_shape(node: nir.Input) -> tuple[int, ...]:
    """The per-step shape an Input node takes."""
    types = node.input_type or {}
    shape = types.get("input", next(iter(types.values()), None))
    arr = np.asarray(shape if shape is not None else [], dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 1) or np.any(arr != np.round(arr)):
        raise UserError(f"the Input node's shape {np.asarray(shape).tolist()} is not a list of sizes >= 1")
    return tuple(int(a) for a in arr)


class GraphRunner:
    """Executes a NIR graph on batches of sequences, in float64 by default.  ``dt``: the
    frame period (s) for a graph whose metadata has none."""

    def __init__(self, graph: nir.NIRGraph, dtype: torch.dtype = torch.float64, dt: float | None = None):
        graph = prepare(graph, dt=dt)
        check_supported(graph, backend="torch", supported=TORCH_NODES)
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
        self.input_shape = input_shape(graph.nodes[self.input])
        self.params = {n: self._params(n, node) for n, node in graph.nodes.items()}
        self.latency = meta.latency_frames

    def _params(self, name: str, node: nir.NIRNode) -> dict:
        d = self.dtype
        dt = self.dt
        if isinstance(node, nir.Affine):
            return {"w": _t(node.weight, d), "b": _t(node.bias, d)}
        if isinstance(node, nir.Linear):
            return {"w": _t(node.weight, d)}
        if isinstance(node, nir.Scale):
            return {"s": _t(node.scale, d)}
        if isinstance(node, (nir.Conv1d, nir.Conv2d)):
            k = 1 if isinstance(node, nir.Conv1d) else 2
            w = _t(node.weight, d)
            if w.ndim != k + 2:
                raise UserError(f"{name}: Conv{k}d weight has shape {tuple(w.shape)}; need {k + 2} dims")
            groups = int(np.asarray(node.groups).reshape(-1)[0])
            bias = _t(node.bias, d) if node.bias is not None else torch.zeros(w.shape[0], dtype=d)
            return {"w": w, "b": bias.reshape(-1), "groups": groups,
                    "stride": _ints(node.stride, k, f"{name} stride"),
                    "padding": _ints(node.padding, k, f"{name} padding"),
                    "dilation": _ints(node.dilation, k, f"{name} dilation")}
        if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            p = {"kernel": _ints(node.kernel_size, 2, f"{name} kernel_size"),
                 "stride": _ints(node.stride, 2, f"{name} stride"),
                 "padding": _ints(node.padding, 2, f"{name} padding")}
            if any(isinstance(v, str) for v in p.values()) or any(
                    2 * pad > k for pad, k in zip(p["padding"], p["kernel"], strict=True)):
                raise UserError(f"{name}: pooling padding must be whole numbers at most half the kernel")
            return p
        if isinstance(node, nir.Flatten):
            return {"start": int(node.start_dim), "end": int(node.end_dim)}
        if isinstance(node, nir.Delay):
            steps = np.asarray(node.delay, dtype=np.float64).reshape(-1) / dt
            k = int(round(float(steps[0]))) if steps.size else 0
            if k < 1 or not np.allclose(steps, k, rtol=0, atol=1e-6):
                first = np.asarray(node.delay).reshape(-1)[:1].tolist()
                raise UserError(f"{name}: Delay of {first} s is not a positive whole number of steps "
                                f"of dt = {dt:g} s")
            return {"k": k}
        if isinstance(node, (nir.LIF, nir.LI)):
            p = {"k": _t(dt / np.asarray(node.tau, dtype=np.float64), d), "r": _t(node.r, d),
                 "v_leak": _t(node.v_leak, d)}
        elif isinstance(node, (nir.CubaLIF, nir.CubaLI)):
            p = {"k": _t(dt / np.asarray(node.tau_mem, dtype=np.float64), d),
                 "ks": _t(dt / np.asarray(node.tau_syn, dtype=np.float64), d), "r": _t(node.r, d),
                 "v_leak": _t(node.v_leak, d), "w_in": _t(node.w_in, d)}
        elif isinstance(node, (nir.I, nir.IF)):
            p = {"k": _t(dt * np.asarray(node.r, dtype=np.float64), d)}
        elif isinstance(node, nir.Threshold):
            return {"theta": _t(node.threshold, d)}
        else:
            return {}
        if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
            p["v_th"] = _t(node.v_threshold, d)
            reset = node.v_reset if node.v_reset is not None else np.zeros_like(np.asarray(node.v_threshold))
            p["v_reset"] = _t(reset, d)
        return p

    def run(self, x: torch.Tensor, steps: int | None = None) -> RunResult:
        """x: (batch, frames, features); runs ``frames + latency`` steps unless ``steps``
        is given, feeding zeros after the last frame."""
        x = x.to(self.dtype)
        batch, frames, features = x.shape
        if features != int(np.prod(self.input_shape)):
            raise UserError(f"input has {features} features per frame, the graph's Input takes "
                            f"{list(self.input_shape)} = {int(np.prod(self.input_shape))}")
        steps = frames + self.latency if steps is None else steps
        nodes = self.graph.nodes
        state: dict[str, torch.Tensor] = {}
        buffers: dict[str, deque] = {}
        spikes: dict[str, torch.Tensor] = {}
        neurons: dict[str, int] = {}
        for n in self.order:  # populations in evaluation order, input first
            node = nodes[n]
            if isinstance(node, nir.Delay):
                k = self.params[n]["k"]
                first = torch.zeros(batch, *(output_shape(node) or ()), dtype=self.dtype)
                buffers[n] = deque([first] * k, maxlen=k)
            if isinstance(node, SPIKING):
                spikes[n] = torch.zeros(batch, dtype=self.dtype)
        zero = torch.zeros((), dtype=self.dtype)
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
                    frame = x[:, t] if t < frames else x.new_zeros(batch, features)
                    out[n] = frame.reshape(batch, *self.input_shape)
                    continue
                out[n] = self._step(n, node, self._gather(n, node, out, zero), state, batch)
                if n in spikes:
                    spikes[n] += out[n].reshape(batch, -1).sum(dim=1)
                    neurons[n] = int(out[n][0].numel())
            for n, node in nodes.items():
                if isinstance(node, nir.Delay):
                    buffers[n].append(self._gather(n, node, out, zero))
            o = out[self.output]
            trace.append((o.expand(batch) if o.ndim == 0 else o).reshape(batch, -1))
            if trace[-1].shape != trace[0].shape:
                raise UserError(f"the Output node {self.output} gets {trace[0].shape[1]} values at step 0 "
                                f"and {trace[-1].shape[1]} at step {t}")
        trace_t = torch.stack(trace, dim=1)
        return RunResult(trace_t[:, -1], trace_t, spikes, neurons, steps)

    def _gather(self, n: str, node: nir.NIRNode, out: dict[str, torch.Tensor], zero) -> torch.Tensor:
        """The sum of a node's sources' outputs this step (``zero`` if it has none)."""
        try:
            return sum((out[p] for p in self.preds[n]), zero)
        except RuntimeError:
            shapes = ", ".join(f"{p} {tuple(out[p].shape[1:])}" for p in self.preds[n])
            raise UserError(f"{n} ({type(node).__name__}): its sources' outputs differ in shape: {shapes}") \
                from None

    def _step(self, n: str, node: nir.NIRNode, x, state: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        p = self.params[n]
        try:
            return self._apply(n, node, x, p, state, batch)
        except (RuntimeError, IndexError, ValueError) as e:  # shapes that do not fit the node
            shape = tuple(torch.as_tensor(x).shape[1:])
            raise UserError(f"{n} ({type(node).__name__}): cannot take its input of shape {shape} "
                            f"({str(e).splitlines()[0][:150]})") from None

    def _apply(self, n: str, node: nir.NIRNode, x, p: dict, state: dict[str, torch.Tensor],
               batch: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim == 0:  # no sources: zeros of the node's input shape
            x = torch.zeros(batch, *self._in_shape(node), dtype=self.dtype)
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
        if isinstance(node, nir.Conv1d):
            return F.conv1d(x, p["w"], p["b"], p["stride"], p["padding"], p["dilation"], p["groups"])
        if isinstance(node, nir.Conv2d):
            return F.conv2d(x, p["w"], p["b"], p["stride"], p["padding"], p["dilation"], p["groups"])
        if isinstance(node, nir.SumPool2d):
            return F.avg_pool2d(x, p["kernel"], p["stride"], p["padding"], divisor_override=1)
        if isinstance(node, nir.AvgPool2d):
            return F.avg_pool2d(x, p["kernel"], p["stride"], p["padding"])
        if isinstance(node, nir.Flatten):
            start = p["start"] + 1 if p["start"] >= 0 else p["start"]
            end = p["end"] + 1 if p["end"] >= 0 else p["end"]
            return torch.flatten(x, start, end)
        v = state.get(n)
        if v is None:
            v = torch.zeros_like(x + p["k"])
        if isinstance(node, (nir.CubaLIF, nir.CubaLI)):
            i = state.get(n + "/i", torch.zeros_like(x + p["ks"]))
            i = i + p["ks"] * (p["w_in"] * x - i)
            state[n + "/i"] = i
            v = v + p["k"] * (p["v_leak"] - v + p["r"] * i)
        elif isinstance(node, (nir.LIF, nir.LI)):
            v = v + p["k"] * (p["v_leak"] - v + p["r"] * x)
        else:  # I, IF
            v = v + p["k"] * x
        if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
            z = (v > p["v_th"]).to(self.dtype)
            state[n] = torch.where(z.bool(), p["v_reset"], v)
            return z
        state[n] = v
        return v

    def _in_shape(self, node: nir.NIRNode) -> tuple[int, ...]:
        if isinstance(node, (nir.Affine, nir.Linear)):
            return (int(np.shape(node.weight)[1]),)
        types = getattr(node, "input_type", None) or {}
        shape = np.asarray(next(iter(types.values()), None) if types else None)
        if shape.ndim == 1 and shape.size and np.all(shape > 0):
            return tuple(int(a) for a in shape)
        return output_shape(node) or (1,)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model logits: the accumulated readout divided by the number of steps."""
        r = self.run(x)
        return r.readout / r.steps
