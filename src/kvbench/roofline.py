"""Bytes a write must move, and how close a measured time is to moving them at the device's copy bandwidth.

The ceiling is this machine's *measured* device-to-device copy bandwidth (bytes read + bytes written per second),
measured once per device and cached in ~/.cache/kvbench (KVBENCH_CACHE_DIR overrides); KVBENCH_COPY_BW (bytes/s)
overrides it. "x ideal" = measured time / (bytes / copy bandwidth): 1.0 is the limit, bigger is worse (as asv reads).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import statistics
import time

import torch

from kvbench.case import Case

COPY_BYTES = {"cuda": 1 << 30, "cpu": 1 << 28}


def bytes_moved(case: Case) -> int:
    """Each input element read once and each cache element written once, for key and value."""
    return case.num_tokens * case.num_heads * case.head_size * (2 * case.input_element_size + 2 * case.cache_element_size)


@dataclasses.dataclass(frozen=True)
class CopyBandwidth:
    bytes_per_s: float
    source: str  # how it was obtained: measured now, read from the cache file, or the environment

    def ideal_s(self, case: Case) -> float:
        return bytes_moved(case) / self.bytes_per_s


def _cache_file() -> pathlib.Path:
    root = os.environ.get("KVBENCH_CACHE_DIR") or pathlib.Path.home() / ".cache" / "kvbench"
    return pathlib.Path(root) / "copy_bandwidth.json"


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
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            t = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            dst.copy_(src)
            t = time.perf_counter() - t0
        if i >= 3:
            times.append(t)
    return 2 * nbytes / statistics.median(times)


def copy_bandwidth(device: str, device_key: str) -> CopyBandwidth:
    """The copy bandwidth of the device named `device_key`: from the environment, the cache, or measured now."""
    if os.environ.get("KVBENCH_COPY_BW"):
        return CopyBandwidth(float(os.environ["KVBENCH_COPY_BW"]), "KVBENCH_COPY_BW")
    path = _cache_file()
    try:
        entry = json.loads(path.read_text())[device_key]
        return CopyBandwidth(entry["bytes_per_s"], f"measured {entry['measured_at']} (cached in {path})")
    except (OSError, ValueError, KeyError):
        pass
    bw = measure_copy(device)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
        data[device_key] = {"bytes_per_s": bw, "measured_at": stamp, "bytes": COPY_BYTES[device]}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
    except (OSError, ValueError):
        pass  # an unwritable cache only costs a re-measurement next time
    return CopyBandwidth(bw, f"measured {stamp} ({COPY_BYTES[device] >> 20} MiB copy, median of 20)")
