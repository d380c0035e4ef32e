"""The LMUFormer: convolutional patch embedding, LMU token mixer, channel mixer, head.

Spiking (reference ``slmu_rnn_ms_conv1d``, "membrane shortcut": every branch starts with
BN -> LIF and the residual stream is real-valued) and non-spiking (``lmu_rnn_conv1d``).

Time alignment.  The reference's kernel-3 convolutions look one frame ahead; here they
are causal with one step of latency (:class:`CausalConv3`), five on the longest path, so
position p of the reference leaves the patch embedding at step p + 5.  A sample of T
frames therefore runs for ``T + latency`` steps, the input followed by ``latency`` zero
frames (the flush), and the logits are the mean of the head outputs over all those
steps (what an accumulating readout holds at the end).  Every layer starts at rest at
step 0 and runs freely on every step, with no knowledge of where the sample starts or
ends; this is exactly what a causal (streaming, neuromorphic) execution computes, so the
parallel ``forward``, the one-step-at-a-time ``stream`` and the exported NIR graph give
the same logits.  (The reference instead zero-pads each convolution at both ends of the
sample and starts every layer at the sample's first frame.  Here the stateful layers start
from rest up to ``latency`` steps earlier, so they keep a phase offset for the whole sample:
with the same weights 10-17 % of spikes differ inside the blocks and the logits by up to 0.17
standard deviations (issue 12), not only near the boundaries.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmuformer.model.config import ModelConfig
from lmuformer.model.layers import (
    LIF,
    CausalConv3,
    Delay1,
    LMUMemory,
    SeqBatchNorm,
    State,
)
from lmuformer.model.lean_stream import stepper


def _run(layers: list[nn.Module], x: torch.Tensor, state: State | None) -> torch.Tensor:
    """Apply layers in order, in parallel mode (state None) or one step (state given)."""
    for layer in layers:
        x = layer(x) if state is None else layer.step(x, state)
    return x


def _apply(layer: nn.Module, x: torch.Tensor, state: State | None) -> torch.Tensor:
    return layer(x) if state is None else layer.step(x, state)


class Activation(nn.Module):
    """A memoryless activation usable in both modes."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def step(self, x: torch.Tensor, state: State) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.fn.__name__


class Linear(nn.Linear):
    """nn.Linear with a ``step`` (it is memoryless); the reference's kernel-1 convs."""

    def step(self, x: torch.Tensor, state: State) -> torch.Tensor:
        return self(x)


# ----------------------------------------------------------------------------- spiking


def path_latency(modules) -> int:
    """Steps a path of modules delays its input: the sum of their ``latency`` (1 per causal
    convolution or Delay1, 0 for the others)."""
    return sum(getattr(m, "latency", 0) for m in modules)


class SpikingPatchEmbedding(nn.Module):
    """conv0 -> 3 x [BN -> LIF -> conv]; then x + rpe(LIF(BN(x))). Real-valued output."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.conv0 = CausalConv3(in_features, dim)
        self.stages = nn.ModuleList(
            nn.ModuleList([SeqBatchNorm(dim), LIF(), CausalConv3(dim, dim)]) for _ in range(3)
        )
        self.rpe = nn.ModuleList([SeqBatchNorm(dim), LIF(), CausalConv3(dim, dim)])
        self.skip = Delay1()

    @property
    def latency(self) -> int:
        """Steps from a frame to its embedding: conv0, the stages, then the longer of rpe and skip."""
        return (path_latency([self.conv0, *(m for s in self.stages for m in s)])
                + max(path_latency(self.rpe), self.skip.latency))

    def run(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        x = _apply(self.conv0, x, state)
        for stage in self.stages:
            x = _run(list(stage), x, state)
        return _apply(self.skip, x, state) + _run(list(self.rpe), x, state)


class SpikingLMUMixer(nn.Module):
    """BN -> LIF(0.5) -> spiking LMU cell -> Linear -> BN (the block's token mixer).

    LMU cell: u = LIF(BN(W_u x_s)) (one channel), m = memory(u), m_s = LIF(BN(m)),
    h = LIF(BN(W_h [m_s; x_s])).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, m = cfg.dim, cfg.memory_size
        self.pre = nn.ModuleList([SeqBatchNorm(d), LIF(cfg.u_threshold)])
        self.to_u = nn.ModuleList([Linear(d, 1), SeqBatchNorm(1), LIF()])
        self.memory = LMUMemory(m, cfg.theta)
        self.memory_out = nn.ModuleList([SeqBatchNorm(m), LIF()])
        self.to_h = nn.ModuleList([Linear(m + d, d), SeqBatchNorm(d), LIF()])
        self.proj = nn.ModuleList([Linear(d, d), SeqBatchNorm(d)])

    def run(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        xs = _run(list(self.pre), x, state)
        u = _run(list(self.to_u), xs, state)[..., 0]
        m = _run([self.memory, *self.memory_out], u, state)
        h = _run(list(self.to_h), torch.cat([m, xs], dim=-1), state)
        return _run(list(self.proj), h, state)


class SpikingChannelMixer(nn.Module):
    """BN -> LIF -> Linear(d, r d) -> BN -> LIF -> Linear(r d, d)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList(
            [SeqBatchNorm(dim), LIF(), Linear(dim, hidden),
             SeqBatchNorm(hidden), LIF(), Linear(hidden, dim)]
        )

    def run(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return _run(list(self.layers), x, state)


# ----------------------------------------------------------------------------- non-spiking


class PatchEmbedding(nn.Module):
    """4 x [conv -> ReLU -> BN]; then x + rpe(x) (the reference ``Tokenizer``)."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        chans = [in_features, dim, dim, dim, dim]
        self.stages = nn.ModuleList(
            nn.ModuleList([CausalConv3(chans[i], chans[i + 1]), Activation(F.relu),
                           SeqBatchNorm(chans[i + 1])])
            for i in range(4)
        )
        self.rpe = CausalConv3(dim, dim)
        self.skip = Delay1()

    @property
    def latency(self) -> int:
        """Steps from a frame to its embedding: the stages, then the longer of rpe and skip."""
        return path_latency(m for s in self.stages for m in s) + max(self.rpe.latency, self.skip.latency)

    def run(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        for stage in self.stages:
            x = _run(list(stage), x, state)
        return _apply(self.skip, x, state) + _apply(self.rpe, x, state)


class LMUMixer(nn.Module):
    """u = ReLU(W_u x), m = memory(u), h = ReLU(W_h [m; x]) -> Linear -> BN."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d, m = cfg.dim, cfg.memory_size
        self.to_u = Linear(d, 1)
        self.memory = LMUMemory(m, cfg.theta)
        self.to_h = Linear(m + d, d)
        self.proj = nn.ModuleList([Linear(d, d), SeqBatchNorm(d)])

    def run(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        u = F.relu(_apply(self.to_u, x, state))[..., 0]
        m = _apply(self.memory, u, state)
        h = F.relu(_apply(self.to_h, torch.cat([m, x], dim=-1), state))
        return _run(list(self.proj), h, state)


class ChannelMixer(nn.Module):
    """Linear -> BN -> GELU -> Linear -> BN -> ReLU (the reference ``ConvFFN``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.ModuleList(
            [Linear(dim, hidden), SeqBatchNorm(hidden), Activation(F.gelu),
             Linear(hidden, dim), SeqBatchNorm(dim), Activation(F.relu)]
        )

    def run(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return _run(list(self.layers), x, state)


# ----------------------------------------------------------------------------- the model


class LMUFormer(nn.Module):
    """LMUFormer classifier. ``model(x)``: x (batch, frames, features) -> logits (batch, classes).

    ``stream(x)`` computes the same logits one frame at a time with carried state.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        d, hidden = cfg.dim, cfg.dim * cfg.mlp_ratio
        spiking = cfg.variant == "spiking"
        if cfg.variant not in ("spiking", "ann"):
            raise ValueError(f"variant must be 'spiking' or 'ann', not {cfg.variant!r}")
        self.patch_embed = (SpikingPatchEmbedding if spiking else PatchEmbedding)(
            cfg.in_features, d
        )
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [SpikingLMUMixer(cfg), SpikingChannelMixer(d, hidden)]
                if spiking
                else [LMUMixer(cfg), ChannelMixer(d, hidden)]
            )
            for _ in range(cfg.depth)
        )
        self.head_in = nn.ModuleList([SeqBatchNorm(d), LIF()] if spiking else [])
        self.head = Linear(d, cfg.num_classes)
        _init_weights(self)

    @property
    def latency(self) -> int:
        """Steps between a frame entering and its position reaching the head."""
        return self.patch_embed.latency

    def _features(self, x: torch.Tensor, state: State | None) -> torch.Tensor:
        x = self.patch_embed.run(x, state)
        for token_mixer, channel_mixer in self.blocks:
            x = x + token_mixer.run(x, state)
            x = x + channel_mixer.run(x, state)
        return _apply(self.head, _run(list(self.head_in), x, state), state)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.config.in_features:
            raise ValueError(
                f"expected input (batch, frames, {self.config.in_features}), got {tuple(x.shape)}"
            )

    def step_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Head output at every step, parallel mode: (batch, frames + latency, classes).

        Step ``p + latency`` holds the reference's position p; the logits are the mean
        over all steps.
        """
        self._check(x)
        seq = torch.cat([x, x.new_zeros(x.shape[0], self.latency, x.shape[2])], dim=1)
        return self._features(seq.transpose(0, 1), None).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step_outputs(x).mean(dim=1)

    def initial_state(self) -> State:
        """Streaming state at rest (layers fill it lazily)."""
        return {}

    @torch.no_grad()
    def step(self, frame: torch.Tensor, state: State) -> torch.Tensor:
        """One streaming step: frame (batch, features) -> head output (batch, classes)."""
        if self.training:
            raise RuntimeError("streaming runs in eval mode: call model.eval() first")
        return self._features(frame, state)

    @torch.no_grad()
    def stream_outputs(self, x: torch.Tensor, lean: bool | None = None) -> torch.Tensor:
        """Head output at every step, streaming mode; same layout as :meth:`step_outputs`.

        ``lean`` (default: for the spiking variant) runs the frames through
        :mod:`lmuformer.model.lean_stream` (BN folded, preallocated state; a CUDA graph on
        CUDA) instead of :meth:`step` layer by layer: the same function, float roundings
        reordered (float64: equal to ~1e-15).
        """
        self._check(x)
        flush = x.new_zeros(x.shape[0], x.shape[2])
        frames = [*x.unbind(1), *([flush] * self.latency)]
        if lean is None:
            lean = self.config.variant == "spiking"
        if lean:
            if self.training:
                raise RuntimeError("streaming runs in eval mode: call model.eval() first")
            fast = stepper(self, x.shape[0])
            return torch.stack([fast.step(f).clone() for f in frames], dim=1)
        state = self.initial_state()
        return torch.stack([self.step(f, state) for f in frames], dim=1)

    def stream(self, x: torch.Tensor) -> torch.Tensor:
        """Logits computed one frame at a time (then ``latency`` flush steps)."""
        return self.stream_outputs(x).mean(dim=1)


def _init_weights(model: LMUFormer) -> None:
    """The reference's init (``ConvLMU._init_weights`` applied to ``nn.Linear`` modules only).

    Its real ``nn.Linear`` layers (the LMU cell's W_u and W_h, and the head) get a truncated
    normal (std 0.02) weight and a zero bias.  Its kernel-1 ``nn.Conv1d`` layers (the token
    mixer's projection, the channel mixer's fc1 and fc2; :class:`Linear` here) keep PyTorch's
    default init, which for a kernel-1 convolution equals ``nn.Linear``'s: weight
    kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (std 0.036 for fan_in 256,
    0.018 for 1024), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).  Kernel-3 convolutions
    (:class:`CausalConv3`) have Conv1d's default too; batch norms weight 1, bias 0.
    """
    real = [model.head]
    for token_mixer, _ in model.blocks:
        for name in ("to_u", "to_h"):
            layer = getattr(token_mixer, name)
            real.append(layer[0] if isinstance(layer, nn.ModuleList) else layer)
    for layer in real:
        nn.init.trunc_normal_(layer.weight, std=0.02)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
