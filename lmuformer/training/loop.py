"""The training loop: set a run up from options and a data set, train with validation after
every epoch, keep the best checkpoint, test it (:func:`train`, the Python API of ``lmuf train``).

Recipe, loss and DDP behaviour: :mod:`lmuformer.training` (package docstring)."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from lmuformer.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, unwrap, update_metrics
from lmuformer.data import DATASETS, dataset_info, load_dataset, mixup
from lmuformer.data.mixup import recompute_batchnorm
from lmuformer.errors import UserError
from lmuformer.files import lock, write_json
from lmuformer.model import ModelConfig, build_model
from lmuformer.model.config import preset as get_preset
from lmuformer.training.distributed import (
    Dist,
    all_sum,
    available_cores,
    barrier,
    init_distributed,
    sync_batchnorm_stats,
)
from lmuformer.training.evaluation import evaluate_dist
from lmuformer.training.options import (
    PRECISIONS,
    TrainOptions,
    default_precision,
    recipe,
    resolve_options,
)
from lmuformer.training.rng import rng_state, seed_everything, set_rng_state
from lmuformer.validation import check_model_config


def _model_config(o: TrainOptions, info: dict[str, Any]) -> tuple[str, ModelConfig]:
    """The preset name and config for ``o``; the dataset's default preset adapts to its shape."""
    default = info["preset"]
    name = o.preset or default
    try:
        cfg = get_preset(name)
    except ValueError as e:
        raise UserError(str(e)) from None
    if name in (default, f"{default}-ann"):
        auto: dict[str, Any] = dict(in_features=int(info["features"]), num_classes=int(info["classes"]),
                                    frames=int(info["frames"]))
        if cfg.theta == cfg.frames:
            auto["theta"] = float(info["frames"])
        cfg = cfg.with_overrides(**auto)
    try:
        cfg = cfg.with_overrides(**o.model)
        cfg = ModelConfig.from_dict(check_model_config(cfg, where="model settings"))
        build_model(cfg)  # validates variant etc. early
    except (TypeError, ValueError) as e:
        raise UserError(f"bad model settings: {e}") from None
    if cfg.in_features != info["features"] or cfg.num_classes != info["classes"]:
        raise UserError(
            f"preset {name!r} takes {cfg.in_features} features and {cfg.num_classes} classes but "
            f"dataset {o.dataset!r} has {info['features']} and {info['classes']}; use --preset {default} "
            "or set in_features/num_classes under [model] in --config"
        )
    return name, cfg


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=True,
                dynamic_ncols=True, unit="batch")


# ----------------------------------------------------------------------------- training


def train(
    dataset: str | None = None,
    preset: str | None = None,
    data_dir: str | None = None,
    epochs: int | None = None,
    out_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Train an LMUFormer and return its metrics (also written to ``out_dir/metrics.json``).

    Arguments left None take the dataset's recipe (:data:`RECIPES`), or, when resuming,
    the options stored in the checkpoint.  ``overrides`` may hold any other
    :class:`TrainOptions` field (``weight_decay=1e-4``) or ModelConfig field (``dim=32``).
    ``resume``: a checkpoint with training state (``last.pt``); training continues after its
    epoch up to ``epochs`` in total.  Writes ``best.pt`` (best validation accuracy, with
    ``test_accuracy`` in its metrics), ``last.pt`` and ``metrics.json`` to ``out_dir``
    (default ``runs/<dataset>-<preset>``, or the checkpoint's folder when resuming).

    Metrics: ``test_accuracy``, ``val_accuracy`` (best, fractions 0..1), ``best_epoch``,
    ``history`` (per epoch: train_loss, train_accuracy, val_accuracy, val_loss, lr,
    seconds), ``train_seconds`` (wall time), ``best_checkpoint``.
    """
    explicit = dict(dataset=dataset, preset=preset, data_dir=data_dir, epochs=epochs, batch_size=batch_size,
                    lr=lr, seed=seed, **overrides)
    if out_dir is not None:
        explicit["out_dir"] = str(out_dir)
    ckpt = load_checkpoint(resume) if resume is not None else None
    if ckpt is not None and ckpt.train_state is None:
        raise UserError(f"{resume} holds no training state (resume from last.pt)")
    stored = dict(ckpt.train_state.get("options", {})) if ckpt is not None else {}
    name = explicit.get("dataset") or stored.get("dataset") or "digits"
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(sorted(DATASETS))}")
    if stored and stored.get("dataset") != name:
        raise UserError(f"{resume} was trained on {stored.get('dataset')!r}, not {name!r}")
    stored.pop("out_dir", None)  # a resumed run writes next to its checkpoint unless told otherwise
    recipe_name = explicit.get("recipe") or stored.get("recipe") or "default"
    if stored and explicit.get("recipe") and explicit["recipe"] != stored.get("recipe", "default"):
        raise UserError(f"{resume} was trained with recipe {stored.get('recipe', 'default')!r}, "
                        f"not {explicit['recipe']!r}")
    o = resolve_options(resolve_options(recipe(name, recipe_name), stored), explicit)
    info = dataset_info(name)
    preset_name, cfg = _model_config(o, info)
    if ckpt is not None and ckpt.config != cfg:
        raise UserError(f"cannot change the model when resuming: {resume} holds another model than "
                        f"preset {preset_name!r} with these settings")

    try:
        device = torch.device(o.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as e:
        raise UserError(f"bad device {o.device!r}: {str(e).splitlines()[0]}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {o.device!r} asked for but CUDA is not available")
    d = init_distributed(device)
    if device.type == "cuda" and d.world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(o.threads or max(1, available_cores() // d.local_world))
    try:
        # one writer per output folder (rank 0 writes); a dead or finished run's lock is taken over
        run = _Run(o, preset_name, cfg, ckpt, info.get("frame_period_s"), device, d,
                   _out_dir(o, preset_name, ckpt))
        with lock(run.out, folder=True, what="training folder") if d.main else contextlib.nullcontext():
            return _train(run, progress)
    finally:
        torch.set_num_threads(old_threads)
        if d.created:
            dist.destroy_process_group()


@dataclass(frozen=True)
class _Run:
    """One training run as :func:`train` set it up: the resolved options, the model preset and
    config, the checkpoint resumed from (None for a fresh run), the data set's frame period (s),
    the device, this process in the DDP group and the output folder."""

    options: TrainOptions
    preset: str
    config: ModelConfig
    resumed: Checkpoint | None
    frame_period_s: float | None
    device: torch.device
    dist: Dist
    out: Path


def _out_dir(o: TrainOptions, preset_name: str, ckpt: Checkpoint | None) -> Path:
    return Path(o.out_dir) if o.out_dir else (
        ckpt.path.parent if ckpt is not None else Path("runs") / f"{o.dataset}-{preset_name}"
    )


def _train(run: _Run, progress: bool) -> dict[str, Any]:
    """The epochs of ``run`` (rank 0 writes best.pt, last.pt, metrics.json); its metrics."""
    o, preset_name, cfg, ckpt, device, d, out = (run.options, run.preset, run.config, run.resumed, run.device,
                                                 run.dist, run.out)
    show = progress and d.main
    try:
        train_set = load_dataset(o.dataset, "train", data_dir=o.data_dir, augment=o.augment, seed=o.seed,
                                 mixup=o.mixup)
        clean_set = load_dataset(o.dataset, "train", data_dir=o.data_dir) if o.clean_bn else None
        val_set = load_dataset(o.dataset, "val", data_dir=o.data_dir)
        test_set = load_dataset(o.dataset, "test", data_dir=o.data_dir)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None

    gen = seed_everything(o.seed, d.rank)
    model: nn.Module = build_model(cfg).to(device)
    per_rank = math.ceil(o.batch_size / d.world)
    sampler = DistributedSampler(train_set, num_replicas=d.world, rank=d.rank, shuffle=True, seed=o.seed)
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, num_workers=o.num_workers)
    optimizer = torch.optim.Adam(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=o.lr_step or 10**9, gamma=o.lr_gamma if o.lr_step else 1.0
    )
    precision = o.precision or default_precision(device)
    amp = _Amp(device, precision)
    start, history, best = 0, [], (-1.0, math.inf, 0)  # best: (val acc, val loss, epoch)
    if ckpt is not None:
        ts = ckpt.train_state
        model.load_state_dict(ckpt.model.state_dict())
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        start, history = int(ts["epoch"]), list(ts.get("history", []))
        if (out / "best.pt").exists():
            best = tuple(ts["best"])
        set_rng_state(ts["rng"], gen)
        if "grad_scaler" in ts:
            amp.scaler.load_state_dict(ts["grad_scaler"])
        if start >= o.epochs:
            raise UserError(f"{ckpt.path} already holds {start} epochs; ask for more than {start} --epochs")
    if d.world > 1:
        ids = [device] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    net = unwrap(model)
    params = sum(p.numel() for p in net.parameters())
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    meta = dict(dataset=o.dataset, preset=preset_name, variant=cfg.variant, parameters=params, seed=o.seed,
                world_size=d.world, options=asdict(o), frame_period_s=run.frame_period_s,
                device=device.type, precision=precision)
    if show:
        print(f"training {preset_name} ({cfg.variant}, {params:,} parameters) on {o.dataset}: "
              f"{len(train_set)} train / {len(val_set)} val / {len(test_set)} test samples, "
              f"epochs {start + 1}..{o.epochs}, {d.world} process(es) x {torch.get_num_threads()} thread(s), "
              f"{device.type} {precision}",
              file=sys.stderr)

    t_start = time.perf_counter()
    for epoch in range(start, o.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):  # augmentation draws depend on (seed, epoch, index)
            train_set.set_epoch(epoch)
        model.train()
        lr_now = optimizer.param_groups[0]["lr"]
        sums = [0.0, 0.0, 0.0]  # loss x n, correct, n
        bar = _progress(len(loader), f"epoch {epoch + 1}/{o.epochs}", show)
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss, correct = _train_step(model, optimizer, x, y, o, cfg.num_classes, gen, amp)
            sums[0] += loss * len(y)
            sums[1] += correct
            sums[2] += len(y)
            bar.update()
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.4f}", acc=f"{sums[1] / sums[2]:.3f}", refresh=False)
        scheduler.step()
        if clean_set is not None:  # only the BatchNorm buffers change
            recompute_batchnorm(net, clean_set, 256, device)
        loss_sum, correct, n = all_sum(sums, d)
        sync_batchnorm_stats(net, d)
        val_acc, val_loss = evaluate_dist(net, val_set, per_rank, device, d)
        bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{correct / n:.3f}", val_acc=f"{val_acc:.3f}")
        bar.close()
        history.append(dict(epoch=epoch + 1, train_loss=loss_sum / n, train_accuracy=correct / n,
                            val_accuracy=val_acc, val_loss=val_loss, lr=lr_now,
                            seconds=round(time.perf_counter() - t0, 3)))
        improved = (val_acc, -val_loss) > (best[0], -best[1])
        if improved:
            best = (val_acc, val_loss, epoch + 1)
        metrics = dict(meta, epochs=epoch + 1, best_epoch=best[2], val_accuracy=best[0], val_loss=best[1],
                       train_loss=loss_sum / n, train_accuracy=correct / n, history=history)
        if d.main:
            state = dict(epoch=epoch + 1, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         best=list(best), history=history, options=asdict(o), rng=rng_state(gen))
            if amp.scaler.is_enabled():
                state["grad_scaler"] = amp.scaler.state_dict()
            if improved:
                save_checkpoint(out / "best.pt", net, metrics)
            save_checkpoint(out / "last.pt", net, metrics, train_state=state)
            write_json(out / "metrics.json", metrics)
    train_seconds = time.perf_counter() - t_start

    barrier(d)  # best.pt is complete before every rank reads it
    best_model = load_checkpoint(out / "best.pt").model.to(device)
    test_acc, test_loss = evaluate_dist(best_model, test_set, per_rank, device, d)
    metrics.update(test_accuracy=test_acc, test_loss=test_loss, train_seconds=round(train_seconds, 3),
                   best_checkpoint=str(out / "best.pt"), last_checkpoint=str(out / "last.pt"))
    if d.main:
        update_metrics(out / "best.pt", dict(test_accuracy=test_acc, test_loss=test_loss))
        write_json(out / "metrics.json", metrics)
    barrier(d)
    return metrics


class _Amp:
    """Autocast and (fp16 only) gradient scaling for one device and precision name."""

    def __init__(self, device: torch.device, precision: str):
        self.device_type, self.dtype = device.type, PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                o: TrainOptions, classes: int, gen: torch.Generator,
                amp: _Amp | None = None) -> tuple[float, int]:
    """One optimisation step on a batch x (B, T, F), y (B,); returns (mean loss, correct count)."""
    amp = amp or _Amp(x.device, "fp32")
    with amp.autocast():
        logits, loss, labels = _forward_loss(model, x, y, o, classes, gen)
    optimizer.zero_grad(set_to_none=True)
    amp.scaler.scale(loss).backward()
    if o.grad_clip > 0:
        amp.scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
    amp.scaler.step(optimizer)
    amp.scaler.update()
    return float(loss.detach()), int((logits.detach().argmax(1) == labels).sum())


def _forward_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, o: TrainOptions, classes: int,
                  gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, loss, labels) of a training batch; the loss is taken in float32."""
    soft = y.dim() == 2  # soft labels: the dataset mixed the items (scv2: the reference's waveform mixup)
    if soft or o.mixup > 0 or o.loss == "bce":
        target = y.to(x.dtype) if soft else F.one_hot(y, classes).to(x.dtype)
        if o.mixup > 0 and not soft:
            x, target = mixup(x, target, o.mixup, gen)
        if o.label_smoothing > 0:
            target = target * (1 - o.label_smoothing) + o.label_smoothing / classes
        logits = model(x).float()
        if o.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, target)
        else:
            loss = F.cross_entropy(logits, target)
        labels = target.argmax(1)
    else:
        logits = model(x).float()
        loss = F.cross_entropy(logits, y, label_smoothing=o.label_smoothing)
        labels = y
    return logits, loss, labels
