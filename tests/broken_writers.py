"""Deliberately wrong writers for tests (registered through KVBENCH_PLUGINS=broken_writers); not part of kvbench."""

from kvbench import impls
from kvbench.impls.torch_ref import TorchReference


class FirstCallOnly(TorchReference):
    """Right on its first call, then does nothing (a timer would see a few ns)."""

    name = "first-call-only"
    devices = ("cpu",)

    def bind(self, w):
        real, calls = super().bind(w), [0]

        def run():
            calls[0] += 1
            if calls[0] == 1:
                real()

        return run


class ZeroesInputs(TorchReference):
    """Writes the right thing, then zeroes its key input."""

    name = "zeroes-inputs"
    devices = ("cpu",)

    def bind(self, w):
        real = super().bind(w)

        def run():
            real()
            w.key.zero_()

        return run


LATE = {"armed": False}  # a test arms the late writers once the timed path's first check has passed


class LateIdle(TorchReference):
    """Right until armed (after the check before the samples), then does nothing."""

    name = "late-idle"
    devices = ("cpu",)

    def bind(self, w):
        real = super().bind(w)

        def run():
            if not LATE["armed"]:
                real()

        return run


class LateZeroesInputs(TorchReference):
    """Writes the right thing; once armed, zeroes its key input too."""

    name = "late-zeroes-inputs"
    devices = ("cpu",)

    def bind(self, w):
        real = super().bind(w)

        def run():
            real()
            if LATE["armed"]:
                w.key.zero_()

        return run


impls.register(FirstCallOnly())
impls.register(ZeroesInputs())
impls.register(LateIdle())
impls.register(LateZeroesInputs())
