"""Deployment-aware fine-tuning: train a spiking LMUFormer through the exact integer
arithmetic its export runs on the emulator and on Lava (``fixed_pt``).

The forward pass (:class:`IntegerForward`) is the emulator (:mod:`backends.emulator`) written
in torch float64, which holds every integer of the lowering exactly (|values| < 2**53):

    * the graph's synapse weights are computed from the model's parameters as the export
      computes them (:func:`graph_weights`: eval-mode BatchNorm folded per consumer, conv taps,
      the membrane-shortcut residual), then put on the deployed grid: mantissa
      ``clip(rint(w / 2**e), -127, 127)`` (per term, below) with the exponents the export chooses
      for the weights as they stand (the pass is lowered anew whenever a matrix's peak crosses a power
      of two, and after every epoch), Dense weights ``2 * mantissa``, its ``weight_exp`` and
      rounding offset;
    * LIF biases on the finest term's grid (``quantize_to_grid``) times ``2**(k + 6)``, rounded to
      ``bias_mant << bias_exp`` as lowered (integrators: rint);
    * graded synapses ``floor((sum + 2**(shift-1)) / 2**shift)`` (the rounding channel), LIF
      ``V <- clip24(trunc(V * (4096 - dv) / 4096) + wrap24(64 a_in) + bias)``, spike ``V > 64 vth``,
      reset to 0 (Lava's 24-bit wrap of the current u and clip of V);
      integrators ``M <- M + a_in + bias`` (the emulator's 24-bit wrap is left out: the lowering
      chooses their grids so that a static worst-case bound on |M| fits 24 bits); the LMU A and
      B as quantised (constants);
    * the readout ``M * 2**-k / steps`` gives the logits;
    * the input on the grid the emulator and Lava choose for the test split
      (``fixed_point.input_frac_for``, recorded as ``finetune_input_frac_bits``; training inputs
      beyond its range are clipped as deployment clips them).

Gradients: straight-through for every rounding (rint, floor, trunc, clip) and the current's wrap,
the model's sigmoid surrogate (slope 4 on the NIR membrane) for the spikes, the reset detached (no
gradient through a clipped mantissa).  The other fixed-point parameters (current grids k,
thresholds, dv, the memory's grid) are those of the last lowering; the job pins the current grids
(calibrated once on the start model, in the graph's metadata) so that every lowering uses the
same.  After training, the job (:func:`lmuformer.jobs.finetune.finetune`) exports the kept state
again and checks that it lowers to this forward pass's exponents, grids and integers, so the
export of the fine-tuned checkpoint spikes exactly as it.

Any number of 8-bit terms per matrix (``weight_terms``, ``lmu_terms``; ``weight_bits =
lmu_bits = 8``): term k is ``clip(rint(r_k / 2**e_k))`` of the residual ``r_k`` of the terms
before it (float64, as ``export.quantize.quantize_terms``), each term one lowered synapse
(``NAME.termK``); the gradient reaches the weight through the first term only (the others'
residuals are detached).  The bias is put on the finest term's grid, as the export puts it.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from backends.fixed_point import ACT_SHIFT, DECAY_BITS, STATE_MAX, Network
from export.graph import Contribution, ExportOptions, bn_affine, fold_bn, walk
from lmuformer.errors import UserError
from lmuformer.functional.lif import SURROGATE_ALPHA
from lmuformer.model.lmuformer import LMUFormer

MANTISSA_MAX = 127


def check_options(opts: ExportOptions) -> None:
    """UserError for export options this fine-tuning cannot represent."""
    opts.check()
    if not opts.quantize:
        raise UserError("fine-tuning for export needs a quantised export (not --float)")
    if getattr(opts, "lmu_form", "recurrent") != "recurrent":
        raise UserError(f"fine-tuning supports the recurrent LMU memory only, not --lmu-form {opts.lmu_form}")
    if (opts.weight_bits, opts.lmu_bits) != (8, 8):
        raise UserError("fine-tuning supports 8-bit terms only: --weight-bits 8 --lmu-bits 8 "
                        f"(got {opts.weight_bits} and {opts.lmu_bits})")


# ---- model parameters -> graph synapse weights (torch, differentiable) ----------------------

class _Weights(dict):
    """A sink of :func:`export.graph.walk`: NIR synapse name -> (weight (out, in), bias or None)."""

    def consumer(self, name: str, bn, lif, inputs: list[Contribution], kind: str = "learned") -> str:
        g, b = bn_affine(bn)
        for k, c in enumerate(fold_bn(g, b, inputs)):
            self[f"{name}.syn{k}"] = (c.weight, c.bias)
        return name

    def memory(self, prefix: str, lmu, u: str) -> str:  # the recurrent form (``check_options``)
        a, bvec = lmu.memory.A.double(), lmu.memory.B.double()
        eye = torch.eye(a.shape[0], dtype=torch.float64)
        self[f"{prefix}.lmu.memory.in"] = (bvec[:, None], None)
        self[f"{prefix}.lmu.memory.rec"] = (a - eye, None)
        bn, lif = lmu.memory_out
        return self.consumer(f"{prefix}.lmu.m.lif", bn, lif, [Contribution(f"{prefix}.lmu.memory", 0, eye)])

    def readout(self, c: Contribution) -> None:
        self["readout.syn0"] = (c.weight, c.bias)


def graph_weights(model: LMUFormer) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """NIR synapse name -> (weight (out, in), bias or None), float64 and differentiable, as
    :func:`export.graph.model_to_nir` computes them before quantisation (one term a matrix): the
    same walk over the model (:func:`export.graph.walk`) and BatchNorm folding."""
    out = _Weights()
    walk(model, out)
    return dict(out)


# ---- the integer forward pass ----------------------------------------------------------------

def term_chains(net: Network) -> dict[str, list[str]]:
    """Model synapse (a :func:`graph_weights` name) -> the lowered synapses of its terms in order:
    ``[name]`` for one term, ``[name.term0, name.term1, ...]`` for several (the export's naming)."""
    chains: dict[str, list[tuple[int, str]]] = {}
    for s in net.synapses:
        m = re.fullmatch(r"(.+)\.term(\d+)", s.name)
        base, k = (m.group(1), int(m.group(2))) if m else (s.name, 0)
        chains.setdefault(base, []).append((k, s.name))
    return {b: [n for _, n in sorted(v)] for b, v in chains.items()}


def _ste(x: torch.Tensor, fn) -> torch.Tensor:
    """``fn(x)`` forward, identity gradient."""
    return x + (fn(x.detach()) - x.detach())


def _wrap_current(u: torch.Tensor) -> torch.Tensor:
    """Lava's 24-bit wrap of the LIF current u (``PyLifModelBitAcc``; the emulator's
    ``lif_step_fixed``): above 2**23 it wraps down, at or below -2**23 up (a_in beyond +-2**17,
    four times Loihi's 16-bit a_in, which the calibrated grids keep clear of)."""
    u = torch.where(u > STATE_MAX, u - 2 * STATE_MAX, u)
    return torch.where(u <= -STATE_MAX, u + 2 * STATE_MAX, u)


def _clip_ste(v: torch.Tensor) -> torch.Tensor:
    """Mantissa ``clip(rint(v), -127, 127)`` forward; identity gradient inside the range, none
    outside (a clipped weight is not pushed further out: the frozen exponent stays valid)."""
    inside = (v.abs() <= MANTISSA_MAX + 0.5).to(v.dtype)
    return v * inside + (torch.clamp(torch.round(v), -MANTISSA_MAX, MANTISSA_MAX) - v * inside).detach()


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # x: NIR membrane minus threshold
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(SURROGATE_ALPHA * x)
        return g * SURROGATE_ALPHA * s * (1 - s)


class IntegerForward(nn.Module):
    """The emulator's fixed-point run of ``model``'s export (lowered as ``net``), in torch."""

    def __init__(self, model: LMUFormer, net: Network, steps: int):
        super().__init__()
        self.model, self.net, self.steps = model, net, steps
        for s in net.synapses:
            if len(s.terms) != 1:
                raise UserError(f"{s.name}: {len(s.terms)} Dense terms; fine-tuning needs one per synapse")
        self.chains = term_chains(net)
        self.order = [n for n, p in net.populations.items() if p.kind != "input"]
        self.history = net.max_delay + 1

    def parameters_now(self) -> tuple[dict, dict]:
        """Integer Dense weights per synapse (out, in) and integer bias per population (size,),
        zeros where the export has none."""
        gw = graph_weights(self.model)
        pops = self.net.populations
        by_name = {s.name: s for s in self.net.synapses}
        weights = {}
        bias = {n: torch.zeros(p.size, dtype=torch.float64) for n, p in pops.items()}
        for base, names in self.chains.items():
            w, b = gw[base]
            rest = w
            for k, name in enumerate(names):  # term k quantises the residual of the terms before it
                t = by_name[name].terms[0]
                m = _clip_ste(rest * 2.0 ** (-t.exponent))
                weights[name] = 2.0 * m
                # the residual's value (float64, as the export's quantize_terms); gradient via term 0 only
                rest = rest - (m * 2.0**t.exponent if k == 0 else (m * 2.0**t.exponent).detach())
            if b is not None:
                p = pops[by_name[names[0]].target]
                scale = 2.0 ** (-min(by_name[n].terms[0].exponent for n in names))  # the finest term's grid
                bq = _ste(b * scale, torch.round) / scale  # on the synapse's finest grid (the export)
                if p.kind == "lif":  # rint(b 2**(k+6) / 2**bias_exp) << bias_exp, bias_exp as lowered
                    e = torch.as_tensor(2.0 ** p.bias_exp.astype(np.float64))
                    bias[p.name] = _ste(bq * 2.0 ** (p.frac + ACT_SHIFT) / e, torch.round) * e
                else:
                    bias[p.name] = _ste(bq * 2.0**p.frac, torch.round)
        return weights, bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (batch, frames, features) -> logits (batch, classes), spike trains (batch, steps, n)."""
        net, pops = self.net, self.net.populations
        weights, bias = self.parameters_now()
        batch, frames, _ = x.shape
        xin = torch.as_tensor(net.encode_input(x.detach().cpu().numpy()), dtype=torch.float64)
        hist = {n: [torch.zeros(batch, p.size, dtype=torch.float64) for _ in range(self.history)]
                for n, p in pops.items()}
        v = {n: torch.zeros(batch, pops[n].size, dtype=torch.float64) for n in self.order}
        trains: dict[str, list[torch.Tensor]] = {n: [] for n in self.order if pops[n].kind == "lif"}
        offsets = {s.name: (0 if s.terms[0].round_channel is None
                            else 2 * pops[s.source].consts[s.terms[0].round_channel]) for s in net.synapses}
        incoming = {n: net.incoming(n) for n in self.order}
        for t in range(self.steps):
            cur = t % self.history
            hist[net.input][cur] = xin[:, t] if t < frames else torch.zeros_like(xin[:, 0])
            for n in self.order:
                p = pops[n]
                a = torch.zeros(batch, p.size, dtype=torch.float64)
                for s in incoming[n]:
                    src = hist[s.source][(t - s.delay) % self.history]
                    we = s.terms[0].weight_exp
                    acc = src @ weights[s.name].T + offsets[s.name]
                    if we >= 0:
                        a = a + acc * 2.0**we
                    else:
                        a = a + _ste(acc * 2.0**we, torch.floor)
                if p.kind == "lif":
                    keep = 2**DECAY_BITS - p.dv
                    u = _ste(a * 2**ACT_SHIFT, _wrap_current)  # du = 4095: u is this step's input
                    vv = _ste(v[n] * keep / 2**DECAY_BITS, torch.trunc) + u + bias[n]
                    vv = _ste(vv, lambda z: torch.clamp(z, -STATE_MAX + 1, STATE_MAX - 1))
                    scale = p.dv_f / 2.0 ** (p.frac + ACT_SHIFT)  # V -> the NIR membrane
                    spk = _Spike.apply((vv - (p.vth * 2**ACT_SHIFT + 0.5)) * scale)
                    v[n] = vv * (1 - spk.detach())
                    hist[n][cur] = spk
                    trains[n].append(spk)
                else:
                    v[n] = v[n] + a + bias[n]
                    hist[n][cur] = v[n]
        ro = pops[net.readout]
        logits = v[net.readout] * 2.0 ** -ro.frac / self.steps
        return logits, {n: torch.stack(z, 1) for n, z in trains.items()}
