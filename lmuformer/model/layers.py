"""Sequence layers with two execution modes.

Every layer works on time-first tensors ``(steps, batch, channels)`` in ``forward`` (the
parallel mode, for training) and on one step ``(batch, channels)`` in ``step`` (the
streaming mode), with its state kept by the caller in a dict keyed by the layer.
Both modes compute the same function of the input sequence.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from lmuformer.functional.lif import LIFParams, lif_sequence, lif_step
from lmuformer.functional.lmu import impulse_response, lmu_discrete, memory_fft, memory_step

State = dict[nn.Module, Any]


class SeqBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the channel (last) axis of ``(..., channels)`` tensors."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def step(self, x: torch.Tensor, state: State) -> torch.Tensor:
        return self(x)


class LIF(nn.Module):
    """Box LIF population (tau = 2 steps, hard reset to 0, threshold ``v_th``)."""

    def __init__(self, v_th: float = 1.0):
        super().__init__()
        self.params = LIFParams(v_th=v_th)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lif_sequence(x, self.params)

    def step(self, x: torch.Tensor, state: State) -> torch.Tensor:
        v = state.get(self)
        z, state[self] = lif_step(x, torch.zeros_like(x) if v is None else v, self.params)
        return z

    def extra_repr(self) -> str:
        return f"v_th={self.params.v_th}, dt/tau={self.params.dt_over_tau}"


class CausalConv3(nn.Module):
    """Kernel-3 convolution along time, made causal with a one-step latency.

    The reference ``Conv1d(k=3, padding=1)`` gives position p from frames p-1, p, p+1;
    here step t emits position t-1: ``y[t] = W0 x[t-2] + W1 x[t-1] + W2 x[t]``.
    weight: (out, in, 3), laid out as ``nn.Conv1d``'s; no bias (the reference has none).
    """

    latency = 1

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv1d's default

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = x.shape[0]
        xp = torch.cat([x.new_zeros((2, *x.shape[1:])), x])
        w = self.weight
        return (xp[:steps] @ w[:, :, 0].T + xp[1 : steps + 1] @ w[:, :, 1].T) + xp[2:] @ w[:, :, 2].T

    def step(self, x: torch.Tensor, state: State) -> torch.Tensor:
        x2, x1 = state.get(self, (torch.zeros_like(x), torch.zeros_like(x)))
        w = self.weight
        state[self] = (x1, x)
        return (x2 @ w[:, :, 0].T + x1 @ w[:, :, 1].T) + x @ w[:, :, 2].T


class Delay1(nn.Module):
    """Delays a sequence by one step (zero first), to align a path with a CausalConv3."""

    latency = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.new_zeros((1, *x.shape[1:])), x[:-1]])

    def step(self, x: torch.Tensor, state: State) -> torch.Tensor:
        prev = state.get(self)
        state[self] = x
        return torch.zeros_like(x) if prev is None else prev


class LMUMemory(nn.Module):
    """Fixed LMU memory ``m[t] = A_d m[t-1] + B_d u[t]`` of order d over ``theta`` steps.

    Parallel mode: FFT convolution in ``fft_dtype``; None (default) picks float32 for
    float32/half input on CUDA (cuFFT; its deviation from float64 is ~3e-7 of max|m|,
    bounded in tests/test_model.py) and float64 everywhere else, so that the CPU path and
    the exactness tests agree with the float64 recurrence (streaming) to ~1e-12 before the
    cast back to the input dtype.  Set ``fft_dtype = torch.float64`` to force float64.
    A_d (d, d) and B_d (d,) are fixed buffers, never trained and not saved.
    """

    def __init__(self, order: int, theta: float):
        super().__init__()
        a_d, b_d = lmu_discrete(order, theta)
        self.register_buffer("A", torch.from_numpy(a_d), persistent=False)
        self.register_buffer("B", torch.from_numpy(b_d), persistent=False)
        self.fft_dtype: torch.dtype | None = None
        self._impulse: torch.Tensor | None = None
        self._on_device: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def impulse(self, steps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Impulse response ``H[k] = A_d^k B_d``, (steps, d), computed in float64, cached
        (also per device and dtype, so that CUDA runs copy it once)."""
        if self._impulse is None or self._impulse.shape[0] < steps:
            h = impulse_response(self.A.cpu().numpy(), self.B.cpu().numpy(), steps)
            self._impulse = torch.from_numpy(np.ascontiguousarray(h))
            self._on_device.clear()
        key = (self.A.device, dtype)
        if key not in self._on_device:
            self._on_device[key] = self._impulse.to(device=self.A.device, dtype=dtype)
        return self._on_device[key][:steps]

    def compute_dtype(self, u: torch.Tensor) -> torch.dtype:
        """The FFT's dtype for input ``u`` (see the class docstring)."""
        if self.fft_dtype is not None:
            return self.fft_dtype
        return torch.float32 if u.is_cuda and u.dtype != torch.float64 else torch.float64

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u: (steps, batch) -> m: (steps, batch, d) in u's dtype."""
        m = memory_fft(u.T, self.impulse(u.shape[0], self.compute_dtype(u)))  # (batch, steps, d)
        return m.transpose(0, 1).to(u.dtype)

    def step(self, u: torch.Tensor, state: State) -> torch.Tensor:
        """u: (batch,) -> m: (batch, d)."""
        m = state.get(self)
        if m is None:
            m = torch.zeros(u.shape[0], self.A.shape[0], dtype=torch.float64, device=u.device)
        state[self] = m = memory_step(m, u, self.A, self.B)
        return m.to(u.dtype)
