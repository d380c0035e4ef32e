"""Fuzz tests (hypothesis): mutated NIR graphs and metadata, checkpoint configs and weights,
and energy profiles, through the CLI entry point (``lmuformer.cli.run``, in process).

Property, for every example: exit 0 with a valid result (strict JSON), or exit 2 with one
``error:`` line; no exception escapes (no traceback), no temporary is left, no input changes.
Examples are derandomized (the same in every CI run) and bounded: MAX_EXAMPLES per target.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.helpers import RUNS, check_property  # noqa: E402
from tests.helpers import run_main as cli  # noqa: E402

MAX_EXAMPLES = 50
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# numbers a careless user (or a damaged file) produces
NUMBERS = st.one_of(
    st.sampled_from([0, -1, 1, 2, 8, 10**6, 10**12, 0.0, -0.5, 1e-300, 1e308, math.nan, math.inf, -math.inf]),
    st.integers(-10, 10**7),
    st.floats(allow_nan=True, allow_infinity=True),
)
VALUES = st.one_of(NUMBERS, st.text(max_size=8), st.none(), st.booleans(),
                   st.lists(st.integers(0, 9), max_size=3))
EDGES = st.sampled_from([0, -1, 0.0, -0.5, 1e308, math.nan, math.inf, -math.inf, 10**9, "1", True])
HOSTILE = st.one_of(EDGES, EDGES, VALUES)  # edge cases drawn more often


def strict_json(path: Path) -> object:
    def refuse(c):
        raise ValueError(c)

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    from export import model_to_nir, write_graph
    from export.graph import ExportOptions
    from lmuformer.checkpoint import save_checkpoint
    from lmuformer.model import build_model
    from lmuformer.model.calibrate import activate

    d = tmp_path_factory.mktemp("fuzz")
    model = activate(build_model("tiny"))
    save_checkpoint(d / "tiny.pt", model, {"test_accuracy": 0.5})
    write_graph(model_to_nir(model, ExportOptions(quantize=True)), d / "tiny.nir")
    return {"pt": d / "tiny.pt", "nir": d / "tiny.nir"}


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nfuzz examples run: {RUNS} (total {sum(RUNS.values())})")


# ----------------------------------------------------------------------------- NIR graphs


def _mutate_h5(path: Path, data) -> str:
    """One mutation of an HDF5 NIR file in place; returns a description."""
    kind = data.draw(st.sampled_from(["metadata", "param", "input_type", "edge", "bytes", "delete"]))
    with h5py.File(path, "r+") as f:
        root = f["node"] if "node" in f else f
        nodes = root["nodes"]
        names = sorted(nodes)
        if kind == "metadata":
            md = root.require_group("metadata")
            key = data.draw(st.sampled_from(["dt", "frames", "latency_frames", "model_config"]))
            if key == "model_config":
                cfg = json.loads(md[key][()]) if key in md else {}
                if data.draw(st.booleans()):
                    value = data.draw(st.sampled_from(["{", "[]", "null", '{"dim": }', "1e999"]))
                else:
                    field = data.draw(st.sampled_from(["dim", "memory_size", "theta", "frames", "depth"]))
                    cfg[field] = data.draw(HOSTILE)
                    value = json.dumps(cfg)
            else:
                value = data.draw(HOSTILE)
            if key in md:
                del md[key]
            if value is None:
                return f"metadata {key} removed"
            md[key] = value if not isinstance(value, list) else np.asarray(value)
            return f"metadata {key} = {value!r}"
        node = nodes[data.draw(st.sampled_from(names))]
        if kind == "param":
            params = sorted(k for k in node if isinstance(node[k], h5py.Dataset) and k != "type"
                            and node[k].dtype.kind in "fiu")
            if not params:
                return "no parameter"
            p = data.draw(st.sampled_from(params))
            arr = np.array(node[p][()], dtype=np.float64)
            value = data.draw(st.sampled_from([math.nan, math.inf, -1.0, 0.0, 1e300]))
            if arr.ndim == 0:
                arr = np.float64(value)
            else:
                arr.flat[data.draw(st.integers(0, max(arr.size - 1, 0)))] = value
            del node[p]
            node[p] = arr
            return f"{p} <- {value}"
        if kind == "input_type" and "input_type" in node:
            port = sorted(node["input_type"])[0]
            del node["input_type"][port]
            node["input_type"][port] = np.array([data.draw(st.sampled_from([0, -3, 10**9, 2**40]))])
            return "input_type"
        if kind == "edge":
            edges = [[x.decode() if isinstance(x, bytes) else str(x) for x in e] for e in root["edges"][()]]
            op = data.draw(st.sampled_from(["missing", "cycle", "drop"]))
            i = data.draw(st.integers(0, len(edges) - 1))
            if op == "missing":
                edges[i][data.draw(st.integers(0, 1))] = "no_such_node"
            elif op == "cycle":  # from a later node back to an earlier one, not through a Delay
                j = data.draw(st.integers(0, len(edges) - 1))
                edges.append([edges[max(i, j)][1], edges[min(i, j)][0]])
            else:
                del edges[i]
            del root["edges"]
            root["edges"] = np.array(edges, dtype="S")
            return f"edge {op}"
        if kind == "delete":
            del nodes[names[data.draw(st.integers(0, len(names) - 1))]]
            return "node deleted"
    if kind == "bytes":
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            raw = raw[: data.draw(st.integers(0, len(raw)))]
        path.write_bytes(bytes(raw))
        return "bytes"
    return kind


@FUZZ
@given(data=st.data())
def test_fuzz_nir_graph_and_metadata(tiny_files, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = folder / "m.nir"
        model.write_bytes(tiny_files["nir"].read_bytes())
        _mutate_h5(model, data)
        inputs = {model: model.read_bytes()}
        code, _, err = cli("simulate", str(model), "--random", "--samples", "2", "--no-compare",
                           "--json", str(folder / "out.json"))
        check_property("nir", folder, inputs, code, err)
        if code == 0:
            assert isinstance(strict_json(folder / "out.json"), dict)


# ----------------------------------------------------------------------------- checkpoints


@FUZZ
@given(data=st.data())
def test_fuzz_checkpoint_config_and_weights(tiny_files, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = folder / "c.pt"
        ckpt.write_bytes(tiny_files["pt"].read_bytes())
        payload = torch.load(ckpt, weights_only=True)
        what = data.draw(st.sampled_from(["config", "config", "weights", "top"]))
        if what == "config":
            for _ in range(data.draw(st.integers(1, 3))):
                field = data.draw(st.sampled_from(sorted(payload["config"]) + ["bogus"]))
                payload["config"][field] = data.draw(HOSTILE)
        elif what == "weights":
            sd = payload["state_dict"]
            key = data.draw(st.sampled_from(sorted(sd)))
            op = data.draw(st.sampled_from(["nan", "inf", "drop", "shape", "type"]))
            if op in ("nan", "inf") and sd[key].is_floating_point() and sd[key].numel():
                sd[key] = sd[key].clone()
                sd[key].view(-1)[0] = float(op)
            elif op == "drop":
                del sd[key]
            elif op == "shape":
                sd[key] = torch.zeros(3, 5)
            else:
                sd[key] = "weights"
        else:
            key = data.draw(st.sampled_from(["format", "version", "config", "state_dict", "metrics"]))
            payload[key] = data.draw(VALUES)
        torch.save(payload, ckpt)
        inputs = {ckpt: ckpt.read_bytes()}
        command = data.draw(st.sampled_from(["info", "export"]))
        args = ["info", str(ckpt), "--json"] if command == "info" else \
            ["export", str(ckpt), "-o", str(folder / "out.nir"), "--json"]
        code, out, err = cli(*args)
        check_property("checkpoint", folder, inputs, code, err)
        if code == 0:
            assert isinstance(json.loads(out), dict)


# ----------------------------------------------------------------------------- energy profiles


PROFILE_KEYS = ["name", "source", "notes", "sop_pj", "mac_pj", "neuron_update_pj", "neuron_update_active_pj",
                "bogus"]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(PROFILE_KEYS), HOSTILE, max_size=2),
       fmt=st.sampled_from(["json", "json", "toml", "garbage"]))
@example(changes={"sop_pj": math.nan}, fmt="json")
@example(changes={"mac_pj": math.inf}, fmt="toml")
@example(changes={"neuron_update_pj": 1e308}, fmt="json")
@example(changes={"name": 5}, fmt="json")
def test_fuzz_energy_profiles(tiny_files, changes, fmt):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = folder / "m.nir"
        model.write_bytes(tiny_files["nir"].read_bytes())
        profile = {"source": "fuzz", "sop_pj": 1.0, "mac_pj": 4.0, **changes}  # a valid one, mutated
        path = folder / f"p.{'toml' if fmt == 'toml' else 'json'}"
        if fmt == "json":
            path.write_text(json.dumps(profile))  # NaN/Infinity written as JSON5-style tokens
        elif fmt == "toml":
            lines = []
            for k, v in profile.items():
                if v is None or isinstance(v, list):
                    continue
                if isinstance(v, float) and not math.isfinite(v):
                    v = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
                    lines.append(f"{k} = {v}")
                else:
                    lines.append(f"{k} = {json.dumps(v)}")
            path.write_text("\n".join(lines) + "\n")
        else:
            path.write_bytes(b"\xff\xfe" + json.dumps(profile).encode()[:7])
        inputs = {model: model.read_bytes(), path: path.read_bytes()}
        code, _, err = cli("report", str(model), "--random", "--samples", "1", "--profile", str(path),
                           "--format", "json", "-o", str(folder / "r.json"))
        check_property("profile", folder, inputs, code, err)
        if code == 0:
            assert isinstance(strict_json(folder / "r.json"), dict)
