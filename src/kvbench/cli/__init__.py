"""The `kvbench` command: `sweep` (vLLM's benchmark script's flags and more), `info`, `fidelity` and the asv
helpers. Bad input ends in one line on stderr and its own exit code (kvbench.errors; README "Exit codes"); Ctrl-C
or SIGTERM in one line too (exit 130 / 143), after the command kept what it finished."""

from __future__ import annotations

import os
import signal
import sys

from kvbench.cli import interrupts
from kvbench.cli.flags import Parser
from kvbench.errors import Interrupted, KvbenchError


def parser() -> Parser:
    from kvbench.cli import commands, sweep  # here: a bad KVBENCH_* value met on import is a one-line error too

    p = Parser(prog="kvbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    sweep.add(sub)
    commands.add(sub)
    from kvbench.cli import vllm_kernels
    vllm_kernels.add(sub)
    from kvbench.cli import site_landing
    site_landing.add(sub)
    from kvbench.cli import compare
    compare.add(sub)
    return p


def main(argv=None) -> int:
    try:
        with interrupts.handled():
            args = parser().parse_args(argv)
            code = args.run(args)
            sys.stdout.flush()  # a closed pipe shows here (below), not as a traceback when Python exits
            return code
    except KvbenchError as exc:  # bad input or configuration, an unusable device, an unreadable file
        print(f"kvbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Interrupted as exc:  # Ctrl-C or SIGTERM: what was finished is kept (the command says where)
        print(f"kvbench: {interrupts.message(exc)}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader of stdout went away (`kvbench asv-summary FILE | head`): no traceback,
        # and none at exit either, when Python flushes what is left for the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
