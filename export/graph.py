"""Build a NIR graph from a (spiking) LMUFormer.

The graph is flat and uses only: Input, Output, Delay, Affine, Linear, LIF, I.
Every synapse is one Affine/Linear node from a source population (spikes, a Delay of
spikes, the input, or the LMU memory) into one target population; the membrane-shortcut
residual stream is not a node but the set of synapses each of its consumers receives,
with that consumer's BatchNorm folded in.  See ``export/README.md`` for the mapping.

The LMU memory has two forms (``ExportOptions.lmu_form``): ``recurrent`` (the reference: an
integrator with the quantised A and B) and ``taps`` (u's spikes down a delay line: tap k is
a Delay(k) of u and a Linear ``g * H[k]`` into the memory's LIF, with the BatchNorm ``g, b``
after the memory folded in; no graded state, see :mod:`export.taps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nir
import numpy as np
import torch

from export.metadata import GraphMetadata
from export.quantize import (
    QuantizedTerm,
    dequantize,
    impulse_response_error,
    quantize_terms,
    quantize_to_grid,
)
from export.taps import TAPS_BOUND, realised_error, shortest_taps, taps_report
from lmuformer.errors import UserError
from lmuformer.functional.lif import DECAY
from lmuformer.functional.lmu import impulse_response
from lmuformer.model.layers import LIF, CausalConv3, SeqBatchNorm
from lmuformer.model.lmuformer import LMUFormer

TAU_STEPS = 1.0 / DECAY  # LIF membrane time constant in frames (dt / tau = DECAY)
LMU_FORMS = ("recurrent", "taps")
RELAY_WEIGHT = 4.0  # relay LIF (threshold 1, dt/tau = 1/2): one input spike gives v = 2 > 1


@dataclass(frozen=True)
class ExportOptions:
    """dt: frame period (s); quantize: False for a float export; weight_bits: bits of
    each term of the learned synapses; weight_terms: terms per learned matrix; lmu_bits,
    lmu_terms: the same for the LMU matrices (each term is one more synapse per connection)."""

    dt: float = 0.01
    quantize: bool = True
    weight_bits: int = 8
    weight_terms: int = 1
    lmu_bits: int = 8
    lmu_terms: int = 2
    lmu_form: str = "recurrent"
    lmu_taps: int | None = None
    lmu_max_delay: int | None = None

    def check(self) -> None:
        if not self.dt > 0:
            raise UserError(f"dt must be positive, got {self.dt}")
        if self.lmu_form not in LMU_FORMS:
            raise UserError(f"lmu form must be one of {', '.join(LMU_FORMS)}, got {self.lmu_form!r}")
        if self.lmu_taps is not None and self.lmu_taps < 1:
            raise UserError(f"lmu-taps must be at least 1, got {self.lmu_taps}")
        if self.lmu_max_delay is not None and self.lmu_max_delay < 1:
            raise UserError(f"lmu-max-delay must be at least 1, got {self.lmu_max_delay}")
        if self.quantize:
            for name in ("weight_bits", "lmu_bits"):
                bits = getattr(self, name)
                if not 2 <= bits <= 24:
                    raise UserError(f"{name.replace('_', '-')} must be between 2 and 24, got {bits}")
            for name in ("weight_terms", "lmu_terms"):
                terms = getattr(self, name)
                if not 1 <= terms <= 4:
                    raise UserError(f"{name.replace('_', '-')} must be between 1 and 4, got {terms}")


@dataclass
class Contribution:
    """A linear map ``w`` (out, in) of ``source`` delayed by ``delay`` steps, plus ``bias``."""

    source: str
    delay: int
    weight: np.ndarray | torch.Tensor
    bias: np.ndarray | torch.Tensor | None = None


@dataclass
class _Builder:
    opts: ExportOptions
    steps: int = 0  # the run's length (frames + latency), for the LMU memory reports
    theta: float = 0.0  # the LMU window (frames), for the taps form's report
    sizes: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, nir.NIRNode] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)
    lmu_reports: list[dict] = field(default_factory=list)

    def add(self, name: str, node: nir.NIRNode, size: int) -> str:
        assert name not in self.nodes, name
        self.nodes[name] = node
        self.sizes[name] = size
        return name

    def delayed(self, source: str, steps: int) -> str:
        if steps == 0:
            return source
        name = f"{source}.delay{steps}"
        if name not in self.nodes:
            n = self.sizes[source]
            self.add(name, nir.Delay(np.full(n, steps * self.opts.dt)), n)
            self.edges.append((source, name))
        return name

    def weight_terms(self, w: np.ndarray, kind: str) -> list[QuantizedTerm] | None:
        if not self.opts.quantize:
            return None
        if kind in ("lmu", "lmu_tap"):
            return quantize_terms(w, self.opts.lmu_bits, self.opts.lmu_terms)
        return quantize_terms(w, self.opts.weight_bits, self.opts.weight_terms)

    def synapse(self, name: str, c: Contribution, target: str, kind: str = "learned") -> None:
        """One synapse node (several if the matrix is split into quantised terms)."""
        source = self.delayed(c.source, c.delay)
        terms = self.weight_terms(c.weight, kind)
        values = [c.weight] if terms is None else [t.value for t in terms]
        bias = c.bias
        for k, w in enumerate(values):
            meta: dict = {"role": kind}
            if terms is not None:
                t = terms[k]
                meta.update(weight_mantissa=t.mantissa, weight_exponent=t.exponent, weight_bits=t.bits)
            if bias is not None and k == 0:
                if terms is not None:  # bias on the finest grid of the target's inputs
                    bias = quantize_to_grid(bias, min(t.exponent for t in terms))
                node = nir.Affine(weight=w.astype(np.float64), bias=bias.astype(np.float64), metadata=meta)
            else:
                node = nir.Linear(weight=w.astype(np.float64), metadata=meta)
            node_name = name if len(values) == 1 else f"{name}.term{k}"
            self.add(node_name, node, w.shape[0])
            self.edges += [(source, node_name), (node_name, target)]
        if terms is not None and kind == "learned":
            self.errors[name] = _rel_error(dequantize(terms), c.weight)

    def lif(self, name: str, n: int, v_th: float) -> str:
        dt = self.opts.dt
        node = nir.LIF(
            tau=np.full(n, TAU_STEPS * dt),
            r=np.ones(n),
            v_leak=np.zeros(n),
            v_threshold=np.full(n, float(v_th)),
            v_reset=np.zeros(n),
        )
        return self.add(name, node, n)

    def consumer(self, name: str, bn: SeqBatchNorm, lif: LIF, inputs: list[Contribution],
                 kind: str = "learned") -> str:
        """LIF population ``name`` receiving ``lif(bn(sum of inputs))``; BN folded per synapse."""
        g, b = (_np(t) for t in bn_affine(bn))
        self.lif(name, g.shape[0], lif.params.v_th)
        inputs = [Contribution(c.source, c.delay, _np(c.weight), None if c.bias is None else _np(c.bias))
                  for c in inputs]
        for k, c in enumerate(fold_bn(g, b, inputs)):
            self.synapse(f"{name}.syn{k}", c, name, kind)
        return name

    def memory(self, prefix: str, lmu, u: str) -> str:
        """The LMU memory of block ``prefix`` fed by population ``u`` in ``opts.lmu_form``, and the
        LIF after it; returns that LIF's name (its report appended to ``lmu_reports``)."""
        if self.opts.lmu_form == "taps":
            m, report = _memory_taps(self, prefix, lmu, u, self.steps, self.theta)
        else:
            mem, report = _memory(self, f"{prefix}.lmu.memory", lmu.memory, u, self.steps)
            bn, lif = lmu.memory_out
            m = self.consumer(f"{prefix}.lmu.m.lif", bn, lif, [Contribution(mem, 0, np.eye(report["order"]))])
        self.lmu_reports.append(report)
        return m

    def readout(self, c: Contribution) -> None:
        """The integrator I(r = 1/dt) fed by ``c`` (the head), and the Output after it."""
        n_cls = c.weight.shape[0]
        self.add("readout", nir.I(r=np.full(n_cls, 1.0 / self.opts.dt)), n_cls)
        self.synapse("readout.syn0", Contribution(c.source, c.delay, _np(c.weight), _np(c.bias)), "readout")
        self.add("output", nir.Output(output_type={"output": np.array([n_cls])}), n_cls)
        self.edges.append(("readout", "output"))


def _rel_error(q: np.ndarray, w: np.ndarray) -> float:
    den = float(np.linalg.norm(w))
    return float(np.linalg.norm(q - w)) / den if den else 0.0


def _np(x) -> np.ndarray:
    """A tensor or an array as a float64 NumPy array (values unchanged)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


# ---- the model's synapses, written once (torch float64, differentiable) ------------------------
# ``walk`` visits the model in export order and hands each LIF population its inputs to a sink:
# ``_Builder`` (below: NIR nodes) or ``backends.finetune.graph_weights`` (the fine-tuning forward).

def bn_affine(bn: SeqBatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``g * x + b`` (float64, differentiable in weight and bias; the
    running statistics are buffers).  The square root is NumPy's (correctly rounded; torch's
    vectorised one can differ in the last bit, and the export's values are NumPy's)."""
    den = torch.from_numpy(np.sqrt(_np(bn.running_var) + bn.eps)).to(bn.weight.device)
    g = bn.weight.double() / den
    return g, bn.bias.double() - bn.running_mean.double() * g


def fold_bn(g, b, inputs: list[Contribution]) -> list[Contribution]:
    """The synapses of a consumer ``g * (sum of inputs) + b``: ``g`` folded into every weight, ``b``
    and ``g`` times the inputs' biases onto the first (arrays or tensors alike)."""
    biases = [c.bias for c in inputs if c.bias is not None]
    bias = b + g * sum(biases[1:], biases[0]) if biases else b
    return [Contribution(c.source, c.delay, g[:, None] * c.weight, bias if k == 0 else None)
            for k, c in enumerate(inputs)]


def _conv_taps(source: str, conv: CausalConv3, extra_delay: int = 0) -> list[Contribution]:
    """``y[t] = W0 x[t-2] + W1 x[t-1] + W2 x[t]`` as three delayed contributions."""
    w = conv.weight.double()
    return [Contribution(source, extra_delay + 2 - j, w[:, :, j]) for j in range(3)]


def _linear(source: str, layer: torch.nn.Linear) -> Contribution:
    return Contribution(source, 0, layer.weight.double(), layer.bias.double())


def _bn_after(c: Contribution, bn: SeqBatchNorm) -> Contribution:
    g, b = bn_affine(bn)
    return Contribution(c.source, c.delay, g[:, None] * c.weight, g * c.bias + b)


def walk(model: LMUFormer, sink) -> None:
    """Hand ``sink`` the model's populations in export order: ``sink.consumer(name, bn, lif,
    inputs, [kind]) -> name`` for each LIF population with its (unfolded) input contributions
    (weights (out, in) float64 tensors; the membrane-shortcut residual is the list of
    contributions each of its consumers receives), ``sink.memory(prefix, lmu, u) -> name`` for
    each LMU memory and the LIF after it, ``sink.readout(contribution)`` for the head."""
    pe = model.patch_embed
    x = _conv_taps("input", pe.conv0)
    for i, (bn, lif, conv) in enumerate(pe.stages):
        x = _conv_taps(sink.consumer(f"patch.stage{i}.lif", bn, lif, x), conv)
    bn, lif, conv = pe.rpe
    rpe = _conv_taps(sink.consumer("patch.rpe.lif", bn, lif, x), conv)
    residual = [Contribution(c.source, c.delay + 1, c.weight) for c in x] + rpe

    for k, (lmu, mlp) in enumerate(model.blocks):
        p = f"block{k}"
        pre = sink.consumer(f"{p}.lmu.pre.lif", lmu.pre[0], lmu.pre[1], residual)
        lin, bn, lif = lmu.to_u
        u = sink.consumer(f"{p}.lmu.u.lif", bn, lif, [_linear(pre, lin)])
        m = sink.memory(p, lmu, u)
        n_mem = lmu.memory.A.shape[0]
        lin, bn, lif = lmu.to_h
        w_h, b_h = lin.weight.double(), lin.bias.double()
        h = sink.consumer(
            f"{p}.lmu.h.lif", bn, lif,
            [Contribution(m, 0, w_h[:, :n_mem], b_h), Contribution(pre, 0, w_h[:, n_mem:])],
        )
        residual = residual + [_bn_after(_linear(h, lmu.proj[0]), lmu.proj[1])]
        bn1, lif1, fc1, bn2, lif2, fc2 = mlp.layers
        s1 = sink.consumer(f"{p}.mlp.lif1", bn1, lif1, residual)
        s2 = sink.consumer(f"{p}.mlp.lif2", bn2, lif2, [_linear(s1, fc1)])
        residual = residual + [_linear(s2, fc2)]

    head = sink.consumer("head.lif", model.head_in[0], model.head_in[1], residual)
    sink.readout(_linear(head, model.head))


def model_to_nir(model: LMUFormer, opts: ExportOptions | None = None) -> nir.NIRGraph:
    """The NIR graph of a spiking LMUFormer (eval-mode BatchNorm folded).

    Run for ``frames + latency`` steps (the input then zero frames); the readout holds
    ``steps x logits`` at the end.  Raises UserError for the non-spiking variant.
    """
    opts = opts or ExportOptions()
    opts.check()
    cfg = model.config
    if cfg.variant != "spiking":
        raise UserError(
            "only the spiking LMUFormer can be exported: the non-spiking one uses ReLU/GELU, "
            "which NIR cannot express"
        )
    b = _Builder(opts, steps=cfg.frames + model.latency, theta=cfg.theta)
    b.add("input", nir.Input(input_type={"input": np.array([cfg.in_features])}), cfg.in_features)
    with torch.no_grad():
        walk(model, b)

    q = opts.quantize
    metadata = GraphMetadata(
        dt=opts.dt, latency_frames=model.latency, frames=cfg.frames, quantized=q,
        weight_bits=opts.weight_bits if q else 0, weight_terms=opts.weight_terms if q else 0,
        lmu_bits=opts.lmu_bits if q else 0, lmu_terms=opts.lmu_terms if q else 0, lmu_form=opts.lmu_form,
        model_config=cfg.to_dict(), quantization_error={"weights": b.errors, "lmu": b.lmu_reports},
        lmu_memory=b.lmu_reports, calibration=getattr(model, "calibration", None) or None,
    ).to_nir()
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, metadata=metadata)


def _memory(b: _Builder, name: str, memory, u: str, steps: int) -> tuple[str, dict]:
    """``m[t] = A m[t-1] + B u[t]`` as an integrator I(r=1/dt) fed by ``B u`` and by
    ``(A - I)`` of its own output delayed one step (so the identity part stays exact)."""
    a, bvec = _np(memory.A), _np(memory.B)
    n = a.shape[0]
    b.add(name, nir.I(r=np.full(n, 1.0 / b.opts.dt)), n)
    b.synapse(f"{name}.in", Contribution(u, 0, bvec[:, None]), name, kind="lmu")
    b.synapse(f"{name}.rec", Contribution(name, 1, a - np.eye(n)), name, kind="lmu")
    report: dict = {"memory": name, "form": "recurrent", "order": n}
    if b.opts.quantize:
        a_q = np.eye(n) + dequantize(quantize_terms(a - np.eye(n), b.opts.lmu_bits, b.opts.lmu_terms))
        b_q = dequantize(quantize_terms(bvec[:, None], b.opts.lmu_bits, b.opts.lmu_terms))[:, 0]
        report.update(
            impulse_response_error=impulse_response_error(a, bvec, a_q, b_q, steps),
            steps=steps,
            A_error=_rel_error(a_q, a),
            B_error=_rel_error(b_q, bvec),
        )
    return name, report


def _memory_taps(b: _Builder, p: str, lmu, u: str, steps: int, theta: float) -> tuple[str, dict]:
    """The memory and the LIF after it as taps: ``m.lif`` receives, for k < K, the synapse
    ``g * H[k]`` (d, 1) from u delayed by k steps (its source a relay when k exceeds the maximum
    delay), plus the BatchNorm bias on tap 0; no memory population.  Returns (m.lif, report)."""
    a, bvec = _np(lmu.memory.A), _np(lmu.memory.B)
    n = a.shape[0]
    opts = b.opts
    taps = opts.lmu_taps or shortest_taps(impulse_response(a, bvec, steps), TAPS_BOUND)
    h = impulse_response(a, bvec, max(taps, steps))
    limit = opts.lmu_max_delay
    sources = [u]  # sources[j] spikes j * limit steps after u
    if limit is not None:
        for j in range(1, (taps - 1) // limit + 1):
            relay = b.lif(f"{p}.lmu.taps.relay{j}", 1, 1.0)
            b.synapse(f"{relay}.in", Contribution(sources[-1], limit, np.array([[RELAY_WEIGHT]])), relay,
                      kind="relay")
            sources.append(relay)
    inputs = []
    for k in range(taps):
        j = k // limit if limit is not None else 0
        inputs.append(Contribution(sources[j], k - j * (limit or 0), h[k][:, None]))
    bn, lif = lmu.memory_out
    name = b.consumer(f"{p}.lmu.m.lif", bn, lif, inputs, kind="lmu_tap")
    report = {"memory": f"{p}.lmu.taps", "form": "taps", "order": n, "u": u,
              **taps_report(a, bvec, taps, steps, theta), "relays": len(sources) - 1,
              "max_synaptic_delay": max(c.delay for c in inputs)}
    report["synapses"] = sum(int(np.count_nonzero(node.weight)) for k, node in b.nodes.items()
                             if k.startswith(f"{name}.syn") and node.metadata.get("role") == "lmu_tap")
    report["sops_per_u_spike"] = report["synapses"] + report["relays"]  # every tap, each relay's input
    if opts.quantize:
        g = _np(bn_affine(bn)[0])
        gh = g[None, :] * h[:steps]
        bits, terms = opts.lmu_bits, opts.lmu_terms
        q = np.stack([dequantize(quantize_terms(g[:, None] * h[k][:, None], bits, terms))[:, 0]
                      for k in range(taps)])
        report["impulse_response_error"] = realised_error(q, gh)
        report["tap_error"] = _rel_error(q, g[None, :] * h[:taps])
    return name, report
