"""kvbench's errors: how a case ends without a number, and how the command line ends on bad input.

Every message is one line that names the bad value and, where there is a choice, the allowed ones. Each kind of
error that reaches the command line has its own exit code (README: "Exit codes").
"""


class KvbenchError(Exception):
    """Base class of kvbench's own errors."""

    exit_code = 2


class CaseError(KvbenchError, ValueError):
    """The case description is invalid (a one-line message names the value and what is allowed)."""


class ConfigError(KvbenchError, ValueError):
    """A KVBENCH_* environment variable holds a value kvbench cannot use."""


class FileProblem(KvbenchError, OSError):
    """A file named on the command line cannot be read (missing, a directory, corrupt) or written (an OSError too,
    so callers for whom a file is optional, such as a cache, can ignore it as any other OSError)."""

    exit_code = 3


class DeviceUnavailable(KvbenchError):
    """The device asked for explicitly (--device, KVBENCH_DEVICE) is not usable here."""

    exit_code = 4


class Unavailable(KvbenchError):
    """The implementation cannot run this case here (not installed, no CUDA, unsupported by this build or CPU):
    the case is skipped with this reason."""


class VerificationError(KvbenchError):
    """The implementation ran but wrote the wrong thing (or changed its inputs); such a case is never timed."""

    exit_code = 1


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (kvbench.cli.interrupts turns both into this): the command stops, keeps what it
    finished, and exits 128 + the signal's number. `detail` says what was kept ("after 3 of 32 cases; ...")."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signum, detail)
        self.signum, self.detail = signum, detail

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


EXIT_CASE_FAILED = 1  # a case wrote the wrong thing or crashed; the others were still measured
EXIT_NOTHING_MEASURED = 5  # every case was skipped: nothing to report
