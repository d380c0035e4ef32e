"""Checkpoints of the reference implementation (zeyuliu1037/LMUFormer) as lmuformer checkpoints.

The reference saves ``model.state_dict()`` of a ``ConvLMU`` wrapped in ``nn.DataParallel``
(``best_model.pth``, keys prefixed ``module.``).  Its names, for block i (``depth`` blocks):

spiking (``slmu_rnn_ms_conv1d``)                     -> lmuformer
  patch_embed.proj_conv           Conv1d k3 (d, F, 3)   patch_embed.conv0
  patch_embed.proj_bn{,1,2}       BN(d)                 patch_embed.stages.{0,1,2}.0
  patch_embed.proj_conv{1,2,3}    Conv1d k3 (d, d, 3)   patch_embed.stages.{0,1,2}.2
  patch_embed.proj_bn3, rpe_conv  BN, Conv1d k3         patch_embed.rpe.0, patch_embed.rpe.2
  block.i.attn.prev_bn            BN(d)                 blocks.i.0.pre.0
  block.i.attn.lmu.W_u, bn_u      Linear(d, 1), BN(1)   blocks.i.0.to_u.0, blocks.i.0.to_u.1
  block.i.attn.lmu.bn_m           BN(m)                 blocks.i.0.memory_out.0
  block.i.attn.lmu.W_h, bn_h      Linear(m+d, d), BN(d) blocks.i.0.to_h.0, blocks.i.0.to_h.1
  block.i.attn.proj_conv, proj_bn Conv1d k1, BN(d)      blocks.i.0.proj.0, blocks.i.0.proj.1
  block.i.mlp.fc1_bn, fc1_conv    BN(d), Conv1d k1      blocks.i.1.layers.0, blocks.i.1.layers.2
  block.i.mlp.fc2_bn, fc2_conv    BN(h), Conv1d k1      blocks.i.1.layers.3, blocks.i.1.layers.5
  head_bn, head                   BN(d), Linear(d, C)   head_in.0, head

non-spiking (``lmu_rnn_conv1d``)
  patch_embed.conv_layers.k.0     Conv1d k3             patch_embed.stages.k.0   (k = 0..3)
  patch_embed.conv_layers.k.3     BN(d)                 patch_embed.stages.k.2
  patch_embed.rpe_conv            Conv1d k3             patch_embed.rpe
  block.i.attn.lmu.W_u, W_h       Linear                blocks.i.0.to_u, blocks.i.0.to_h
  block.i.attn.proj_conv, proj_bn Conv1d k1, BN         blocks.i.0.proj.0, blocks.i.0.proj.1
  block.i.mlp.fc1_conv, fc1_bn    Conv1d k1, BN(h)      blocks.i.1.layers.0, blocks.i.1.layers.1
  block.i.mlp.fc2_conv, fc2_bn    Conv1d k1, BN(d)      blocks.i.1.layers.3, blocks.i.1.layers.4
  head                            Linear(d, C)          head

Tensors are copied unchanged, except kernel-1 convolutions, whose (out, in, 1) weights lose
their last axis.  Kernel-3 weights keep ``nn.Conv1d``'s tap order: the reference's
``Conv1d(k3, pad 1)`` gives position p as ``W0 x[p-1] + W1 x[p] + W2 x[p+1]``, and
:class:`~lmuformer.model.layers.CausalConv3` emits the same position one step later (step
t = p + 1: ``W0 x[t-2] + W1 x[t-1] + W2 x[t]``).  Batch norms bring their running statistics and
``num_batches_tracked``.  The LMU buffers (``lmu.A``, ``lmu.B``, ``lmu.H``, ``lmu.fft_H``) are
not copied (lmuformer computes A_d, B_d in float64); ``A`` is checked against them to confirm
theta.  The reference fixes theta = 128 and the sequence length at 128 (``H`` has one column per
frame).  Dimensions (in_features, dim, memory, hidden, depth, classes) are read from the shapes.

Class order: row k of the reference head is class k of its label CSV (``index,mid,display_name``;
default: its Speech Commands CSV, :data:`~lmuformer.data.speech_commands.REFERENCE_CLASSES`).
The imported head's rows follow lmuformer's order of those words
(:func:`~lmuformer.data.speech_commands.class_order`), the dataset's label order; for the
reference's own CSV the two are the same.

Anything else (a missing or unexpected key, a wrong shape, another theta) is a one-line
:class:`~lmuformer.errors.UserError` naming the key.  Files are read with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmuformer.checkpoint import save_checkpoint
from lmuformer.data.speech_commands import REFERENCE_CLASSES, class_order
from lmuformer.errors import UserError
from lmuformer.functional.lmu import lmu_discrete
from lmuformer.model import LMUFormer, ModelConfig, build_model

VARIANTS = ("spiking", "ann")
REFERENCE_THETA = 128.0  # SLMUMs / LMU build their cell with theta = seq_len = 128
REFERENCE_FRAMES = 128
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LMU_BUFFERS = ("A", "B", "H", "fft_H")
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "module")


# ----------------------------------------------------------------------------- reading


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor state_dict inside ``obj``: nested ``{'model'|'state_dict'|...: sd}`` wrappers
    are opened and ``module.`` prefixes (DataParallel / DDP, possibly repeated) removed."""
    for _ in range(4):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None) if isinstance(
            obj, dict) else None
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{source} holds no state_dict (a dict of tensors)")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        name = str(key)
        while name.startswith("module."):
            name = name[len("module."):]
        out[name] = value
    return out


def read_reference(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The reference state_dict stored in ``path`` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"reference checkpoint not found: {path}")
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # torch raises many types for foreign or damaged files
        raise UserError(f"cannot read {path}: not a PyTorch file readable with weights_only=True, "
                        "or truncated/corrupt") from None
    return unwrap_state_dict(obj, str(path))


def read_label_csv(path: str | os.PathLike) -> list[str]:
    """Class names in index order from a label CSV with columns ``index`` and ``display_name``."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read class CSV {path}: {e}") from None
    if not rows or not {"index", "display_name"} <= set(rows[0]):
        raise UserError(f"class CSV {path} needs the columns index and display_name (the reference's "
                        "label CSV: index,mid,display_name)")
    try:
        by_index = {int(r["index"]): r["display_name"].strip() for r in rows}
    except (TypeError, ValueError):
        raise UserError(f"class CSV {path}: index column must hold integers") from None
    if sorted(by_index) != list(range(len(rows))):
        raise UserError(f"class CSV {path}: indices must be 0..{len(rows) - 1}, each once")
    names = [by_index[i] for i in range(len(rows))]
    if len(set(names)) != len(names):
        raise UserError(f"class CSV {path}: a display_name appears twice")
    return names


# ----------------------------------------------------------------------------- mapping


def _need(sd: dict[str, torch.Tensor], key: str, variant: str) -> torch.Tensor:
    if key not in sd:
        raise UserError(f"reference state_dict has no key {key!r} (expected for --variant {variant})")
    return sd[key]


def infer_config(sd: dict[str, torch.Tensor], variant: str) -> ModelConfig:
    """The ModelConfig whose shapes match the reference state_dict ``sd`` of ``variant``."""
    if variant not in VARIANTS:
        raise UserError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    first = "patch_embed.proj_conv.weight" if variant == "spiking" else "patch_embed.conv_layers.0.0.weight"
    w = _need(sd, first, variant)
    if w.ndim != 3 or w.shape[2] != 3:
        raise UserError(f"{first} has shape {tuple(w.shape)}; expected (dim, in_features, 3)")
    dim, in_features = int(w.shape[0]), int(w.shape[1])
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"block\.(\d+)\.", k))})
    if blocks != list(range(len(blocks))) or not blocks:
        raise UserError(f"reference state_dict has blocks {blocks}; expected block.0 .. block.N-1")
    w_h = _need(sd, "block.0.attn.lmu.W_h.weight", variant)
    fc1 = _need(sd, "block.0.mlp.fc1_conv.weight", variant)
    head = _need(sd, "head.weight", variant)
    memory = int(w_h.shape[1]) - dim
    hidden = int(fc1.shape[0])
    if memory <= 0 or hidden % dim:
        raise UserError(f"block.0 shapes (W_h {tuple(w_h.shape)}, fc1_conv {tuple(fc1.shape)}) do not fit "
                        f"dim {dim}")
    frames = REFERENCE_FRAMES
    h = sd.get("block.0.attn.lmu.H")
    if h is not None and h.ndim == 2:
        frames = int(h.shape[1])
    theta = REFERENCE_THETA
    a = sd.get("block.0.attn.lmu.A")
    if a is not None:
        if tuple(a.shape) != (memory, memory):
            raise UserError(f"block.0.attn.lmu.A has shape {tuple(a.shape)}; expected ({memory}, {memory})")
        for candidate in dict.fromkeys((REFERENCE_THETA, float(frames))):
            if np.allclose(a.double().numpy(), lmu_discrete(memory, candidate)[0], atol=1e-5):
                theta = candidate
                break
        else:
            raise UserError(f"block.0.attn.lmu.A is not the LMU matrix of order {memory} for theta "
                            f"{REFERENCE_THETA:g} or {frames}")
    return ModelConfig(variant=variant, in_features=in_features, frames=frames,
                       num_classes=int(head.shape[0]), dim=dim, memory_size=memory, theta=theta,
                       mlp_ratio=hidden // dim, depth=len(blocks))


def key_map(cfg: ModelConfig) -> dict[str, str]:
    """Reference key -> lmuformer key, for every tensor of a model of ``cfg`` (see module doc)."""
    pairs: list[tuple[str, str]] = []  # (reference module, lmuformer module), then per-kind suffixes
    convs: list[tuple[str, str]] = []
    bns: list[tuple[str, str]] = []
    linears: list[tuple[str, str]] = []
    if cfg.variant == "spiking":
        convs.append(("patch_embed.proj_conv", "patch_embed.conv0"))
        for k, suffix in enumerate(("", "1", "2")):
            bns.append((f"patch_embed.proj_bn{suffix}", f"patch_embed.stages.{k}.0"))
            convs.append((f"patch_embed.proj_conv{k + 1}", f"patch_embed.stages.{k}.2"))
        bns.append(("patch_embed.proj_bn3", "patch_embed.rpe.0"))
        convs.append(("patch_embed.rpe_conv", "patch_embed.rpe.2"))
        for i in range(cfg.depth):
            r, o = f"block.{i}", f"blocks.{i}"
            bns += [(f"{r}.attn.prev_bn", f"{o}.0.pre.0"), (f"{r}.attn.lmu.bn_u", f"{o}.0.to_u.1"),
                    (f"{r}.attn.lmu.bn_m", f"{o}.0.memory_out.0"), (f"{r}.attn.lmu.bn_h", f"{o}.0.to_h.1"),
                    (f"{r}.attn.proj_bn", f"{o}.0.proj.1"), (f"{r}.mlp.fc1_bn", f"{o}.1.layers.0"),
                    (f"{r}.mlp.fc2_bn", f"{o}.1.layers.3")]
            linears += [(f"{r}.attn.lmu.W_u", f"{o}.0.to_u.0"), (f"{r}.attn.lmu.W_h", f"{o}.0.to_h.0"),
                        (f"{r}.attn.proj_conv", f"{o}.0.proj.0"), (f"{r}.mlp.fc1_conv", f"{o}.1.layers.2"),
                        (f"{r}.mlp.fc2_conv", f"{o}.1.layers.5")]
        bns.append(("head_bn", "head_in.0"))
    else:
        for k in range(4):
            convs.append((f"patch_embed.conv_layers.{k}.0", f"patch_embed.stages.{k}.0"))
            bns.append((f"patch_embed.conv_layers.{k}.3", f"patch_embed.stages.{k}.2"))
        convs.append(("patch_embed.rpe_conv", "patch_embed.rpe"))
        for i in range(cfg.depth):
            r, o = f"block.{i}", f"blocks.{i}"
            bns += [(f"{r}.attn.proj_bn", f"{o}.0.proj.1"), (f"{r}.mlp.fc1_bn", f"{o}.1.layers.1"),
                    (f"{r}.mlp.fc2_bn", f"{o}.1.layers.4")]
            linears += [(f"{r}.attn.lmu.W_u", f"{o}.0.to_u"), (f"{r}.attn.lmu.W_h", f"{o}.0.to_h"),
                        (f"{r}.attn.proj_conv", f"{o}.0.proj.0"), (f"{r}.mlp.fc1_conv", f"{o}.1.layers.0"),
                        (f"{r}.mlp.fc2_conv", f"{o}.1.layers.3")]
    linears.append(("head", "head"))
    pairs += [(f"{r}.weight", f"{o}.weight") for r, o in convs]
    pairs += [(f"{r}.{s}", f"{o}.{s}") for r, o in bns for s in _BN]
    pairs += [(f"{r}.{s}", f"{o}.{s}") for r, o in linears for s in ("weight", "bias")]
    return dict(pairs)


def ignored_keys(cfg: ModelConfig) -> set[str]:
    """Reference buffers that are not copied (the fixed LMU matrices; lmuformer recomputes them)."""
    return {f"block.{i}.attn.lmu.{b}" for i in range(cfg.depth) for b in _LMU_BUFFERS}


def _class_permutation(reference_names: list[str], num_classes: int) -> tuple[list[str], list[int]]:
    """(lmuformer class names, row of the reference head for each of them)."""
    if len(reference_names) != num_classes:
        raise UserError(f"the class CSV names {len(reference_names)} classes but the head has {num_classes}")
    ours = class_order(reference_names)
    return ours, [reference_names.index(name) for name in ours]


def convert_state_dict(
    sd: dict[str, torch.Tensor], variant: str, classes: list[str] | None = None,
) -> tuple[LMUFormer, dict[str, Any]]:
    """An lmuformer model holding the reference state_dict ``sd`` (already unwrapped), and a summary.

    ``classes``: the reference's class names in its index order (its label CSV); None: the
    reference's Speech Commands order for a 35-class head, else the head's order unchanged.
    Summary keys: ``config``, ``classes`` (lmuformer order, or None), ``class_rows`` (reference
    head row of each lmuformer class), ``copied`` (tensors), ``ignored`` (reference keys skipped).
    """
    cfg = infer_config(sd, variant)
    mapping = key_map(cfg)
    ignored = ignored_keys(cfg)
    for key in mapping:
        _need(sd, key, variant)
    extra = sorted(set(sd) - set(mapping) - ignored)
    if extra:
        raise UserError(f"reference state_dict has an unexpected key {extra[0]!r} for --variant {variant}"
                        + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    if classes is None and cfg.num_classes == len(REFERENCE_CLASSES):
        classes = list(REFERENCE_CLASSES)
    names, rows = (None, list(range(cfg.num_classes))) if classes is None else _class_permutation(
        classes, cfg.num_classes)
    model = build_model(cfg)
    target = model.state_dict()
    new: dict[str, torch.Tensor] = {}
    for ref_key, our_key in mapping.items():
        value = sd[ref_key].detach().clone()
        want = target[our_key].shape
        if value.ndim == 3 and len(want) == 2 and value.shape[2] == 1:  # kernel-1 conv -> Linear
            value = value[:, :, 0]
        if value.shape != want:
            raise UserError(f"reference tensor {ref_key!r} has shape {tuple(sd[ref_key].shape)}; "
                            f"expected {tuple(want)} (for {our_key})")
        if our_key in ("head.weight", "head.bias"):
            value = value[rows]
        new[our_key] = value.to(target[our_key].dtype)
    model.load_state_dict(new, strict=True)
    model.eval()
    summary = {"config": cfg.to_dict(), "classes": names, "class_rows": rows, "copied": len(new),
               "ignored": sorted(k for k in ignored if k in sd)}
    return model, summary


def import_reference(path: str | os.PathLike, variant: str, output: str | os.PathLike,
                     classes_csv: str | os.PathLike | None = None) -> dict[str, Any]:
    """Convert the reference checkpoint ``path`` into the lmuformer checkpoint ``output``.

    The checkpoint's metrics record the source file, variant and class names (``classes``).
    Returns the summary of :func:`convert_state_dict` plus ``output`` and ``parameters``.
    """
    if variant not in VARIANTS:
        raise UserError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    sd = read_reference(path)
    classes = read_label_csv(classes_csv) if classes_csv is not None else None
    model, summary = convert_state_dict(sd, variant, classes)
    params = sum(p.numel() for p in model.parameters())
    metrics = {"source": "reference", "reference_checkpoint": str(path), "variant": variant,
               "parameters": params, "classes": summary["classes"]}
    save_checkpoint(output, model, metrics)
    return dict(summary, output=str(output), parameters=params)


__all__ = ["convert_state_dict", "import_reference", "infer_config", "key_map", "read_label_csv",
           "read_reference", "unwrap_state_dict"]
