"""Edges of profile files (lmuformer/analysis/profiles.py): name/notes types, the name's length and
characters, exact messages."""

from __future__ import annotations

import json
import re

import pytest

from lmuformer.analysis import load_profile_file
from lmuformer.errors import UserError


def _write(tmp_path, **fields):
    path = tmp_path / "chip.json"
    path.write_text(json.dumps({"source": "datasheet", "sop_pj": 2, **fields}), encoding="utf-8")
    return path


@pytest.mark.parametrize("key", ["name", "notes"])
def test_name_and_notes_must_be_strings(tmp_path, key):
    path = _write(tmp_path, **{key: 3})
    with pytest.raises(UserError, match="^" + re.escape(f"{path}: {key} = 3 is not a string") + "$"):
        load_profile_file(path)


def test_name_length_and_characters(tmp_path):
    assert load_profile_file(_write(tmp_path, name="x" * 100)).name == "x" * 100
    p = load_profile_file(_write(tmp_path, name="chip", notes="n"))
    assert (p.name, p.notes, p.sop_j) == ("chip", "n", 2e-12)
    assert isinstance(p.sop_j, float)
    for bad in ("x" * 101, "a\tb" * 30, "   "):
        path = _write(tmp_path, name=bad)
        message = f"{path}: name = {bad[:40]!r} must be 1 to 100 printable characters"
        with pytest.raises(UserError, match="^" + re.escape(message) + "$"):
            load_profile_file(path)
