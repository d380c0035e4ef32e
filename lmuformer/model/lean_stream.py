"""A lean streaming step for the spiking LMUFormer (eval mode): the same function as
``LMUFormer.step`` with BatchNorm folded and every buffer preallocated.

What it changes, against the layer-by-layer ``step``:

- Each BatchNorm (eval: ``y = (x - mean) / sqrt(var + eps) * w + b``) becomes
  ``y = x * s + t`` with ``s = w / sqrt(var + eps)``, ``t = b - mean * s``, and is folded into
  the linear map before it where that map feeds nothing else (``W' = s W``, ``b' = s b + t``):
  conv0..conv2 of the patch embedding, ``to_u``, ``to_h``, ``proj`` and the first channel-mixer
  linear.  The others (before the rpe, the LMU pre-neuron, the memory output, the channel
  mixer's input and the head) stay as ``x * s + t``.  Folding reorders float roundings only:
  in float64 the head outputs agree with ``step`` to ~1e-15 (tests: 1e-10).
- A kernel-3 causal convolution keeps its last three inputs in one (batch, 3 in) history and
  does one matrix product with the stacked weight ``[W0; W1; W2]``.
- LIF: ``v += k (x - v)``, ``z = v > v_th``, ``v -= v z`` in place (exact: the same values as
  ``v * (1 - z)``), spikes written to preallocated buffers.
- The LMU memory stays float64: ``m <- m A^T + u B`` (into a second buffer, then copied back).

Batch size is fixed when the stepper is built (``batch``); ``reset()`` returns to rest.
On CUDA, :class:`CudaGraphStep` captures one step in a CUDA graph (one launch per frame).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmuformer.model.layers import LIF, CausalConv3, SeqBatchNorm


def _bn_affine(bn: SeqBatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode BatchNorm: ``bn(x) == x * scale + shift``."""
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return s, bn.bias.detach() - bn.running_mean * s


class _Affine:
    """``y = x * s + t`` (an unfolded BatchNorm) into a preallocated buffer."""

    def __init__(self, bn: SeqBatchNorm, batch: int):
        self.s, self.t = _bn_affine(bn)
        self.out = torch.empty(batch, self.s.shape[0], dtype=self.s.dtype, device=self.s.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.t, x, self.s, out=self.out)


class _Linear:
    """``y = x W^T + b``, optionally followed by a folded BatchNorm."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, bn: SeqBatchNorm | None,
                 batch: int):
        w = weight.detach()
        b = bias.detach() if bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        if bn is not None:
            s, t = _bn_affine(bn)
            w, b = w * s[:, None], b * s + t
        self.wt = w.t().contiguous()  # (in, out): a row-major (1, in) @ (in, out) product
        self.b = b.contiguous()
        self.out = torch.empty(batch, w.shape[0], dtype=w.dtype, device=w.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b, x, self.wt, out=self.out)


class _Conv3:
    """A :class:`CausalConv3` (optionally BN-folded) over a (batch, 3, in) input history."""

    def __init__(self, conv: CausalConv3, bn: SeqBatchNorm | None, batch: int):
        w = conv.weight.detach()  # (out, in, 3)
        stacked = torch.cat([w[:, :, 0], w[:, :, 1], w[:, :, 2]], dim=1)  # (out, 3 in)
        self.lin = _Linear(stacked, None, bn, batch)
        self.hist = torch.zeros(batch, 3, w.shape[1], dtype=w.dtype, device=w.device)
        self.flat = self.hist.view(batch, -1)

    def reset(self) -> None:
        self.hist.zero_()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hist
        h[:, 0].copy_(h[:, 1])
        h[:, 1].copy_(h[:, 2])
        h[:, 2].copy_(x)
        return self.lin(self.flat)


class _LIF:
    """Box LIF with its membrane and spike buffers (same float ops as ``lif_step``)."""

    def __init__(self, lif: LIF, n: int, batch: int, like: torch.Tensor):
        self.k, self.v_th = lif.params.dt_over_tau, lif.params.v_th
        self.v = torch.zeros(batch, n, dtype=like.dtype, device=like.device)
        self.dv = torch.empty_like(self.v)
        self.z = torch.empty_like(self.v)

    def reset(self) -> None:
        self.v.zero_()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        v, dv, z = self.v, self.dv, self.z
        torch.sub(x, v, out=dv)
        dv.mul_(self.k)
        v.add_(dv)
        torch.gt(v, self.v_th, out=z)
        v.addcmul_(v, z, value=-1.0)  # v * (1 - z): v where z = 0, exactly 0 where z = 1
        return z


class LeanStep:
    """One streaming step of a spiking LMUFormer (eval mode) with folded BN and fixed buffers.

    ``step(frame)``: frame (batch, features) -> head output (batch, classes), a view of an
    internal buffer (copy it to keep it).  Built from the model's current weights.
    """

    def __init__(self, model: nn.Module, batch: int = 1):
        if model.config.variant != "spiking":
            raise ValueError("the lean step covers the spiking variant")
        if model.training:
            raise RuntimeError("streaming runs in eval mode: call model.eval() first")
        cfg = model.config
        d, m, hidden = cfg.dim, cfg.memory_size, cfg.dim * cfg.mlp_ratio
        like = model.head.weight
        self.batch, self.dtype, self.device = batch, like.dtype, like.device
        pe = model.patch_embed
        st = pe.stages
        # patch embedding: conv0 -> [BN -> LIF -> conv] x 3, then delay(x) + rpe(x)
        self.convs = [_Conv3(pe.conv0, st[0][0], batch), _Conv3(st[0][2], st[1][0], batch),
                      _Conv3(st[1][2], st[2][0], batch), _Conv3(st[2][2], None, batch),
                      _Conv3(pe.rpe[2], None, batch)]
        self.pe_lifs = [_LIF(st[i][1], d, batch, like) for i in range(3)] + [_LIF(pe.rpe[1], d, batch, like)]
        self.rpe_bn = _Affine(pe.rpe[0], batch)
        self.prev = torch.zeros(batch, d, dtype=like.dtype, device=like.device)  # Delay1
        self.x = torch.empty(batch, d, dtype=like.dtype, device=like.device)  # residual stream
        self.blocks = []
        for mixer, channel in model.blocks:
            mem = mixer.memory
            blk: dict[str, Any] = dict(
                pre_bn=_Affine(mixer.pre[0], batch), pre_lif=_LIF(mixer.pre[1], d, batch, like),
                to_u=_Linear(mixer.to_u[0].weight, mixer.to_u[0].bias, mixer.to_u[1], batch),
                u_lif=_LIF(mixer.to_u[2], 1, batch, like),
                at=mem.A.t().contiguous(), b=mem.B.clone(),
                m=torch.zeros(batch, m, dtype=torch.float64, device=like.device),
                m_next=torch.zeros(batch, m, dtype=torch.float64, device=like.device),
                m_bn=_Affine(mixer.memory_out[0], batch), m_lif=_LIF(mixer.memory_out[1], m, batch, like),
                to_h=_Linear(mixer.to_h[0].weight, mixer.to_h[0].bias, mixer.to_h[1], batch),
                h_lif=_LIF(mixer.to_h[2], d, batch, like),
                proj=_Linear(mixer.proj[0].weight, mixer.proj[0].bias, mixer.proj[1], batch),
                cat=torch.empty(batch, m + d, dtype=like.dtype, device=like.device),
                uB=torch.empty(batch, m, dtype=torch.float64, device=like.device),
                m_low=torch.empty(batch, m, dtype=like.dtype, device=like.device),
            )
            bn0, lif0, lin1, bn1, lif1, lin2 = channel.layers
            blk.update(c_bn=_Affine(bn0, batch), c_lif0=_LIF(lif0, d, batch, like),
                       c_lin1=_Linear(lin1.weight, lin1.bias, bn1, batch),
                       c_lif1=_LIF(lif1, hidden, batch, like),
                       c_lin2=_Linear(lin2.weight, lin2.bias, None, batch))
            self.blocks.append(blk)
        self.head_bn = _Affine(model.head_in[0], batch)
        self.head_lif = _LIF(model.head_in[1], d, batch, like)
        self.head = _Linear(model.head.weight, model.head.bias, None, batch)

    def _stateful(self) -> list[Any]:
        lifs = [*self.pe_lifs, self.head_lif]
        for b in self.blocks:
            lifs += [b["pre_lif"], b["u_lif"], b["m_lif"], b["h_lif"], b["c_lif0"], b["c_lif1"]]
        return [*self.convs, *lifs]

    def reset(self) -> None:
        """Back to rest (all state zero), in place."""
        for part in self._stateful():
            part.reset()
        self.prev.zero_()
        for b in self.blocks:
            b["m"].zero_()

    @torch.inference_mode()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        c0, c1, c2, c3, cr = self.convs
        l0, l1, l2, lr = self.pe_lifs
        a = l2(c2(l1(c1(l0(c0(frame))))))
        x = c3(a)  # patch-embedding stream before the residual
        r = cr(lr(self.rpe_bn(x)))
        out = torch.add(self.prev, r, out=self.x)
        self.prev.copy_(x)
        for b in self.blocks:
            d = out.shape[1]
            xs = b["pre_lif"](b["pre_bn"](out))
            u = b["u_lif"](b["to_u"](xs))  # (batch, 1)
            m, m_next = b["m"], b["m_next"]
            torch.mul(u.to(torch.float64), b["b"], out=b["uB"])
            torch.addmm(b["uB"], m, b["at"], out=m_next)  # never out=m: BLAS would read what it writes
            m.copy_(m_next)  # (a copy, not a swap of names, so that a captured CUDA graph stays valid)
            cat = b["cat"]
            b["m_low"].copy_(m)
            cat[:, :-d].copy_(b["m_lif"](b["m_bn"](b["m_low"])))
            cat[:, -d:].copy_(xs)
            out.add_(b["proj"](b["h_lif"](b["to_h"](cat))))
            h = b["c_lif1"](b["c_lin1"](b["c_lif0"](b["c_bn"](out))))
            out.add_(b["c_lin2"](h))
        return self.head(self.head_lif(self.head_bn(out)))


class CudaGraphStep:
    """:class:`LeanStep` captured once in a CUDA graph: ``step(frame)`` copies the frame into
    a static input, replays the graph (one launch) and returns the static output.

    Not exercised by the tests (no GPU there): it wraps LeanStep, whose every op writes a
    preallocated buffer, which is what graph capture needs."""

    def __init__(self, model: nn.Module, batch: int = 1):
        self.lean = LeanStep(model, batch)
        cfg = model.config
        self.frame = torch.zeros(batch, cfg.in_features, dtype=self.lean.dtype, device=self.lean.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (cuBLAS handles, workspaces) off the capture
            for _ in range(3):
                self.lean.step(self.frame)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self.lean.step(self.frame)
        self.reset()

    def reset(self) -> None:
        self.lean.reset()

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        self.frame.copy_(frame)
        self.graph.replay()
        return self.out


def stepper(model: nn.Module, batch: int) -> LeanStep | CudaGraphStep:
    """The fastest streaming step for ``model`` on its device: a CUDA graph on CUDA, the
    lean step elsewhere."""
    if model.head.weight.is_cuda:
        return CudaGraphStep(model, batch)
    return LeanStep(model, batch)
