"""Box LIF neuron (Norse ``lif_box``): ``v <- v + dt/tau (v_leak - v + x)``, spike when
``v > v_th`` (strict, as Norse, NIR and Lava), hard reset to ``v_reset = 0``.

With ``dt/tau = 1/2`` this is spikingjelly's LIF(tau=2, decay_input=True), the neuron of
the reference LMUFormer.  The single step is Norse's own; :func:`lif_sequence` runs a
whole sequence in one autograd node (forward and BPTT loops without per-step graph
overhead) and is tested to give exactly Norse's spikes.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch

with warnings.catch_warnings():  # norse's import uses the deprecated torch.jit.script
    warnings.simplefilter("ignore", FutureWarning)
    from norse.torch.functional.lif_box import (
        LIFBoxFeedForwardState,
        LIFBoxParameters,
        lif_box_feed_forward_step,
    )

DECAY = 0.5  # dt / tau_mem with tau_mem = 2 steps
SURROGATE_ALPHA = 4.0  # sigmoid surrogate slope, as the reference


class LIFParams(NamedTuple):
    """Box LIF parameters in step units: ``dt_over_tau`` = dt / tau_mem, threshold ``v_th``."""

    v_th: float = 1.0
    dt_over_tau: float = DECAY

    def norse(self) -> LIFBoxParameters:
        """The equivalent Norse parameters at ``dt = 1`` (tau_mem_inv in 1/step)."""
        return LIFBoxParameters(
            tau_mem_inv=torch.as_tensor(self.dt_over_tau),
            v_leak=torch.as_tensor(0.0),
            v_th=torch.as_tensor(self.v_th),
            v_reset=torch.as_tensor(0.0),
            method="heaviside",
        )


def lif_step(x: torch.Tensor, v: torch.Tensor, p: LIFParams) -> tuple[torch.Tensor, torch.Tensor]:
    """One step with Norse's ``lif_box_feed_forward_step``: returns (spikes, new v)."""
    z, state = lif_box_feed_forward_step(x, LIFBoxFeedForwardState(v=v), p.norse(), dt=1.0)
    return z, state.v


class _LIFSequence(torch.autograd.Function):
    """Whole-sequence LIF with hand-written BPTT.

    Forward: Norse's float ops in Norse's order (``v + k * (x - v)``, ``z = v > v_th``,
    ``v * (1 - z)``), written into preallocated buffers (no per-step allocation).
    Backward: the surrogate term for all steps at once, then one fused
    ``g[t] += a[t] * g[t + 1]`` per step with ``a[t] = (1 - k)(1 - z[t])`` (reset detached).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, v_th: float, k: float) -> torch.Tensor:  # x: (T, ...)
        vs = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # membrane before reset
        z = torch.empty_like(vs)
        v = torch.zeros_like(vs[0])  # membrane after reset
        dv = torch.empty_like(v)
        keep = torch.empty_like(v)
        for xt, vt, zt in zip(x.unbind(0), vs.unbind(0), z.unbind(0), strict=True):
            torch.sub(xt, v, out=dv)
            dv.mul_(k)
            torch.add(v, dv, out=vt)  # same float ops as Norse's step at dt*tau_mem_inv = k
            torch.gt(vt, v_th, out=zt)
            torch.neg(zt, out=keep).add_(1.0)  # 1 - z
            torch.mul(vt, keep, out=v)
        ctx.save_for_backward(vs, z)
        ctx.v_th, ctx.k = v_th, k
        return z

    @staticmethod
    def backward(ctx, gz: torch.Tensor):
        vs, z = ctx.saved_tensors
        k = ctx.k
        sig = torch.sub(vs, ctx.v_th).mul_(SURROGATE_ALPHA).sigmoid_()
        # g[t] = dL/dv[t] (before reset): the direct surrogate term, then the carries added in place
        g = torch.neg(sig).add_(1.0).mul_(sig).mul_(SURROGATE_ALPHA).mul_(gz)
        a = torch.neg(z[:-1], out=sig[:-1]).add_(1.0).mul_(1.0 - k)  # dv[t+1]/dv[t], reset detached
        gs, carry = g.unbind(0), a.unbind(0)
        for t in range(g.shape[0] - 2, -1, -1):
            gs[t].addcmul_(carry[t], gs[t + 1])
        return g.mul_(k), None, None


def lif_sequence(x: torch.Tensor, p: LIFParams) -> torch.Tensor:
    """Spikes for a whole sequence, time first: x (T, ...) -> z (T, ...), state from rest.

    Surrogate gradient: derivative of sigmoid(4 (v - v_th)); the reset is detached.
    CUDA tensors (float32/16, bfloat16) run the fused Triton kernels
    (:mod:`lmuformer.functional.lif_triton`, same spikes bit for bit), as do CPU tensors
    while ``TRITON_INTERPRET=1``; otherwise the PyTorch loop below.  float16/bfloat16
    input (autocast) is integrated in float32 on both paths and gives float32 spikes.
    """
    from lmuformer.functional import lif_triton

    if lif_triton.supports(x):
        return lif_triton.lif_sequence_triton(x, p.v_th, p.dt_over_tau)
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return _LIFSequence.apply(x, p.v_th, p.dt_over_tau)
