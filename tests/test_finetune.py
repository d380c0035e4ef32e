"""Deployment-aware fine-tuning: its forward pass is the emulator's fixed-point run, spike for
spike, before and after training; the fine-tuned checkpoint exports to a graph that Lava and
the emulator run exactly as the fine-tuned model; bad input is one error line."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from backends.base import simulate
from backends.finetune import IntegerForward, _clip_ste, graph_weights
from backends.fixed_point import input_frac_for, lower
from export import model_to_nir
from export.graph import ExportOptions
from export.metadata import GraphMetadata
from lmuformer import build_model
from lmuformer.checkpoint import load_checkpoint, save_checkpoint
from lmuformer.data import load_test_split
from lmuformer.errors import UserError
from lmuformer.jobs.export import calibrate_export, export_model
from lmuformer.jobs.finetune import _same_integers, export_forward, finetune, finetune_loss, own_forward
from tests.graphs import active_model

ONE_TERM = ExportOptions(weight_terms=1, lmu_terms=1)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "tiny.pt"
    save_checkpoint(path, active_model("tiny"), {"dataset": "digits", "preset": "tiny"})
    return path


def test_graph_weights_equal_the_export():
    model = active_model("tiny")
    g = model_to_nir(model, ExportOptions(quantize=False))
    with torch.no_grad():
        gw = graph_weights(model)
    synapses = {n for n, v in g.nodes.items() if type(v).__name__ in ("Affine", "Linear")}
    assert set(gw) == synapses
    for name, (w, b) in gw.items():
        node = g.nodes[name]
        np.testing.assert_array_equal(w.numpy(), node.weight, err_msg=name)  # one walk: the same floats
        if b is not None:
            np.testing.assert_array_equal(b.numpy(), node.bias, err_msg=name)


def test_mantissa_rounding_passes_gradient_inside_the_range_only():
    v = torch.tensor([-130.0, -127.5, -127.4, -3.5, 0.2, 2.5, 126.6, 127.5, 127.6, 200.0],
                     dtype=torch.float64, requires_grad=True)
    m = _clip_ste(v)
    assert m.tolist() == [-127, -127, -127, -4, 0, 2, 127, 127, 127, 127]  # rint: half to even, as numpy
    m.sum().backward()
    assert v.grad.tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 0, 0]  # the range rounds to +-127: |v| <= 127.5


@pytest.mark.parametrize("terms", [(1, 2), (2, 2)])
def test_integer_forward_gradient_is_the_float_models(terms):
    """The integer forward's gradient (straight-through roundings, the model's sigmoid surrogate
    on the NIR membrane, reset detached, the first term only) is the float model's BPTT gradient
    up to the spikes that quantisation moves.  On 32 digits samples of the tiny preset (measured,
    terms (1, 2) / (2, 2)): the whole gradient has cosine 0.9987 / 0.9996 and norm ratio 0.996 /
    1.000; without the head's (the part that flows through the spikes' surrogate) 0.984 / 0.998
    and 1.016 / 0.978.  A surrogate 16 times too small gives 0.83 and 0.05 there, 1.5 times too
    large 0.79 and 2.3."""
    model = active_model("tiny").double().eval()
    x, y = load_test_split("digits", samples=32)
    _, forward = export_forward(model, ExportOptions(weight_terms=terms[0], lmu_terms=terms[1]),
                                input_frac_for(x))
    xt, yt = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y)
    grads = []
    for run in (lambda: forward(xt)[0], lambda: model(xt)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(run(), yt).backward()
        grads.append({n: p.grad.flatten().clone() for n, p in model.named_parameters()})
    for part in (list(grads[1]), [n for n in grads[1] if not n.startswith("head")]):
        got, want = (torch.cat([g[n] for n in part]) for g in grads)
        assert float(got @ want / (got.norm() * want.norm())) > 0.95, part
        assert 0.9 < float(got.norm() / want.norm()) < 1.1, part


def test_current_wraps_at_24_bits_as_the_emulators_lif():
    """u = 64 a_in wrapped as Lava's LIF wraps it (above 2**23 down, at or below -2**23 up): the
    emulator's step with du = 4095 (u is this step's input) on a_in around +-2**17 and 2**18."""
    from backends.emulator import lif_step_fixed
    from backends.finetune import _wrap_current

    a_in = np.array([0, 5, -5, 2**17 - 1, 2**17, 2**17 + 1, -(2**17) + 1, -(2**17), -(2**17) - 1,
                     2**18 - 1, 2**18, -(2**18) - 1, 3 * 2**17])
    zeros = np.zeros_like(a_in)
    u, _, _ = lif_step_fixed(zeros, zeros, a_in, 4095, 2048, zeros, 2**30)
    assert np.array_equal(_wrap_current(torch.as_tensor(a_in * 64.0)).numpy(), u)


@pytest.mark.parametrize("gain, negative_frames", [(38.0, 4), (60.0, 5)])
def test_integer_forward_wraps_and_clips_as_lava_beyond_its_range(gain, negative_frames):
    """Digits inputs times 38 (60), negative for the first 4 (5) frames: a_in of patch.stage0
    reaches 1.6e5 (2.8e5), beyond the +-2**17 at which Lava's 24-bit current u wraps (and far
    beyond Loihi's 16-bit a_in), and V hits its lower clip at -(2**23 - 1); the forward pass still
    spikes as the emulator (measured: without the wrap 186 spikes of all populations differ at
    38; without the lower clip 74 at 60)."""
    model = active_model("tiny")
    x, _ = load_test_split("digits", samples=24)
    x = x * gain
    x[:, :negative_frames] *= -1
    graph, logits, trains = _forward_trains(model, ExportOptions(), x)
    emu = simulate(graph, x, backend="emulator", precision="fixed", progress=False, record=True)
    assert emu.extra["peak_abs_a_in"]["patch.stage0.lif"] > 2**17
    for k, v in emu.extra["spike_trains"].items():
        assert np.array_equal(trains[k], v), f"{k}: {int((trains[k] != v).sum())} spikes differ"


def test_integer_forward_refuses_a_synapse_of_several_dense_terms():
    """A matrix wider than 8 bits lowers to several Dense terms of one synapse (not one synapse a
    term, as the export's weight terms): the forward pass cannot train through it."""
    model = active_model("tiny")
    graph = model_to_nir(model, ExportOptions(weight_bits=16))
    net = lower(graph, steps=model.config.frames + model.latency)
    wide = next(s for s in net.synapses if len(s.terms) > 1)
    with pytest.raises(UserError, match=rf"^{re.escape(wide.name)}: {len(wide.terms)} Dense terms; "
                                        "fine-tuning needs one per synapse$"):
        IntegerForward(model, net, 4)


def test_finetune_loss_is_cross_entropy_plus_tempered_distillation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 0.0, 0.0], [0.1, 0.1, 0.8]], dtype=torch.float64)
    teacher = torch.tensor([[1.0, 1.0, -2.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    ce = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
    p, q = torch.softmax(teacher / 3, 1), torch.log_softmax(logits / 3, 1)
    kl = (p * (torch.log(p) - q)).sum(1).mean()  # KL(teacher || student), per sample, batch mean
    assert torch.allclose(finetune_loss(logits, target, teacher, 0.25, 3.0), 0.75 * ce + 0.25 * 9 * kl)
    assert torch.allclose(finetune_loss(logits, target, None, 0.25, 3.0), ce)
    assert torch.allclose(finetune_loss(logits, target, teacher, 0.0, 3.0), ce)
    assert float(finetune_loss(logits, target, logits, 1.0, 3.0)) == pytest.approx(0.0, abs=1e-15)


def _forward_trains(model, opts, x):
    """(graph, logits, spike trains) of the model's export ``opts`` and its integer forward pass,
    whose integer weights and biases are asserted to be the lowering's of that export."""
    graph, forward = export_forward(model, opts, input_frac_for(x))
    assert _same_integers(forward, lower(graph, steps=forward.steps, input_frac_bits=input_frac_for(x)))
    with torch.no_grad():
        logits, trains = forward(torch.as_tensor(x))
    return graph, logits.numpy(), {k: v.numpy().astype(bool) for k, v in trains.items()}


def test_finetuned_export_spikes_as_the_finetuned_model(tiny_ckpt, tmp_path):
    # the default export: one term per learned weight, two per LMU matrix (four lowered synapses)
    metrics = finetune(str(tiny_ckpt), str(tmp_path / "ft"), ExportOptions(), epochs=1, lr=1e-3,
                       train_samples=192, test_samples=48, progress=False, select=False)
    assert (metrics["finetuned_for"]["weight_terms"], metrics["finetuned_for"]["lmu_terms"]) == (1, 2)
    assert metrics["finetune_input_frac_bits"] == 14  # digits pixels in [0, 1]
    # weight peaks crossed powers of two during training: the pass followed the export's exponents
    assert metrics["finetune_relowered"] > 0
    ck = load_checkpoint(tmp_path / "ft" / "best.pt")
    assert ck.metrics["finetuned_for"] == metrics["finetuned_for"]
    before = load_checkpoint(tiny_ckpt).model
    changed = any(not torch.equal(a, b) for a, b in zip(before.parameters(), ck.model.parameters(),
                                                         strict=True))
    assert changed  # it trained
    # the export takes the recorded options (one term) unless told otherwise; a mismatch is an error
    export_model(checkpoint=str(tmp_path / "ft" / "best.pt"), output=str(tmp_path / "ft.nir"))
    with pytest.raises(UserError, match="fine-tuned for another export"):
        export_model(checkpoint=str(tmp_path / "ft" / "best.pt"), output=str(tmp_path / "x.nir"),
                     weight_terms=2)
    assert not (tmp_path / "x.nir").exists()
    from export.io import read_graph

    graph = read_graph(tmp_path / "ft.nir")
    assert graph.metadata["weight_terms"] == 1 and graph.metadata["lmu_terms"] == 2
    assert any(n.endswith("memory.rec.term1") for n in graph.nodes)
    # the current grids calibrated at the start are pinned: the export of the result uses them
    pinned = metrics["finetuned_for"]["current_frac"]
    assert GraphMetadata.of(graph).current_frac == pinned and set(pinned.values()) - {10}, pinned
    x, _ = load_test_split("digits", samples=48)
    _, logits, trains = own_forward(tmp_path / "ft" / "best.pt", ExportOptions(), x, input_frac_for(x))
    emu = simulate(graph, x, backend="emulator", precision="fixed", progress=False, record=True)
    assert set(trains) == set(emu.extra["spike_trains"])
    for k, v in emu.extra["spike_trains"].items():
        assert np.array_equal(trains[k], v), f"{k}: {int((trains[k] != v).sum())} spikes differ"
    assert sum(v.sum() for v in trains.values()) > 1000
    assert np.array_equal(logits.argmax(1), emu.predictions)

    from tests.conftest import skip_without_lava

    skip_without_lava()
    lava = simulate(graph, x[:3], backend="lava", precision="fixed", progress=False, record=True)
    for k, v in lava.extra["spike_trains"].items():
        assert np.array_equal(v, trains[k][:3]), k


def test_clean_bn_variant_recomputes_statistics_and_still_lowers_as_trained(tiny_ckpt, tmp_path):
    """``clean_bn``: the BatchNorm running statistics change (recomputed on clean training items)
    and the kept state still lowers as its integer forward pass (checked inside ``finetune``)."""
    from lmuformer.data import load_dataset

    val = load_dataset("digits", "val")
    xv = torch.as_tensor(np.stack([np.asarray(val[i][0], np.float32) for i in range(24)]))
    yv = np.asarray([int(val[i][1]) for i in range(24)])
    seen = []  # on_epoch: the start and each epoch's forward pass, as the job validates them

    def on_epoch(epoch, fwd):
        with torch.no_grad():
            seen.append((epoch, float((fwd(xv)[0].argmax(1).numpy() == yv).mean())))

    metrics = finetune(str(tiny_ckpt), str(tmp_path / "ft"), ExportOptions(), epochs=1, lr=1e-3,
                       train_samples=64, test_samples=24, progress=False, select=False, clean_bn=True,
                       record_test=True, on_epoch=on_epoch, current_headroom=1.0)
    assert metrics["finetune_clean_bn"] and len(metrics["finetune_test_history"]) == 1
    # the pinned grids are calibrated at the headroom given (x1 here: finer than the default x2)
    start = model_to_nir(load_checkpoint(tiny_ckpt).model.eval(), ExportOptions())
    x1, x2 = (calibrate_export(start, "digits", headroom=h)[0] for h in (1.0, 2.0))
    assert metrics["finetuned_for"]["current_frac"] == x1 != x2
    assert seen == [(0, metrics["deployed_val_accuracy_before"]), (1, metrics["finetune_val_history"][0])]
    before = load_checkpoint(tiny_ckpt).model.state_dict()
    after = load_checkpoint(tmp_path / "ft" / "best.pt").model.state_dict()
    means = [k for k in before if k.endswith("running_mean")]
    assert means and all(not torch.equal(before[k], after[k]) for k in means)


@pytest.mark.parametrize("terms", [(2, 2), (1, 2), (3, 2)])
def test_several_terms_per_matrix_spike_as_the_emulator(terms):
    """Several-term exports (two or three terms a weight; the default: one, with two-term LMU
    matrices): the forward pass keeps each term's residual and spikes as the emulator's
    fixed-point run."""
    model = active_model("tiny")
    x, _ = load_test_split("digits", samples=24)
    opts = ExportOptions(weight_terms=terms[0], lmu_terms=terms[1])
    graph, logits, trains = _forward_trains(model, opts, x)
    assert any(n.endswith(f".term{max(terms) - 1}") for n in graph.nodes)
    emu = simulate(graph, x, backend="emulator", precision="fixed", progress=False, record=True)
    for k, v in emu.extra["spike_trains"].items():
        assert np.array_equal(trains[k], v), f"{k}: {int((trains[k] != v).sum())} spikes differ"
    assert sum(v.sum() for v in trains.values()) > 500
    assert np.array_equal(logits.argmax(1), emu.predictions)


def test_bad_input_is_one_error_and_writes_nothing(tiny_ckpt, tmp_path):
    ann = tmp_path / "ann.pt"
    save_checkpoint(ann, build_model("tiny-ann").eval(), {"dataset": "digits"})
    with pytest.raises(UserError, match="non-spiking"):
        finetune(str(ann), str(tmp_path / "a"), ONE_TERM, progress=False)
    with pytest.raises(UserError, match=r"^fine-tuning supports 8-bit terms only: --weight-bits 8 "
                                        r"--lmu-bits 8 \(got 6 and 8\)$"):
        finetune(str(tiny_ckpt), str(tmp_path / "b"), ExportOptions(weight_bits=6), progress=False)
    with pytest.raises(UserError, match=r"^fine-tuning for export needs a quantised export \(not --float\)$"):
        finetune(str(tiny_ckpt), str(tmp_path / "b"), ExportOptions(quantize=False), progress=False)
    with pytest.raises(UserError, match="^fine-tuning supports the recurrent LMU memory only"):
        finetune(str(tiny_ckpt), str(tmp_path / "b"), ExportOptions(lmu_form="taps"), progress=False)
    with pytest.raises(UserError, match="distill"):
        finetune(str(tiny_ckpt), str(tmp_path / "d"), ONE_TERM, distill=1.5, progress=False)
    with pytest.raises(UserError, match="select_on"):
        finetune(str(tiny_ckpt), str(tmp_path / "d"), ONE_TERM, select_on="val", progress=False)
    with pytest.raises(UserError, match="current headroom must be a number >= 1"):
        finetune(str(tiny_ckpt), str(tmp_path / "d"), ONE_TERM, current_headroom=0.5, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "d").exists()

    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root}
    out = ["--for-export", "--out", str(tmp_path / "c")]
    for args in (["finetune", str(ann), *out], ["finetune", str(tiny_ckpt), "--weight-bits", "6", *out],
                 ["finetune", str(tiny_ckpt), "--current-headroom", "nan", *out]):
        res = subprocess.run([sys.executable, "-m", "lmuformer.cli", *args], capture_output=True, text=True,
                             env=env, cwd=root, timeout=120)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert not (tmp_path / "c").exists()
