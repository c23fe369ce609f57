"""The device's copy bandwidth: the ceiling "x ideal" is measured against.

It is this machine's *measured* device-to-device copy rate (bytes read + bytes written per second), measured once
per device and cached in KVBENCH_CACHE_DIR (default ~/.cache/kvbench); KVBENCH_COPY_BW (bytes/s) overrides it. A
cache entry that is unreadable, corrupt or not a positive number is measured again, with a warning.
"x ideal" = measured time / (bytes the case must move / copy bandwidth): 1.0 is the limit, bigger is worse (as asv
reads every number).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import statistics
import sys
import time

import torch

from kvbench import config, files
from kvbench.measure.timing import cuda_seconds

COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 28}


@dataclasses.dataclass(frozen=True)
class CopyBandwidth:
    bytes_per_s: float
    source: str  # how it was obtained: measured now, read from the cache file, or the environment

    def ideal_s(self, case) -> float:
        """Seconds `case` would take moving its bytes at the copy bandwidth."""
        return case.bytes_moved / self.bytes_per_s


def measure_copy(device: str, nbytes: int | None = None, repeats: int = 20, warmup_s: float = 0.2) -> float:
    """Median bytes/s (read + written) of a large tensor copy on `device`, after `warmup_s` of copying
    (an idle GPU's clocks need that to ramp up: a cold measurement read 7 % low on an H100)."""
    nbytes = nbytes or COPY_BYTES[device]
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 256)
    dst = torch.empty_like(src)
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        dst.copy_(src)
        if device == "cuda":
            torch.cuda.synchronize()
    times = []
    for i in range(repeats + 3):
        if device == "cuda":
            t = cuda_seconds(lambda: dst.copy_(src))
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            t = time.perf_counter() - t0
        if i >= 3:
            times.append(t)
    return 2 * nbytes / statistics.median(times)


def _cache_file():
    return config.cache_dir() / "copy_bandwidth.json"


def _read_cache(device_key: str) -> tuple[dict, CopyBandwidth | None]:
    """(whole cache, this device's entry) from the cache file; a corrupt file or entry warns and reads as absent."""
    path = _cache_file()
    if not path.exists():
        return {}, None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON object was expected, found {type(data).__name__}")
        entry = data.get(device_key)
        if entry is None:
            return data, None
        value = float(entry["bytes_per_s"])
        if not value > 0 or value == float("inf"):
            raise ValueError(f"bytes_per_s {entry['bytes_per_s']!r} is not a positive number")
        return data, CopyBandwidth(value, f"measured {entry.get('measured_at', '?')} (cached in {path})")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        print(f"kvbench: warning: ignoring the copy-bandwidth cache {path} ({type(exc).__name__}: {exc}); "
              f"measuring again", file=sys.stderr)
        return {}, None


def _write_cache(data: dict) -> None:
    """Replace the cache file atomically; an unwritable cache only costs a re-measurement next time."""
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with files.atomic(path) as f:
            json.dump(data, f, indent=1)
    except OSError:
        pass


def copy_bandwidth(device: str, device_key: str) -> CopyBandwidth:
    """The copy bandwidth of the device named `device_key`: from the environment, the cache, or measured now."""
    override = config.positive_float("KVBENCH_COPY_BW")
    if override is not None:
        return CopyBandwidth(override, "KVBENCH_COPY_BW")
    data, cached = _read_cache(device_key)
    if cached is not None:
        return cached
    bw = measure_copy(device)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    _write_cache({**data, device_key: {"bytes_per_s": bw, "measured_at": stamp, "bytes": COPY_BYTES[device]}})
    return CopyBandwidth(bw, f"measured {stamp} ({COPY_BYTES[device] >> 20} MiB copy, median of 20)")
