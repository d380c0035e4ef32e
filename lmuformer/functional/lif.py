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
    @staticmethod
    def forward(ctx, x: torch.Tensor, v_th: float, k: float) -> torch.Tensor:  # x: (T, ...)
        v = torch.zeros_like(x[0])
        z = torch.empty_like(x)
        vs = torch.empty_like(x)
        for t in range(x.shape[0]):
            v = v + k * (x[t] - v)  # same float ops as Norse's step at dt*tau_mem_inv = k
            vs[t] = v
            z[t] = (v > v_th).to(x.dtype)
            v = v * (1.0 - z[t])
        ctx.save_for_backward(vs, z)
        ctx.v_th, ctx.k = v_th, k
        return z

    @staticmethod
    def backward(ctx, gz: torch.Tensor):
        vs, z = ctx.saved_tensors
        k = ctx.k
        sig = torch.sigmoid(SURROGATE_ALPHA * (vs - ctx.v_th))
        surrogate = SURROGATE_ALPHA * sig * (1.0 - sig)
        gx = torch.empty_like(gz)
        carry = torch.zeros_like(gz[0])  # dL/dv_decayed[t] through v[t] -> v[t+1]
        for t in range(gz.shape[0] - 1, -1, -1):
            gv = gz[t] * surrogate[t] + carry
            gx[t] = k * gv
            if t > 0:
                carry = gv * (1.0 - k) * (1.0 - z[t - 1])  # reset detached from the graph
        return gx, None, None


def lif_sequence(x: torch.Tensor, p: LIFParams) -> torch.Tensor:
    """Spikes for a whole sequence, time first: x (T, ...) -> z (T, ...), state from rest.

    Surrogate gradient: derivative of sigmoid(4 (v - v_th)); the reset is detached.
    """
    return _LIFSequence.apply(x, p.v_th, p.dt_over_tau)
