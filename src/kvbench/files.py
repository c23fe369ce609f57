"""Files named on the command line: checked before any work, read with one-line errors, written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile

from kvbench.errors import FileProblem


def check_writable(path: str, what: str) -> pathlib.Path:
    """Raise FileProblem now (before any measuring) unless `path` can be written as a file."""
    p = pathlib.Path(path)
    if p.is_dir():
        raise FileProblem(f"{what} {path!r} is a directory; give a file name")
    parent = p.parent if str(p.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise FileProblem(f"{what} {path!r}: the directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise FileProblem(f"{what} {path!r} is not writable")
    return p


@contextlib.contextmanager
def atomic(path: str | pathlib.Path, mode: str = "w", **kw):
    """Open a temporary file beside `path` and move it over `path` only when the block succeeds, so a failed
    write never leaves a truncated file (an existing one stays as it was)."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kw) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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
