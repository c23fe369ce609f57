"""The three ways a benchmark case can end without a number."""


class KvbenchError(Exception):
    """Base class of kvbench's own errors."""


class CaseError(KvbenchError, ValueError):
    """The case description is invalid (a one-line message names the value and what is allowed)."""


class Unavailable(KvbenchError):
    """The implementation cannot run this case here (not installed, no CUDA, layout unsupported...)."""


class VerificationError(KvbenchError):
    """The implementation ran but wrote the wrong thing; such a case is never timed."""
