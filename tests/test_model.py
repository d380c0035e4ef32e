"""Model: parameter counts, LMU matrices, LIF semantics, parallel == streaming."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from lmuformer import PRESETS, build_model
from lmuformer.functional.lif import LIFParams, lif_sequence, lif_step
from lmuformer.functional.lmu import (
    impulse_response,
    lmu_continuous,
    lmu_discrete,
    memory_fft,
    memory_step,
    zoh_discretize,
)
from lmuformer.model.calibrate import activate


@pytest.mark.parametrize(("name", "count"), [("scv2", 1_689_894), ("scv2-ann", 1_621_796)])
def test_parameter_counts_match_reference(name: str, count: int) -> None:
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == count


def test_continuous_matrices_closed_form() -> None:
    a, b = lmu_continuous(4, 10.0)
    for i in range(4):
        assert b[i] == pytest.approx((2 * i + 1) / 10.0 * (-1) ** i)
        for j in range(4):
            sign = -1.0 if i < j else (-1.0) ** (i - j + 1)
            assert a[i, j] == pytest.approx((2 * i + 1) / 10.0 * sign)


@pytest.mark.parametrize(("order", "theta"), [(8, 8.0), (64, 128.0), (512, 128.0)])
def test_zoh_matches_scipy(order: int, theta: float) -> None:
    a, b = lmu_continuous(order, theta)
    ad_ref, bd_ref, *_ = scipy.signal.cont2discrete(
        (a, b[:, None], np.ones((1, order)), np.zeros((1,))), dt=1.0, method="zoh"
    )
    ad, bd = lmu_discrete(order, theta)
    np.testing.assert_allclose(ad, ad_ref, atol=1e-10)
    np.testing.assert_allclose(bd, bd_ref[:, 0], atol=1e-10)


def test_zoh_other_step_matches_scipy() -> None:
    a, b = lmu_continuous(6, 9.0)
    ad_ref, bd_ref, *_ = scipy.signal.cont2discrete(
        (a, b[:, None], np.ones((1, 6)), np.zeros((1,))), dt=0.5, method="zoh"
    )
    ad, bd = zoh_discretize(a, b, dt=0.5)
    np.testing.assert_allclose(ad, ad_ref, atol=1e-12)
    np.testing.assert_allclose(bd, bd_ref[:, 0], atol=1e-12)


def test_scv2_memory_facts() -> None:
    ad, bd = lmu_discrete(512, 128.0)
    assert max(abs(np.linalg.eigvals(ad))) == pytest.approx(0.83, abs=0.01)
    assert abs(bd).max() == pytest.approx(0.10, abs=0.01)


def test_memory_fft_equals_recurrence() -> None:
    ad, bd = lmu_discrete(32, 20.0)
    h = torch.from_numpy(impulse_response(ad, bd, 60))  # longer than the input: only h[:50] is used
    u = (torch.rand(3, 50, generator=torch.Generator().manual_seed(0)) > 0.5).float()  # spikes, float32
    m_fft = memory_fft(u, h)  # computed in h's float64
    assert m_fft.shape == (3, 50, 32) and m_fft.dtype == torch.float64
    m = torch.zeros(3, 32, dtype=torch.float64)
    a_t, b_t = torch.from_numpy(ad), torch.from_numpy(bd)
    for t in range(50):
        m = memory_step(m, u[:, t], a_t, b_t)
        torch.testing.assert_close(m_fft[:, t], m, atol=1e-12, rtol=0)


@pytest.mark.parametrize(("order", "theta", "steps"), [(512, 128.0, 133), (256, 784.0, 789)])
def test_memory_fft_float32_deviation_bounded(order: int, theta: float, steps: int) -> None:
    """float32 FFT (what CUDA runs, cuFFT) vs float64, on spike input: measured <= 3.2e-7
    of max|m| for the scv2 and psmnist memories; bound 1e-6."""
    ad, bd = lmu_discrete(order, theta)
    h = torch.from_numpy(impulse_response(ad, bd, steps))
    u = (torch.rand(4, steps, generator=torch.Generator().manual_seed(0)) > 0.7).double()
    m64 = memory_fft(u, h)
    m32 = memory_fft(u.float(), h.float())
    assert m32.dtype == torch.float32
    assert float((m32.double() - m64).abs().max()) <= 1e-6 * float(m64.abs().max())


def test_lmu_memory_dtype_choice() -> None:
    from lmuformer.model.layers import LMUMemory

    mem = LMUMemory(16, 8.0)
    u = torch.rand(10, 3)
    assert mem.compute_dtype(u) == torch.float64  # CPU: float64, as the exactness tests need
    m64 = mem(u)
    mem.fft_dtype = torch.float32
    m32 = mem(u)
    assert m32.dtype == m64.dtype == torch.float32 and not torch.equal(m32, m64)
    torch.testing.assert_close(m32, m64, rtol=0, atol=1e-6)
    assert mem.impulse(4, torch.float32).shape == (4, 16)


def test_lif_sequence_equals_norse_steps() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, 7, generator=g) * 2
    for v_th in (1.0, 0.5):
        p = LIFParams(v_th=v_th)
        z_seq = lif_sequence(x, p)
        v = torch.zeros(5, 7)
        for t in range(40):
            z, v = lif_step(x[t], v, p)
            assert torch.equal(z, z_seq[t])
        assert z_seq.sum() > 0


def test_lif_semantics_by_hand() -> None:
    # v: 0.5*1.2=0.6; 0.6+0.5*(1.2-0.6)=0.9; 0.9+0.15=1.05 > 1 -> spike, reset; 0.6 ...
    z = lif_sequence(torch.full((4, 1), 1.2), LIFParams())
    assert z[:, 0].tolist() == [0.0, 0.0, 1.0, 0.0]
    # strict threshold: v == v_th does not spike
    z = lif_sequence(torch.tensor([[2.0], [0.0]]), LIFParams(v_th=1.0))
    assert z[:, 0].tolist() == [0.0, 0.0]


class _Spike(torch.autograd.Function):
    """Heaviside forward (strict >), derivative of sigmoid(4 v) backward: the reference surrogate."""

    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, g):
        (v,) = ctx.saved_tensors
        s = torch.sigmoid(4.0 * v)
        return g * 4.0 * s * (1 - s)


def _lif_autograd(x: torch.Tensor, v_th: float = 1.0, k: float = 0.5) -> torch.Tensor:
    """The LIF written step by step for autograd, with the reset detached (the reference's
    ``detach_reset``): the BPTT that ``lif_sequence``'s hand-written backward must equal."""
    v, out = torch.zeros_like(x[0]), []
    for xt in x:
        v = v + k * (xt - v)
        z = _Spike.apply(v - v_th)
        out.append(z)
        v = v * (1 - z.detach())
    return torch.stack(out)


def test_lif_surrogate_gradient_by_hand() -> None:
    # one step, x = 2: v = 1 = v_th (no spike); dz/dx = k * 4 * sigmoid(0) * (1 - sigmoid(0)) = 0.5 * 4 / 4
    x = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    z = lif_sequence(x, LIFParams())
    assert z.dtype == torch.float64 and z.item() == 0.0
    z.sum().backward()
    assert x.grad.item() == 0.5  # slope alpha = 4: alpha = 2 would give 0.25
    # two steps, no spike: v0 = 0.5, v1 = 0.25; dz1/dx0 = sg(v1) * (1 - k) * k, dz1/dx1 = sg(v1) * k
    x = torch.tensor([[1.0], [0.0]], dtype=torch.float64, requires_grad=True)
    lif_sequence(x, LIFParams())[1].sum().backward()
    s = torch.sigmoid(torch.tensor(4 * (0.25 - 1), dtype=torch.float64))
    sg = (4 * s * (1 - s)).item()
    assert x.grad[:, 0].tolist() == pytest.approx([sg * 0.25, sg * 0.5], rel=1e-12)
    # a spike at step 0 (v0 = 1.5) resets v; the reset is detached, so z1 does not depend on x0
    x = torch.tensor([[3.0], [0.0]], dtype=torch.float64, requires_grad=True)
    z = lif_sequence(x, LIFParams())
    assert z[:, 0].tolist() == [1.0, 0.0]
    z[1].sum().backward()
    s = torch.sigmoid(torch.tensor(-4.0, dtype=torch.float64))  # v1 = 0: sigmoid(4 (0 - 1))
    assert x.grad[0, 0].item() == 0.0
    assert x.grad[1, 0].item() == pytest.approx(0.5 * 4 * s.item() * (1 - s.item()), rel=1e-12)
    x.grad = None
    lif_sequence(x, LIFParams()).sum().backward()
    # dz0/dx0 = k * sg(0.5) (dz1/dx0 = 0); dz1/dx1 = k * sg(-1)
    s0 = torch.sigmoid(torch.tensor(2.0, dtype=torch.float64))  # v0 = 1.5: sigmoid(4 * 0.5)
    sg0 = 4 * s0 * (1 - s0)
    assert x.grad[0, 0].item() == pytest.approx(0.5 * sg0.item(), rel=1e-12)
    assert x.grad[1, 0].item() == pytest.approx(0.5 * 4 * s.item() * (1 - s.item()), rel=1e-12)


@pytest.mark.parametrize("v_th", [1.0, 0.5])
def test_lif_backward_equals_autograd_reference(v_th: float) -> None:
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(12, 3, 5, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    w = torch.randn(12, 3, 5, generator=g, dtype=torch.float64)  # a loss that weighs every step
    z = lif_sequence(x, LIFParams(v_th=v_th))
    (z * w).sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    z_ref = _lif_autograd(x_ref, v_th)
    (z_ref * w).sum().backward()
    assert torch.equal(z, z_ref) and 0 < z.sum() < z.numel()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_stream_equals_parallel(name: str) -> None:
    model = activate(build_model(name)).double()
    cfg = model.config
    frames = min(cfg.frames, 40)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, frames, cfg.in_features, generator=g, dtype=torch.float64)
    with torch.no_grad():
        per_step = model.step_outputs(x)
        logits = model(x)
    streamed_steps = model.stream_outputs(x)
    assert per_step.shape == (2, frames + model.latency, cfg.num_classes)
    assert (per_step - streamed_steps).abs().max() <= 1e-4
    assert (logits - model.stream(x)).abs().max() <= 1e-4
    assert per_step.std() > 0  # the model is not silent


@pytest.mark.parametrize("name", ["tiny", "digits", "scv2"])
def test_lean_stream_equals_layer_by_layer_stream(name: str) -> None:
    """The lean step (BN folded, preallocated state) gives the same spikes as the layer-by-layer
    step: in float64 the head outputs agree to 1e-12 (measured: bit for bit), where a single
    flipped spike would move them by ~1e-2."""
    model = activate(build_model(name)).double()
    cfg = model.config
    x = torch.rand(2, min(cfg.frames, 16), cfg.in_features, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(1))
    ref = model.stream_outputs(x, lean=False)
    out = model.stream_outputs(x, lean=True)
    assert ref.std() > 0 and out.dtype == torch.float64
    assert float((out - ref).abs().max()) <= 1e-12
    assert torch.equal(model.stream(x), model.stream_outputs(x).mean(dim=1))  # lean is the default


def test_lean_stepper_reset_and_eval_only() -> None:
    from lmuformer.model.lean_stream import LeanStep

    model = activate(build_model("tiny")).double()
    x = torch.rand(1, 8, 8, dtype=torch.float64)
    fast = LeanStep(model, batch=1)
    first = torch.stack([fast.step(f).clone() for f in x.unbind(1)])
    fast.reset()
    again = torch.stack([fast.step(f).clone() for f in x.unbind(1)])
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="spiking"):
        LeanStep(build_model("tiny-ann").eval())
    with pytest.raises(RuntimeError, match="eval mode"):
        model.train().stream(x)


def test_full_length_scv2_stream_equals_parallel() -> None:
    model = activate(build_model("scv2")).double()
    x = torch.rand(1, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        assert (model(x) - model.stream(x)).abs().max() <= 1e-4


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError, match="expected input"):
        build_model("tiny")(torch.zeros(1, 8, 3))
