"""scripts/served_table.py's cells: a row whose samples sit at two levels is marked, a steady one is not."""

import importlib.util
import pathlib
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "served_table.py"


@pytest.fixture(scope="module")
def served_table():
    spec = importlib.util.spec_from_file_location("served_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclass looks its module up while it is made)
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def row(samples, status="ok"):
    median = sorted(samples)[len(samples) // 2] if samples else None
    return {"status": status, "latency_us": median, "samples_us": samples}


def test_a_steady_row_is_printed_as_it_is(served_table):
    assert served_table.fmt(row([1.521, 1.522, 1.523] * 10)) == "1.5"


def test_a_row_at_two_levels_is_marked(served_table):
    two_levels = [1.576] * 14 + [1.66] * 16  # kvbench's 4 x 128 fp8 decode row, H100 2026-12-06
    assert served_table.spread(row(two_levels)) == pytest.approx((1.66 - 1.576) / 1.66)
    assert served_table.fmt(row(two_levels)) == "1.7†"


def test_a_row_without_a_number_shows_its_status(served_table):
    assert served_table.fmt(row([], status="skipped")) == "skipped"
    assert served_table.spread(row([1.0])) is None  # one sample: no spread
