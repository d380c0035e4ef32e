"""Nothing lost, nothing left behind (issue 13): one test per class of failure.

- data loss: an output that is one of the command's inputs, or a device, is refused;
- temporaries: removed on SIGTERM, and a killed writer's are removed by the next write;
- two writers: a second ``lmuf train`` into a folder in use gets one line and exit 2;
- signals with Lava: SIGTERM, SIGHUP and a terminal Ctrl-C, at start-up and mid-run, leave
  no process and no shared-memory segment, with exit 143 / 129 / 130 within seconds;
- validation: bad numbers at each boundary are one ``error:`` line naming the field.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backends.lava.backend import _children, _reap_new_children, live_processes

ROOT = Path(__file__).resolve().parents[1]


def lmuf(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    """``python -m lmuformer.cli ARGS`` in a subprocess (this checkout first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lmuformer.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=kw.pop("timeout", 300), **kw)


def lmuf_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``lmuf ARGS`` in this process (through ``main()``) with ``cwd`` as working folder."""
    from tests.helpers import run_main as cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        code, out, err = cli(*args)
    finally:
        os.chdir(old)
    return subprocess.CompletedProcess(args, code, out, err)


def start(*args: str, stderr_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(stderr_path, "w") as err:
        return subprocess.Popen([sys.executable, "-m", "lmuformer.cli", *args], stdout=subprocess.DEVNULL,
                                stderr=err, env=env, cwd=cwd, start_new_session=True)


def one_error_line(res) -> str:
    """The stderr of a refused command: exactly one ``error:`` line, exit 2, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    return lines[0]


def session_processes(sid: int) -> set[int]:
    """Live processes of session ``sid`` (a subprocess started with a new session and all its
    descendants, orphans included)."""
    return {p for p, (_, s) in live_processes().items() if s == sid}


def mapped_segments(pids: set[int]) -> set[str]:
    """Names of the /dev/shm segments that ``pids`` have mapped (other users' runs excluded)."""
    out = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                out.update(m.group(1) for m in re.finditer(r"/dev/shm/(\S+)", f.read()))
        except OSError:
            continue
    return out


def temporaries(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".lmuf-")]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    from lmuformer.checkpoint import save_checkpoint
    from lmuformer.model import build_model

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, build_model("tiny"), {"test_accuracy": 0.5})
    return path


@pytest.fixture(scope="module")
def tiny_nir(tmp_path_factory) -> Path:
    from export import model_to_nir, write_graph
    from export.graph import ExportOptions
    from lmuformer.model import build_model

    path = tmp_path_factory.mktemp("nir") / "tiny.nir"
    write_graph(model_to_nir(build_model("tiny").eval(), ExportOptions(quantize=True)), path)
    return path


# ----------------------------------------------------------------------------- data loss


def test_export_onto_its_checkpoint_is_refused(tiny_ckpt, tmp_path):
    ckpt = tmp_path / "s.pt"
    ckpt.write_bytes(tiny_ckpt.read_bytes())
    os.link(ckpt, tmp_path / "alias.pt")
    before = ckpt.read_bytes()
    for out in ("s.pt", "alias.pt", "./sub/../s.pt"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        line = one_error_line(lmuf_here("export", "s.pt", "-o", out, cwd=tmp_path))
        assert "same file as the input" in line
    assert ckpt.read_bytes() == before
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("command", ["simulate", "report", "stream"])
def test_json_or_report_onto_its_model_is_refused(tiny_nir, tmp_path, command):
    model = tmp_path / "m.nir"
    model.write_bytes(tiny_nir.read_bytes())
    before = model.read_bytes()
    args = {
        "simulate": ["simulate", "m.nir", "--random", "--samples", "1", "--no-compare", "--json", "m.nir"],
        "report": ["report", "m.nir", "--random", "--samples", "1", "-o", "m.nir"],
        "stream": ["stream", "m.nir", "--dataset", "digits", "--samples", "1", "--json", "m.nir"],
    }[command]
    line = one_error_line(lmuf_here(*args, cwd=tmp_path))
    assert "same file as the input" in line
    assert model.read_bytes() == before


def test_device_and_directory_targets_are_refused(tmp_path):
    # the device through a link in tmp_path: a broken build replaces the link, never /dev/null
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    line = one_error_line(lmuf_here("export", "--preset", "tiny", "-o", str(null), cwd=tmp_path))
    assert "not a regular file" in line
    assert null.is_symlink() and null.resolve() == Path("/dev/null")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_error_line(lmuf_here("export", "--preset", "tiny", "-o", str(fifo), cwd=tmp_path))
    assert Path(fifo).is_fifo()
    line = one_error_line(lmuf_here("export", "--preset", "tiny", "-o", str(tmp_path), cwd=tmp_path))
    assert "directory" in line


def test_special_target_written_into_with_the_flag(tmp_path):
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    res = lmuf_here("--allow-special-output", "export", "--preset", "tiny", "-o", str(null), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert null.is_symlink() and null.resolve() == Path("/dev/null")
    assert temporaries(tmp_path) == []


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path):
    from lmuformer.files import write_text

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".lmuf-tmp.{dead.pid}.abc123.best.pt"
    stale.write_bytes(b"partial")
    live = tmp_path / f".lmuf-tmp.{os.getpid()}.abc123.other.pt"  # a live writer's: kept
    live.write_bytes(b"in progress")
    write_text(tmp_path / "x.txt", "hello")
    assert not stale.exists() and live.exists()
    assert (tmp_path / "x.txt").read_text() == "hello"


def test_sigterm_during_export_leaves_no_temporary(tmp_path):
    """SIGTERM while the NIR file is being written: exit 143, the temporary is removed."""
    code = (
        "import os, signal, sys, export.io as io, nir\n"
        "orig = nir.write\n"
        "def slow(path, graph):\n"
        "    orig(path, graph)\n"
        "    print('written', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    import time; time.sleep(30)\n"
        "io.nir.write = slow\n"
        "from lmuformer.cli import main\n"
        "sys.argv = ['lmuf', 'export', '--preset', 'tiny', '-o', 'out.nir']\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=120)
    assert "written" in res.stdout
    assert res.returncode == 143, res.stderr
    assert "Traceback" not in res.stderr
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- two writers


def test_second_trainer_into_the_same_folder_is_refused(tmp_path):
    """A live ``lmuf train --out D`` holds D: a second gets one line and exit 2; once the
    first is killed (SIGKILL, no clean-up), ``--resume`` takes the folder over."""
    common = ["train", "--dataset", "digits", "--preset", "tiny", "--out", "run", "--no-progress"]
    first = start(*common, "--epochs", "200", "--seed", "1", stderr_path=tmp_path / "first.err", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "last.pt").exists():
            assert first.poll() is None, (tmp_path / "first.err").read_text()
            assert time.monotonic() < deadline, "first run wrote no last.pt"
            time.sleep(0.2)
        line = one_error_line(lmuf(*common, "--epochs", "1", "--seed", "2", cwd=tmp_path))
        assert "being written by another lmuf process" in line and f"pid {first.pid}" in line
    finally:
        first.kill()
        first.wait()
    from lmuformer.checkpoint import load_checkpoint

    done = int(load_checkpoint(tmp_path / "run" / "last.pt").train_state["epoch"])
    res = lmuf("train", "--resume", "run/last.pt", "--epochs", str(done + 1), "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert temporaries(tmp_path / "run") == []


def test_lock_is_exclusive_and_released(tmp_path):
    from lmuformer.errors import UserError
    from lmuformer.files import lock

    code = ("import sys, time; from lmuformer.files import lock\n"
            "with lock(sys.argv[1], folder=True):\n    print('held', flush=True); time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "d")], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {holder.pid}"):
            with lock(tmp_path / "d", folder=True):
                pass
    finally:
        holder.kill()
        holder.wait()
    with lock(tmp_path / "d", folder=True):  # the dead holder's lock is taken over
        assert (tmp_path / "d" / ".lmuf-lock").exists()
    assert temporaries(tmp_path / "d") == []


# ----------------------------------------------------------------------------- signals with Lava


def _progress_seen(err: Path) -> bool:
    return re.search(r"\| *[1-9]\d*/\d+ ", err.read_text(errors="replace")) is not None


@pytest.mark.parametrize("sig, phase, group", [
    (signal.SIGTERM, "run", False),
    (signal.SIGHUP, "start-up", False),
    (signal.SIGINT, "start-up", True),  # a terminal Ctrl-C: SIGINT to the whole process group
])
def test_signal_during_lava_leaves_nothing(tmp_path, sig, phase, group):
    from tests.conftest import skip_without_lava

    skip_without_lava()
    from export import model_to_nir, write_graph
    from export.graph import ExportOptions
    from tests.graphs import active_model

    graph = model_to_nir(active_model("digits", seed=1), ExportOptions(quantize=True))
    write_graph(graph, tmp_path / "d.nir")
    err = tmp_path / "err.txt"
    proc = start("simulate", "d.nir", "--backend", "lava", "--random", "--samples", "32", "--no-compare",
                 stderr_path=err, cwd=tmp_path)
    segments: set[str] = set()  # shared memory of this run (its processes' mappings)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, err.read_text()[-2000:]
            assert time.monotonic() < deadline, f"never reached {phase}"
            pids = session_processes(proc.pid)
            segments |= mapped_segments(pids)
            if (phase == "start-up" and len(pids) > 20) or (phase == "run" and _progress_seen(err)):
                break
            time.sleep(0.1)
        t0 = time.monotonic()
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        while proc.poll() is None and time.monotonic() - t0 < 60:
            segments |= mapped_segments(session_processes(proc.pid))
            time.sleep(0.1)
        rc = proc.wait(timeout=1)
        waited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = session_processes(proc.pid)
    for p in left:
        os.kill(p, signal.SIGKILL)
    leaked = {n for n in segments if os.path.exists(f"/dev/shm/{n}")}
    for n in leaked:  # this run's own segments: do not leave them on the machine, even on failure
        with contextlib.suppress(OSError):
            os.unlink(f"/dev/shm/{n}")
    assert not left, f"{len(left)} processes left behind"
    assert rc == (130 if sig == signal.SIGINT else 128 + sig), err.read_text()[-2000:]
    assert "Traceback" not in err.read_text()
    assert waited < 30, f"took {waited:.1f} s to stop"
    assert segments, "saw no shared memory of the run"
    assert not leaked, f"{len(leaked)} shared-memory segments left behind"


# ----------------------------------------------------------------------------- validation


def run_cli(*args: str) -> tuple[int, str]:
    """``lmuf ARGS`` in this process through ``main()``; (exit code, stderr)."""
    from tests.helpers import run_main as cli

    code, _, err = cli(*args)
    return code, err


def assert_one_line(code: int, err: str, *words: str) -> None:
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("field, value, words", [
    ("theta", 0.0, ["theta = 0.0", "(0, "]),
    ("memory_size", 10**6, ["memory_size = 1000000", "[1, 16384]"]),
    ("dim", float("nan"), ["dim = nan"]),
    ("depth", "two", ["depth = 'two'", "not a number"]),
])
def test_checkpoint_config_is_validated(tiny_ckpt, tmp_path, field, value, words):
    import torch

    payload = torch.load(tiny_ckpt, weights_only=True)
    payload["config"][field] = value
    torch.save(payload, tmp_path / "bad.pt")
    for args in (["info", str(tmp_path / "bad.pt")], ["export", str(tmp_path / "bad.pt"), "-o",
                                                       str(tmp_path / "x.nir")]):
        assert_one_line(*run_cli(*args), *words)
    assert not (tmp_path / "x.nir").exists()


def test_checkpoint_weights_are_validated(tiny_ckpt, tmp_path):
    import torch

    payload = torch.load(tiny_ckpt, weights_only=True)
    key = "blocks.0.0.to_h.0.weight"
    payload["state_dict"][key] = payload["state_dict"][key] * float("nan")
    torch.save(payload, tmp_path / "nan.pt")
    assert_one_line(*run_cli("export", str(tmp_path / "nan.pt"), "-o", str(tmp_path / "x.nir")), key, "NaN")
    del payload["state_dict"][key]
    torch.save(payload, tmp_path / "missing.pt")
    assert_one_line(*run_cli("info", str(tmp_path / "missing.pt")), f"missing {key!r}")


def _edit_nir(src: Path, dst: Path, edit) -> Path:
    import h5py

    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        edit(f["node"])
    return dst


def _set(group, key, value):
    if key in group:
        del group[key]
    group[key] = value


@pytest.mark.parametrize("case, words", [
    ("tau0", ["tau = 0.0", "> 0"]),
    ("tau_neg", ["tau = -1.0"]),
    ("weight_nan", ["weight holds nan"]),
    ("dt0", ["metadata dt = 0.0"]),
    ("dt_nan", ["metadata dt = nan"]),
    ("dt_str", ["metadata dt = 'fast'", "not a number"]),
    ("latency_neg", ["metadata latency_frames = -3"]),
    ("frames0", ["metadata frames = 0"]),
    ("config_json", ["model_config is not valid JSON"]),
    ("config_dim", ["config dim = 0"]),
    ("edge_missing", ["names a missing node 'nowhere'"]),
    # a cycle without a Delay node is read as a one-step delay (export.normalize.prepare;
    # tests/test_peers.py)
    ("huge_input", ["input/shape", "impossible size"]),
])
def test_nir_graph_and_metadata_are_validated(tiny_nir, tmp_path, case, words):
    import json

    import numpy as np

    def edit(node):
        nodes, md = node["nodes"], node["metadata"]
        lif = next(n for n in nodes if "tau" in nodes[n])
        syn = next(n for n in nodes if "weight" in nodes[n])
        if case in ("tau0", "tau_neg"):
            tau = np.array(nodes[lif]["tau"][()])
            tau[0] = 0.0 if case == "tau0" else -1.0
            _set(nodes[lif], "tau", tau)
        elif case == "weight_nan":
            w = np.array(nodes[syn]["weight"][()])
            w.flat[0] = np.nan
            _set(nodes[syn], "weight", w)
        elif case.startswith("dt"):
            _set(md, "dt", {"dt0": 0.0, "dt_nan": np.nan, "dt_str": "fast"}[case])
        elif case == "latency_neg":
            _set(md, "latency_frames", -3)
        elif case == "frames0":
            _set(md, "frames", 0)
        elif case == "config_json":
            _set(md, "model_config", '{"dim": ')
        elif case == "config_dim":
            cfg = json.loads(md["model_config"][()])
            _set(md, "model_config", json.dumps({**cfg, "dim": 0}))
        elif case == "edge_missing":
            edges = [[x.decode() for x in e] for e in node["edges"][()]]
            edges[5][1] = "nowhere"
            _set(node, "edges", np.array(edges, dtype="S"))
        elif case == "huge_input":
            _set(nodes["input"], "shape", np.array([10**9]))

    bad = _edit_nir(tiny_nir, tmp_path / "bad.nir", edit)
    code, err = run_cli("simulate", str(bad), "--random", "--samples", "1", "--no-compare")
    assert_one_line(code, err, *words)
    assert len(err) < 400, err


def test_nir_file_declaring_huge_arrays_is_refused_before_reading(tmp_path, monkeypatch):
    """A small compressed file declaring more than the memory budget: refused before nir.read."""
    import h5py
    import numpy as np

    import export.io

    with h5py.File(tmp_path / "big.nir", "w") as f:
        f.create_dataset("node/nodes/x/weight", shape=(200_000, 100_000), dtype="f8", compression="gzip",
                         chunks=(1000, 1000), fillvalue=0.0)
        f["version"] = np.bytes_("0.1")
    assert (tmp_path / "big.nir").stat().st_size < 10**6
    monkeypatch.setattr(export.io.nir, "read", lambda *a, **k: pytest.fail("nir.read was reached"))
    code, err = run_cli("simulate", str(tmp_path / "big.nir"), "--random", "--no-compare")
    assert_one_line(code, err, "GiB")


def test_cli_numbers_are_checked_against_memory(tiny_nir, tmp_path):
    code, err = run_cli("simulate", str(tiny_nir), "--random", "--samples", "1000000000", "--no-compare")
    assert_one_line(code, err, "1000000000 samples", "GiB")
    out = str(tmp_path / "never.nir")
    assert_one_line(*run_cli("export", "--preset", "tiny", "-o", out, "--dt", "inf"), "--dt = inf")


@pytest.mark.parametrize("text, words", [
    ('{"source": "x", "sop_pj": NaN}', ["sop_pj = nan"]),
    ('{"source": "x", "mac_pj": Infinity}', ["mac_pj = inf"]),
    ('{"source": "x", "sop_pj": 1e308}', ["sop_pj = 1e+308", "[0, 1000000000]"]),
    ('{"source": "x", "sop_pj": 1, "name": 5}', ["name = 5"]),
])
def test_energy_profile_is_validated(tiny_nir, tmp_path, text, words):
    (tmp_path / "p.json").write_text(text)
    code, err = run_cli("report", str(tiny_nir), "--random", "--samples", "1", "--profile",
                        str(tmp_path / "p.json"))
    assert_one_line(code, err, *words)


def test_training_model_settings_are_validated(tmp_path):
    (tmp_path / "c.toml").write_text("[model]\ndim = 0\n")
    code, err = run_cli("train", "--config", str(tmp_path / "c.toml"), "--epochs", "1", "--out",
                        str(tmp_path / "run"))
    assert_one_line(code, err, "dim = 0")
    (tmp_path / "c.toml").write_text("[model]\nmemory_size = 1000000\n")
    code, err = run_cli("train", "--config", str(tmp_path / "c.toml"), "--epochs", "1", "--out",
                        str(tmp_path / "run"))
    assert_one_line(code, err, "memory_size = 1000000")


def test_directory_argument_is_one_line(tmp_path):
    assert_one_line(*run_cli("simulate", str(tmp_path), "--random"), "is a directory")


def test_api_frames_are_validated(tiny_nir):
    import numpy as np

    from backends import simulate
    from export import read_graph
    from lmuformer.errors import UserError

    graph = read_graph(tiny_nir)
    x = np.zeros((2, 8, 8))
    x[1, 3, 2] = np.nan
    with pytest.raises(UserError, match="NaN or infinite"):
        simulate(graph, x, backend="emulator")
    with pytest.raises(UserError, match="empty"):
        simulate(graph, np.zeros((2, 0, 8)), backend="torch")


def test_reaping_lava_children_keeps_multiprocessing_bookkeeping():
    """A Lava child still alive after a stop is killed and reaped through its Process object: reaped
    with os.waitpid behind multiprocessing's back, Lava's ``SystemProcess.join`` (called by
    multiprocessing's exit handler) raised "Cannot close a process while it is still running"."""
    from tests.conftest import skip_without_lava

    skip_without_lava()
    from lava.magma.runtime.message_infrastructure.multiprocessing import SystemProcess

    before = set(_children())
    child = SystemProcess(target=time.sleep, args=(60,))
    child.start()
    pid = child.pid
    _reap_new_children(before, grace=5.0)
    assert child.exitcode == -signal.SIGTERM
    child.join()  # what multiprocessing's exit handler does; raised ValueError before
    assert pid not in _children()
