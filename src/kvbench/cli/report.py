"""Sweep results as a table (tabulate), JSON, CSV and a latency / bandwidth plot (matplotlib)."""

from __future__ import annotations

import csv
import json
import os
import tempfile

from tabulate import tabulate

from kvbench import defects, files
from kvbench.runner import Result

COLUMNS = ("num_tokens", "latency (µs)", "GB/s", "× ideal", "× sector ideal", "verified")
CSV_FIELDS = ("implementation", "mode", "num_tokens", "status", "latency_us", "gbps", "x_ideal", "x_sector_ideal",
              "bytes_moved", "calls_per_sample", "verified", "message", "partial")


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def table(results: list[Result], op: str | None = None) -> str:
    """`num_tokens | latency (µs)` (vLLM's script's table) plus GB/s, × ideal (and × sector ideal where the sector
    model applies: kvbench.ops.sectors) and verification; a reason that repeats the row above's is not printed
    again. With `op`, a failure that is a known vLLM defect (kvbench.defects) says so: `FAILED (known vLLM defect ID,
    vLLM issue N)`."""
    sectors = any(r.x_sector_ideal is not None for r in results)
    rows = []
    for i, r in enumerate(results):
        if r.status == "ok":
            row = [r.num_tokens, _fmt(r.latency_us, ".3f"), _fmt(r.gbps, ".1f"), _fmt(r.x_ideal, ".2f"),
                   _fmt(r.x_sector_ideal, ".2f"), r.verified]
        else:
            same = i and results[i - 1].status == r.status and results[i - 1].message == r.message
            known = defects.of_result(op, r) if op else None
            status = f"FAILED (known vLLM defect {known.id}, {known.reference})" if known else r.status.upper()
            row = [r.num_tokens, status, "", "", "", "(as above)" if same else r.message]
        rows.append(row if sectors else row[:4] + row[5:])
    headers = COLUMNS if sectors else COLUMNS[:4] + COLUMNS[5:]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def write_json(path, header: dict, results: list[Result], partial: dict | None = None) -> None:
    """{"machine": header, "partial": false or {finished, planned, signal}, "results": [...]}."""
    with files.atomic(path) as f:
        _dump(f, header, results, partial)


def _dump(f, header: dict, results: list[Result], partial: dict | None) -> None:
    json.dump({"machine": header, "partial": partial or False, "results": [r.as_dict() for r in results]}, f,
              indent=1)


def write_rescue(header: dict, results: list[Result], partial: dict | None) -> str:
    """The results in a new file of the temporary directory (when the file asked for could not be written)."""
    fd, path = tempfile.mkstemp(prefix="kvbench-sweep-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        _dump(f, header, results, partial)
    return path


def write_csv(path, results: list[Result], partial: dict | None = None) -> None:
    """One row per case; the column `partial` says "yes" when the sweep was interrupted before its end."""
    with files.atomic(path, newline="") as f:
        out = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        out.writeheader()
        for r in results:
            out.writerow({**r.as_dict(), "partial": "yes" if partial else ""})


def plot(path: str, results: list[Result], copy_gbps: float | None, title: str) -> None:
    """Latency and GB/s versus tokens, one line per implementation and mode (log-scaled token axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_bw) = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[str, list[Result]] = {}
    for r in results:
        if r.status == "ok":
            series.setdefault(f"{r.implementation} ({r.mode})", []).append(r)
    for label, rows in series.items():
        rows.sort(key=lambda r: r.num_tokens)
        tokens = [r.num_tokens for r in rows]
        ax_t.plot(tokens, [r.latency_us for r in rows], marker="o", label=label)
        ax_bw.plot(tokens, [r.gbps for r in rows], marker="o", label=label)
    if copy_gbps:
        ax_bw.axhline(copy_gbps, color="gray", linestyle="--", label="measured copy bandwidth")
    ax_t.set(xscale="log", yscale="log", xlabel="num_tokens", ylabel="latency per call (µs)", title=title)
    ax_bw.set(xscale="log", xlabel="num_tokens", ylabel="GB/s (bytes read + written)", title="achieved bandwidth")
    for ax in (ax_t, ax_bw):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with files.atomic(path, "wb") as f:
        fig.savefig(f, dpi=120, format="png")
    plt.close(fig)
