"""Power-of-two quantisation: integer mantissas with one exponent per matrix.

A matrix ``w`` is represented as ``sum_k m_k * 2**e_k`` with integer mantissas ``m_k`` of
``bits`` bits (signed) and exponents ``e_1 > e_2 > ...``: one term is the usual
"8-bit weight with an exponent" of Loihi-style synapses; each extra term is one more
synapse per connection that carries the residual of the terms before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QuantizedTerm:
    """``mantissa * 2**exponent``; mantissa: int array with |m| <= 2**(bits-1) - 1."""

    mantissa: np.ndarray
    exponent: int
    bits: int

    @property
    def value(self) -> np.ndarray:
        return self.mantissa.astype(np.float64) * 2.0**self.exponent


def exponent_for(w: np.ndarray, bits: int) -> int:
    """Smallest exponent e with ``max|w| / 2**e <= 2**(bits-1) - 1`` (0 for an all-zero w)."""
    peak = float(np.max(np.abs(w))) if w.size else 0.0
    if peak == 0.0:
        return 0
    return int(np.ceil(np.log2(peak / (2 ** (bits - 1) - 1))))


def quantize_term(w: np.ndarray, bits: int, exponent: int | None = None) -> QuantizedTerm:
    """Round to nearest on the grid ``2**exponent`` (chosen to fit ``bits`` if not given)."""
    if bits < 2:
        raise ValueError(f"need at least 2 bits, got {bits}")
    e = exponent_for(w, bits) if exponent is None else exponent
    limit = 2 ** (bits - 1) - 1
    m = np.clip(np.rint(np.asarray(w, dtype=np.float64) / 2.0**e), -limit, limit)
    dtype = np.int8 if bits <= 8 else np.int16 if bits <= 16 else np.int32 if bits <= 32 else np.int64
    return QuantizedTerm(m.astype(dtype), e, bits)


def quantize_terms(w: np.ndarray, bits: int, terms: int = 1) -> list[QuantizedTerm]:
    """``terms`` quantised terms whose sum approximates w; each quantises the residual."""
    out: list[QuantizedTerm] = []
    residual = np.asarray(w, dtype=np.float64)
    for _ in range(terms):
        if not np.any(residual):
            break
        term = quantize_term(residual, bits)
        out.append(term)
        residual = residual - term.value
    return out or [quantize_term(residual, bits)]


def dequantize(terms: list[QuantizedTerm]) -> np.ndarray:
    """The represented matrix: the sum of the terms' values, float64."""
    return np.sum([t.value for t in terms], axis=0)


def quantize_to_grid(b: np.ndarray, exponent: int) -> np.ndarray:
    """Round a vector (a bias) to the grid ``2**exponent``, float64."""
    return np.rint(np.asarray(b, dtype=np.float64) / 2.0**exponent) * 2.0**exponent


def impulse_response_error(
    a: np.ndarray, b: np.ndarray, a_q: np.ndarray, b_q: np.ndarray, steps: int
) -> float:
    """Relative error of the memory's impulse response over ``steps`` steps.

    ``||H_q - H||_F / ||H||_F`` with ``H[k] = A^k B`` (float64).
    """
    x, xq = b.astype(np.float64), b_q.astype(np.float64)
    num = den = 0.0
    for _ in range(steps):
        num += float(np.sum((xq - x) ** 2))
        den += float(np.sum(x**2))
        x, xq = a @ x, a_q @ xq
    return float(np.sqrt(num / den))
