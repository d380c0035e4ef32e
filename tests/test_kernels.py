"""Fused Triton LIF kernels, run by Triton's interpreter on the CPU (never skipped: CI has no
GPU, and these tests are what proves the kernels)."""

from __future__ import annotations

import pytest
import torch

from lmuformer import build_model
from lmuformer.functional import lif_triton
from lmuformer.functional.lif import LIFParams, lif_sequence
from lmuformer.functional.lif_triton import lif_sequence_triton
from lmuformer.model.calibrate import activate


def _grads(fn, x: torch.Tensor, gz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    z = fn(x)
    (gx,) = torch.autograd.grad(z, x, gz)
    return z, gx


@pytest.mark.parametrize("v_th", [1.0, 0.5, 0.3])
def test_kernel_spikes_bit_identical_and_gradients_close(v_th: float) -> None:
    g = torch.Generator().manual_seed(int(v_th * 10))
    x = torch.randn(37, 3, 70, generator=g) * 2  # N = 210: two programs, the second one masked
    p = LIFParams(v_th=v_th)
    for gz in (torch.randn(x.shape, generator=g), torch.rand(x.shape, generator=g)):
        z_ref, gx_ref = _grads(lambda t: lif_sequence(t, p), x, gz)
        z, gx = _grads(lambda t: lif_sequence_triton(t, v_th, p.dt_over_tau, interpret=True), x, gz)
        assert z.dtype == torch.float32 and torch.equal(z, z_ref)
        assert 0 < z.sum() < z.numel()
        # 1e-6 relative to the gradient's scale (measured: <= 3.2e-7 of the max, 6e-8 in norm).
        # Not element by element: the surrogate (1 - s) s loses all relative precision where
        # s = sigmoid(4 (v - v_th)) rounds near 1, so one ulp of exp (Triton's vs torch's)
        # moves such a tiny entry by up to 1e-2 of itself -- the float32 torch path is no
        # closer to the exact (float64) value there.
        torch.testing.assert_close(gx, gx_ref, rtol=1e-6, atol=1e-6 * float(gx_ref.abs().max()))
        assert float((gx - gx_ref).norm() / gx_ref.norm()) < 1e-6


def test_kernel_half_inputs_integrate_in_float32() -> None:
    x = torch.randn(20, 2, 9, generator=torch.Generator().manual_seed(3)) * 2
    p = LIFParams()
    for dtype in (torch.bfloat16, torch.float16):
        xh = x.to(dtype)
        z = lif_sequence_triton(xh, 1.0, 0.5, interpret=True)
        assert torch.equal(z, lif_sequence(xh, p)) and torch.equal(z, lif_sequence(xh.float(), p))
        xg = xh.clone().requires_grad_()
        lif_sequence_triton(xg, 1.0, 0.5, interpret=True).sum().backward()
        assert xg.grad.dtype == dtype and xg.grad.abs().sum() > 0


def test_kernel_no_grad_and_empty() -> None:
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(lif_sequence_triton(x, 1.0, 0.5, interpret=True), lif_sequence(x, LIFParams()))
    assert lif_sequence_triton(torch.zeros(0, 4), 1.0, 0.5, interpret=True).shape == (0, 4)
    with pytest.raises(TypeError):
        lif_sequence_triton(x.double(), 1.0, 0.5, interpret=True)


def test_knob_routes_the_model_through_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRITON_INTERPRET=1 (read at call time through triton.knobs) sends a CPU model's LIF
    layers to the interpreted kernels: same logits bit for bit, same gradients within 1e-6."""
    torch.manual_seed(0)
    model = activate(build_model("tiny")).train()
    x = torch.rand(2, 8, 8)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model(x)
        out.pow(2).sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not lif_triton.supports(x)
    ref, ref_grads = run()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert lif_triton.supports(x) and not lif_triton.supports(x.double())
    spikes = lif_sequence(torch.randn(4, 3).requires_grad_(), LIFParams())
    assert type(spikes.grad_fn).__name__ == "_LIFTritonBackward"
    out, grads = run()
    assert torch.equal(out, ref)
    scale = max(float(r.abs().max()) for r in ref_grads)  # some entries are sums that cancel
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6 * scale)


def test_cuda_build_has_no_fma_contraction() -> None:
    """The kernels compile ahead of time for an H100/H200 (sm_90, no GPU needed) with the
    launch options, and the PTX holds no fused multiply-add: ``v + k (x - v)`` is rounded op
    by op as in PyTorch.  Triton's default (fusion on) would contract it: the check bites."""
    import re

    fma = re.compile(r"\bfma\.rn\.f32")
    ptx = lif_triton.compile_ptx(90)
    assert ".entry" in ptx["lif_fwd"] and ".entry" in ptx["lif_bwd"]
    assert not fma.search(ptx["lif_fwd"]) and not fma.search(ptx["lif_bwd"])
    assert fma.search(lif_triton.compile_ptx(90, enable_fp_fusion=True)["lif_fwd"])
