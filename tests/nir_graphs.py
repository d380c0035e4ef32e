"""The three hand-built standard NIR graphs of the common subset (not lmuformer's shape), shared by
the tests of the fixed-point backends, the Lava lowering and the report: a conv net, a recurrent
net through a Delay and an MLP with a spiking output (see tests/test_nir_subset.py), their inputs,
and an independent NumPy reading of NIR in discrete time (``reference``)."""

from __future__ import annotations

import nir
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

DT = 1e-3


def _a(*v) -> np.ndarray:
    return np.asarray(v, np.float64)


def conv_graph(seed: int = 0) -> nir.NIRGraph:
    """input (2, 5, 5) -> Conv2d 3x3 pad 1 (3 ch) -> CubaLIF -> {SumPool2d 2, AvgPool2d 2} -> Flatten
    (both summed into) -> Affine -> LIF(4) -> Linear -> LI(3) -> output."""
    rng = np.random.default_rng(seed)
    shape = (3, 5, 5)

    def full(v, s=shape):
        return np.full(s, v, np.float64)

    nodes = {
        "input": nir.Input(input_type={"input": np.array([2, 5, 5])}),
        "conv": nir.Conv2d(input_shape=(5, 5), weight=rng.normal(0, 0.4, (3, 2, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=_a(0.1, -0.05, 0.0)),
        "cuba": nir.CubaLIF(tau_syn=full(2 * DT), tau_mem=full(4 * DT), r=full(2.0), v_leak=full(0.0),
                            v_threshold=full(0.5), w_in=full(1.0)),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                              padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([3, 2, 2])}, start_dim=0, end_dim=-1),
        "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat2": nir.Flatten(input_type={"input": np.array([3, 2, 2])}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0, 0.6, (4, 12)), bias=_a(0.2, 0.0, -0.1, 0.05)),
        "lif": nir.LIF(tau=full(2 * DT, (4,)), r=full(1.0, (4,)), v_leak=full(0.1, (4,)),
                       v_threshold=full(1.0, (4,)), v_reset=full(0.0, (4,))),
        "fc2": nir.Linear(weight=rng.normal(0, 1.0, (3, 4))),
        "li": nir.LI(tau=full(4 * DT, (3,)), r=full(1.0, (3,)), v_leak=full(0.0, (3,))),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "conv"), ("conv", "cuba"), ("cuba", "pool"), ("pool", "flat"), ("flat", "fc"),
             ("cuba", "avg"), ("avg", "flat2"), ("flat2", "fc"), ("fc", "lif"), ("lif", "fc2"), ("fc2", "li"),
             ("li", "output")]
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT})
    g.nodes, g.edges = nodes, edges  # NIR's constructor would not change them; keep them as written
    return g


def recurrent_graph(seed: int = 1) -> nir.NIRGraph:
    """input(1, 4) -> Scale -> Conv1d (1 -> 2 ch, pad 1) -> IF (2, 4) with w_rec -> Delay(1) -> IF;
    IF -> channel mean -> Threshold(2) -> Linear -> I(2) -> Linear -> CubaLI(2) -> Affine -> output."""
    rng = np.random.default_rng(seed)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([1, 4])}),
        "scale": nir.Scale(scale=_a([1.0, 0.5, -1.0, 2.0])),
        "conv": nir.Conv1d(input_shape=4, weight=rng.normal(0.3, 0.8, (2, 1, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=_a(0.05, 0.0)),
        "if": nir.IF(r=np.full((2, 4), 1000.0), v_threshold=np.full((2, 4), 1.0)),
        "w_rec": nir.Linear(weight=rng.normal(0, 0.3, (8, 8))),
        "delay": nir.Delay(delay=np.full(8, DT)),
        "avg": nir.Linear(weight=np.kron(np.eye(2), np.full((1, 4), 0.25))),
        "th": nir.Threshold(threshold=_a(0.2, 0.45)),
        "to_i": nir.Linear(weight=_a([1.0, 0.5], [-0.5, 1.0])),
        "i": nir.I(r=np.full(2, 250.0)),
        "to_cuba": nir.Affine(weight=_a([1.0, -1.0], [0.5, 0.5]), bias=_a(0.3, -0.2)),
        "cubali": nir.CubaLI(tau_syn=np.full(2, 2 * DT), tau_mem=np.full(2, 8 * DT), r=np.full(2, 1.0),
                             v_leak=_a(0.0, 0.1), w_in=_a(1.0, 0.5)),
        "head": nir.Affine(weight=_a([1.0, 2.0], [-1.0, 0.5], [0.25, 0.25]), bias=_a(0.0, 0.1, -0.2)),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }
    edges = [("input", "scale"), ("scale", "conv"), ("conv", "if"), ("if", "w_rec"), ("w_rec", "delay"),
             ("delay", "if"), ("if", "avg"), ("avg", "th"), ("th", "to_i"), ("to_i", "i"), ("i", "to_cuba"),
             ("to_cuba", "cubali"), ("cubali", "head"), ("head", "output")]
    # NIR's type check compares shapes across edges ((2, 4) into a Linear of 8): the backends
    # read every value flattened in C order, so the check is off for this hand-built graph
    g = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"dt": DT}, type_check=False)
    g.nodes, g.edges = nodes, edges
    return g


def mlp_graph(seed: int = 2) -> nir.NIRGraph:
    """snnTorch-like: input(3) -> Affine -> LIF(4, r per neuron) -> Affine -> LIF(2) -> output (spikes)."""
    rng = np.random.default_rng(seed)

    def lif(n, r=5.0):
        return nir.LIF(tau=np.full(n, 5 * DT), r=np.full(n, r), v_leak=np.zeros(n), v_threshold=np.ones(n),
                       v_reset=np.zeros(n))

    nodes = {"input": nir.Input(input_type={"input": np.array([3])}),
             "fc0": nir.Affine(weight=rng.normal(0.3, 0.5, (4, 3)), bias=rng.normal(0, 0.1, 4)),
             "lif0": lif(4, np.array([4.0, 5.0, 6.0, 5.0])),  # r per neuron
             "fc1": nir.Affine(weight=rng.normal(0.5, 0.5, (2, 4)), bias=np.zeros(2)), "lif1": lif(2),
             "output": nir.Output(output_type={"output": np.array([2])})}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names, names[1:], strict=False)), metadata={"dt": DT})


def reference(graph: nir.NIRGraph, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An independent discrete-time reading of NIR (float64), Euler at dt, states from 0:
    LIF/LI ``v += dt/tau (v_leak - v + r x)``; IF/I ``v += dt r x``; CubaLIF/CubaLI ``i += dt/tau_syn
    (w_in x - i)`` then ``v += dt/tau_mem (v_leak - v + r i)`` (the new i); spike when v > v_threshold,
    then v = v_reset; Threshold ``x > threshold``; Delay(d) sends its input of d/dt steps before.
    Returns the Output's per-step trace (samples, steps, n) and each spiking node's trains."""
    nodes, dt = graph.nodes, float(graph.metadata["dt"])
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in graph.edges:
        preds[b].append(a)
    order: list[str] = []
    while len(order) < len(nodes):
        for n in nodes:
            if n not in order and all(p in order or isinstance(nodes[p], nir.Delay) for p in preds[n]):
                order.append(n)
    samples, steps, _ = x.shape
    state: dict[str, dict] = {n: {} for n in nodes}
    trains: dict[str, list] = {}
    trace = []
    delayed: dict[str, list] = {n: [] for n, v in nodes.items() if isinstance(v, nir.Delay)}
    for t in range(steps):
        out: dict[str, np.ndarray] = {}
        for n, buf in delayed.items():
            k = int(round(float(np.asarray(nodes[n].delay).flat[0]) / dt))
            out[n] = buf[-k] if len(buf) >= k else 0.0
        for n in order:
            node, st = nodes[n], state[n]
            if isinstance(node, nir.Delay):
                continue
            if isinstance(node, nir.Input):
                out[n] = x[:, t]
                continue
            if isinstance(node, nir.Output):
                out[n] = sum(out[p] for p in preds[n])
                continue
            inp = sum(out[p] for p in preds[n])
            width = inp.shape[1:]

            def flat(a, width=width):
                return np.broadcast_to(np.asarray(a, np.float64).ravel(), width)

            if isinstance(node, nir.Affine):
                out[n] = inp @ node.weight.T + node.bias
            elif isinstance(node, nir.Linear):
                out[n] = inp @ node.weight.T
            elif isinstance(node, nir.Scale):
                out[n] = inp * node.scale
            elif isinstance(node, nir.Flatten):
                out[n] = inp
            elif isinstance(node, (nir.Conv1d, nir.Conv2d)):
                w = torch.as_tensor(node.weight)
                shape = (samples, w.shape[1], *np.atleast_1d(node.input_shape))
                conv = F.conv1d if isinstance(node, nir.Conv1d) else F.conv2d
                y = conv(torch.as_tensor(inp).reshape(shape), w, torch.as_tensor(node.bias), node.stride,
                         node.padding, node.dilation, node.groups)
                out[n] = y.reshape(samples, -1).numpy()
            elif isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
                up = preds[n][0]
                c, h, w_ = np.asarray(nodes[up].v_threshold).shape
                k, s = int(node.kernel_size[0]), int(node.stride[0])
                a = inp.reshape(samples, c, h, w_)[:, :, : h // s * s, : w_ // s * s]
                pooled = a.reshape(samples, c, h // s, k, w_ // s, k).sum(axis=(3, 5))
                out[n] = (pooled / (k * k if isinstance(node, nir.AvgPool2d) else 1)).reshape(samples, -1)
            elif isinstance(node, nir.Threshold):
                out[n] = (inp > flat(node.threshold)).astype(np.float64)
            else:  # neurons
                v = st.get("v", np.zeros_like(inp))
                if isinstance(node, (nir.CubaLIF, nir.CubaLI)):
                    i = st.get("i", np.zeros_like(inp))
                    i = i + dt / flat(node.tau_syn) * (flat(node.w_in) * inp - i)
                    st["i"] = i
                    v = v + dt / flat(node.tau_mem) * (flat(node.v_leak) - v + flat(node.r) * i)
                elif isinstance(node, (nir.LIF, nir.LI)):
                    v = v + dt / flat(node.tau) * (flat(node.v_leak) - v + flat(node.r) * inp)
                else:  # IF, I
                    v = v + dt * flat(node.r) * inp
                if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
                    spk = v > flat(node.v_threshold)
                    v = np.where(spk, flat(node.v_reset), v)
                    out[n] = spk.astype(np.float64)
                else:
                    out[n] = v
                st["v"] = v
            if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF, nir.Threshold)):
                trains.setdefault(n, []).append(out[n] != 0)
        for n in delayed:
            delayed[n].append(sum(out[p] for p in preds[n]))
        trace.append(out[[n for n, v in nodes.items() if isinstance(v, nir.Output)][0]])
    return np.stack(trace, axis=1), {n: np.stack(v, axis=1) for n, v in trains.items()}


def conv_inputs(samples: int = 2, frames: int = 6) -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 1.5, (samples, frames, 50))


def rec_inputs(samples: int = 2, frames: int = 8) -> np.ndarray:
    return np.random.default_rng(4).uniform(-1, 2, (samples, frames, 4))


def mlp_inputs(samples: int = 2, frames: int = 10) -> np.ndarray:
    return np.random.default_rng(5).uniform(0, 2, (samples, frames, 3))


CASES = {"conv": (conv_graph, conv_inputs), "recurrent": (recurrent_graph, rec_inputs),
         "mlp": (mlp_graph, mlp_inputs)}
