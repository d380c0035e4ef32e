"""The fine-tuning job (``lmuf finetune CKPT --for-export``): load a checkpoint and its data set,
train the model through :class:`backends.finetune.IntegerForward` (the exact integer arithmetic of
its export on the emulator and Lava), select, check that the export of the kept state lowers as
that forward pass, and save the checkpoint."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import nir
import numpy as np
import torch
from torch import nn

from backends.finetune import IntegerForward, check_options, graph_weights
from backends.fixed_point import CURRENT_HEADROOM, Network, input_frac_for, lower
from export.graph import ExportOptions, model_to_nir
from export.quantize import quantize_terms
from lmuformer.checkpoint import load_checkpoint, save_checkpoint
from lmuformer.data import load_dataset, load_test_split
from lmuformer.data.mixup import mixup as mix
from lmuformer.data.mixup import recompute_batchnorm
from lmuformer.errors import UserError
from lmuformer.jobs.export import calibrate_export, check_headroom, pin_current_frac
from lmuformer.model.lmuformer import LMUFormer


def _signature(net: Network) -> dict:
    """What the lowering chose that the fine-tuned forward freezes."""
    return {
        "frac": {n: p.frac for n, p in net.populations.items()},
        "vth": {n: p.vth for n, p in net.populations.items()},
        "dv": {n: p.dv for n, p in net.populations.items()},
        "terms": {s.name: [(t.exponent, t.weight_exp, t.round_channel) for t in s.terms]
                  for s in net.synapses},
        "consts": {n: list(p.consts) for n, p in net.populations.items()},
    }


def _same_integers(fwd: IntegerForward, net: Network) -> bool:
    """The forward pass's integer weights and biases == those the lowering of the export chose."""
    with torch.no_grad():
        weights, bias = fwd.parameters_now()
    for s in net.synapses:
        if not np.array_equal(weights[s.name].numpy(), s.terms[0].weights):
            return False
    for n, p in net.populations.items():
        if p.kind == "lif":
            want = p.bias_mant.astype(np.int64) << p.bias_exp.astype(np.int64)
        elif p.kind == "integrator":
            want = p.bias_int
        else:
            continue
        if not np.array_equal(bias[n].numpy(), want):
            return False
    return True


def export_forward(model: LMUFormer, opts: ExportOptions, input_frac_bits: int,
                   current_frac: dict[str, int] | None = None) -> tuple[nir.NIRGraph, IntegerForward]:
    """The export ``opts`` of ``model`` (with the current grids ``current_frac`` in its metadata;
    None: the static grid) and its integer forward pass, lowered for frames + latency steps on the
    input grid 2**-``input_frac_bits``."""
    steps = model.config.frames + model.latency
    graph = pin_current_frac(model_to_nir(model, opts), current_frac)
    return graph, IntegerForward(model, lower(graph, steps=steps, input_frac_bits=input_frac_bits), steps)


def own_forward(path: str | Path, opts: ExportOptions, x: np.ndarray, input_frac_bits: int
                ) -> tuple[nir.NIRGraph, np.ndarray, dict[str, np.ndarray]]:
    """The fine-tuned checkpoint ``path``'s export (with the current grids it pinned) and that
    model's own integer forward pass on x (samples, frames, features): (graph, logits (samples,
    classes), spike trains name -> (samples, steps, neurons) bool), what its export must reproduce
    spike for spike."""
    ck = load_checkpoint(path)
    tuned = ck.model.eval()
    graph, forward = export_forward(tuned, opts, input_frac_bits,
                                    (ck.metrics.get("finetuned_for") or {}).get("current_frac"))
    with torch.no_grad():
        logits, trains = forward(torch.as_tensor(x))
    return graph, logits.numpy(), {k: v.numpy().astype(bool) for k, v in trains.items()}


def _spiking_checkpoint(path: str):
    """The checkpoint at ``path``; UserError unless it is a spiking model that records its dataset."""
    ck = load_checkpoint(path)
    if ck.model.config.variant != "spiking":
        raise UserError("only a spiking checkpoint can be fine-tuned for export (this one is non-spiking)")
    if not ck.metrics.get("dataset"):
        raise UserError("the checkpoint does not record its dataset")
    return ck


@contextmanager
def _torch_threads(n: int | None):
    """torch's thread count set to ``n`` (None: unchanged) inside, restored after."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _features(ds, n: int) -> torch.Tensor:
    """The first n items' features of a dataset, stacked: (n, frames, features) float32."""
    return torch.stack([torch.as_tensor(np.asarray(ds[i][0], np.float32)) for i in range(n)])


def _labels(ds, n: int) -> np.ndarray:
    """The first n items' class labels (n,)."""
    return np.asarray([int(ds[i][1]) for i in range(n)])


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _evaluate(fwd: IntegerForward, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Deployed accuracy and mean cross entropy (no smoothing) of the integer forward pass on x, y."""
    with torch.no_grad():
        logits = torch.cat([fwd(torch.as_tensor(x[i : i + 512]))[0] for i in range(0, len(x), 512)])
    yt = torch.as_tensor(y)
    return float((logits.argmax(1) == yt).double().mean()), float(nn.functional.cross_entropy(logits, yt))


def _exponents_moved(model: LMUFormer, fwd: IntegerForward, opts: ExportOptions) -> bool:
    """Would the export of ``model`` now choose another exponent for a weight matrix than ``fwd``?"""
    with torch.no_grad():
        gw = graph_weights(model)
    exps = {s.name: s.terms[0].exponent for s in fwd.net.synapses}
    for base, names in fwd.chains.items():
        terms = quantize_terms(gw[base][0].numpy(), opts.weight_bits, len(names))
        if [t.exponent for t in terms] != [exps[n] for n in names]:
            return True
    return False


def _better(new: tuple[float, float], old: tuple[float, float], select_on: str) -> bool:
    """Selection of (accuracy, loss) states: the lower validation loss, or (``select_on="accuracy"``)
    the higher accuracy with the loss as tie-break."""
    if select_on == "accuracy" and new[0] != old[0]:
        return new[0] > old[0]
    return new[1] < old[1]


def finetune_loss(logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None,
                  distill: float, temperature: float) -> torch.Tensor:
    """``(1 - distill) CE(logits, target) + distill T**2 KL(teacher || student)`` at temperature T;
    logits (batch, classes), target (batch, classes) probabilities; no teacher: the cross entropy."""
    loss = nn.functional.cross_entropy(logits, target)
    if teacher_logits is None or distill == 0:
        return loss
    t = temperature
    kl = nn.functional.kl_div(nn.functional.log_softmax(logits / t, 1),
                              nn.functional.log_softmax(teacher_logits / t, 1), log_target=True,
                              reduction="batchmean")
    return (1 - distill) * loss + distill * t * t * kl


def finetune(checkpoint: str, out_dir: str, opts: ExportOptions, epochs: int = 8, lr: float = 2e-4,
             batch_size: int = 32, seed: int = 0, data_dir: str | None = None, progress: bool = True,
             train_samples: int | None = None, test_samples: int | None = None, select: bool = True,
             augment: bool = False, distill: float = 0.5, label_smoothing: float | None = None,
             mixup: float | None = None, temperature: float = 2.0, threads: int | None = None,
             select_on: str = "loss", clean_bn: bool = True, record_test: bool = False,
             on_epoch: Callable[[int, IntegerForward], None] | None = None,
             current_headroom: float = CURRENT_HEADROOM) -> dict:
    """Fine-tune ``checkpoint`` for ``opts`` on its dataset; write ``out_dir/best.pt`` (a normal
    checkpoint whose metrics record ``finetuned_for``: ``opts`` and the current grids, calibrated
    on the start model as :func:`lmuformer.jobs.export.calibrate_export` does at
    ``current_headroom``, pinned for the whole run and for the export of the result) and return
    the metrics.

    Loss per batch: ``(1 - distill) * CE(logits, y; label_smoothing)`` ``+ distill * T**2 *
    KL(float model || integer model)`` at temperature T (the start's float model, frozen, is the
    teacher: the deployed model learns to decide as the trained one), on batches mixed as the
    training recipe mixes them (``mixup`` rate; label smoothing and mixup default to the
    checkpoint's own recipe): the teacher then also speaks between the training samples, where
    the few samples that quantisation flips lie.  Adam, ``lr`` decayed by a cosine to 0 over all
    steps.  Eval-mode BatchNorm in the forward pass (deployment folds its running statistics); with
    ``clean_bn`` (the default, as the training recipe's ``clean_bn``) the running statistics are
    recomputed after each epoch on the clean training split (float forward, batch statistics,
    :func:`lmuformer.data.mixup.recompute_batchnorm`), before the export is lowered anew and the
    epoch is validated: the trained weights moved, the statistics follow them.

    Selection: after each epoch the deployed (integer) validation cross entropy picks the state
    kept, the start included (the lowest wins; on digits the 144-sample validation accuracy is too
    coarse: 1 sample = 0.7 pp, ties are the rule).  ``deployed_accuracy`` is the test accuracy of
    that state (the test split never selects).  ``train_samples`` / ``test_samples``: use only the first
    N of the train / the validation and test splits; ``select=False`` keeps the last epoch's state
    (tests); ``augment``: the dataset's training augmentation (digits: random 1-pixel shifts);
    ``threads``: torch threads while it runs (default: the checkpoint's recipe's, else unchanged;
    digits: 1, faster than two for this small model).  ``select_on="accuracy"``: the highest
    deployed validation accuracy picks, the loss breaks ties; ``record_test``: also record the test
    accuracy after each epoch (``finetune_test_history``, for analysis; it never selects);
    ``on_epoch(epoch, forward)``: called with the start (epoch 0) and after each epoch with the
    integer forward pass as lowered then (benchmarks score the states on their own data).  On the
    3 digits recipe seeds ``clean_bn`` kept states of lower deployed validation loss (and equal or
    higher validation accuracy) than frozen statistics; a learning rate of 5e-4 kept states of
    higher validation loss.  The defaults (8 epochs, lr 2e-4, distill 0.5, the recipe's mixup and
    label smoothing, selection on loss) score highest on cross-fitted deployed validation accuracy
    (select on one half of the split, score on the other; 3 seeds): 417 of 432 against 413-416 for
    16 epochs at lr 5e-4 or 1e-3, distill 0 or 0.9, no mixup / smoothing, selection on accuracy, or
    the average of the last 4 epochs' weights (``benchmarks/results/finetune_variants.json``)."""
    check_options(opts)
    check_headroom(current_headroom)
    if select_on not in ("loss", "accuracy"):
        raise UserError(f"select_on must be 'loss' or 'accuracy', got {select_on!r}")
    if not 0 <= distill <= 1:
        raise UserError(f"--distill must be in [0, 1], got {distill}")
    ck = _spiking_checkpoint(checkpoint)
    model, dataset = ck.model, ck.metrics["dataset"]
    recipe = ck.metrics.get("options") or {}
    if label_smoothing is None:
        label_smoothing = float(recipe.get("label_smoothing", 0.0))
    if mixup is None:
        mixup = float(recipe.get("mixup", 0.0))
    with _torch_threads(threads or recipe.get("threads")):
        train = load_dataset(dataset, "train", data_dir, augment=augment, seed=seed)
        x_test, y_test = load_test_split(dataset, data_dir, test_samples)
        torch.manual_seed(seed)
        steps = model.config.frames + model.latency
        # the input grid the emulator and Lava choose on the test split (fixed_point's module doc);
        # training inputs beyond its range are clipped, as deployment would clip them
        q = input_frac_for(x_test)
        # the current grids, calibrated once on the start model (as its export would) and pinned
        grids = calibrate_export(model_to_nir(model, opts), dataset, data_dir, headroom=current_headroom)[0]

        def relower() -> IntegerForward:
            """The integer forward pass of the model's export as it stands (lowered anew)."""
            return export_forward(model, opts, q, grids)[1]

        fwd = relower()
        model.eval()  # eval-mode BatchNorm statistics: deployment folds them
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        n_train = len(train) if train_samples is None else min(train_samples, len(train))
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        classes = model.head.weight.shape[0]
        xs, ys = _features(train, n_train), torch.as_tensor(_labels(train, n_train))
        val = load_dataset(dataset, "val", data_dir)
        n_val = len(val) if test_samples is None else min(test_samples, len(val))
        x_val, y_val = _features(val, n_val).numpy(), _labels(val, n_val)
        clean_set = None
        if clean_bn:
            clean = load_dataset(dataset, "train", data_dir)
            clean_set = torch.utils.data.TensorDataset(_features(clean, n_train))

        start = time.perf_counter()
        test0 = _evaluate(fwd, x_test, y_test)[0]
        best = val0 = _evaluate(fwd, x_val, y_val)
        best_epoch, best_state = 0, _copy_state(model)
        if on_epoch is not None:
            on_epoch(0, fwd)
        history, losses, test_history, relowered = [], [], [], 0
        gen = torch.Generator().manual_seed(seed)
        total = epochs * -(-len(xs) // batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt,
                                                  lambda k: 0.5 * (1 + np.cos(np.pi * min(k, total) / total)))
        for epoch in range(epochs):
            if augment and epoch:  # the dataset's own training augmentation, drawn per epoch
                train.set_epoch(epoch)
                xs = _features(train, n_train)
            perm = torch.randperm(len(xs), generator=gen)
            for i in range(0, len(xs), batch_size):
                idx = perm[i : i + batch_size]
                xb, target = xs[idx], nn.functional.one_hot(ys[idx], classes).double()
                if mixup > 0:
                    xb, target = mix(xb, target, mixup, gen)
                target = target * (1 - label_smoothing) + label_smoothing / classes
                logits, _ = fwd(xb)
                with torch.no_grad():
                    soft = teacher(xb).double() if distill > 0 else None
                loss = finetune_loss(logits, target, soft, distill, temperature)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if _exponents_moved(model, fwd, opts):  # crossed a power of two: the exponent follows
                    fwd = relower()
                    relowered += 1
            if clean_bn:  # BatchNorm statistics of the clean training split, as the recipe's clean_bn
                recompute_batchnorm(model, clean_set)
            fwd = relower()  # thresholds, grids and biases as the export now lowers them
            acc, vloss = _evaluate(fwd, x_val, y_val)
            history.append(acc)
            losses.append(vloss)
            if record_test:  # recorded for analysis only: the test split never selects
                test_history.append(_evaluate(fwd, x_test, y_test)[0])
            if on_epoch is not None:
                on_epoch(epoch + 1, fwd)
            if not select or _better((acc, vloss), best, select_on):
                best, best_epoch, best_state = (acc, vloss), epoch + 1, _copy_state(model)
            if progress:
                print(f"epoch {epoch + 1}/{epochs}: deployed validation accuracy {acc:.4f}, loss {vloss:.4f}")
        model.load_state_dict(best_state)
        fwd = relower()
        test1 = _evaluate(fwd, x_test, y_test)[0]
        wall = time.perf_counter() - start
        after = lower(pin_current_frac(model_to_nir(model, opts), grids), steps=steps, input_frac_bits=q)
        if _signature(after) != _signature(fwd.net) or not _same_integers(fwd, after):  # a bug, not bad input
            raise RuntimeError("the fine-tuned model's export does not lower as its integer forward pass")
        metrics = dict(ck.metrics)
        if record_test:
            metrics["finetune_test_history"] = test_history
        metrics.update(
            finetuned_for={**asdict(opts), "current_frac": grids},
            finetune_epochs=epochs, finetune_lr=lr, finetune_wall_s=wall,
            finetune_batch_size=batch_size, finetune_distill=distill,
            finetune_label_smoothing=label_smoothing, finetune_mixup=mixup, finetune_relowered=relowered,
            finetune_threads=torch.get_num_threads(), finetune_input_frac_bits=q,
            deployed_accuracy_before=test0, deployed_accuracy=test1, finetune_best_epoch=best_epoch,
            finetune_val_history=history, finetune_val_loss_history=losses, deployed_val_accuracy=best[0],
            deployed_val_accuracy_before=val0[0], deployed_val_loss=best[1], deployed_val_loss_before=val0[1],
            finetuned_from=str(checkpoint), finetune_select_on=select_on,
            finetune_clean_bn=clean_bn, finetune_temperature=temperature,
        )
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / "best.pt", model, metrics)
        return metrics
