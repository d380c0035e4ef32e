"""Training, checkpoints and the ``lmuf train`` / ``lmuf info`` commands (preset "tiny" on digits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from lmuformer import build_model
from lmuformer.checkpoint import load_checkpoint, save_checkpoint, update_metrics
from lmuformer.data import load_dataset
from lmuformer.errors import UserError
from lmuformer.model.calibrate import activate
from lmuformer.training import evaluate, recipe, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dataset="digits", preset="tiny", seed=0, lr=2e-2, threads=1, progress=False)
VOLATILE = {"train_seconds", "best_checkpoint", "last_checkpoint", "options"}


def _stable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics without wall times and paths (what a fixed seed must reproduce exactly)."""
    out = {k: v for k, v in metrics.items() if k not in VOLATILE}
    out["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in metrics["history"]]
    return out


def _same_weights(a: Path, b: Path) -> bool:
    sa, sb = load_checkpoint(a).model.state_dict(), load_checkpoint(b).model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
             ) -> tuple[int, str, str]:
    """Run ``lmuf ARGS`` in-process through the real entry point; (exit code, stdout, stderr)."""
    from lmuformer.cli import main

    monkeypatch.setattr(sys, "argv", ["lmuf", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("run_a")
    return train(epochs=3, out_dir=out, **TINY), out


def test_train_writes_files_and_learns(run_a: tuple[dict[str, Any], Path]) -> None:
    metrics, out = run_a
    for name in ("best.pt", "last.pt", "metrics.json"):
        assert (out / name).is_file()
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    best = load_checkpoint(out / "best.pt")
    assert best.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    history = metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_accuracy"] for h in history) > 0.2  # chance is 0.1
    assert metrics["test_accuracy"] > 0.2
    loader = DataLoader(load_dataset("digits", "test"), batch_size=100)
    assert evaluate(best.model, loader) == pytest.approx(metrics["test_accuracy"])
    last = load_checkpoint(out / "last.pt")
    assert last.train_state is not None and last.train_state["epoch"] == 3
    assert not last.model.training


def test_same_seed_same_results(run_a: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    metrics_a, out_a = run_a
    metrics_b = train(epochs=3, out_dir=tmp_path, **TINY)
    assert _stable(metrics_b) == _stable(metrics_a)
    assert _same_weights(out_a / "last.pt", tmp_path / "last.pt")


def test_resume_continues_the_same_run(run_a: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    first = train(epochs=1, out_dir=tmp_path, **TINY)
    assert [h["epoch"] for h in first["history"]] == [1]
    resumed = train(epochs=3, resume=tmp_path / "last.pt", progress=False)  # options come from the file
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "last.pt").train_state["epoch"] == 3
    # an interrupted and resumed run equals the uninterrupted one
    metrics_a, out_a = run_a
    assert _stable(resumed) == _stable(metrics_a)
    assert _same_weights(out_a / "last.pt", tmp_path / "last.pt")
    with pytest.raises(UserError, match="already holds 3 epochs"):
        train(epochs=3, resume=tmp_path / "last.pt", progress=False)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = activate(build_model("tiny"))
    x = torch.rand(4, 8, 8)
    path = save_checkpoint(tmp_path / "m.pt", model, {"note": "hi", "acc": 0.5}, {"epoch": 7})
    ckpt = load_checkpoint(path)
    assert ckpt.config == model.config
    assert not ckpt.model.training
    assert ckpt.metrics == {"note": "hi", "acc": 0.5}
    assert ckpt.train_state == {"epoch": 7}
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = save_checkpoint(tmp_path / "good.pt", build_model("tiny"), {}).read_bytes()
    files = {
        "truncated": tmp_path / "truncated.pt",
        "text": tmp_path / "notes.txt",
        "foreign": tmp_path / "foreign.pt",
        "missing": tmp_path / "missing.pt",
        "empty": tmp_path / "empty.pt",
    }
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["text"].write_text("these are not weights\n")
    torch.save({"weights": torch.ones(3)}, files["foreign"])
    files["empty"].write_bytes(b"")
    return files


class _RunsCode:
    """Unpickling this calls ``open(path, "w")``: a file that would run code when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_checkpoint_loader_refuses_a_pickle_that_runs_code(tmp_path: Path) -> None:
    from lmuformer.checkpoint import FORMAT, VERSION

    model = build_model("tiny")
    marker = tmp_path / "code-was-run"
    payload = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
               "state_dict": model.state_dict(), "metrics": {"note": _RunsCode(marker)}, "train_state": None}
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    assert not marker.exists()
    for load in (load_checkpoint, lambda p: update_metrics(p, {"x": 1})):
        with pytest.raises(UserError, match="cannot read checkpoint") as info:
            load(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
        assert not marker.exists()  # nothing in the file was executed


def test_checkpoint_contents_checked(tmp_path: Path) -> None:
    from lmuformer.checkpoint import FORMAT, VERSION

    model = build_model("tiny")
    good = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(),
            "state_dict": model.state_dict(), "metrics": {}, "train_state": {"epoch": 1}}
    cases = {
        "newer": ({**good, "version": VERSION + 1}, f"version {VERSION + 1}; this lmuformer reads up to 1"),
        "no version": ({**good, "version": "1"}, "format version '1'"),
        "no marker": ({**good, "format": "other"}, "is not an lmuformer checkpoint"),
        "list": ([good], "is not an lmuformer checkpoint"),
        "no config": ({**good, "config": None}, r"damaged lmuformer checkpoint \(missing 'config'\)"),
        "no weights": ({k: v for k, v in good.items() if k != "state_dict"}, "missing 'state_dict'"),
        "no metrics": ({**good, "metrics": [1]}, "missing 'metrics'"),
        "wrong shape": ({**good, "config": {**good["config"], "dim": good["config"]["dim"] * 2}},
                        r"weight 'patch_embed.conv0.weight' has shape \(16, 8, 3\); "
                        r"its config needs \(32, 8, 3\)$"),
        # strict loading: a missing or unexpected weight is an error naming the key, not a silent default
        "missing weight": ({**good, "state_dict": dict(list(model.state_dict().items())[1:])},
                           r"stored weights do not match its config \(missing 'patch_embed.conv0.weight'\)$"),
        "extra weight": ({**good, "state_dict": {**model.state_dict(), "extra": torch.ones(1)}},
                         r"stored weights do not match its config \(unexpected 'extra'\)$"),
    }
    for name, (payload, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        with pytest.raises(UserError, match=message):
            load_checkpoint(path)
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(UserError, match="checkpoint is not a file"):
        load_checkpoint(tmp_path / "dir.pt")
    path = tmp_path / "ok.pt"
    torch.save({**good, "version": 0, "train_state": "junk"}, path)  # older versions are read
    ckpt = load_checkpoint(path)
    assert ckpt.train_state is None and ckpt.path == path and ckpt.metrics == {}


def test_checkpoint_metrics_plain_and_update(tmp_path: Path) -> None:
    import numpy as np

    from lmuformer.checkpoint import plain, unwrap

    metrics = {"acc": np.float32(0.5), "n": np.int64(3), "curve": np.array([1, 2]), "t": torch.tensor(2.5),
               "w": torch.ones(2), "path": tmp_path, 7: (1, None, "x", b"y", True), 1.5: [np.float64(0.25)]}
    p = plain(metrics)
    assert p["acc"] == 0.5 and type(p["acc"]) is float and p["n"] == 3 and type(p["n"]) is int
    assert p["curve"] == [1, 2] and p["t"] == 2.5 and type(p["t"]) is float
    assert torch.equal(p["w"], torch.ones(2))
    assert p["path"] == str(tmp_path) and p[7] == (1, None, "x", b"y", True) and p["1.5"] == [0.25]
    assert type(p["1.5"][0]) is float  # np.float64 subclasses float; stored as such it is unreadable
    with pytest.raises(TypeError, match="cannot store a object"):
        plain({"x": object()})

    class OnlyItem:  # has .item but no .dtype: not an array
        def item(self):
            return 1

    with pytest.raises(TypeError, match="cannot store a OnlyItem"):
        plain([OnlyItem()])
    model = build_model("tiny")
    wrapped = torch.nn.Sequential()
    wrapped.module = model  # what DistributedDataParallel looks like
    assert unwrap(wrapped) is model
    with pytest.raises(TypeError, match="expected an LMUFormer, got Linear"):
        unwrap(torch.nn.Linear(1, 1))
    path = save_checkpoint(tmp_path / "m.pt", wrapped, {"acc": 0.5, "keep": 1})
    before = load_checkpoint(path).model.state_dict()
    update_metrics(path, {"acc": np.float64(0.75), "new": "x"})
    ckpt = load_checkpoint(path)
    assert ckpt.metrics == {"acc": 0.75, "keep": 1, "new": "x"} and ckpt.train_state is None
    assert all(torch.equal(before[k], v) for k, v in ckpt.model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # atomic rewrite, no temporaries


@pytest.mark.parametrize("kind", ["truncated", "text", "foreign", "missing", "empty"])
def test_bad_checkpoint_is_one_user_error(kind: str, bad_files: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = bad_files[kind]
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    code, out, err = _run_cli(["info", str(path), "--json"], capsys, monkeypatch)
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")


def test_bad_checkpoint_real_entry_point(bad_files: dict[str, Path]) -> None:
    lmuf = Path(sys.executable).with_name("lmuf")
    cmd = [str(lmuf)] if lmuf.exists() else [sys.executable, "-m", "lmuformer.cli"]
    res = subprocess.run([*cmd, "info", str(bad_files["text"]), "--json"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")


def test_info_json_of_trained_checkpoint(run_a: tuple[dict[str, Any], Path],
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    metrics, out = run_a
    code, stdout, _ = _run_cli(["info", str(out / "best.pt"), "--json"], capsys, monkeypatch)
    assert code == 0
    info = json.loads(stdout)
    count = sum(p.numel() for p in build_model("tiny").parameters())
    assert info["parameters"] == metrics["parameters"] == count
    assert info["variant"] == "spiking"
    assert info["test_accuracy"] == pytest.approx(metrics["test_accuracy"])


def test_cli_train_with_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "digits"\npreset = "tiny"\nepochs = 5\nthreads = 1\nbatch-size = 64\n'
                   "[model]\nmlp_ratio = 1\n")
    out = tmp_path / "out"
    code, stdout, _ = _run_cli(["train", "--config", str(cfg), "--epochs", "1", "--out", str(out),
                                "--no-progress"], capsys, monkeypatch)
    assert code == 0, stdout
    assert "test accuracy" in stdout and str(out / "best.pt") in stdout
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt.config.mlp_ratio == 1  # from the config file
    assert ckpt.metrics["epochs"] == 1  # the flag wins over the file
    assert ckpt.metrics["options"]["batch_size"] == 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "epochs must be > 0"),
        (["--batch-size", "-1"], "batch_size must be > 0"),
        (["--preset", "scv2"], "preset 'scv2' takes 128 features"),
        (["--preset", "nope"], "unknown preset"),
        (["--dataset", "nope"], "unknown dataset"),
        (["--resume", "missing.pt"], "checkpoint not found"),
        (["--device", "nope"], "bad device 'nope'"),
        (["--recipe", "small"], "dataset 'digits' has no recipe 'small'"),
    ],
)
def test_cli_train_impossible_options(args: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _run_cli(["train", "--no-progress", *args], capsys, monkeypatch)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not (tmp_path / "runs").exists()


def test_ddp_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "lmuformer.cli", "train", "--dataset", "digits", "--preset", "tiny", "--epochs", "1",
           "--out", str(out), "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("test accuracy") == 1  # only rank 0 reports
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt.metrics["world_size"] == 2 and [h["epoch"] for h in ckpt.metrics["history"]] == [1]
    # the reported accuracy is the saved model's on the whole test split (rank 0 did not see half of it)
    loader = DataLoader(load_dataset("digits", "test"), batch_size=100)
    assert ckpt.metrics["test_accuracy"] == pytest.approx(evaluate(ckpt.model, loader))
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == ckpt.metrics["test_accuracy"]
    assert (out / "last.pt").is_file()


def test_bf16_autocast_tiny_run(run_a: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    """--precision bf16 on the CPU: autocast changes the run (matmuls in bf16) but it still
    learns; weights stay float32; the precision is recorded; fp32 stays the CPU default."""
    from lmuformer.training import default_precision

    assert default_precision(torch.device("cpu")) == "fp32"
    assert run_a[0]["precision"] == "fp32"
    metrics = train(epochs=3, out_dir=tmp_path, precision="bf16", **TINY)
    assert metrics["precision"] == "bf16" and metrics["options"]["precision"] == "bf16"
    fp32 = run_a[0]["history"]
    assert [h["train_loss"] for h in metrics["history"]] != [h["train_loss"] for h in fp32]
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert metrics["test_accuracy"] > 0.2  # chance 0.1; fp32 after 3 epochs: 0.42, bf16: 0.44
    assert all(p.dtype == torch.float32 for p in load_checkpoint(tmp_path / "best.pt").model.parameters())


def test_fp16_step_uses_a_grad_scaler() -> None:
    from lmuformer.training import TrainOptions
    from lmuformer.training.loop import _Amp, _train_step

    torch.manual_seed(0)
    model = build_model("tiny")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    amp = _Amp(torch.device("cpu"), "fp16")
    assert amp.scaler.is_enabled()
    before = [p.detach().clone() for p in model.parameters()]
    loss, correct = _train_step(model, opt, torch.rand(4, 8, 8), torch.randint(0, 10, (4,)),
                                TrainOptions(grad_clip=1.0), 10, torch.Generator(), amp)
    assert loss > 0 and 0 <= correct <= 4 and amp.scaler.get_scale() > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_collectives_live_on_the_backend_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """NCCL takes only CUDA tensors (the device of the local rank), gloo CPU tensors; the
    gloo path itself runs in test_ddp_two_processes."""
    from lmuformer.training.distributed import _collective_device

    monkeypatch.setenv("LOCAL_RANK", "1")
    assert _collective_device("nccl", torch.device("cuda")) == torch.device("cuda", 1)
    assert _collective_device("nccl", torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert _collective_device("gloo", torch.device("cpu")) == torch.device("cpu")


def test_scv2_small_recipe_overlays_the_paper_recipe(tmp_path: Path) -> None:
    """--recipe small: plain CE, no mixup/augmentation, dim 64; the default stays the paper's."""
    from tests.helpers import make_scv2

    paper = recipe("scv2")
    assert (paper.recipe, paper.loss, paper.mixup, paper.augment, paper.batch_size, paper.epochs) == (
        "default", "bce", 0.6, True, 128, 200)
    small = recipe("scv2", "small")
    assert (small.recipe, small.loss, small.mixup, small.augment, small.label_smoothing) == (
        "small", "ce", 0.0, False, 0.0)
    assert (small.batch_size, small.epochs, small.model) == (32, 30, {"dim": 64, "memory_size": 128})
    assert (small.lr, paper.lr) == (5e-3, 2.5e-3)
    root = make_scv2(tmp_path / "sc")
    m = train(dataset="scv2", data_dir=str(root), recipe="small", epochs=1, threads=1,
              out_dir=tmp_path / "out", progress=False)
    ckpt = load_checkpoint(tmp_path / "out" / "last.pt")
    assert (ckpt.config.dim, ckpt.config.memory_size) == (64, 128)
    assert m["options"]["recipe"] == "small" and m["options"]["loss"] == "ce"
    with pytest.raises(UserError, match="trained with recipe 'small', not 'default'"):
        train(dataset="scv2", data_dir=str(root), recipe="default", epochs=2,
              resume=tmp_path / "out" / "last.pt", progress=False)


def test_soft_labels_from_the_dataset_skip_the_batch_mixup(tmp_path: Path) -> None:
    """scv2 items mixed by the dataset (the reference's waveform mixup) arrive as soft labels: the
    loss takes them as they are; integer labels still get the batch mixup (digits' recipe)."""
    import torch.nn.functional as F

    from lmuformer.data import load_dataset
    from lmuformer.training.loop import _forward_loss
    from tests.helpers import make_scv2

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))  # non-zero logits
    x = torch.rand(6, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    soft = F.one_hot(y, 10).float() * 0.7 + F.one_hot(y.flip(0), 10).float() * 0.3
    for loss_name, fn in (("bce", F.binary_cross_entropy_with_logits), ("ce", F.cross_entropy)):
        o = recipe("digits")
        o.loss, o.mixup, o.label_smoothing = loss_name, 0.6, 0.0
        logits, loss, labels = _forward_loss(model, x, soft, o, 10, torch.Generator().manual_seed(0))
        assert torch.equal(loss, fn(model(x), soft)) and torch.equal(labels, soft.argmax(1))
        _, mixed_loss, _ = _forward_loss(model, x, y, o, 10, torch.Generator().manual_seed(0))
        assert not torch.equal(mixed_loss, fn(model(x), F.one_hot(y, 10).float()))
    root = make_scv2(tmp_path / "sc")
    _, y0 = load_dataset("scv2", "train", data_dir=str(root), mixup=0.6)[0]  # a soft label, sums to 1
    assert tuple(y0.shape) == (35,) and abs(float(y0.sum()) - 1) < 1e-5
    m = train(dataset="scv2", data_dir=str(root), recipe="small", mixup=0.6, loss="bce", epochs=1, threads=1,
              out_dir=tmp_path / "out", progress=False, dim=16, memory_size=16)
    assert m["options"]["mixup"] == 0.6 and 0 <= m["train_accuracy"] <= 1


def test_clean_bn_changes_only_the_batchnorm_statistics(tmp_path: Path) -> None:
    """clean_bn: after each epoch the BatchNorm running statistics are averages over the clean
    (un-mixed) train split; the weights, hence the training, are those of the run without it."""
    from lmuformer.data.mixup import recompute_batchnorm

    opts = dict(TINY, epochs=2, mixup=0.6, batch_size=64)
    train(out_dir=tmp_path / "plain", clean_bn=False, **opts)
    train(out_dir=tmp_path / "clean", clean_bn=True, **opts)
    plain = load_checkpoint(tmp_path / "plain" / "last.pt").model.state_dict()
    clean_model = load_checkpoint(tmp_path / "clean" / "last.pt").model
    clean = clean_model.state_dict()
    stats = [k for k in plain if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(plain[k], clean[k]) for k in plain if k not in stats
                         and not k.endswith("num_batches_tracked"))
    assert any(not torch.allclose(plain[k], clean[k]) for k in stats)
    again = load_checkpoint(tmp_path / "clean" / "last.pt").model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the run's thread count: the same sums, bit for bit
    try:
        recompute_batchnorm(again, load_dataset("digits", "train"), 256)  # the trainer's batches
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(again.state_dict()[k], clean[k]) for k in stats)
    assert not again.training
