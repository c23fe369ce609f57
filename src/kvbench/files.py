"""Files named on the command line: checked before any work, read with one-line errors, written atomically.

What kvbench writes (`--json`, `--csv`, `--plot`, ...) must be a regular file or not exist yet: a directory, a device
node, a FIFO or a socket is refused before anything is measured, also when kvbench runs as root (CI and the GPU
runners do). A symbolic link is followed as `open()` follows it: the file it names is written and the link stays a
link (a link to a directory, device, FIFO or socket is refused like its target). The file is written atomically (a
temporary file beside it, renamed over it only when complete), with the permissions an ordinary `open()` gives: a
new file gets 0666 less the umask, an existing one keeps its mode (and, written by root, its owner).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import stat
import tempfile

from kvbench.errors import FileProblem

KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def _target(path: str | pathlib.Path) -> pathlib.Path:
    """The file `path` names once symbolic links are followed (it may not exist yet)."""
    return pathlib.Path(os.path.realpath(path))


def _check_target(target: pathlib.Path, what: str, path) -> os.stat_result | None:
    """The target's stat if it is a regular file, None if absent; FileProblem for anything else."""
    try:
        st = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):  # absent (a parent that is not a directory is found next)
        return None
    except OSError as exc:
        raise FileProblem(f"{what} {str(path)!r} cannot be examined ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileProblem(f"{what} {str(path)!r} is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(f"{what} {str(path)!r} is {_kind(st.st_mode)}, not a regular file; kvbench writes only "
                          f"regular files (give a new file name)")
    return st


def check_writable(path: str, what: str) -> pathlib.Path:
    """Raise FileProblem now (before any measuring) unless `path` can be written as a regular file: it is absent or
    a regular file (links followed), and a file can be created in its directory (tried, so that root, read-only
    file systems and /proc are judged by what really happens)."""
    target = _target(path)
    st = _check_target(target, what, path)
    parent = target.parent
    if not parent.exists():
        shown = os.path.dirname(str(path)) or "."
        raise FileProblem(f"{what} {path!r}: the directory {shown!r} does not exist")
    if not parent.is_dir():
        raise FileProblem(f"{what} {path!r}: {str(parent)!r} is not a directory")
    if st is not None and not os.access(target, os.W_OK):
        raise FileProblem(f"{what} {path!r} is not writable (its mode is {stat.filemode(st.st_mode)})")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise FileProblem(f"{what} {path!r}: cannot create files in {str(parent)!r} ({exc.strerror})") from None
    return pathlib.Path(path)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic(path: str | pathlib.Path, mode: str = "w", **kw):
    """Open a temporary file beside the file `path` names (links followed) and move it over that file only when
    the block succeeds, so a failed write never leaves a truncated file (an existing one stays as it was). Only a
    regular file is ever replaced; OSErrors become FileProblem (one line)."""
    target = _target(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise FileProblem(f"{str(path)!r} cannot be written: cannot create files in {str(target.parent)!r} "
                          f"({exc.strerror})") from None
    try:
        with os.fdopen(fd, mode, **kw) as f:
            yield f
        existing = _check_target(target, "output", path)  # again: it may have changed since it was checked
        if existing is None:
            os.chmod(tmp, 0o666 & ~_umask())
        else:
            os.chmod(tmp, stat.S_IMODE(existing.st_mode))
            if os.geteuid() == 0:
                os.chown(tmp, existing.st_uid, existing.st_gid)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise FileProblem(f"{str(path)!r} cannot be written ({exc.strerror or exc})") from None
        raise


def read_json(path: str, what: str, kind: type = dict):
    """The JSON value in `path`, which must be a `kind`; FileProblem (one line) when missing, a directory,
    unreadable, not JSON or of another shape."""
    p = pathlib.Path(path)
    if p.is_dir():
        raise FileProblem(f"{what} {path!r} is a directory, not a file")
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FileProblem(f"{what} {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileProblem(f"{what} {path!r} cannot be read ({type(exc).__name__})") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise FileProblem(f"{what} {path!r} is not valid JSON ({exc})") from None
    if not isinstance(value, kind):
        raise FileProblem(f"{what} {path!r} holds a JSON {type(value).__name__}, not a JSON {kind.__name__}")
    return value


def read_json_lines(path: str, what: str) -> list[dict]:
    """One JSON object per non-empty line; FileProblem naming the first bad line."""
    p = pathlib.Path(path)
    if p.is_dir() or not p.exists():
        raise FileProblem(f"{what} {path!r} {'is a directory' if p.is_dir() else 'does not exist'}")
    rows = []
    for number, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise FileProblem(f"{what} {path!r}: line {number} is not a JSON object")
        rows.append(row)
    return rows
