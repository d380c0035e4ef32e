"""Writing output files so that nothing is lost and nothing is left behind.

- **Atomic**: every output is written to a temporary name in the same folder, then renamed
  over the target (``os.replace``); an interrupted write leaves any previous file intact.
- **Temporaries**: named ``.lmuf-tmp.<pid>.<random>.<name>`` (the target's suffix kept, for
  writers such as matplotlib that read it).  They are removed on every exit path that runs
  Python (exceptions, Ctrl-C, and SIGTERM/SIGHUP, which the CLI turns into an exception);
  one left by a killed process (SIGKILL, power loss) is removed by the next write to that
  folder once its pid is dead.
- **Targets**: a directory, device, FIFO or socket is refused (``allow_special=True`` writes
  *into* a device or FIFO instead of replacing it); a target that is the same file (by
  inode) as one of the command's inputs (:func:`protect`) is refused.
- **Locks**: :func:`lock` makes one writer per output file or folder; a second writer gets a
  one-line :class:`UserError`.  A lock is a file ``.lmuf-lock.<name>`` (for a folder:
  ``<folder>/.lmuf-lock``) holding the writer's pid, ``flock``-ed while held, so a lock of a
  dead process (whose ``flock`` the kernel released) is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lmuformer.errors import UserError

TMP_PREFIX = ".lmuf-tmp."
LOCK_PREFIX = ".lmuf-lock"
_TMP_RE = re.compile(r"^\.lmuf-tmp\.(\d+)\.")

_allow_special = [False]  # process-wide default of allow_special (the CLI's --allow-special-output)
_protected: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) of this command's inputs -> name
_live_temps: set[str] = set()
_held_locks: dict[str, int] = {}  # lock file -> fd, for locks held by this process


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def allow_special_outputs(flag: bool) -> None:
    """Set the default of ``allow_special``: write into an existing device or FIFO target."""
    _allow_special[0] = bool(flag)


def protect(*paths: str | os.PathLike | None) -> None:
    """Record ``paths`` (the inputs of the running command) so that no output replaces them."""
    for p in paths:
        if p is None:
            continue
        try:
            st = os.stat(p)
        except OSError:
            continue
        _protected[(st.st_dev, st.st_ino)] = str(p)


def unprotect_all() -> None:
    """Forget the inputs recorded by :func:`protect` (the CLI calls it between commands)."""
    _protected.clear()


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                 allow_special: bool | None = None, what: str = "output") -> Path:
    """``path`` if it is a usable output target; UserError (one line) otherwise.

    Refused: an existing directory; a device, FIFO or socket unless ``allow_special``; the
    same file as one of ``inputs`` or of the :func:`protect`-ed inputs (compared by inode,
    so links and other spellings of the same file count)."""
    path = Path(path)
    allow_special = _allow_special[0] if allow_special is None else allow_special
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise UserError(f"cannot write {what} {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {path} is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode) and not allow_special:
        raise UserError(f"{what} {path} is not a regular file (a device, FIFO or socket); refusing to "
                        "replace it (lmuf --allow-special-output writes into it)")
    for p in inputs:
        if p is None:
            continue
        with contextlib.suppress(OSError):
            if os.path.samefile(path, p):
                raise UserError(f"{what} {path} is the same file as the input {p}; refusing to overwrite it")
    name = _protected.get((st.st_dev, st.st_ino))
    if name is not None:
        raise UserError(f"{what} {path} is the same file as the input {name}; refusing to overwrite it")
    return path


def check_outputs(outputs: dict[str, str | os.PathLike | None],
                  inputs: Iterable[str | os.PathLike | None] = (), allow_special: bool | None = None) -> None:
    """:func:`check_output` for each named output (``{"--json": path}``); also refuses two
    outputs that are the same file, and records ``inputs`` with :func:`protect`."""
    inputs = [p for p in inputs if p is not None]
    protect(*inputs)
    seen: dict[str, str] = {}
    for what, p in outputs.items():
        if p is None:
            continue
        check_output(p, inputs, allow_special=allow_special, what=what)
        key = os.path.realpath(p)
        if key in seen:
            raise UserError(f"{what} and {seen[key]} are the same file {p}; give two different files")
        seen[key] = what


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove our temporaries in ``folder`` whose writing process is dead; returns their names."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TMP_RE.match(name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))
            removed.append(name)
    return removed


def cleanup_temporaries() -> None:
    """Remove every temporary this process has open (for signal and exit handlers)."""
    for tmp in list(_live_temps):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _live_temps.discard(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], allow_special: bool | None = None
                 ) -> Path:
    """Call ``write(tmp_name)`` then rename the temporary file to ``path``; returns the path.

    The temporary name keeps ``path``'s name and suffix (writers such as matplotlib read it).
    UserError if ``path`` is refused by :func:`check_output` or another process is writing
    it (:func:`lock`).  With ``allow_special`` an existing device or FIFO is written into."""
    path = Path(path)
    check_output(path, allow_special=allow_special)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    remove_stale_temporaries(path.parent)
    with lock(path):
        check_output(path, allow_special=allow_special)  # again: it may have changed while we waited
        try:
            fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}.", suffix=f".{path.name}",
                                       dir=path.parent)
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        _live_temps.add(tmp)
        try:
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            write(tmp)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; outputs are ordinary files
            special = path.exists() and not path.is_file()
            if special:  # allowed device or FIFO: copy into it, do not replace it
                with open(tmp, "rb") as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            _live_temps.discard(tmp)
    return path


def _lock_file(path: Path, folder: bool) -> Path:
    return path / LOCK_PREFIX if folder else path.parent / f"{LOCK_PREFIX}.{path.name}"


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().split()[0]
        return f"pid {int(pid)}"
    except (OSError, ValueError, IndexError):
        return "another process"


@contextlib.contextmanager
def lock(path: str | os.PathLike, folder: bool = False, what: str | None = None) -> Iterator[Path]:
    """Hold the write lock of the file (or, with ``folder``, the folder) ``path``.

    Re-entrant within a process.  UserError (one line) if a live process holds it; the lock of
    a dead process (killed, crashed) is taken over.  Yields the lock file's path."""
    path = Path(path)
    if folder:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create folder {path}: {e.strerror or e}") from None
    lock_path = _lock_file(path, folder)
    key = os.path.abspath(lock_path)
    if key in _held_locks:
        yield lock_path
        return
    fd = _acquire(lock_path, what or (f"folder {path}" if folder else str(path)))
    _held_locks[key] = fd
    try:
        yield lock_path
    finally:
        _held_locks.pop(key, None)
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                os.unlink(lock_path)
        os.close(fd)


def _acquire(lock_path: Path, what: str) -> int:
    """Create ``lock_path`` already flock-ed (a temporary hard-linked into place), taking over
    one whose holder is dead; returns the open descriptor holding the flock."""
    for _ in range(20):
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}.", suffix=".lock", dir=lock_path.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"{os.getpid()}\n".encode())
            try:
                os.link(tmp, lock_path)
                return fd
            except FileExistsError:
                pass
            except OSError as e:
                raise UserError(f"cannot lock {what}: {e.strerror or e}") from None
        except BaseException:
            os.close(fd)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        os.close(fd)
        # someone holds (or held) it: alive if its flock is held
        try:
            other = os.open(lock_path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UserError(f"{what} is being written by another lmuf process "
                                    f"({_holder(lock_path)}); wait for it to finish or stop it") from None
                raise
            # its holder is gone: remove the stale lock if it is still this file, then retry
            with contextlib.suppress(OSError):
                if os.fstat(other).st_ino == os.stat(lock_path).st_ino:
                    os.unlink(lock_path)
        finally:
            os.close(other)
    raise UserError(f"cannot lock {what}: too many concurrent writers")


def write_text(path: str | os.PathLike, text: str, allow_special: bool | None = None) -> Path:
    """Write text (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), allow_special)


def write_json(path: str | os.PathLike, obj: Any, allow_special: bool | None = None) -> Path:
    """Write an indented JSON document atomically (strict JSON: NaN/Infinity are refused)."""
    try:
        text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    except ValueError as e:
        raise UserError(f"cannot write {path}: the result holds a non-finite number ({e})") from None
    return write_text(path, text, allow_special)


def read_table(path: str | Path, noun: str) -> dict:
    """A TOML (``.toml``, or any suffix but ``.json``) or JSON file as one dict; a one-line
    UserError naming the ``noun`` file ("profile", "hardware") when it is missing, unreadable
    or not one table."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{noun} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            try:
                import tomllib  # type: ignore[import-not-found]
            except ModuleNotFoundError:
                import tomli as tomllib
            data = tomllib.loads(text)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable {noun} file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a {noun} file must be one table/object")
    return data
