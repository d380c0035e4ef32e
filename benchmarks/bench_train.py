"""Training and inference speed of the paper's model (preset "scv2") on random input.

Measures, at batch 8 of 128 frames x 128 features (CPU, all available threads by default):
- train: forward + backward + Adam step, samples/s after warm-up;
- eval parallel: ``model(x)`` under no_grad in eval mode, samples/s;
- eval streaming: ``model.stream(x)`` (one frame at a time), samples/s.

Prints the numbers with their ratio to the reference implementation on these machines
(train 23 samples/s, eval 85 samples/s at batch 8) and writes them to
``benchmarks/results/train_speed.json`` (tmp + rename).

Usage: ``python benchmarks/bench_train.py [--batch 8] [--iters 5] [--threads N] [--preset scv2]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from lmuformer import build_model
from lmuformer.files import write_json

REFERENCE = {"train_samples_per_s": 23.0, "eval_parallel_samples_per_s": 85.0}  # batch 8, these machines
RESULTS = Path(__file__).resolve().parent / "results" / "train_speed.json"


def _rate(fn: Any, batch: int, iters: int, warmup: int, rounds: int) -> float:
    """Samples per second of ``fn()`` (one batch per call): ``warmup`` calls, then the median
    over ``rounds`` rounds of ``iters`` timed calls (robust to other load on the machine)."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        rates.append(batch * iters / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench(preset: str = "scv2", batch: int = 8, iters: int = 5, warmup: int = 2, rounds: int = 3,
          stream_iters: int = 1) -> dict[str, Any]:
    """Run the three measurements; returns a dict of samples/s and the setup."""
    torch.manual_seed(0)
    model = build_model(preset)
    cfg = model.config
    x = torch.rand(batch, cfg.frames, cfg.in_features)
    y = torch.randint(0, cfg.num_classes, (batch,))
    opt = torch.optim.Adam(model.parameters(), lr=2.5e-3, betas=(0.95, 0.999))

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    model.train()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    train_rate = _rate(train_step, batch, iters, warmup, rounds)
    model.eval()
    with torch.no_grad():
        eval_rate = _rate(lambda: model(x), batch, iters, warmup, rounds)
        stream_rate = _rate(lambda: model.stream(x), batch, stream_iters, 1, rounds)
    return {
        "preset": preset,
        "batch": batch,
        "frames": cfg.frames,
        "features": cfg.in_features,
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "timing": f"median of {rounds} rounds of {iters} batches ({stream_iters} when streaming)",
        "load_average_1min_at_start": load,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "train_samples_per_s": round(train_rate, 2),
        "eval_parallel_samples_per_s": round(eval_rate, 2),
        "eval_streaming_samples_per_s": round(stream_rate, 2),
        "reference": REFERENCE,
        "ratio_train_vs_reference": round(train_rate / REFERENCE["train_samples_per_s"], 3),
        "ratio_eval_vs_reference": round(eval_rate / REFERENCE["eval_parallel_samples_per_s"], 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="scv2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5, help="timed batches per round (train and eval)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = bench(args.preset, args.batch, args.iters, rounds=args.rounds)
    print(f"{r['preset']} batch {r['batch']} ({r['frames']} frames x {r['features']} features), "
          f"{r['threads']} threads, torch {r['torch']}, load average {r['load_average_1min_at_start']}")
    print(f"train            {r['train_samples_per_s']:8.2f} samples/s "
          f"(reference {REFERENCE['train_samples_per_s']:g}: x{r['ratio_train_vs_reference']:.2f})")
    print(f"eval (parallel)  {r['eval_parallel_samples_per_s']:8.2f} samples/s "
          f"(reference {REFERENCE['eval_parallel_samples_per_s']:g}: x{r['ratio_eval_vs_reference']:.2f})")
    print(f"eval (streaming) {r['eval_streaming_samples_per_s']:8.2f} samples/s")
    write_json(args.out, r)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
