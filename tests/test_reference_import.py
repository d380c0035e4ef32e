"""Importing the reference implementation's checkpoints (zeyuliu1037/LMUFormer state_dicts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from lmuformer.checkpoint import load_checkpoint
from lmuformer.cli import cli
from lmuformer.data.speech_commands import REFERENCE_CLASSES, class_order
from lmuformer.errors import UserError
from lmuformer.functional.lmu import lmu_discrete
from lmuformer.reference_import import convert_state_dict, import_reference, unwrap_state_dict

F_IN, D, C = 6, 8, 35  # features, dim, classes
THETA = 128.0


def _bn(sd: dict, name: str, n: int, g: torch.Generator) -> None:
    sd[f"{name}.weight"] = torch.rand(n, generator=g) + 0.5
    sd[f"{name}.bias"] = torch.randn(n, generator=g)
    sd[f"{name}.running_mean"] = torch.randn(n, generator=g)
    sd[f"{name}.running_var"] = torch.rand(n, generator=g) + 0.5
    sd[f"{name}.num_batches_tracked"] = torch.tensor(7)


def _lmu_buffers(sd: dict, name: str, m: int) -> None:
    a, b = lmu_discrete(m, THETA)
    sd[f"{name}.A"] = torch.from_numpy(a).float()
    sd[f"{name}.B"] = torch.from_numpy(b[:, None]).float()
    sd[f"{name}.H"] = torch.zeros(m, 128)
    sd[f"{name}.fft_H"] = torch.zeros(m, 129, dtype=torch.complex64)


def reference_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the reference's names and shapes (src/lmu_rnn.py, src/blocks/), depth 1.

    Spiking: Conv1d4EBMs + SLMUMs (memory 2 d) + ConvFFNMs (hidden 4 d) + head_bn/head.
    ANN: Tokenizer (4 x Sequential(conv, ReLU, Identity, BN)) + LMU (memory d) + ConvFFN + head.
    """
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    h = 4 * D
    if variant == "spiking":
        m = 2 * D
        sd["patch_embed.proj_conv.weight"] = w(D, F_IN, 3)
        for s in ("", "1", "2", "3"):
            _bn(sd, f"patch_embed.proj_bn{s}", D, g)
        for s in ("1", "2", "3"):
            sd[f"patch_embed.proj_conv{s}.weight"] = w(D, D, 3)
        sd["patch_embed.rpe_conv.weight"] = w(D, D, 3)
        _bn(sd, "block.0.attn.prev_bn", D, g)
        sd["block.0.attn.lmu.W_u.weight"], sd["block.0.attn.lmu.W_u.bias"] = w(1, D), w(1)
        sd["block.0.attn.lmu.W_h.weight"], sd["block.0.attn.lmu.W_h.bias"] = w(D, m + D), w(D)
        _lmu_buffers(sd, "block.0.attn.lmu", m)
        _bn(sd, "block.0.attn.lmu.bn_u", 1, g)
        _bn(sd, "block.0.attn.lmu.bn_m", m, g)
        _bn(sd, "block.0.attn.lmu.bn_h", D, g)
        sd["block.0.attn.proj_conv.weight"], sd["block.0.attn.proj_conv.bias"] = w(D, D, 1), w(D)
        _bn(sd, "block.0.attn.proj_bn", D, g)
        _bn(sd, "block.0.mlp.fc1_bn", D, g)
        sd["block.0.mlp.fc1_conv.weight"], sd["block.0.mlp.fc1_conv.bias"] = w(h, D, 1), w(h)
        _bn(sd, "block.0.mlp.fc2_bn", h, g)
        sd["block.0.mlp.fc2_conv.weight"], sd["block.0.mlp.fc2_conv.bias"] = w(D, h, 1), w(D)
        _bn(sd, "head_bn", D, g)
    else:
        m = D
        for k in range(4):
            sd[f"patch_embed.conv_layers.{k}.0.weight"] = w(D, F_IN if k == 0 else D, 3)
            _bn(sd, f"patch_embed.conv_layers.{k}.3", D, g)
        sd["patch_embed.rpe_conv.weight"] = w(D, D, 3)
        sd["block.0.attn.lmu.W_u.weight"], sd["block.0.attn.lmu.W_u.bias"] = w(1, D), w(1)
        sd["block.0.attn.lmu.W_h.weight"], sd["block.0.attn.lmu.W_h.bias"] = w(D, m + D), w(D)
        _lmu_buffers(sd, "block.0.attn.lmu", m)
        sd["block.0.attn.proj_conv.weight"], sd["block.0.attn.proj_conv.bias"] = w(D, D, 1), w(D)
        _bn(sd, "block.0.attn.proj_bn", D, g)
        sd["block.0.mlp.fc1_conv.weight"], sd["block.0.mlp.fc1_conv.bias"] = w(h, D, 1), w(h)
        _bn(sd, "block.0.mlp.fc1_bn", h, g)
        sd["block.0.mlp.fc2_conv.weight"], sd["block.0.mlp.fc2_conv.bias"] = w(D, h, 1), w(D)
        _bn(sd, "block.0.mlp.fc2_bn", D, g)
    sd["head.weight"], sd["head.bias"] = w(C, D), w(C)
    return sd


# Expected correspondence, written out by hand from the two code bases (module -> module).
EXPECTED = {
    "spiking": {
        "patch_embed.proj_conv": "patch_embed.conv0",
        "patch_embed.proj_bn": "patch_embed.stages.0.0", "patch_embed.proj_conv1": "patch_embed.stages.0.2",
        "patch_embed.proj_bn1": "patch_embed.stages.1.0", "patch_embed.proj_conv2": "patch_embed.stages.1.2",
        "patch_embed.proj_bn2": "patch_embed.stages.2.0", "patch_embed.proj_conv3": "patch_embed.stages.2.2",
        "patch_embed.proj_bn3": "patch_embed.rpe.0", "patch_embed.rpe_conv": "patch_embed.rpe.2",
        "block.0.attn.prev_bn": "blocks.0.0.pre.0",
        "block.0.attn.lmu.W_u": "blocks.0.0.to_u.0", "block.0.attn.lmu.bn_u": "blocks.0.0.to_u.1",
        "block.0.attn.lmu.bn_m": "blocks.0.0.memory_out.0",
        "block.0.attn.lmu.W_h": "blocks.0.0.to_h.0", "block.0.attn.lmu.bn_h": "blocks.0.0.to_h.1",
        "block.0.attn.proj_conv": "blocks.0.0.proj.0", "block.0.attn.proj_bn": "blocks.0.0.proj.1",
        "block.0.mlp.fc1_bn": "blocks.0.1.layers.0", "block.0.mlp.fc1_conv": "blocks.0.1.layers.2",
        "block.0.mlp.fc2_bn": "blocks.0.1.layers.3", "block.0.mlp.fc2_conv": "blocks.0.1.layers.5",
        "head_bn": "head_in.0", "head": "head",
    },
    "ann": {
        **{f"patch_embed.conv_layers.{k}.0": f"patch_embed.stages.{k}.0" for k in range(4)},
        **{f"patch_embed.conv_layers.{k}.3": f"patch_embed.stages.{k}.2" for k in range(4)},
        "patch_embed.rpe_conv": "patch_embed.rpe",
        "block.0.attn.lmu.W_u": "blocks.0.0.to_u", "block.0.attn.lmu.W_h": "blocks.0.0.to_h",
        "block.0.attn.proj_conv": "blocks.0.0.proj.0", "block.0.attn.proj_bn": "blocks.0.0.proj.1",
        "block.0.mlp.fc1_conv": "blocks.0.1.layers.0", "block.0.mlp.fc1_bn": "blocks.0.1.layers.1",
        "block.0.mlp.fc2_conv": "blocks.0.1.layers.3", "block.0.mlp.fc2_bn": "blocks.0.1.layers.4",
        "head": "head",
    },
}


@pytest.mark.parametrize("variant", ["spiking", "ann"])
def test_mapping_tensor_by_tensor(variant: str) -> None:
    sd = reference_state_dict(variant)
    model, summary = convert_state_dict(sd, variant)
    cfg = model.config
    assert (cfg.variant, cfg.in_features, cfg.dim, cfg.num_classes, cfg.depth, cfg.mlp_ratio) == (
        variant, F_IN, D, C, 1, 4)
    assert cfg.memory_size == (2 * D if variant == "spiking" else D) and cfg.theta == THETA
    ours = model.state_dict()
    seen = set()
    for ref_key, value in sd.items():
        module, _, leaf = ref_key.rpartition(".")
        if leaf in ("A", "B", "H", "fft_H"):
            continue
        our_key = f"{EXPECTED[variant][module]}.{leaf}"
        expect = value[:, :, 0] if value.ndim == 3 and value.shape[2] == 1 else value
        assert torch.equal(ours[our_key], expect.to(ours[our_key].dtype)), ref_key
        seen.add(our_key)
    assert seen == set(ours), "every lmuformer tensor comes from the reference"
    assert summary["copied"] == len(ours) and summary["classes"] == list(REFERENCE_CLASSES)
    x = torch.randn(3, 20, F_IN)
    logits = model(x)
    assert logits.shape == (3, C) and torch.isfinite(logits).all()
    # float summation order differs (as test_model, relative to the size of these random-weight logits)
    assert (model.stream(x) - logits).abs().max() <= 1e-5 * logits.abs().max().clamp(min=10)


def test_kernel3_tap_order_matches_conv1d_pad1() -> None:
    """Position p of the reference's Conv1d(k3, padding 1) leaves the causal conv at step p + 1."""
    sd = reference_state_dict("spiking")
    model, _ = convert_state_dict(sd, "spiking")
    x = torch.randn(2, 12, F_IN)
    ref = F.conv1d(x.transpose(1, 2), sd["patch_embed.proj_conv.weight"], padding=1).transpose(1, 2)
    seq = torch.cat([x, x.new_zeros(2, 1, F_IN)], dim=1)  # one flush step
    ours = model.patch_embed.conv0(seq.transpose(0, 1)).transpose(0, 1)
    torch.testing.assert_close(ours[:, 1:], ref, rtol=1e-6, atol=1e-6)


def test_class_csv_permutes_head_rows(tmp_path: Path) -> None:
    sd = reference_state_dict("ann")
    sd["head.weight"], sd["head.bias"] = sd["head.weight"][:3], sd["head.bias"][:3]
    csv = tmp_path / "labels.csv"
    csv.write_text('index,mid,display_name\n0,/m/a,"go"\n1,/m/b,"yes"\n2,/m/c,"no"\n')
    out = tmp_path / "ann.pt"
    summary = import_reference(_save(tmp_path / "ref.pth", sd), "ann", out, csv)
    assert summary["classes"] == ["no", "yes", "go"] == class_order(["go", "yes", "no"])
    ckpt = load_checkpoint(out)
    assert ckpt.metrics["classes"] == ["no", "yes", "go"] and ckpt.metrics["source"] == "reference"
    head = ckpt.model.state_dict()["head.weight"]
    for row, name in enumerate(["no", "yes", "go"]):
        assert torch.equal(head[row], sd["head.weight"][["go", "yes", "no"].index(name)])


def test_reference_class_order() -> None:
    assert len(set(REFERENCE_CLASSES)) == 35
    assert REFERENCE_CLASSES[:4] == ("backward", "follow", "five", "bed") and REFERENCE_CLASSES[-1] == "one"
    assert class_order(["zzz", "one", "backward", "aaa"]) == ["backward", "one", "aaa", "zzz"]


def _save(path: Path, obj: object) -> str:
    torch.save(obj, path)
    return str(path)


def test_wrappers_are_opened() -> None:
    sd = reference_state_dict("spiking")
    wrapped = {"epoch": torch.tensor(3), "model": {f"module.{k}": v for k, v in sd.items()}}
    assert unwrap_state_dict({"state_dict": wrapped}).keys() == sd.keys()


def test_cli_imports_and_rejects_bad_keys(tmp_path: Path) -> None:
    sd = reference_state_dict("spiking")
    ref = _save(tmp_path / "best_model.pth", {f"module.{k}": v for k, v in sd.items()})
    runner = CliRunner()
    out = tmp_path / "imported.pt"
    res = runner.invoke(cli, ["import-reference", ref, "--variant", "spiking", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "35 classes" in res.output and load_checkpoint(out).config.dim == D

    from lmuformer.cli import main

    def run(args: list[str]) -> tuple[int, str]:
        import sys
        from io import StringIO

        old_argv, old_err = sys.argv, sys.stderr
        sys.argv, sys.stderr = ["lmuf", *args], StringIO()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        finally:
            err, sys.argv, sys.stderr = sys.stderr.getvalue(), old_argv, old_err
        return code, err

    broken = dict(sd)
    del broken["block.0.attn.lmu.bn_m.running_var"]
    code, err = run(["import-reference", _save(tmp_path / "missing.pth", broken), "--variant", "spiking",
                     "-o", str(tmp_path / "x.pt")])
    assert code == 2 and err.count("\n") == 1 and "'block.0.attn.lmu.bn_m.running_var'" in err
    assert err.startswith("error: ")
    code, err = run(["import-reference", ref, "--variant", "ann", "-o", str(tmp_path / "x.pt")])
    assert code == 2 and "'patch_embed.conv_layers.0.0.weight'" in err
    extra = dict(sd, **{"block.0.attn.extra.weight": torch.zeros(2)})
    code, err = run(["import-reference", _save(tmp_path / "extra.pth", extra), "--variant", "spiking",
                     "-o", str(tmp_path / "x.pt")])
    assert code == 2 and "unexpected key 'block.0.attn.extra.weight'" in err
    bad_shape = dict(sd, **{"block.0.mlp.fc2_conv.bias": torch.zeros(D + 1)})
    with pytest.raises(UserError, match="'block.0.mlp.fc2_conv.bias' has shape"):
        convert_state_dict(bad_shape, "spiking")
    assert not (tmp_path / "x.pt").exists()
    np.testing.assert_equal(load_checkpoint(out).metrics["variant"], "spiking")


def test_init_follows_reference() -> None:
    """trunc normal 0.02 / zero bias for the reference's nn.Linear layers (W_u, W_h, head); PyTorch's
    Conv1d default (U(+-1/sqrt(fan_in)) weight and bias) for its kernel-1 convs (proj, fc1, fc2)."""
    from lmuformer import build_model

    torch.manual_seed(0)
    model = build_model("scv2")
    mixer, channel = model.blocks[0]
    for layer in (model.head, mixer.to_u[0], mixer.to_h[0]):
        assert layer.weight.std().item() == pytest.approx(0.02, rel=0.1) and not layer.bias.any()
    for layer, std in ((mixer.proj[0], 0.036), (channel.layers[2], 0.036), (channel.layers[5], 0.018)):
        bound = layer.in_features ** -0.5
        assert layer.weight.std().item() == pytest.approx(std, rel=0.05)
        assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
        assert layer.bias.std().item() == pytest.approx(bound / 3**0.5, rel=0.25)
