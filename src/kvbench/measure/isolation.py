"""One case per fresh process, as asv runs them, for the CLI's sweeps and fidelity checks on CUDA.

Why: each case gets its own CUDA context and memory, and a crash or a poisoned context costs one row, not the sweep.
(Graph state is the same either way: every graph sampler primes it first, kvbench.measure.timing.prime_graphs.)
`run` forks a child from this process, which must not have touched CUDA yet (CUDA does not survive a fork), calls
the function there and returns its result. A child that dies is reported as an error naming how it ended; a
parent interrupted while it waits kills the child before it stops.
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys

from kvbench.errors import KvbenchError


class ChildDied(KvbenchError):
    """The child process ended without returning a result (a crash or a kill)."""


# Modules Triton imports at a kernel's first launch, not at `import triton`: the code generator pulls in Gluon
# (~40 modules); 0.17 s of a benchmark process's 0.42 s verification on an H100 when left to each process.
FIRST_LAUNCH_MODULES = ("triton.compiler.code_generator", "triton.language.semantic",
                        "triton.language.extra.libdevice", "triton.tools.tensor_descriptor")


def warm_triton() -> None:
    """Import Triton and fill its per-process caches that need no GPU (its version key, a hash of its whole
    compiler library, and the modules of its first launch), so that forked children do not pay for them. Triton
    touches CUDA only at its first launch."""
    try:
        import kvbench.impls.kernels.cache_write  # noqa: F401
    except ImportError:  # no Triton: nothing to warm
        return
    for module, function in (("triton.runtime.cache", "triton_key"),
                             ("triton.backends.nvidia.driver", "libcuda_dirs")):
        try:
            getattr(importlib.import_module(module), function)()
        except Exception:  # another Triton version or backend: only the saving is lost
            pass
    for module in FIRST_LAUNCH_MODULES:
        try:
            importlib.import_module(module)
        except Exception:  # not in this Triton version: only the saving is lost
            pass


def cuda_initialized() -> bool:
    import torch

    return torch.cuda.is_initialized()


def run(function, *args, **kwargs):
    """`function(*args, **kwargs)` in a child forked from this process; its return value (or exception) here."""
    if cuda_initialized():
        raise RuntimeError("isolation.run needs a parent that has not initialised CUDA")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read)
        try:
            try:
                payload = pickle.dumps((True, function(*args, **kwargs)))
            except BaseException as exc:  # noqa: BLE001 -- handed to the parent, which raises it
                payload = pickle.dumps((False, KvbenchError(str(exc)) if not _picklable(exc) else exc))
            with os.fdopen(write, "wb") as out:
                out.write(payload)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): the child must not outlive its case
        _end(pid)
        raise
    _, status = os.waitpid(pid, 0)
    if not data:
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit status {os.WEXITSTATUS(status)}")
        raise ChildDied(f"the child process running {getattr(function, '__name__', function)} died ({how})")
    ok, value = pickle.loads(data)
    if ok:
        return value
    raise value


def _end(pid: int) -> None:
    """Kill the child and reap it."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:  # already gone
        pass


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
        return True
    except Exception:
        return False
