"""Checkpoint files: weights, model config, metrics and training state in one file.

A checkpoint is a ``torch.save`` of a plain dict (tensors, numbers, strings, lists, dicts)
carrying a format marker and version.  Loading uses ``torch.load(weights_only=True)``, so a
file can never execute code; anything unreadable or foreign becomes a one-line
:class:`~lmuformer.errors.UserError`.  Writes go to a temporary file in the same folder
followed by ``os.replace``, so an interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmuformer.errors import UserError
from lmuformer.files import atomic_write
from lmuformer.model import LMUFormer, ModelConfig, build_model
from lmuformer.validation import check_model_config

FORMAT = "lmuformer-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint. ``model`` is in eval mode on the CPU, built from ``config`` alone."""

    model: LMUFormer
    config: ModelConfig
    metrics: dict[str, Any]
    train_state: dict[str, Any] | None
    path: Path


def unwrap(model: nn.Module) -> LMUFormer:
    """The LMUFormer inside a DistributedDataParallel (or similar ``.module``) wrapper."""
    while not isinstance(model, LMUFormer) and hasattr(model, "module"):
        model = model.module
    if not isinstance(model, LMUFormer):
        raise TypeError(f"expected an LMUFormer, got {type(model).__name__}")
    return model


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays and 0-d tensors turned into Python numbers and lists.

    Tensors of more than one element are kept (moved to the CPU); dict keys become strings
    only if they are not already str/int.
    """
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        return obj.item() if obj.ndim == 0 else obj
    if isinstance(obj, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar / array (np.float64 is a float:
        return obj.tolist()  # test it first, or torch.load(weights_only=True) cannot read it back)
    if isinstance(obj, (bool, int, float, str, bytes)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint")


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    metrics: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and config, ``metrics`` and optional ``train_state`` to ``path``.

    ``train_state`` holds what resuming needs (optimizer/scheduler state dicts, epoch, RNG
    states); it must consist of tensors and plain Python types.  Returns the path written.
    """
    net = unwrap(model)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "metrics": plain(metrics),
        "train_state": None if train_state is None else plain(train_state),
    }
    path = Path(path)
    _atomic_save(payload, path)
    return path


def _read(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The raw payload of a checkpoint file, checked for our marker and version."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise UserError(f"checkpoint is not a file: {path}")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:  # torch raises many types for bad files (RuntimeError, UnpicklingError, ...)
        raise UserError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint file, or truncated/corrupt"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not an lmuformer checkpoint (no {FORMAT!r} format marker)")
    version = payload.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UserError(
            f"{path} has checkpoint format version {version!r}; this lmuformer reads up to {VERSION}"
        )
    for key, kind in (("config", dict), ("state_dict", dict), ("metrics", dict)):
        if not isinstance(payload.get(key), kind):
            raise UserError(f"{path} is a damaged lmuformer checkpoint (missing {key!r})")
    return path, payload


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`; never executes code from the file.

    Raises UserError (one line) for a missing, truncated, corrupt or foreign file.
    """
    path, payload = _read(path)
    try:
        config = ModelConfig.from_dict(check_model_config(payload["config"], where=str(path)))
        model = build_model(config)
    except (ValueError, TypeError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: bad model config ({first})") from None
    _check_state_dict(payload["state_dict"], model.state_dict(), path)
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    train_state = payload.get("train_state")
    return Checkpoint(
        model=model,
        config=config,
        metrics=payload["metrics"],
        train_state=train_state if isinstance(train_state, dict) else None,
        path=path,
    )


def _check_state_dict(stored: dict[str, Any], expected: dict[str, torch.Tensor], path: Path) -> None:
    """The stored weights against the model the config builds: the first missing, unexpected
    or wrongly shaped key, or a NaN/infinite weight, is named in one line."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[0]!r}"
                         + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(f"unexpected {unexpected[0]!r}"
                         + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""))
        raise UserError(f"{path}: stored weights do not match its config ({'; '.join(parts)})")
    for k, want in expected.items():
        got = stored[k]
        if not isinstance(got, torch.Tensor):
            raise UserError(f"{path}: weight {k!r} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(want.shape):
            raise UserError(f"{path}: weight {k!r} has shape {tuple(got.shape)}; its config needs "
                            f"{tuple(want.shape)}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise UserError(f"{path}: weight {k!r} holds NaN or infinite values")


def update_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into a checkpoint's stored metrics (atomic rewrite, weights unchanged)."""
    path, payload = _read(path)
    payload["metrics"] = {**payload["metrics"], **plain(metrics)}
    _atomic_save(payload, path)

