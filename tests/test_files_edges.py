"""lmuformer/files.py at its edges, in this process (issue 16: every mutant of the module that
changes behaviour fails one of these): exact messages, explicit ``allow_special`` against the
process default, lock retries and races, rename (not copy), temporaries bookkeeping, the
locale, ``read_table``.  Each test runs in milliseconds."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import locale
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from lmuformer import files
from lmuformer.errors import UserError
from lmuformer.files import (
    atomic_write,
    check_output,
    check_outputs,
    cleanup_temporaries,
    lock,
    protect,
    read_table,
    remove_stale_temporaries,
    write_json,
    write_text,
)


@pytest.fixture(autouse=True)
def _clean_state():
    """The module's process-wide state is reset around each test."""
    files.unprotect_all()
    files.allow_special_outputs(False)
    yield
    files.unprotect_all()
    files.allow_special_outputs(False)


def message(exc_info) -> str:
    return str(exc_info.value)


@contextlib.contextmanager
def ascii_locale():
    """LC_CTYPE "C" in this process: ``open()`` without an encoding then uses ASCII."""
    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def _write_ok(tmp: str) -> None:
    with open(tmp, "w") as f:
        f.write("ok")


# ----------------------------------------------------------------------------- targets


def test_check_output_messages_and_explicit_allow_special(tmp_path):
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    with pytest.raises(UserError) as e:
        check_output(tmp_path, what="--json")
    assert message(e) == f"--json {tmp_path} is a directory; give a file name"
    with pytest.raises(UserError) as e:
        check_output(null)
    assert message(e) == (f"output {null} is not a regular file (a device, FIFO or socket); refusing to "
                          "replace it (lmuf --allow-special-output writes into it)")
    assert check_output(null, allow_special=True) == null  # the argument wins over the default (False)
    files.allow_special_outputs(True)
    assert check_output(null) == null  # the default
    with pytest.raises(UserError, match="not a regular file"):
        check_output(null, allow_special=False)  # the argument wins over the default (True)
    assert check_output(tmp_path / "new.json") == tmp_path / "new.json"  # missing: fine


def test_check_output_same_file_as_an_input(tmp_path):
    src = tmp_path / "in.pt"
    src.write_bytes(b"x")
    hard = tmp_path / "hard.pt"
    os.link(src, hard)
    other = tmp_path / "other.pt"
    other.write_bytes(b"y")
    # None entries are skipped, not the end of the list
    with pytest.raises(UserError) as e:
        check_output(hard, inputs=[None, other, src])
    assert message(e) == f"output {hard} is the same file as the input {src}; refusing to overwrite it"
    assert check_output(hard, inputs=[None, other]) == hard
    # protect(): by inode; None and missing paths are skipped, not the end of the list
    protect(None, tmp_path / "missing", src)
    assert files._protected == {(src.stat().st_dev, src.stat().st_ino): str(src)}
    with pytest.raises(UserError) as e:
        check_output(hard, what="-o")
    assert message(e) == f"-o {hard} is the same file as the input {src}; refusing to overwrite it"
    assert check_output(other) == other


def test_check_outputs(tmp_path):
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    check_outputs({"--json": a, "--plot": b, "-o": None})  # two different new files
    check_outputs({"--json": null}, allow_special=True)  # passed on to check_output
    files.allow_special_outputs(True)
    with pytest.raises(UserError, match="not a regular file"):
        check_outputs({"--json": null}, allow_special=False)
    with pytest.raises(UserError) as e:
        check_outputs({"-o": None, "--json": tmp_path})  # None is skipped, the next one checked
    assert message(e) == f"--json {tmp_path} is a directory; give a file name"
    with pytest.raises(UserError) as e:
        link = tmp_path / "link.json"
        link.symlink_to(a)  # another spelling of a.json (not yet written)
        check_outputs({"--json": a, "--plot": link})
    assert message(e) == f"--plot and --json are the same file {link}; give two different files"
    src = tmp_path / "in.nir"
    src.write_bytes(b"x")
    with pytest.raises(UserError) as e:
        check_outputs({"--json": src}, inputs=[None, src])
    assert message(e) == f"--json {src} is the same file as the input {src}; refusing to overwrite it"
    assert files._protected == {(src.stat().st_dev, src.stat().st_ino): str(src)}  # recorded


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_renames_the_temporary_and_forgets_it(tmp_path):
    seen = {}

    def writer(tmp: str) -> None:
        _write_ok(tmp)
        seen["tmp"], seen["ino"] = tmp, os.stat(tmp).st_ino
        seen["live"] = tmp in files._live_temps

    path = tmp_path / "new.txt"
    assert atomic_write(path, writer) == path
    assert path.stat().st_ino == seen["ino"]  # renamed into place, not copied
    assert seen["live"] and seen["tmp"] not in files._live_temps
    assert sorted(os.listdir(tmp_path)) == ["new.txt"]


def test_atomic_write_into_an_allowed_device(tmp_path):
    null = tmp_path / "null"
    null.symlink_to("/dev/null")
    assert atomic_write(null, _write_ok, allow_special=True) == null  # both checks see the argument
    assert write_text(null, "x", allow_special=True) == null
    assert write_json(null, {"x": 1}, allow_special=True) == null
    assert null.is_symlink() and sorted(os.listdir(tmp_path)) == ["null"]
    for write in (lambda: write_text(null, "x"), lambda: write_json(null, {})):
        with pytest.raises(UserError, match="not a regular file"):
            write()


def test_atomic_write_os_errors_are_one_line(tmp_path, monkeypatch):
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "missing")
    with pytest.raises(UserError) as e:
        write_text(dangling / "x.json", "{}")  # the folder cannot be made
    assert message(e) == f"cannot write {dangling / 'x.json'}: File exists"

    real = tempfile.mkstemp

    def full(*args, **kw):
        if kw.get("suffix") == ".x.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(UserError) as e:
        write_text(tmp_path / "x.json", "{}")
    assert message(e) == f"cannot write {tmp_path / 'x.json'}: No space left on device"
    assert os.listdir(tmp_path) == ["link"]  # the lock is released and removed


def test_write_json_refuses_non_finite_numbers(tmp_path):
    with pytest.raises(UserError) as e:
        write_json(tmp_path / "r.json", {"x": float("nan")})
    assert message(e).startswith(f"cannot write {tmp_path / 'r.json'}: the result holds a non-finite number "
                                 "(Out of range float values are not JSON compliant")  # Python adds ": nan"
    assert os.listdir(tmp_path) == []


def test_write_text_is_utf8_in_an_ascii_locale(tmp_path):
    with ascii_locale():
        write_text(tmp_path / "u.txt", "\u00b5\u2014")
    assert (tmp_path / "u.txt").read_bytes() == "\u00b5\u2014".encode()


# ----------------------------------------------------------------------------- temporaries


def test_temporaries_bookkeeping(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f".lmuf-tmp.{dead.pid}.abc.x.pt"
    (tmp_path / stale).write_bytes(b"partial")
    stale_dir = f".lmuf-tmp.{dead.pid}.def.y.pt"  # cannot be unlinked: skipped, not an error
    (tmp_path / stale_dir).mkdir()
    (tmp_path / "keep.pt").write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == [stale_dir, "keep.pt"]
    assert remove_stale_temporaries(tmp_path / "missing") == []

    gone = str(tmp_path / "gone.tmp")  # already removed: not an error, forgotten
    there = tmp_path / "there.tmp"
    there.write_bytes(b"")
    files._live_temps.update({gone, str(there)})
    cleanup_temporaries()
    assert not there.exists() and not (files._live_temps & {gone, str(there)})


def test_pid_alive(monkeypatch):
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert files._pid_alive(child.pid) is True
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.3)  # probed with signal 0: not hurt
    finally:
        child.kill()
        child.wait()
    assert files._pid_alive(child.pid) is False
    assert files._pid_alive(os.getpid()) is True

    def denied(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "kill", denied)  # another user's process: alive
    assert files._pid_alive(1) is True


# ----------------------------------------------------------------------------- locks


def test_lock_temporary_is_named_and_placed(tmp_path, monkeypatch):
    names = []
    real = os.link

    def spy(src, dst, *a, **kw):
        names.append((src, dst))
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "link", spy)
    with lock(tmp_path / "out.json") as lock_path:
        assert lock_path == tmp_path / ".lmuf-lock.out.json"
        assert lock_path.read_text() == f"{os.getpid()}\n"
    (src, dst), = names
    assert os.path.dirname(src) == str(tmp_path) and Path(dst) == tmp_path / ".lmuf-lock.out.json"
    name = os.path.basename(src)
    assert name.startswith(f".lmuf-tmp.{os.getpid()}.") and name.endswith(".lock")
    assert name.count(".lock") == 1
    assert os.listdir(tmp_path) == []


def test_lock_gives_up_after_20_tries(tmp_path, monkeypatch):
    tries = []

    def busy(src, dst, *a, **kw):  # another writer wins each race, and removes its lock at once
        tries.append(dst)
        raise FileExistsError(errno.EEXIST, "File exists")

    monkeypatch.setattr(os, "link", busy)
    with pytest.raises(UserError) as e:
        with lock(tmp_path / "x.json"):
            pass
    assert message(e) == f"cannot lock {tmp_path / 'x.json'}: too many concurrent writers"
    assert len(tries) == 20
    assert os.listdir(tmp_path) == []


def test_lock_os_error_is_one_line(tmp_path, monkeypatch):
    def denied(src, dst, *a, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", denied)
    with pytest.raises(UserError) as e:
        with lock(tmp_path / "d", folder=True, what="the run folder"):
            pass
    assert message(e) == "cannot lock the run folder: Operation not permitted"
    assert os.listdir(tmp_path / "d") == []


def test_lock_temporary_already_gone_is_no_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "link", os.rename)  # the temporary is no longer there to unlink
    with lock(tmp_path / "x.json") as lock_path:
        assert lock_path.read_text() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == []


def test_stale_lock_removed_by_another_taker_meanwhile(tmp_path, monkeypatch):
    """A dead writer's lock that another process removes between our open and our stat."""
    lock_path = tmp_path / ".lmuf-lock.x.json"
    lock_path.write_text("999999\n")  # no flock held: its writer is dead
    real = fcntl.flock
    calls = []

    def racing(fd, op):
        real(fd, op)
        calls.append(fd)
        if len(calls) == 2:  # the probe of the stale lock: someone else removes it now
            os.unlink(lock_path)

    monkeypatch.setattr(fcntl, "flock", racing)
    with lock(tmp_path / "x.json") as got:
        assert got.read_text() == f"{os.getpid()}\n"
    assert len(calls) == 3 and os.listdir(tmp_path) == []


def test_holder_of_an_unreadable_lock():
    assert files._holder(Path("/nonexistent/.lmuf-lock")) == "another process"


# ----------------------------------------------------------------------------- read_table


def test_read_table(tmp_path):
    (tmp_path / "p.toml").write_text('name = "\u00b5"\n[a]\nx = 1\n', encoding="utf-8")
    (tmp_path / "p.json").write_text('{"name": "\u00b5", "a": {"x": 1}}', encoding="utf-8")
    (tmp_path / "P.JSON").write_text('{"b": 2}', encoding="utf-8")
    (tmp_path / "p.cfg").write_text("c = 3\n", encoding="utf-8")
    want = {"name": "\u00b5", "a": {"x": 1}}
    with ascii_locale():  # UTF-8 whatever the locale
        assert read_table(tmp_path / "p.toml", "profile") == want
        assert read_table(str(tmp_path / "p.json"), "profile") == want
    assert read_table(tmp_path / "P.JSON", "profile") == {"b": 2}
    assert read_table(tmp_path / "p.cfg", "profile") == {"c": 3}  # any other suffix: TOML


def test_read_table_errors(tmp_path):
    with pytest.raises(UserError) as e:
        read_table(tmp_path / "none.toml", "hardware")
    assert message(e) == f"hardware file not found: {tmp_path / 'none.toml'}"
    with pytest.raises(UserError) as e:
        read_table(tmp_path, "hardware")
    assert message(e) == f"hardware file not found: {tmp_path}"
    bad = tmp_path / "bad.json"
    bad.write_text("{1", encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_table(bad, "profile")
    assert message(e) == (f"{bad}: not a readable profile file (JSONDecodeError: Expecting property name "
                          "enclosed in double quotes: line 1 column 2 (char 1))")
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_table(tmp_path / "list.json", "profile")
    assert message(e) == f"{tmp_path / 'list.json'}: a profile file must be one table/object"
