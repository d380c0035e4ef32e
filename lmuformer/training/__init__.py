"""Training and evaluation of an LMUFormer: the Python API behind ``lmuf train``.

Recipe (Liu et al., ICLR 2024, scaled per dataset): Adam (betas 0.95, 0.999), the learning
rate multiplied by ``lr_gamma`` every ``lr_step`` epochs (StepLR; the paper: x0.85 every 10
epochs), validation after every epoch, the best checkpoint chosen on validation accuracy
(ties: lower validation loss) and reported on the test split.

Loss: SCv2 uses BCE-with-logits on (mixup-softened) one-hot labels, as the paper.  For the
small embedded datasets (digits, mnist) plain cross-entropy is the default: on digits (default
recipe, seed 0) it starts faster than BCE on one-hot targets (val 67 % vs 46 % after 5 epochs)
and ends slightly higher (test 96.4 % vs 95.8 % after 40 epochs).  ``loss="bce"`` selects the
paper's loss anywhere.
On a few hundred SCv2-like clips the paper's recipe collapses to the uniform prior (as the
reference's own code does); ``recipe="small"`` (:data:`NAMED_RECIPES`) is plain cross-entropy there.

Runs unchanged under ``torchrun --nproc_per_node N``: when ``WORLD_SIZE`` > 1 the process
group is initialised (gloo on CPU, nccl on CUDA), the model is wrapped in
DistributedDataParallel, each rank sees its shard of every epoch (``DistributedSampler``),
``batch_size`` is the global batch, evaluation counts are summed over ranks, and only rank 0
writes files and shows progress.  A fixed seed gives identical results for a fixed number of
processes and threads.

Modules: :mod:`~lmuformer.training.options` (TrainOptions, recipes, config files),
:mod:`~lmuformer.training.loop` (:func:`train`), :mod:`~lmuformer.training.evaluation`,
:mod:`~lmuformer.training.distributed` (DDP helpers), :mod:`~lmuformer.training.rng`.
"""

from lmuformer.training.evaluation import evaluate
from lmuformer.training.loop import train
from lmuformer.training.options import (
    NAMED_RECIPES,
    PRECISIONS,
    RECIPES,
    TrainOptions,
    default_precision,
    load_config,
    recipe,
    recipe_names,
    resolve_options,
)

__all__ = ["NAMED_RECIPES", "PRECISIONS", "RECIPES", "TrainOptions", "default_precision", "evaluate",
           "load_config", "recipe", "recipe_names", "resolve_options", "train"]
