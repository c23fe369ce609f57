"""Flag helpers shared by the subcommands: vLLM's dashed spellings with underscore aliases, bounded integers."""

from __future__ import annotations

import argparse

from kvbench import config


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def flag(group, name: str, **kw):
    """Add --a-b with --a_b as an alias (vLLM's script spells its flags with dashes)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    group.add_argument(*spellings, **kw)


def bounded(low: int, high: int):
    """An argparse type: an integer in [low, high], else a one-line error naming the value and the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; choose {low} to {high}")
        return value

    return parse


def positive(text: str) -> int:
    return bounded(1, 2**31 - 1)(text)


def same_process(p) -> None:
    flag(p, "same-process", action="store_true",
         help="on CUDA, measure every case in this one process (vLLM's script does) instead of a fresh process "
              "per case (as asv does): later cases of tiny kernels then read up to ~11 %% high")


def device(p) -> None:
    flag(p, "device", default=None, choices=config.DEVICES,
         help="default: KVBENCH_DEVICE, else cuda where a CUDA device is visible (an unusable device is an error)")
