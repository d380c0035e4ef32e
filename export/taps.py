"""The LMU memory as delay taps: truncation and quantisation error of its impulse response.

The memory is linear and starts at rest, so ``m[t] = sum_k H[k] u[t-k]`` with the impulse
response ``H[k] = A^k B`` (k = 0, 1, ...; shape (steps, d), float64).  Keeping ``K`` taps drops
``H[K:]``.  Errors are relative Frobenius norms (as :func:`export.quantize.impulse_response_error`):

* ``truncation_error(h, K) = ||H[K:]|| / ||H||`` over the rows of ``h`` (the sample's
  ``frames + latency`` steps for the per-sample figure, a long horizon for endless streams);
* the realised error of quantised taps ``Q[k]`` (K of them) against the exact ``H`` over the
  horizon: ``||Q (zero-padded) - H|| / ||H||`` (truncation included).

``TAPS_BOUND`` is the default bound on the per-sample truncation error that picks ``K``.
"""

from __future__ import annotations

import numpy as np

from lmuformer.functional.lmu import impulse_response

TAPS_BOUND = 1e-6


def truncation_error(h: np.ndarray, taps: int) -> float:
    """``||h[taps:]||_F / ||h||_F`` (0 when ``taps >= len(h)``); h: (steps, d)."""
    tot = float(np.sum(h**2))
    if taps >= len(h) or tot == 0:
        return 0.0
    return float(np.sqrt(np.sum(h[taps:] ** 2) / tot))


def shortest_taps(h: np.ndarray, bound: float = TAPS_BOUND) -> int:
    """The smallest K >= 1 with ``truncation_error(h, K) <= bound``; at most ``len(h)``."""
    e = np.sum(h**2, axis=1)
    tot = float(e.sum())
    if tot == 0:
        return 1
    tail = np.sqrt(np.maximum(tot - np.cumsum(e), 0.0) / tot)  # tail[i]: error of K = i + 1
    ok = np.nonzero(tail <= bound)[0]
    return int(ok[0]) + 1 if ok.size else len(h)


def stream_horizon(taps: int, theta: float) -> int:
    """Steps over which the endless-stream error is measured: ``taps + 8 theta`` (H has decayed
    to ~1e-13 of its peak two windows after theta for the project's presets)."""
    return int(taps + 8 * max(theta, 1.0))


def realised_error(q: np.ndarray, h: np.ndarray) -> float:
    """``||Q - H|| / ||H||`` with Q: (K, d) zero-padded (or cut) to H's length (steps, d)."""
    full = np.zeros_like(h)
    n = min(len(q), len(h))
    full[:n] = q[:n]
    den = float(np.linalg.norm(h))
    return float(np.linalg.norm(full - h)) / den if den else 0.0


def taps_report(a: np.ndarray, b: np.ndarray, taps: int, steps: int, theta: float) -> dict:
    """Truncation errors of ``taps`` taps over one sample (``steps``) and over a stream."""
    horizon = max(steps, stream_horizon(taps, theta))
    h = impulse_response(a, b, horizon)
    return {
        "taps": taps,
        "max_delay": taps - 1,
        "steps": steps,
        "truncation_error": truncation_error(h[:steps], taps),
        "stream_truncation_error": truncation_error(h, taps),
        "stream_horizon": horizon,
        "bound": TAPS_BOUND,
    }
