"""Legendre Memory Unit state space (Voelker et al., NeurIPS 2019).

Continuous system ``dm/dt = A m + B u`` of order ``d`` over a window ``theta``
(both in time steps), discretised with a zero-order hold at ``dt = 1`` step:
``m[t] = A_d m[t-1] + B_d u[t]``.  The memory over a whole sequence is the causal
convolution of ``u`` with the impulse response ``H[k] = A_d^k B_d``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def lmu_continuous(order: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuous Legendre matrices ``A`` (d, d) and ``B`` (d,), float64, units 1/step."""
    q = np.arange(order, dtype=np.float64)
    r = (2.0 * q + 1.0) / theta
    i, j = np.meshgrid(q, q, indexing="ij")
    a = r[:, None] * np.where(i < j, -1.0, (-1.0) ** (i - j + 1.0))
    b = r * (-1.0) ** q
    return a, b


def zoh_discretize(a: np.ndarray, b: np.ndarray, dt: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Zero-order-hold discretisation: ``A_d = e^{A dt}``, ``B_d = A^-1 (A_d - I) B``.

    Computed with one augmented matrix exponential (as scipy.signal.cont2discrete).
    """
    d = a.shape[0]
    em = np.zeros((d + 1, d + 1))
    em[:d, :d] = a * dt
    em[:d, d] = b * dt
    ms = scipy.linalg.expm(em)
    return ms[:d, :d], ms[:d, d]


def lmu_discrete(order: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Discrete LMU matrices ``A_d`` (d, d) and ``B_d`` (d,) at one step, float64."""
    return zoh_discretize(*lmu_continuous(order, theta))


def impulse_response(a_d: np.ndarray, b_d: np.ndarray, steps: int) -> np.ndarray:
    """``H[k] = A_d^k B_d`` for k = 0..steps-1, shape (steps, d), float64."""
    h = np.empty((steps, b_d.shape[0]))
    x = b_d.copy()
    for k in range(steps):
        h[k] = x
        x = a_d @ x
    return h


def memory_fft(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Memory over a sequence by FFT convolution (parallel mode).

    u: (batch, T) input to the memory; h: (T', d) impulse response with T' >= T.
    Returns m: (batch, T, d) with ``m[t] = sum_k h[k] u[t-k]`` (zero initial state),
    computed in the dtype of ``h`` (use float64 for agreement with the recurrence).
    """
    steps = u.shape[1]
    n = 2 * steps
    uf = torch.fft.rfft(u.to(h.dtype), n=n, dim=1)  # (B, n/2+1)
    hf = torch.fft.rfft(h[:steps], n=n, dim=0)  # (n/2+1, d)
    return torch.fft.irfft(uf[:, :, None] * hf[None], n=n, dim=1)[:, :steps]


def memory_step(m: torch.Tensor, u: torch.Tensor, a_d: torch.Tensor, b_d: torch.Tensor) -> torch.Tensor:
    """One recurrence step ``m <- A_d m + B_d u``; m: (batch, d), u: (batch,)."""
    return m @ a_d.T + u.to(m.dtype)[:, None] * b_d[None]
