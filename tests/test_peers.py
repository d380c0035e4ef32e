"""Graphs exported by peer libraries (Norse ``to_nir``, snnTorch ``export_to_nir``), built and
exported here, run on the torch backend and compared with the peer's own simulation.

Tolerances: the peers compute in float32, we in float64; spike trains must be identical and
continuous outputs (an Output fed by an Affine) agree within 1e-4 absolute.  Where a peer's
discretisation differs from our Euler reading (Norse's CubaLIF), the test states the exact
relation and checks it."""

from __future__ import annotations

import json
from pathlib import Path

import nir
import numpy as np
import pytest
import snntorch as snn  # the dev extra
import torch
from snntorch import utils as snn_utils
from snntorch.export_nir import export_to_nir

from export.interpret import GraphRunner
from export.normalize import flatten, prepare
from lmuformer.errors import UserError
from tests.helpers import check_property, run_main

TOL = 1e-4
SNN_DT = 1e-4  # snnTorch's export writes tau = dt / (1 - beta) with this dt and records no dt


def _ours(graph: nir.NIRGraph, x: torch.Tensor, dt: float) -> torch.Tensor:
    """Per-step Output values (batch, steps, outputs) of the torch backend."""
    return GraphRunner(graph, dt=dt).run(x.double()).trace


def _positive_linear(lin: torch.nn.Linear, seed: int) -> torch.nn.Linear:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(lin.weight.shape, generator=g) * 0.8)
        if lin.bias is not None:
            lin.bias.copy_(torch.rand(lin.bias.shape, generator=g) * 0.1)
    return lin


def _snn_run(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    snn_utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(x[:, t]) for t in range(x.shape[1])], dim=1)


def _input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2.0


def _snn_dense(neuron: torch.nn.Module, n: int = 5) -> torch.nn.Sequential:
    return torch.nn.Sequential(_positive_linear(torch.nn.Linear(4, n), 1), neuron,
                               _positive_linear(torch.nn.Linear(n, 3), 2))


def _check_equal(net: torch.nn.Module, graph: nir.NIRGraph, x: torch.Tensor, dt: float) -> None:
    ref = _snn_run(net, x).double()
    ours = _ours(graph, x, dt)
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max()) < TOL


def test_snntorch_leaky_equals_snntorch():
    n = 5
    leaky = snn.Leaky(beta=torch.full((n,), 0.85), threshold=torch.ones(n), init_hidden=True,
                      reset_mechanism="zero", reset_delay=False)
    net = _snn_dense(leaky, n)
    graph = export_to_nir(net, torch.zeros(1, 4), ignore_dims=[0])
    assert {type(v).__name__ for v in graph.nodes.values()} >= {"LIF", "Affine"}
    x = _input((3, 30, 4))
    _check_equal(net, graph, x, SNN_DT)
    spikes = GraphRunner(graph, dt=SNN_DT).run(x.double()).spikes
    assert float(sum(s.sum() for s in spikes.values())) > 10  # the comparison sees spikes


def test_snntorch_synaptic_cubalif_equals_snntorch():
    n = 5
    syn = snn.Synaptic(alpha=torch.full((n,), 0.7), beta=torch.full((n,), 0.85), threshold=torch.ones(n),
                       init_hidden=True, reset_mechanism="zero", reset_delay=False)
    net = _snn_dense(syn, n)
    graph = export_to_nir(net, torch.zeros(1, 4), ignore_dims=[0])
    assert "CubaLIF" in {type(v).__name__ for v in graph.nodes.values()}
    x = _input((3, 30, 4), seed=1)
    _check_equal(net, graph, x, SNN_DT)
    assert float(GraphRunner(graph, dt=SNN_DT).run(x.double()).spikes["1"].sum()) > 10


def test_snntorch_recurrent_leaky_equals_snntorch():
    """RLeaky exports a cycle lif -> w_rec -> lif without a Delay node; snnTorch feeds back the
    previous step's spikes, which is how prepare() reads such a cycle (a one-step Delay)."""
    n = 5
    rleaky = snn.RLeaky(beta=0.8, linear_features=n, init_hidden=True, reset_mechanism="zero",
                        reset_delay=False)
    with torch.no_grad():
        rleaky.recurrent.weight.copy_(torch.linspace(-0.5, 0.5, n * n).reshape(n, n))
    net = _snn_dense(rleaky, n)
    graph = export_to_nir(net, torch.zeros(1, 4), ignore_dims=[0])
    prepared = prepare(graph, dt=SNN_DT)
    assert any("one-step delay" in note for note in prepared.metadata["notes"])
    assert sum(isinstance(v, nir.Delay) for v in prepared.nodes.values()) == 1
    _check_equal(net, graph, _input((3, 30, 4), seed=2), SNN_DT)


def _snntorch_conv_net() -> torch.nn.Sequential:
    """Conv2d(1 -> 2, 3x3, weights in [0, 0.5)) -> Leaky(2x4x4) -> AvgPool2d(2) -> Flatten ->
    Linear(8 -> 3, positive) on a 6x6 input."""
    conv = torch.nn.Conv2d(1, 2, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.rand(conv.weight.shape, generator=torch.Generator().manual_seed(3)) * 0.5)
        conv.bias.zero_()
    leaky = snn.Leaky(beta=torch.full((2, 4, 4), 0.9), threshold=torch.ones(2, 4, 4), init_hidden=True,
                      reset_mechanism="zero", reset_delay=False)
    return torch.nn.Sequential(conv, leaky, torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                              _positive_linear(torch.nn.Linear(8, 3), 4))


def test_snntorch_conv_net_equals_snntorch():
    net = _snntorch_conv_net()
    graph = export_to_nir(net, torch.zeros(1, 1, 6, 6), ignore_dims=[0])
    kinds = {type(v).__name__ for v in graph.nodes.values()}
    assert {"Conv2d", "AvgPool2d", "Flatten", "LIF"} <= kinds
    x = _input((2, 12, 36), seed=5)
    ref = _snn_run(net, x.reshape(2, 12, 1, 6, 6)).double()
    ours = _ours(graph, x, SNN_DT)
    assert float((ours - ref).abs().max()) < TOL


# ----------------------------------------------------------------------------- Norse

from norse.torch.utils.export_nir import to_nir  # noqa: E402

NORSE_DT = 1e-3  # Norse's own simulation step


def _norse_run(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    state = None
    out = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = model(x[:, t], state)
            out.append(y)
    return torch.stack(out, dim=1)


def _norse_export(model: torch.nn.Module, features: int) -> nir.NIRGraph:
    """Norse 1.1.0's to_nir writes ``tau = dt / tau_mem_inv``; with ``dt=1.0`` that is the
    time constant in seconds (1 / tau_mem_inv), which is what its own from_nir reads back."""
    return to_nir(model, torch.zeros(1, features), dt=1.0)


def test_norse_lif_box_and_li_equal_norse():
    from norse.torch import LIBoxCell, LIFBoxCell, SequentialState

    model = SequentialState(_positive_linear(torch.nn.Linear(4, 5), 6), LIFBoxCell(),
                            _positive_linear(torch.nn.Linear(5, 3), 7), LIBoxCell())
    graph = _norse_export(model, 4)
    assert [type(graph.nodes[n]).__name__ for n in ("1", "3")] == ["LIF", "LI"]
    x = _input((3, 40, 4), seed=8) * 20
    ref = _norse_run(model, x).double()
    ours = GraphRunner(graph, dt=NORSE_DT).run(x.double())
    assert float(ours.spikes["1"].sum()) > 10
    assert float((ours.trace - ref).abs().max()) < TOL


def test_norse_cubalif_equals_norse_with_the_input_scaled():
    """Norse's LIFCell (exported as CubaLIF, w_in = r = 1) adds its input current as a jump,
    ``j = i + x``, uses ``j`` in the voltage update and decays afterwards, ``i <- (1 - a) j``
    with ``a = dt/tau_syn``.  Our Euler step is ``i <- (1 - a) i + a w_in x`` before the voltage
    update: the same recursion for Norse's input ``a x``.  So our run on x equals Norse's run
    on ``a x`` (to float32 precision)."""
    from norse.torch import LIBoxCell, LIFCell, SequentialState

    model = SequentialState(_positive_linear(torch.nn.Linear(4, 5), 9), LIFCell(),
                            _positive_linear(torch.nn.Linear(5, 3), 10), LIBoxCell())
    graph = _norse_export(model, 4)
    assert type(graph.nodes["1"]).__name__ == "CubaLIF"
    a = NORSE_DT / float(np.asarray(graph.nodes["1"].tau_syn))
    x = _input((3, 40, 4), seed=11) * 6
    ours = GraphRunner(graph, dt=NORSE_DT).run(x.double())
    ref = _norse_run(SequentialState(_Scaled(model[0], a), *list(model)[1:]), x).double()
    assert 20 < float(ours.spikes["1"].sum()) < 500
    assert float((ours.trace - ref).abs().max()) < TOL


def test_report_on_a_norse_graph_sizes_its_shared_parameter_populations():
    """Norse writes 0-d (shared) LIF/LI parameters and empty types: the report sizes such a
    population from what feeds it, as the lowering does (it refused: 'takes 5 inputs but 1 has 1
    neurons'); SOPs from the emulator's spike trains: spikes x 3 (the next Linear is dense)."""
    from norse.torch import LIBoxCell, LIFBoxCell, SequentialState

    from backends import simulate
    from lmuformer.analysis import build_report, resolve_profiles

    model = SequentialState(_positive_linear(torch.nn.Linear(4, 5), 6), LIFBoxCell(),
                            _positive_linear(torch.nn.Linear(5, 3), 7), LIBoxCell())
    graph = prepare(_norse_export(model, 4), dt=NORSE_DT)
    x = (_input((2, 12, 4), seed=8) * 20).numpy()
    res = simulate(graph, x, backend="emulator", progress=False, record=True)
    report = build_report(graph, res, resolve_profiles(["45nm"]))
    rows = {r["name"]: r for r in report["layers"]}
    assert [(n, r["neurons"], r["synapses"]) for n, r in rows.items()] == [("input", 4, 20), ("1", 5, 15),
                                                                           ("3", 3, 0)]
    spikes = np.asarray(res.extra["spike_trains"]["1"]).reshape(2, -1).sum(axis=1)
    assert spikes.sum() > 0 and rows["1"]["sops"] == 3 * spikes.mean() == 3 * rows["1"]["spikes"]


class _Scaled(torch.nn.Module):
    """``a`` times a Linear layer's output (Norse's input current scaled as our Euler step does)."""

    def __init__(self, lin: torch.nn.Linear, a: float):
        super().__init__()
        self.lin, self.a = lin, a

    def forward(self, x):
        return self.a * self.lin(x)


# ----------------------------------------------------------------------------- hand-written graphs


def _lif(n: int) -> nir.LIF:
    return nir.LIF(tau=np.full(n, 0.01), r=np.full(n, 10.0), v_leak=np.zeros(n), v_threshold=np.ones(n),
                   v_reset=np.zeros(n))


def test_nested_graph_equals_its_flat_form_and_an_explicit_delay():
    """A recurrent layer as a nested NIRGraph (edges into it by the graph's name and by a
    dotted name) == the same network flat with an explicit one-step Delay."""
    rng = np.random.default_rng(0)
    w_in, w_rec, w_out = rng.uniform(0, 1, (3, 2)), rng.uniform(-0.5, 0.5, (3, 3)), rng.uniform(0, 1, (2, 3))
    inner = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "lif": _lif(3),
                                "w_rec": nir.Linear(w_rec), "output": nir.Output(np.array([3]))},
                         edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    nested = nir.NIRGraph(nodes={"input": nir.Input(np.array([2])), "w_in": nir.Linear(w_in), "rnn": inner,
                                 "w_out": nir.Linear(w_out), "output": nir.Output(np.array([2]))},
                          edges=[("input", "w_in"), ("w_in", "rnn"), ("rnn.output", "w_out"),
                                 ("w_out", "output")],
                          type_check=False)
    flat = flatten(nested)
    assert set(flat.nodes) == {"input", "w_in", "rnn.lif", "rnn.w_rec", "w_out", "output"}
    assert ("w_in", "rnn.lif") in flat.edges and ("rnn.lif", "w_out") in flat.edges
    explicit = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([2])), "w_in": nir.Linear(w_in), "lif": _lif(3),
               "w_rec": nir.Linear(w_rec), "d": nir.Delay(np.full(3, 0.001)), "w_out": nir.Linear(w_out),
               "output": nir.Output(np.array([2]))},
        edges=[("input", "w_in"), ("w_in", "lif"), ("lif", "w_rec"), ("w_rec", "d"), ("d", "lif"),
               ("lif", "w_out"), ("w_out", "output")], metadata={"dt": 0.001}, type_check=False)
    x = torch.as_tensor(rng.uniform(0, 1, (2, 25, 2)))
    a = GraphRunner(nested, dt=0.001).run(x)
    b = GraphRunner(explicit).run(x)
    assert torch.equal(a.trace, b.trace) and float(a.trace.sum()) > 0
    assert a.spikes["rnn.lif"].tolist() == b.spikes["lif"].tolist()


def test_prepare_takes_the_graph_dt_first_and_refuses_none():
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([2])), "li": nir.LI(np.full(2, 0.01), np.ones(2),
                                                                            np.zeros(2)),
                            "output": nir.Output(np.array([2]))},
                     edges=[("input", "li"), ("li", "output")], type_check=False)
    with pytest.raises(UserError, match="has no dt .*pass --dt SECONDS"):
        prepare(g)
    assert prepare(g, dt=0.002, frames=7).metadata["dt"] == 0.002
    assert prepare(g, dt=0.002, frames=7).metadata["frames"] == 7
    g.metadata = {"dt": 0.001}
    assert prepare(g, dt=0.5).metadata["dt"] == 0.001
    with pytest.raises(UserError, match="--dt = -1.0 is out of range"):
        prepare(nir.NIRGraph(nodes=dict(g.nodes), edges=list(g.edges), type_check=False), dt=-1.0)
    # LI: v <- v + dt/tau (v_leak - v + r x), Euler at dt = 0.001, tau = 0.01
    out = GraphRunner(g).run(torch.ones(1, 3, 2, dtype=torch.float64)).trace[0, :, 0]
    assert torch.allclose(out, torch.tensor([0.1, 0.19, 0.271], dtype=torch.float64))


def _one_node_graph(kind: str) -> nir.NIRGraph:
    node = {"LI": nir.LI(np.full(2, 0.01), np.ones(2), np.zeros(2)), "Scale": nir.Scale(np.ones(2)),
            "Threshold": nir.Threshold(np.ones(2)), "IF": nir.IF(np.ones(2), np.ones(2), np.zeros(2))}[kind]
    return nir.NIRGraph(nodes={"input": nir.Input(np.array([2])), "n": node,
                               "output": nir.Output(np.array([2]))},
                        edges=[("input", "n"), ("n", "output")], metadata={"dt": 1e-3})


@pytest.mark.parametrize("backend", ["emulator", "lava"])
def test_fixed_point_backends_refuse_in_one_line_naming_the_node(backend):
    """A backend refuses a node type it does not lower before lowering: one line naming node and
    type and listing what it takes (backends.base.backend_nodes).  Once it takes every type
    tried here, there is nothing to refuse and the torch backend's list must contain its own."""
    from backends import simulate
    from backends.base import backend_nodes

    taken = backend_nodes()[backend]
    assert set(taken) <= set(backend_nodes()["torch"])
    for kind in ("LI", "Scale", "Threshold", "IF"):
        assert simulate(_one_node_graph(kind), np.ones((1, 2, 2)), backend="torch", progress=False).steps == 2
        if kind in taken:
            continue
        with pytest.raises(UserError) as e:
            simulate(_one_node_graph(kind), np.ones((1, 2, 2)), backend=backend, progress=False)
        assert str(e.value) == (f"graph: the {backend} backend does not take the NIR node n ({kind}); "
                                f"it takes: {', '.join(taken)} (and nested NIRGraph nodes)")


def test_threshold_and_scale_nodes_run():
    g = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "s": nir.Scale(np.array([1.0, 2.0, 3.0])),
                            "th": nir.Threshold(np.full(3, 2.5)), "output": nir.Output(np.array([3]))},
                     edges=[("input", "s"), ("s", "th"), ("th", "output")], metadata={"dt": 1.0})
    r = GraphRunner(g).run(torch.ones(1, 2, 3, dtype=torch.float64))
    assert r.trace[0].tolist() == [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]] and r.spikes["th"].tolist() == [2.0]


# ----------------------------------------------------------------------------- CLI, files


def _cli(*args: str) -> tuple[int, str, str]:
    return run_main(*args)


def _li_graph(dt: float | None = None) -> nir.NIRGraph:
    return nir.NIRGraph(nodes={"input": nir.Input(np.array([2])),
                               "li": nir.LI(np.full(2, 0.01), np.ones(2), np.zeros(2)),
                               "output": nir.Output(np.array([2]))},
                        edges=[("input", "li"), ("li", "output")], metadata={} if dt is None else {"dt": dt})


def test_cli_simulate_peer_file_with_dt_and_frames(tmp_path):
    n = 4
    rleaky = snn.RLeaky(beta=0.8, linear_features=n, init_hidden=True, reset_mechanism="zero",
                        reset_delay=False)
    net = _snn_dense(rleaky, n)
    path = tmp_path / "rleaky.nir"
    nir.write(path, export_to_nir(net, torch.zeros(1, 4), ignore_dims=[0]))
    code, out, err = _cli("simulate", str(path), "--backend", "torch", "--random", "--dt", "1e-4",
                          "--frames", "6", "--samples", "2", "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    assert "dt = 0.0001 s (given by --dt)" in err and "read 1.lif -> 1.w_rec as a one-step delay" in err
    assert "2 samples x 6 steps" in out and "1.lif" in out
    code, _, err = _cli("simulate", str(path), "--backend", "torch", "--random")
    assert code == 2 and err.strip().splitlines() == [
        f"error: {path}: the graph's metadata has no dt (frame period); pass --dt SECONDS"]
    code, _, err = _cli("simulate", str(path), "--backend", "torch", "--random", "--dt", "1e-4")
    assert code == 2 and "pass --frames N" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli("simulate", str(path), "--backend", "torch", "--random", "--dt", "nan",
                        "--frames", "2")
    assert code == 2 and err.startswith("error: ") and "--dt = nan" in err


def test_cli_stream_peer_file_needs_and_takes_dt(tmp_path):
    """``lmuf stream`` on a graph without dt (8 digits features -> LI readout of 10 classes):
    one line asking for --dt; with it, the torch and emulator curves of the prepared graph."""
    w = np.random.default_rng(0).normal(0.0, 1.0, (10, 8))
    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([8])), "fc": nir.Affine(w, np.zeros(10)),
                                "li": nir.LI(np.full(10, 0.002), np.ones(10), np.zeros(10)),
                                "output": nir.Output(np.array([10]))},
                         edges=[("input", "fc"), ("fc", "li"), ("li", "output")], metadata={})
    path = tmp_path / "li.nir"
    nir.write(path, graph)
    code, _, err = _cli("stream", str(path), "--dataset", "digits", "--samples", "4", "--quiet")
    assert code == 2 and err.strip().splitlines() == [
        f"error: {path}: the graph's metadata has no dt (frame period); pass --dt SECONDS"]
    for backend in ("torch", "emulator"):
        js = tmp_path / f"{backend}.json"
        code, out, err = _cli("stream", str(path), "--dataset", "digits", "--samples", "4", "--quiet",
                              "--backend", backend, "--dt", "0.001", "--json", str(js))
        assert code == 0, err
        assert err.strip().splitlines() == ["dt = 0.001 s (given by --dt)"]
        assert "4 samples, 8 frames (+0 flush)" in out
        r = json.loads(js.read_text())
        assert r["notes"] == ["dt = 0.001 s (given by --dt)"] and len(r["accuracy_by_frames"]) == 8


def test_cli_simulate_one_li_node_and_report_without_ann(tmp_path):
    """A graph of one LI node (no spiking population) runs; its own dt is used."""
    path = tmp_path / "li.nir"
    nir.write(path, _li_graph(dt=0.001))
    code, out, err = _cli("simulate", str(path), "--backend", "torch", "--random", "--frames", "3",
                          "--dt", "0.5")
    assert code == 0, err
    assert "dt = 0.001 s (the graph's; --dt ignored)" in err and "1 samples" not in out
    code, out, err = _cli("report", str(path), "--backend", "torch", "--random", "--frames", "3",
                          "--samples", "2", "--profile", "45nm")
    assert code == 0, err
    assert "ANN baseline: not available" in out


def test_report_counts_convolution_fan_out(tmp_path):
    """SOPs of a spiking layer feeding a Conv2d: fan-out from the adjoint convolution."""
    from backends import simulate
    from lmuformer.analysis import build_report, resolve_profiles

    w = np.zeros((2, 1, 3, 3))
    w[0, 0, 1, 1], w[1, 0] = 1.0, 1.0  # channel 0: one tap; channel 1: all nine
    g = nir.NIRGraph(
        nodes={"input": nir.Input(np.array([1, 5, 5])),
               "lif": nir.LIF(np.full((1, 5, 5), 1e-3), np.ones((1, 5, 5)), np.zeros((1, 5, 5)),
                              np.full((1, 5, 5), 0.5), np.zeros((1, 5, 5))),
               "conv": nir.Conv2d((5, 5), w, 1, 1, 1, 1, np.zeros(2)),
               "li": nir.LI(np.full((2, 5, 5), 1e-3), np.ones((2, 5, 5)), np.zeros((2, 5, 5))),
               "output": nir.Output(np.array([2, 5, 5]))},
        edges=[("input", "lif"), ("lif", "conv"), ("conv", "li"), ("li", "output")],
        metadata={"dt": 1e-3})
    from lmuformer.analysis.counts import fan_out

    fo, syn = fan_out(prepare(g), "lif", 25)
    grid = fo.reshape(5, 5)
    # channel 1 (3x3 of ones, zero padding 1): 9 outputs read an inner input, 4 a corner; + 1 from channel 0
    assert syn == ["conv"] and grid[2, 2] == 10 and grid[0, 0] == 5 and grid[0, 2] == 7
    x = np.ones((2, 4, 25))
    res = simulate(g, x, backend="torch")
    report = build_report(prepare(g), res, resolve_profiles(["45nm"]))
    row = next(r for r in report["layers"] if r["name"] == "lif")
    assert row["spikes"] == 25 * 4 and row["synapses"] == int(fo.sum())
    assert row["sops"] == pytest.approx(4 * fo.sum())
    assert report["ann_baseline"] is None and "uncounted_synapses" not in report


# ----------------------------------------------------------------------------- any NIR file

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALUES = st.sampled_from([1.0, 0.5, 0.0, -1.0, 1e-3, 1e9, np.nan, np.inf])


@st.composite
def _node(draw, shape: tuple[int, ...]):
    """A node of any type (or a nested graph) and the shape it emits; sized to take ``shape``
    most of the time, mis-sized otherwise."""
    kind = draw(st.sampled_from(["Affine", "LIF", "CubaLIF", "Flatten", "Conv2d", "LI", "I", "IF",
                                 "CubaLI", "Linear", "Scale", "Threshold", "Delay", "Conv1d", "SumPool2d",
                                 "AvgPool2d", "sub"]))
    if draw(st.integers(0, 9)) == 0:
        shape = (draw(st.integers(1, 4)),)
    flat = int(np.prod(shape))
    m = draw(st.integers(1, 4))
    v = lambda: np.full(shape, draw(_VALUES))  # noqa: E731
    pos = lambda: np.full(shape, draw(st.sampled_from([1e-3, 1e-2, 1.0, 0.0, -1.0])))  # noqa: E731
    if kind == "LIF":
        return nir.LIF(pos(), v(), v(), v(), v()), shape
    if kind == "LI":
        return nir.LI(pos(), v(), v()), shape
    if kind == "I":
        return nir.I(v()), shape
    if kind == "IF":
        return nir.IF(v(), v(), v()), shape
    if kind == "CubaLIF":
        return nir.CubaLIF(pos(), pos(), v(), v(), v(), v(), v()), shape
    if kind == "CubaLI":
        return nir.CubaLI(pos(), pos(), v(), v(), v()), shape
    if kind == "Affine":
        return nir.Affine(np.full((m, flat), draw(_VALUES)), np.full(m, draw(_VALUES))), (m,)
    if kind == "Linear":
        return nir.Linear(np.full((m, flat), draw(_VALUES))), (m,)
    if kind == "Scale":
        return nir.Scale(v()), shape
    if kind == "Threshold":
        return nir.Threshold(v()), shape
    if kind == "Delay":
        return nir.Delay(np.full(shape, draw(st.sampled_from([1e-3, 2e-3, 1.5e-3, 0.0])))), shape
    if kind == "Flatten":
        return nir.Flatten({"input": np.array(shape)}, 0, -1), (flat,)
    if kind == "Conv1d":
        pad = draw(st.sampled_from([1, 0, "same"]))
        stride = draw(st.integers(1, 2))
        return nir.Conv1d(None, np.ones((m, shape[0], 2)), stride, pad, 1, 1, np.zeros(m)), shape
    if kind == "Conv2d":
        pad = draw(st.sampled_from([1, 0, "valid"]))
        return nir.Conv2d(None, np.ones((m, shape[0], 2, 2)), 1, pad, 1, 1, np.zeros(m)), shape
    if kind in ("SumPool2d", "AvgPool2d"):
        cls = nir.SumPool2d if kind == "SumPool2d" else nir.AvgPool2d
        stride = np.array([draw(st.integers(1, 2))] * 2)
        return cls(np.array([2, 2]), stride, np.array([0, draw(st.integers(0, 3))])), shape
    lif = nir.LIF(pos(), v(), v(), v(), v())
    inner = nir.NIRGraph(nodes={"input": nir.Input(np.array(shape)), "lif": lif,
                                "w": nir.Linear(np.eye(flat) * 0.5) if len(shape) == 1 else nir.Scale(v()),
                                "output": nir.Output(np.array(shape))},
                         edges=[("input", "lif"), ("lif", "output"), ("lif", "w"), ("w", "lif")],
                         type_check=False)
    return inner, shape


@st.composite
def _graph(draw):
    shape = tuple(draw(st.sampled_from([[3], [1, 4, 4], [2], [1, 6]])))
    nodes = {"input": nir.Input(np.array(shape))}
    for i in range(draw(st.integers(1, 4))):
        nodes[f"n{i}"], shape = draw(_node(shape))
    nodes["output"] = nir.Output(np.array(shape))
    names = list(nodes)
    chain = [(names[i], names[i + 1]) for i in range(len(names) - 1)]
    ends = names + ["n0.lif", "n0", "nowhere"]
    extra = draw(st.lists(st.tuples(st.sampled_from(ends), st.sampled_from(names)), max_size=2))
    edges = list(dict.fromkeys(chain + extra))
    md = draw(st.sampled_from([{"dt": 1e-3}, {"dt": 1e-3, "frames": 3}, {}, {"dt": 1e-3}, {"dt": 0.0}]))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=md, type_check=False)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(graph=_graph(), dt=st.sampled_from([1e-3, None, 1e-3, -1.0]))
def test_any_nir_graph_runs_or_is_refused_in_one_line(graph, dt):
    """Hand-made graphs of every node type, nested, mis-sized, with bad parameters and edges:
    the torch backend runs them or raises UserError (the CLI: one ``error:`` line); written to
    a file (where nir can write it), the CLI does the same."""
    import tempfile

    from backends import simulate

    x = np.ones((2, 3, int(np.prod(graph.nodes["input"].input_type["input"]))))
    try:
        res = simulate(graph, x, backend="torch", dt=dt, progress=False)
        assert res.trace.shape[:2] == (2, 3)
    except UserError as e:
        assert "\n" not in str(e)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.nir"
        try:
            nir.write(path, graph)
        except Exception:  # nir cannot store every hand-made graph; nothing to run then
            return
        args = ["simulate", str(path), "--backend", "torch", "--random", "--frames", "3", "--samples", "2"]
        code, _, err = _cli(*args, *([] if dt is None else ["--dt", str(dt)]))
        check_property("peers", Path(tmp), {path: path.read_bytes()}, code, err)


# ----------------------------------------------------------------------------- fixed-point backends


def _peer_graphs() -> dict[str, tuple[nir.NIRGraph, float, int]]:
    """name -> (graph as the peer exported it, dt, input features) of every peer network above."""
    from norse.torch import LIBoxCell, LIFBoxCell, LIFCell, SequentialState

    def dense(neuron, n=5):
        return export_to_nir(_snn_dense(neuron, n), torch.zeros(1, 4), ignore_dims=[0])

    n = 5
    rleaky = snn.RLeaky(beta=0.8, linear_features=n, init_hidden=True, reset_mechanism="zero",
                        reset_delay=False)
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3),
                               snn.Leaky(beta=torch.full((2, 4, 4), 0.9), threshold=torch.ones(2, 4, 4),
                                         init_hidden=True, reset_mechanism="zero", reset_delay=False),
                               torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(8, 3))
    norse_a = SequentialState(torch.nn.Linear(4, 5), LIFBoxCell(), torch.nn.Linear(5, 3), LIBoxCell())
    norse_b = SequentialState(torch.nn.Linear(4, 5), LIFCell(), torch.nn.Linear(5, 3), LIBoxCell())
    return {
        "snntorch_leaky": (dense(snn.Leaky(beta=torch.full((n,), 0.85), threshold=torch.ones(n),
                                           init_hidden=True, reset_mechanism="zero", reset_delay=False)),
                           SNN_DT, 4),
        "snntorch_synaptic": (dense(snn.Synaptic(alpha=torch.full((n,), 0.7), beta=torch.full((n,), 0.85),
                                                 threshold=torch.ones(n), init_hidden=True,
                                                 reset_mechanism="zero", reset_delay=False)), SNN_DT, 4),
        "snntorch_rleaky": (dense(rleaky), SNN_DT, 4),
        "snntorch_conv": (export_to_nir(conv, torch.zeros(1, 1, 6, 6), ignore_dims=[0]), SNN_DT, 36),
        "norse_lifbox_li": (_norse_export(norse_a, 4), NORSE_DT, 4),
        "norse_cubalif_li": (_norse_export(norse_b, 4), NORSE_DT, 4),
    }


@pytest.mark.parametrize("name", ["snntorch_leaky", "snntorch_synaptic", "snntorch_rleaky", "snntorch_conv",
                                  "norse_lifbox_li", "norse_cubalif_li"])
def test_peer_graphs_on_emulator_and_lava_bit_exact(name):
    """Every peer graph runs on the emulator (fixed) and on Lava (fixed) with identical spike
    trains, and the emulator's float run equals the torch backend's output (to 1e-9)."""
    from backends import simulate
    from tests.conftest import skip_without_lava

    graph, dt, features = _peer_graphs()[name]
    x = _input((2, 8, features), seed=12).numpy()
    emu = simulate(graph, x, backend="emulator", precision="fixed", dt=dt, progress=False, record=True)
    assert emu.trace.shape[:2] == (2, 8)
    # the emulator's float mode is the torch backend's reading (measured: equal to 3e-17)
    ref = simulate(graph, x, backend="torch", precision="float", dt=dt, progress=False)
    emu_float = simulate(graph, x, backend="emulator", precision="float", dt=dt, progress=False)
    assert np.abs(emu_float.trace - ref.trace).max() <= 1e-9
    skip_without_lava()
    lava = simulate(graph, x, backend="lava", precision="fixed", dt=dt, progress=False, record=True)
    assert set(lava.extra["spike_trains"]) == set(emu.extra["spike_trains"])
    for k, trains in emu.extra["spike_trains"].items():
        assert np.array_equal(lava.extra["spike_trains"][k], trains), k


def test_snntorch_conv_export_counts_through_pool_flatten_and_linear():
    """snnTorch's Conv2d -> Leaky(2x4x4) -> AvgPool2d(2) -> Flatten -> Linear(8 -> 3, all weights
    nonzero): each Leaky neuron reaches one pooled cell (weight 1/4), which reaches all 3 outputs:
    fan-out 3, 96 synapses, SOPs = 3 x spikes (no delays: all delivered).  Before, only the
    pooling's fan-out (1) counted and the Linear was listed as uncounted."""
    from backends import simulate
    from lmuformer.analysis import build_report, resolve_profiles

    net = _snntorch_conv_net()
    g = prepare(export_to_nir(net, torch.zeros(1, 1, 6, 6), ignore_dims=[0]), dt=SNN_DT)
    leaky_name = next(n for n, v in g.nodes.items() if isinstance(v, nir.LIF))
    x = np.random.default_rng(5).uniform(0.0, 4.0, (2, 12, 36))
    res = simulate(g, x, backend="emulator", precision="fixed", progress=False, record=True)
    trains = np.asarray(res.extra["spike_trains"][leaky_name], dtype=np.float64).reshape(2, 12, 32)
    report = build_report(g, res, resolve_profiles(["45nm"]), ann=False)
    row = next(r for r in report["layers"] if r["name"] == leaky_name)
    assert trains.sum() > 0 and row["synapses"] == 96 and row["fan_out"] == 3.0
    assert row["sops"] == pytest.approx(3 * trains.sum() / 2, abs=0)
    assert "uncounted_synapses" not in report
