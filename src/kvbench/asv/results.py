"""Reading asv result files: per-case medians and spreads, and the comparison with `kvbench fidelity`.

An asv result file holds, per benchmark, the parameter lists and one entry per parameter combination (the last
parameter varies fastest) of result (median), quartiles and samples.
"""

from __future__ import annotations

import itertools
import math
import pathlib

from kvbench import files
from kvbench.errors import FileProblem


def _at(row: dict, key: str, i: int):
    """The i-th combination's value of a per-combination column (None where it has none)."""
    values = row.get(key)
    return values[i] if isinstance(values, list) and i < len(values) else None


def read(path: str | pathlib.Path) -> dict:
    """An asv result file's JSON; FileProblem (one line) when it is not one."""
    data = files.read_json(str(path), "asv result file")
    if not isinstance(data.get("results"), dict) or not isinstance(data.get("result_columns"), list):
        raise FileProblem(f"asv result file {str(path)!r} is not an asv result file (no 'results' and "
                          f"'result_columns'); pass .asv/results/MACHINE/COMMIT-ENV.json")
    return data


def started_at(data: dict) -> dict[str, float | None]:
    """When asv started each benchmark of a result file (ms since the epoch; None where it has no time).

    asv keeps a benchmark's result from an earlier run of the same commit and machine until it runs the benchmark
    again, so this time tells the benchmarks of one run from those an earlier run left in the file."""
    columns = data["result_columns"]
    out = {}
    for name, values in data["results"].items():
        value = dict(zip(columns, values)).get("started_at")
        out[name] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return out


def rows(data: dict, since: float | None = None):
    """(benchmark name, parameter values, {column: value}) for every parameter combination in a result file;
    with `since` (seconds since the epoch), only those of benchmarks asv started at or after it."""
    columns = data["result_columns"]
    started = started_at(data)
    for name, values in data["results"].items():
        if since is not None and (started[name] is None or started[name] < since * 1000):
            continue
        row = dict(zip(columns, values))
        combos = itertools.product(*row["params"]) if row.get("params") else [()]
        for i, params in enumerate(combos):
            yield name, [str(p).strip("'") for p in params], {c: _at(row, c, i) for c in columns if c != "params"}


def status_counts(data: dict, since: float | None = None) -> dict[str, int]:
    """How many combinations ran (a number), were skipped (NaN) or failed (null), as asv records them; with
    `since`, only those of benchmarks started at or after it (seconds since the epoch)."""
    counts = {"ran": 0, "skipped": 0, "failed": 0}
    for _, _, row in rows(data, since):
        value = row.get("result")
        counts["failed" if value is None else "skipped" if isinstance(value, float) and math.isnan(value)
               else "ran"] += 1
    return counts


def cases(path: str | pathlib.Path) -> list[dict]:
    """One dict per measured (benchmark, parameters): name, params, median, q25, q75, spread, samples."""
    data = read(path)
    columns = data["result_columns"]
    out = []
    for name, values in data["results"].items():
        row = dict(zip(columns, values))
        combos = itertools.product(*row["params"]) if row.get("params") else [()]
        for i, params in enumerate(combos):
            median = _at(row, "result", i)
            if median is None or median != median:  # skipped or failed
                continue
            q25, q75 = _at(row, "stats_q_25", i), _at(row, "stats_q_75", i)
            spread = (q75 - q25) / median if q25 is not None and q75 is not None and median else None
            samples = _at(row, "samples", i)
            out.append(dict(name=name.split(".", 1)[-1], params=[p.strip("'") for p in params], median=median,
                            q25=q25, q75=q75, spread=spread, samples=samples))
    return out


def _paired(asv_cases: list[dict], independent: dict, key) -> list[dict]:
    """KVCacheWrite.time_cudagraph cases whose key(implementation, tokens, dtype, kv) has an independent figure (us),
    with both figures and their ratio."""
    out = []
    for c in asv_cases:
        if c["name"] != "KVCacheWrite.time_cudagraph":
            continue
        tokens, dtype, kv, implementation, _ = c["params"]
        found = independent.get(key(implementation, int(tokens), dtype, kv))
        if found is not None:
            asv_us = c["median"] * 1e6
            out.append(dict(implementation=implementation, num_tokens=int(tokens), dtype=dtype, kv_cache_dtype=kv,
                            asv_us=asv_us, independent_us=found, ratio=asv_us / found))
    return sorted(out, key=lambda r: (r["implementation"], r["dtype"], r["kv_cache_dtype"], r["num_tokens"]))


def fidelity_ratios(asv_cases: list[dict], fidelity_rows: list[dict], dtype: str = "bfloat16") -> list[dict]:
    """KVCacheWrite.time_cudagraph (auto cache, `dtype`) next to `kvbench fidelity`'s independent measurement."""
    independent = {(r["implementation"], r["num_tokens"]): r["independent_us"] for r in fidelity_rows}
    return _paired(asv_cases, independent,
                   lambda impl, tokens, case_dtype, kv: (impl, tokens) if (case_dtype, kv) == (dtype, "auto") else None)


def same_process_ratios(asv_cases: list[dict], state_rows: list[dict]) -> list[dict]:
    """KVCacheWrite.time_cudagraph next to the independent timing of the same graph in the same benchmark process
    (KVBENCH_STATE_LOG lines written with KVBENCH_FIDELITY=1)."""
    independent = {(r["implementation"], r["num_tokens"], r["dtype"], r["kv_cache_dtype"]): r["independent_us"]
                   for r in state_rows if r.get("benchmark") == "KVCacheWrite" and "independent_us" in r}
    return _paired(asv_cases, independent, lambda *key: key)
