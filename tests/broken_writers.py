"""Deliberately wrong writers for tests (registered through KVBENCH_PLUGINS=broken_writers); not part of kvbench."""

from kvbench import impls
from kvbench.impls.torch_ref import TorchReference


LATE = {"armed": False}  # a test arms the late writers once the timed path's first check has passed


class _Broken(TorchReference):
    """The torch reference's writer, called through `call(real, w, n)` on the n-th call (n from 1)."""

    devices = ("cpu",)

    def bind(self, w):
        real, calls = super().bind(w), [0]

        def run():
            calls[0] += 1
            self.call(real, w, calls[0])

        return run


class FirstCallOnly(_Broken):
    """Right on its first call, then does nothing (a timer would see a few ns)."""

    name = "first-call-only"

    def call(self, real, w, n):
        if n == 1:
            real()


class ZeroesInputs(_Broken):
    """Writes the right thing, then zeroes its key input."""

    name = "zeroes-inputs"

    def call(self, real, w, n):
        real()
        w.key.zero_()


class LateIdle(_Broken):
    """Right until armed (after the check before the samples), then does nothing."""

    name = "late-idle"

    def call(self, real, w, n):
        if not LATE["armed"]:
            real()


class LateZeroesInputs(_Broken):
    """Writes the right thing; once armed, zeroes its key input too."""

    name = "late-zeroes-inputs"

    def call(self, real, w, n):
        real()
        if LATE["armed"]:
            w.key.zero_()


impls.register(FirstCallOnly())
impls.register(ZeroesInputs())
impls.register(LateIdle())
impls.register(LateZeroesInputs())
