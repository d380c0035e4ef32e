"""Training, evaluation and streaming speed of the paper's model (preset "scv2") on random input.

For each batch size (128 frames x 128 features, random labels, Adam, cross-entropy):
- train: forward + backward + Adam step, samples/s after warm-up (``--precision``: autocast
  as ``lmuf train``; default bf16 on CUDA, fp32 on the CPU);
- eval: ``model(x)`` in eval mode under no_grad (float32), samples/s;
then streaming one sample (batch 1, one thread):
- ``model.stream(x)`` end to end (building its lean step / CUDA graph included), ms per frame;
- the prebuilt step alone (:func:`lmuformer.model.lean_stream.stepper`), ms per frame.

Prints a table with the anchors below and writes ``benchmarks/results/train_speed_<device>.json``
(tmp + rename).  The machine may be shared: the 1-min load average is saved beside the figures,
and on the CPU the streaming step's thread CPU time too (what one uncontended core would take).

Anchors (issue 10): the reference LMUFormer with its own CUDA neuron kernels on one H200, and
lmuformer at 41e6c4a (before the Triton kernels) on the same H200 and on 2 CPU cores.

Usage: ``python benchmarks/bench_train.py [--device cpu|cuda] [--batch 8,128] [--iters 5]
[--rounds 3] [--threads N] [--precision fp32|bf16|fp16] [--preset scv2]``
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
from lmuformer.model.lean_stream import stepper
from lmuformer.training import PRECISIONS, default_precision

RESULTS = Path(__file__).resolve().parent / "results"
# samples/s by batch size; streaming in ms per frame (batch 1)
ANCHORS: dict[str, dict[str, Any]] = {
    "reference_cuda_kernels_h200": {"train": {8: 433.7, 128: 6206.5}, "eval": {8: 1111.0, 128: 12528.8}},
    "reference_torch_fallback_h200": {"train": {8: 12.8, 128: 179.7}, "eval": {8: 34.8, 128: 675.9}},
    "lmuformer_41e6c4a_h200": {"train": {8: 68.6, 128: 905.5}, "eval": {8: 76.2, 128: 1029.7},
                               "stream_ms_per_frame": 5.6},
    "lmuformer_41e6c4a_cpu_2_threads": {"train": {8: 59.64}, "eval": {8: 131.47},
                                        "stream_ms_per_frame_1_thread": 2.9},
    "reference_cpu_2_threads": {"train": {8: 23.0}, "eval": {8: 85.0}},
}
TARGETS = {"cuda": "batch 128 >= reference CUDA (6206 train / 12529 eval samples/s), stream <= 0.5 ms/frame",
           "cpu": "train/eval not slower than 41e6c4a, stream <= 1 ms/frame on one thread"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Any, batch: int, iters: int, warmup: int, rounds: int, device: torch.device) -> float:
    """Samples per second of ``fn()`` (one batch per call): ``warmup`` calls, then the median
    over ``rounds`` rounds of ``iters`` timed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(device)
        rates.append(batch * iters / (time.perf_counter() - t0))
    return statistics.median(rates)


def bench_batch(preset: str, batch: int, device: torch.device, precision: str, iters: int,
                rounds: int) -> dict[str, Any]:
    """Train and eval samples/s at one batch size."""
    torch.manual_seed(0)
    model = build_model(preset).to(device)
    cfg = model.config
    x = torch.rand(batch, cfg.frames, cfg.in_features, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    opt = torch.optim.Adam(model.parameters(), lr=2.5e-3, betas=(0.95, 0.999))
    dtype = PRECISIONS[precision]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    model.train()
    train = _rate(train_step, batch, iters, 2, rounds, device)
    model.eval()
    with torch.no_grad():
        ev = _rate(lambda: model(x), batch, iters, 2, rounds, device)
    return {"batch": batch, "train_samples_per_s": round(train, 2), "eval_samples_per_s": round(ev, 2)}


def bench_stream(preset: str, device: torch.device, rounds: int) -> dict[str, Any]:
    """Streaming one sample on one thread: ms per frame, end to end and for the prebuilt step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(preset).to(device).eval()
        cfg = model.config
        x = torch.rand(1, cfg.frames, cfg.in_features, device=device)
        steps = cfg.frames + model.latency
        model.stream(x)  # warm-up
        wall, cpu = [], []
        for _ in range(rounds):
            _sync(device)
            t0, c0 = time.perf_counter(), time.thread_time()
            model.stream(x)
            _sync(device)
            wall.append((time.perf_counter() - t0) / steps * 1e3)
            cpu.append((time.thread_time() - c0) / steps * 1e3)
        fast = stepper(model, 1)
        frames = [*x.unbind(1), *([x.new_zeros(1, cfg.in_features)] * model.latency)]
        step_wall, step_cpu = [], []
        for _ in range(rounds):
            fast.reset()
            _sync(device)
            t0, c0 = time.perf_counter(), time.thread_time()
            for f in frames:
                fast.step(f)
            _sync(device)
            step_wall.append((time.perf_counter() - t0) / steps * 1e3)
            step_cpu.append((time.thread_time() - c0) / steps * 1e3)
    finally:
        torch.set_num_threads(threads)
    out = {"stream_ms_per_frame": round(statistics.median(wall), 4),
           "step_ms_per_frame": round(statistics.median(step_wall), 4), "steps": steps}
    if device.type == "cpu":
        out.update(stream_cpu_ms_per_frame=round(statistics.median(cpu), 4),
                   step_cpu_ms_per_frame=round(statistics.median(step_cpu), 4))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="scv2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", default="8", help="comma-separated batch sizes, e.g. 8,128")
    ap.add_argument("--iters", type=int, default=5, help="timed batches per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the median is reported")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--precision", choices=sorted(PRECISIONS), default=None,
                    help="training precision (default: bf16 on CUDA, fp32 on the CPU)")
    ap.add_argument("--no-stream", action="store_true", help="skip the streaming measurement")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = args.precision or default_precision(device)
    batches = [int(b) for b in args.batch.split(",") if b.strip()]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = [bench_batch(args.preset, b, device, precision, args.iters, args.rounds) for b in batches]
    stream = None if args.no_stream else bench_stream(args.preset, device, args.rounds)
    r: dict[str, Any] = {
        "preset": args.preset, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
        "threads": torch.get_num_threads(), "train_precision": precision, "eval_precision": "fp32",
        "timing": f"median of {args.rounds} rounds of {args.iters} batches, after 2 warm-up batches",
        "load_average_1min_at_start": load,
        "load_average_1min_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__, "results": rows, "streaming_batch1_threads1": stream,
        "anchors": ANCHORS, "target": TARGETS.get(device.type),
    }
    ref = ANCHORS["reference_cuda_kernels_h200"] if device.type == "cuda" else ANCHORS[
        "lmuformer_41e6c4a_cpu_2_threads"]
    ref_name = "reference CUDA kernels, H200" if device.type == "cuda" else "lmuformer 41e6c4a, 2 CPU threads"
    print(f"{args.preset} on {r['device_name']} ({device}), {r['threads']} threads, train {precision}, "
          f"eval fp32, torch {r['torch']}, load average {load}")
    print(f"{'batch':>5} {'train/s':>10} {'eval/s':>10}   anchor: {ref_name}")
    for row in rows:
        b = row["batch"]
        tr, ev = ref["train"].get(b), ref["eval"].get(b)
        anchor = f"train {tr} (x{row['train_samples_per_s'] / tr:.2f}), eval {ev} " \
                 f"(x{row['eval_samples_per_s'] / ev:.2f})" if tr and ev else "-"
        print(f"{b:>5} {row['train_samples_per_s']:>10.2f} {row['eval_samples_per_s']:>10.2f}   {anchor}")
    if stream:
        extra = (f" (thread CPU time {stream['stream_cpu_ms_per_frame']} / {stream['step_cpu_ms_per_frame']})"
                 if "step_cpu_ms_per_frame" in stream else "")
        print(f"streaming batch 1, 1 thread: model.stream {stream['stream_ms_per_frame']} ms/frame, "
              f"prebuilt step {stream['step_ms_per_frame']} ms/frame{extra}")
    out = args.out or RESULTS / f"train_speed_{device.type}.json"
    write_json(out, r)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
