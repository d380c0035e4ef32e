"""lmuformer/checkpoint.py at its edges (issue 16): the exact one-line messages of every
refusal, the stored-weights check (missing/unexpected counts, non-tensors, NaN and infinite
values, integer buffers), the first line of a config error, ``plain``.  Small and fast: one
tiny model's payload, edited in memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmuformer import build_model
from lmuformer import checkpoint as ck
from lmuformer.checkpoint import FORMAT, VERSION, load_checkpoint, plain, save_checkpoint, update_metrics
from lmuformer.errors import UserError


@pytest.fixture(scope="module")
def payload(tmp_path_factory) -> dict:
    path = save_checkpoint(tmp_path_factory.mktemp("ck") / "m.pt", build_model("tiny"), {"acc": 0.5})
    return torch.load(path, weights_only=True)


def save(tmp_path: Path, obj, name: str = "x.pt") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def refused(path) -> str:
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    return str(e.value)


def test_file_level_messages(tmp_path, payload):
    assert refused(tmp_path / "none.pt") == f"checkpoint not found: {tmp_path / 'none.pt'}"
    assert refused(tmp_path) == f"checkpoint is not a file: {tmp_path}"
    (tmp_path / "t.pt").write_text("not weights")
    assert refused(str(tmp_path / "t.pt")) == (f"cannot read checkpoint {tmp_path / 't.pt'}: not a PyTorch "
                                               "checkpoint file, or truncated/corrupt")
    p = save(tmp_path, {**payload, "format": "x"})
    assert refused(p) == f"{p} is not an lmuformer checkpoint (no 'lmuformer-checkpoint' format marker)"
    p = save(tmp_path, [payload])
    assert refused(p) == f"{p} is not an lmuformer checkpoint (no 'lmuformer-checkpoint' format marker)"
    for version in (VERSION + 1, "1", None, 1.0):
        p = save(tmp_path, {**payload, "version": version})
        assert refused(p) == (f"{p} has checkpoint format version {version!r}; this lmuformer reads up to "
                              f"{VERSION}")
    p = save(tmp_path, {k: v for k, v in payload.items() if k != "version"})
    assert refused(p) == f"{p} has checkpoint format version None; this lmuformer reads up to 1"
    for key in ("config", "state_dict", "metrics"):
        p = save(tmp_path, {**payload, key: [1]})
        assert refused(p) == f"{p} is a damaged lmuformer checkpoint (missing {key!r})"
    assert FORMAT == "lmuformer-checkpoint" and VERSION == 1
    # version == VERSION, and older ones, are read; a non-dict train_state is dropped
    p = save(tmp_path, {**payload, "version": VERSION - 1, "train_state": [1]})
    got = load_checkpoint(p)
    assert got.train_state is None and got.metrics == {"acc": 0.5} and got.path == p


def test_stored_weights_messages(tmp_path, payload):
    sd = payload["state_dict"]
    keys = list(sd)
    cases = [
        ({k: v for k, v in sd.items() if k not in keys[:3]},
         f"stored weights do not match its config (missing {keys[0]!r} and 2 more)"),
        ({**{k: v for k, v in sd.items() if k != keys[5]}, "x.a": torch.ones(1), "x.b": torch.ones(1)},
         f"stored weights do not match its config (missing {keys[5]!r}; unexpected 'x.a' and 1 more)"),
        ({k: v for k, v in sd.items() if k not in keys[3:5]},
         f"stored weights do not match its config (missing {keys[3]!r} and 1 more)"),
        ({**sd, "x.a": torch.ones(1)}, "stored weights do not match its config (unexpected 'x.a')"),
        ({**sd, keys[1]: [1.0]}, f"weight {keys[1]!r} is a list, not a tensor"),
        ({**sd, keys[0]: sd[keys[0]][:, :, :2]},
         f"weight {keys[0]!r} has shape {tuple(sd[keys[0]].shape[:2]) + (2,)}; its config needs "
         f"{tuple(sd[keys[0]].shape)}"),
    ]
    for bad in (float("nan"), float("inf"), -float("inf")):
        w = sd[keys[2]].clone()
        w.view(-1)[-1] = bad  # one value, the last one
        cases.append(({**sd, keys[2]: w}, f"weight {keys[2]!r} holds NaN or infinite values"))
    for state_dict, message in cases:
        p = save(tmp_path, {**payload, "state_dict": state_dict})
        assert refused(p) == f"{p}: {message}"
    ints = [k for k, v in sd.items() if not v.is_floating_point()]
    assert ints and all(k.endswith("num_batches_tracked") for k in ints)  # integer buffers are read
    got = load_checkpoint(save(tmp_path, {**payload, "state_dict": {**sd, ints[0]: torch.tensor(7)}}))
    assert int(got.model.state_dict()[ints[0]]) == 7 and not got.model.training


@pytest.mark.parametrize("error, first", [
    (RuntimeError(""), "RuntimeError"),
    (ValueError("  \n "), "ValueError"),
    (TypeError("\n  first line\nsecond line"), "first line"),
    (KeyError("dim"), "'dim'"),
])
def test_config_error_is_its_first_line(tmp_path, payload, monkeypatch, error, first):
    def broken(config):
        raise error

    monkeypatch.setattr(ck, "build_model", broken)
    p = save(tmp_path, payload)
    assert refused(p) == f"{p}: bad model config ({first})"


def test_config_is_checked_with_the_file_name(tmp_path, payload):
    p = save(tmp_path, {**payload, "config": {**payload["config"], "theta": 0.0}})
    assert refused(p) == (f"{p}: config theta = 0.0 is out of range; allowed: a finite number in "
                          "(0, 1000000000]")


def test_plain_and_update(tmp_path):
    import numpy as np

    one = plain(torch.tensor([2.5]))  # one element, one dimension: kept a tensor
    assert isinstance(one, torch.Tensor) and one.tolist() == [2.5]
    assert plain(torch.tensor(3)) == 3 and type(plain(torch.tensor(3))) is int
    assert plain({"a": (np.int32(1),), 2: [np.float32(0.5)], None: "n"}) == {"a": (1,), 2: [0.5], "None": "n"}
    assert plain(Path("a/b")) == "a/b" and plain(None) is None and plain(b"x") == b"x"
    path = save_checkpoint(tmp_path / "m.pt", build_model("tiny"), {"a": 1, "b": 2}, {"epoch": np.int64(2)})
    assert load_checkpoint(path).train_state == {"epoch": 2}
    update_metrics(path, {"b": 3, "c": np.float64(0.25)})
    assert load_checkpoint(path).metrics == {"a": 1, "b": 3, "c": 0.25}
    assert load_checkpoint(path).train_state == {"epoch": 2}  # kept
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    with pytest.raises(UserError) as e:
        update_metrics(tmp_path / "none.pt", {})
    assert str(e.value) == f"checkpoint not found: {tmp_path / 'none.pt'}"
