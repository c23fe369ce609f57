"""The measuring side of `kvbench compare`: one long-lived process per revision, started as
`python -P worker.py TREE` (TREE: that revision's exported tree; -P: this file's folder is not put on the path).

It puts TREE/src first on sys.path, so `kvbench` is that revision's code, and TREE, so `benchmarks.benchmarks` is
that revision's asv suite (read with the KVBENCH_* variables this process inherited), then answers one JSON line
on stdout for each JSON-line request on stdin:

  list              the suite's time_* benchmarks: class, methods, parameter grid, mode, version
  prepare           {class, params}: the class's `case(*params)` through `runner.prepare` (checked, allocated,
                    verified), as the suite's `Benchmark.setup` does; status ok, skipped, failed or missing
  calibrate {cpu}   the prepared case's sampler in the class's mode (it chooses the calls per sample), and how
                    long one of its samples lasts
  measure {n, cpu}  n samples: per-call seconds (on that CPU alone, when given), after `discard` untimed ones
  check             the timed path verified (`Prepared.check_timed`, as the suite's teardown does)
  release           the case dropped

Only the standard library is imported before the revision's code is on the path: this file must never load the
current checkout's kvbench. Everything else the process prints goes to stderr: fd 1 carries the replies alone.
"""

import gc
import inspect
import json
import os
import signal
import sys

# What a revision must have for the worker (checked at start; a revision without it is named as too old).
REQUIRED = (
    ("kvbench.runner", "prepare"),
    ("kvbench.runner", "Prepared.sampler"),
    ("kvbench.runner", "Prepared.check_timed"),
    ("kvbench.asv.suite", "PRIMARY_MODE"),
    ("kvbench.asv.suite", "MAX_TOKENS"),
    ("kvbench.asv.suite", "Benchmark"),
    ("kvbench.errors", "Unavailable"),
    ("kvbench.errors", "CaseError"),
    ("kvbench.errors", "VerificationError"),
)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text or type(exc).__name__).splitlines()[0]


class Worker:
    def __init__(self, tree: str):
        self.tree = tree
        self.current: dict = {}  # the prepared case: prepared, mode
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None

    def pin(self, req) -> None:
        """Run on the CPU the request names (timed work: both sides of an allocation on the same core), or on every
        CPU this process may use (untimed work: preparing, checking)."""
        if self.cpus is not None:
            os.sched_setaffinity(0, {req["cpu"]} if req.get("cpu") is not None else self.cpus)

    def start(self) -> dict:
        """Import the revision's kvbench and suite; the reply says what it is or why it cannot be used."""
        sys.path[:0] = [os.path.join(self.tree, "src"), self.tree]
        try:
            import importlib

            missing = []
            for module, attr in REQUIRED:
                try:
                    obj = importlib.import_module(module)
                except ModuleNotFoundError as exc:
                    if not (exc.name or "").startswith("kvbench"):
                        raise
                    missing.append(module)
                    continue
                for part in attr.split("."):
                    obj = getattr(obj, part, None)
                    if obj is None:
                        missing.append(f"{module}.{attr}")
                        break
            if missing:
                return {"ok": False, "too_old": True, "error": f"it has no {', '.join(missing)}"}
            import kvbench
            from kvbench import runner

            if not os.path.realpath(kvbench.__file__).startswith(os.path.realpath(self.tree) + os.sep):
                return {"ok": False, "error": f"kvbench was imported from {kvbench.__file__}, not from its tree"}
            self.runner = runner
            self.suite = importlib.import_module("kvbench.asv.suite")
            self.errors = importlib.import_module("kvbench.errors")
            try:
                self.module = importlib.import_module("benchmarks.benchmarks")
            except ModuleNotFoundError as exc:
                if exc.name not in ("benchmarks", "benchmarks.benchmarks"):
                    raise
                return {"ok": False, "too_old": True, "error": "it has no benchmarks/benchmarks.py"}
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {one_line(exc)}",
                    "exit_code": getattr(exc, "exit_code", 2)}
        import torch

        return {"ok": True, "kvbench": kvbench.__file__, "device": self.suite.DEVICE,
                "cpus": sorted(self.cpus) if self.cpus is not None else None,
                "mode": self.suite.PRIMARY_MODE, "max_tokens": self.suite.MAX_TOKENS, "torch": torch.__version__,
                "python": sys.version.split()[0], "pid": os.getpid()}

    def classes(self) -> dict:
        """The suite's benchmark classes as asv finds them: public classes of the module with params."""
        return {name: obj for name, obj in vars(self.module).items()
                if inspect.isclass(obj) and not name.startswith("_") and getattr(obj, "params", None)}

    def op_list(self, req) -> dict:
        out = []
        for name, cls in self.classes().items():
            methods = sorted(m for m in dir(cls) if m.startswith("time_") and callable(getattr(cls, m)))
            if methods:
                out.append({"class": name, "methods": methods, "param_names": list(cls.param_names),
                            "params": [list(p) for p in cls.params], "mode": getattr(cls, "mode", None),
                            "version": getattr(cls, "version", None)})
        return {"benchmarks": out}

    def op_prepare(self, req) -> dict:
        self.current = {}
        self.pin({})
        cls = self.classes().get(req["class"])
        if cls is None or not hasattr(cls, req["method"]):
            return {"status": "missing", "reason": f"this revision has no benchmark {req['class']}.{req['method']}"}
        mode = getattr(cls, "mode", self.suite.PRIMARY_MODE)
        named = dict(zip(cls.param_names, req["params"]))
        reply = {"mode": mode, "version": getattr(cls, "version", None)}
        try:
            case = cls().case(*req["params"])
            if case.num_tokens > self.suite.MAX_TOKENS:
                raise self.errors.Unavailable(f"the {self.suite.DEVICE} grid stops at {self.suite.MAX_TOKENS} "
                                              f"tokens (KVBENCH_MAX_TOKENS)")
            # the class's mode checked before anything is allocated, as the suite's setup does (a revision whose
            # prepare has no mode finds out at calibrate, where its Unavailable is still a skip)
            takes_mode = "mode" in inspect.signature(self.runner.prepare).parameters
            prepared = self.runner.prepare(case, named["implementation"], **({"mode": mode} if takes_mode else {}))
        except (self.errors.Unavailable, self.errors.CaseError, NotImplementedError) as exc:
            return {**reply, "status": "skipped", "reason": one_line(exc)}
        self.current = {"prepared": prepared, "mode": mode}
        return {**reply, "status": "ok", "case": case.label(), "verified": prepared.verified.method}

    def op_calibrate(self, req) -> dict:
        self.pin(req)
        try:
            sampler = self.current["prepared"].sampler(self.current["mode"])
        except self.errors.Unavailable as exc:  # cannot be timed in the class's mode: a skip, as in the suite
            return {"status": "skipped", "reason": one_line(exc)}
        (per_call,) = sampler.measure(1)  # how long a sample lasts (and a first warm-up)
        return {"status": "ok", "calls_per_sample": sampler.calls_per_sample,
                "sample_s": per_call * sampler.calls_per_sample}

    def op_measure(self, req) -> dict:
        self.pin(req)
        sampler = self.current["prepared"].sampler(self.current["mode"])
        sampler.measure(req.get("discard", 0))  # after the other side ran: caches and predictors warm up again
        return {"status": "ok", "samples": sampler.measure(req["n"])}

    def op_check(self, req) -> dict:
        self.pin({})
        prepared = self.current["prepared"]
        prepared.check_timed(self.current["mode"])
        steps = prepared.steps() if hasattr(prepared, "steps") else {}
        return {"status": "ok", "steps": steps}

    def op_release(self, req) -> dict:
        self.current = {}
        gc.collect()
        return {"status": "ok"}


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops this process
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else writes to stdout (Python or C) lands on stderr
    sys.stdout = sys.stderr
    worker = Worker(os.path.abspath(sys.argv[1]))

    def send(reply: dict) -> None:
        replies.write(json.dumps(reply) + "\n")

    hello = worker.start()
    send(hello)
    if not hello["ok"]:
        return
    while True:
        line = sys.stdin.readline()
        if not line:
            return  # the parent has gone
        req = json.loads(line)
        handler = getattr(worker, f"op_{req.get('op')}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown request {req.get('op')!r}")
            reply = handler(req)
        except Exception as exc:  # a wrong write or a crash fails this case on this side, never the worker
            wrong = isinstance(exc, worker.errors.VerificationError)  # its message says what was wrong
            reason = one_line(exc) if wrong else f"{type(exc).__name__}: {one_line(exc)}"
            reply = {"status": "failed", "reason": reason}
        send(reply)


if __name__ == "__main__":
    main()
