"""Ctrl-C (SIGINT) and SIGTERM as one exception, kvbench.errors.Interrupted, so that a command can keep what it
finished (a sweep writes its finished cases, marked partial) and end with one line and exit 128 + the signal."""

from __future__ import annotations

import contextlib
import signal

from kvbench.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def _raise(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def _handlers(handler):
    """SIGINT and SIGTERM go to `handler` while the block runs (the main thread only: elsewhere signals stay as
    they are); the handlers before it are restored after."""
    try:
        old = {s: signal.signal(s, handler) for s in SIGNALS}
    except ValueError:  # not the main thread
        old = {}
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


def handled():
    """While the block runs, SIGINT and SIGTERM raise Interrupted."""
    return _handlers(_raise)


@contextlib.contextmanager
def held():
    """Signals that arrive while the block runs (writing what was measured) wait until it has finished; the first
    is then raised as Interrupted."""
    got: list[int] = []
    with _handlers(lambda signum, frame: got.append(signum)):
        yield
    if got:
        raise Interrupted(got[0])


def message(exc: Interrupted) -> str:
    """`interrupted (SIGINT) after 3 of 32 cases; ...`: the one line a command ends with."""
    return f"interrupted ({NAMES.get(exc.signum, exc.signum)})" + (f" {exc.detail}" if exc.detail else "")
