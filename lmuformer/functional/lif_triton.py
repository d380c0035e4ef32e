"""Fused box-LIF kernels in Triton: one launch per layer per pass, time looped inside.

The same neuron as :func:`lmuformer.functional.lif.lif_sequence` (read its docstring), on a
time-first tensor ``x (T, ...)`` flattened to ``(T, N)``; each program owns ``BLOCK``
neurons and walks the ``T`` steps with its membrane in registers.

Forward, per step, in float32 and in exactly the float ops (and order) of
``_LIFSequence.forward``: ``v_pre = v + k * (x - v)``, ``z = v_pre > v_th``,
``v = v_pre * (1 - z)``.  Each op is rounded on its own: kernels are compiled with
``enable_fp_fusion=False`` (no fused multiply-add contraction of ``v + k * (...)``), so
the spikes are bit-identical to the PyTorch path.  ``v_pre`` (T, N) float32 is stored
for the backward only when a gradient is needed.

Backward (sigmoid surrogate, slope ``SURROGATE_ALPHA`` = 4, reset detached), one reverse
sweep: ``s = sigmoid(4 (v_pre[t] - v_th))``, ``g = (1 - s) s 4 gz[t] + (1 - k)(1 - z[t]) g'``
with ``g'`` the previous (later) step's ``g``, and ``dx[t] = k g``.  Equal to the PyTorch
backward within float32 rounding (tested: 1e-6 relative).

Inputs of dtype float16/bfloat16 (autocast) are read and integrated in float32; spikes
come out in float32.  Backends: CUDA tensors use compiled kernels; CPU tensors run the
same kernels under Triton's interpreter (``TRITON_INTERPRET=1`` or ``interpret=True``),
which executes each op in NumPy float32 (no contraction either) -- that is how the tests
prove the kernels on machines without a GPU.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - triton ships with torch on Linux
    triton = tl = None

SURROGATE_ALPHA = 4.0  # as lif.SURROGATE_ALPHA (kept here to avoid an import cycle)
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def available() -> bool:
    """True when Triton can be imported."""
    return triton is not None


def interpret_requested() -> bool:
    """Triton's ``runtime.interpret`` knob (env ``TRITON_INTERPRET``, read at call time)."""
    if not available():
        return False
    knobs = getattr(triton, "knobs", None)  # triton >= 3.4; older ones read the variable
    if knobs is None:
        return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
    return bool(knobs.runtime.interpret)


def supports(x: torch.Tensor) -> bool:
    """Whether :func:`lif_sequence_triton` runs on ``x`` by default: a floating tensor
    (not float64) on CUDA, or on the CPU while the interpreter is requested."""
    if x.dtype not in _FLOATS or x.ndim < 1 or not available():
        return False
    return x.is_cuda or (x.device.type == "cpu" and interpret_requested())


def _lif_fwd(x_ptr, z_ptr, vs_ptr, T, N, v_th, k, SAVE: tl.constexpr, BLOCK: tl.constexpr):
    """Forward over T steps for BLOCK neurons: z (T, N) float32, v_pre (T, N) when SAVE."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v = tl.full([BLOCK], 0.0, tl.float32)
    x_ptr += offs
    z_ptr += offs
    vs_ptr += offs
    for _ in range(T):
        xt = tl.load(x_ptr, mask=mask, other=0.0).to(tl.float32)
        dv = xt - v
        dv = dv * k
        vt = v + dv
        zt = (vt > v_th).to(tl.float32)
        tl.store(z_ptr, zt, mask=mask)
        if SAVE:
            tl.store(vs_ptr, vt, mask=mask)
        keep = 1.0 - zt
        v = vt * keep
        x_ptr += N
        z_ptr += N
        vs_ptr += N


def _lif_bwd(gz_ptr, vs_ptr, gx_ptr, T, N, v_th, k, alpha, BLOCK: tl.constexpr):
    """Backward, last step first: dx (T, N) float32 from dL/dz (T, N) and v_pre (T, N)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    last = (T - 1).to(tl.int64) * N
    gz_ptr += last + offs
    vs_ptr += last + offs
    gx_ptr += last + offs
    carry = tl.full([BLOCK], 0.0, tl.float32)  # dL/dv_pre at the later step
    leak = 1.0 - k
    for _ in range(T):
        vt = tl.load(vs_ptr, mask=mask, other=0.0)
        gzt = tl.load(gz_ptr, mask=mask, other=0.0).to(tl.float32)
        s = 1.0 / (1.0 + tl.exp(-((vt - v_th) * alpha)))  # tl.sigmoid's formula, builtins only
        g = (1.0 - s) * s * alpha * gzt
        a = (1.0 - (vt > v_th).to(tl.float32)) * leak
        g = g + a * carry
        tl.store(gx_ptr, g * k, mask=mask)
        carry = g
        gz_ptr -= N
        vs_ptr -= N
        gx_ptr -= N


@functools.cache
def _kernels(interpret: bool) -> tuple[Any, Any]:
    """(forward, backward): compiled with ``triton.jit`` or wrapped for the interpreter.

    Wrapped lazily, not by a decorator at import: ``triton.jit`` picks compiled or
    interpreted when it wraps, so a decorator would freeze what TRITON_INTERPRET said at
    import time.  The kernels call only Triton builtins (no ``@jit`` helpers of
    ``triton.language.standard`` such as ``tl.zeros``/``tl.sigmoid``), which is what lets
    the interpreter run them in a process that imported Triton without TRITON_INTERPRET."""
    if interpret:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(_lif_fwd), InterpretedFunction(_lif_bwd)
    return (triton.jit(_lif_fwd, do_not_specialize=_NO_SPECIALIZE),
            triton.jit(_lif_bwd, do_not_specialize=_NO_SPECIALIZE))


# Compile options of every CUDA launch.  enable_fp_fusion=False: no FMA contraction (the
# bit-exactness of the forward depends on it; tests/test_kernels.py checks the PTX).
# T and N are never specialised (Triton would turn a value 1 into a constant).
_OPTIONS = {"num_warps": 4, "enable_fp_fusion": False}
_NO_SPECIALIZE = ["T", "N"]
_SIGNATURES = {
    "lif_fwd": ({"x_ptr": "*fp32", "z_ptr": "*fp32", "vs_ptr": "*fp32", "T": "i32", "N": "i32",
                 "v_th": "fp32", "k": "fp32", "SAVE": "constexpr", "BLOCK": "constexpr"},
                {"SAVE": True, "BLOCK": 128}),
    "lif_bwd": ({"gz_ptr": "*fp32", "vs_ptr": "*fp32", "gx_ptr": "*fp32", "T": "i32", "N": "i32",
                 "v_th": "fp32", "k": "fp32", "alpha": "fp32", "BLOCK": "constexpr"}, {"BLOCK": 128}),
}


def compile_ptx(arch: int = 90, **overrides: Any) -> dict[str, str]:
    """PTX of both kernels compiled ahead of time for CUDA compute capability ``arch`` (90:
    H100/H200) with the launch options (``overrides`` replace some); needs no GPU."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    out = {}
    for name, fn in (("lif_fwd", _lif_fwd), ("lif_bwd", _lif_bwd)):
        sig, const = _SIGNATURES[name]
        src = ASTSource(triton.jit(fn, do_not_specialize=_NO_SPECIALIZE), sig, const)
        kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={**_OPTIONS, **overrides})
        out[name] = kernel.asm["ptx"]
    return out


def _block(n: int) -> int:
    """Neurons per program: small blocks keep small batches spread over the GPU's SMs."""
    return 128 if n <= 64 * 1024 else 512


def _launch(kernel: Any, grid: tuple[int], interpret: bool, *args: Any, **meta: Any) -> None:
    if interpret:
        kernel[grid](*args, **meta)
    else:
        kernel[grid](*args, **meta, **_OPTIONS)


class _LIFTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, v_th: float, k: float, interpret: bool) -> torch.Tensor:
        steps = x.shape[0]
        xf = x.reshape(steps, x[0].numel() if steps else 0).contiguous()
        n = xf.shape[1]
        z = torch.empty(xf.shape, dtype=torch.float32, device=x.device)
        save = bool(ctx.needs_input_grad[0])
        vs = torch.empty_like(z) if save else z  # z as a placeholder when nothing is saved
        block = _block(n)
        if steps and n:
            _launch(_kernels(interpret)[0], ((n + block - 1) // block,), interpret,
                    xf, z, vs, steps, n, float(v_th), float(k), SAVE=save, BLOCK=block)
        if save:
            ctx.save_for_backward(vs)
        ctx.v_th, ctx.k, ctx.interpret, ctx.shape, ctx.dtype = v_th, k, interpret, x.shape, x.dtype
        return z.reshape(x.shape)

    @staticmethod
    def backward(ctx, gz: torch.Tensor):
        (vs,) = ctx.saved_tensors
        steps, n = vs.shape
        gzf = gz.reshape(steps, n).contiguous()
        gx = torch.empty((steps, n), dtype=torch.float32, device=vs.device)
        block = _block(n)
        if steps and n:
            _launch(_kernels(ctx.interpret)[1], ((n + block - 1) // block,), ctx.interpret,
                    gzf, vs, gx, steps, n, float(ctx.v_th), float(ctx.k), SURROGATE_ALPHA, BLOCK=block)
        return gx.reshape(ctx.shape).to(ctx.dtype), None, None, None


def lif_sequence_triton(x: torch.Tensor, v_th: float, k: float,
                        interpret: bool | None = None) -> torch.Tensor:
    """Spikes (T, ...) float32 for x (T, ...) from rest, with the fused kernels.

    ``interpret``: None runs compiled kernels on CUDA tensors and the interpreter on CPU
    tensors; the interpreter needs CPU tensors.
    """
    if x.dtype not in _FLOATS:
        raise TypeError(f"the Triton LIF takes float32/float16/bfloat16, not {x.dtype}")
    if interpret is None:
        interpret = not x.is_cuda
    if interpret and x.device.type != "cpu":
        raise ValueError("Triton's interpreter runs on CPU tensors")
    return _LIFTriton.apply(x, v_th, k, interpret)
