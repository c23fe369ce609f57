"""kvbench's page of a published asv site (kvbench.html): latency against tokens, read at publish time from asv's
results.

asv's own page opens on the commit axis: with one commit (any new machine) every graph is empty until one picks
"x-axis: num_tokens" and the parameters. This page shows, for each machine, its newest commit's results: per
benchmark class, one chart per combination of its parameters other than num_tokens and implementation (latency per
call against tokens, log-log, a line per implementation, and the ideal: bytes moved / the machine's copy
bandwidth), the latest x ideal, the failures and skips with their reasons (from the run's state log,
KVBENCH_STATE_LOG: asv's result files hold only null for a failure and NaN for a skip), and a link per chart into
asv's graph with those parameters chosen. Charts are static SVG files drawn by matplotlib next to the page
(kvbench/MACHINE/*.svg); the page has no JavaScript. asv's index.html gets a link to it in its navigation bar.

The copy bandwidth comes from the results where they allow it: KVCacheWriteBF16.track_x_ideal is KVCacheWrite's
time of the same case over its ideal time, so bytes x (x ideal) / time is the bandwidth the run used. Otherwise
(for the host's own machine, `machine=`) KVBENCH_COPY_BW or kvbench's bandwidth cache; else no ideal line.
"""

from __future__ import annotations

import ast
import concurrent.futures
import dataclasses
import datetime
import html
import importlib.util
import itertools
import json
import math
import multiprocessing
import os
import pathlib
import re
import shutil
import statistics
import sys
import textwrap
import urllib.parse

from kvbench.errors import KvbenchError

PAGE = "kvbench.html"
CHARTS = "kvbench"  # folder of the SVG charts, next to the page
NAV_ID = "nav-li-kvbench"
X_PARAM = "num_tokens"
IMPL_PARAM = "implementation"
X_IDEAL = ("KVCacheWriteBF16", "KVCacheWrite", {"dtype": "'bfloat16'"})  # x ideal class, time class, fixed params
FIGURE = (4.4, 3.0)  # inches; 96 px each in a browser
DRAW_WORKERS = 8  # processes drawing charts at most (draw_all)
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


@dataclasses.dataclass
class Combo:
    """One parameter combination of one benchmark: parameter name -> asv's repr of the value, and its result."""

    params: dict[str, str]
    value: float | None

    @property
    def status(self) -> str:
        if self.value is None:
            return "failed"
        return "skipped" if isinstance(self.value, float) and math.isnan(self.value) else "ran"

    def shown(self, name: str) -> str:
        return display(self.params[name])


@dataclasses.dataclass
class Panel:
    """One chart: a benchmark's combinations sharing every parameter but num_tokens and implementation."""

    benchmark: str
    fixed: dict[str, str]  # parameter -> asv repr (num_tokens and implementation excluded)
    lines: dict[str, dict[int, float]]  # implementation -> {tokens: seconds}, measured points only
    missing: dict[str, dict[str, int]]  # implementation -> {status: count} of its points without a number
    ideal: dict[int, float] = dataclasses.field(default_factory=dict)  # tokens -> seconds
    chart: str = ""  # the SVG's path relative to the page
    link: str = ""


@dataclasses.dataclass
class Machine:
    """What the page shows of one machine: its newest commit's results and where they come from."""

    name: str
    info: dict
    commit: str
    date: float  # the commit's date, ms since the epoch
    envs: list[str]
    results: dict[str, list[Combo]]  # benchmark name -> combinations
    units: dict[str, str]
    started: list[float]
    commits_seen: int
    bandwidth: float | None = None
    bandwidth_note: str = ""
    reasons: dict | None = None  # (class, params) -> (status, reason, known defect); None: no state log here


def display(value: str) -> str:
    """A parameter value as asv shows it: the repr of a string without its quotes."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def literal(value: str):
    """The Python value of asv's repr of a parameter (the text itself when it is not a literal)."""
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return display(value)


def config(path: str | pathlib.Path | None) -> dict[str, pathlib.Path]:
    """results_dir, html_dir and benchmark_dir of an asv configuration (relative to the current directory, as asv
    reads them); the values of kvbench's asv.conf.json when the default file is not there."""
    conf = {"results_dir": ".asv/results", "html_dir": ".asv/html", "benchmark_dir": "benchmarks"}
    if path is not None and pathlib.Path(path).exists():
        from kvbench.asv.config_file import load

        conf.update({k: v for k, v in load(pathlib.Path(path)).items() if k in conf})
    elif path is not None and str(path) != "asv.conf.json":
        raise KvbenchError(f"--config {str(path)!r} does not exist")
    return {k: pathlib.Path(v) for k, v in conf.items()}


def _read_json(path: pathlib.Path) -> dict:
    """A JSON object from a file; KvbenchError (one line) when it is not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KvbenchError(f"{path} is not readable JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise KvbenchError(f"{path} holds JSON but not an object (not asv's)")
    return data


def combos(row: dict, param_names: list[str]) -> list[Combo]:
    """Every parameter combination of one benchmark's row of a result file (the last parameter varies fastest)."""
    params, values = row.get("params") or [], row.get("result")
    if not params or not isinstance(values, list) or len(params) != len(param_names):
        return []
    return [Combo(dict(zip(param_names, p)), values[i] if i < len(values) else None)
            for i, p in enumerate(itertools.product(*params))]


def result_files(machine_dir: pathlib.Path) -> list[dict]:
    """The asv result files of one machine's folder (machine.json excluded)."""
    out = []
    for path in sorted(machine_dir.glob("*.json")):
        if path.name != "machine.json":
            data = _read_json(path)
            if isinstance(data.get("results"), dict) and isinstance(data.get("result_columns"), list):
                out.append(data)
    return out


def newest(files: list[dict]) -> list[dict]:
    """The result files of the newest commit among `files` (by commit date; ties by when asv last ran)."""
    def last_run(data):
        return max((dict(zip(data["result_columns"], v)).get("started_at") or 0
                    for v in data["results"].values()), default=0)

    best = max(files, key=lambda d: (d.get("date") or 0, last_run(d)))
    return [d for d in files if d.get("commit_hash") == best.get("commit_hash")]


def load_machine(machine_dir: pathlib.Path, benchmarks: dict) -> Machine | None:
    """A machine's newest commit: its combinations per benchmark, merged over its environments' files."""
    files = result_files(machine_dir)
    if not files:
        return None
    chosen = newest(files)
    results, started = {}, []
    for data in chosen:
        for name, values in data["results"].items():
            row = dict(zip(data["result_columns"], values))
            names = (benchmarks.get(name) or {}).get("param_names")
            if names is not None:
                results[name] = combos(row, names)
            if isinstance(row.get("started_at"), (int, float)):
                started.append(row["started_at"])
    info = _read_json(machine_dir / "machine.json") if (machine_dir / "machine.json").exists() else {}
    units = {name: (benchmarks.get(name) or {}).get("unit", "") for name in results}
    return Machine(machine_dir.name, info, chosen[0].get("commit_hash", "?"), chosen[0].get("date") or 0,
                   [d.get("env_name", "?") for d in chosen], results, units, started,
                   len({d.get("commit_hash") for d in files}))


def machines(results_dir: pathlib.Path) -> tuple[list[Machine], dict]:
    """Every machine of a results folder (with its newest commit's results), and benchmarks.json."""
    if not (results_dir / "benchmarks.json").exists():
        raise KvbenchError(f"{results_dir} has no benchmarks.json (run asv first, or pass --results-dir)")
    benchmarks = {k: v for k, v in _read_json(results_dir / "benchmarks.json").items() if isinstance(v, dict)}
    found = [load_machine(d, benchmarks) for d in sorted(results_dir.iterdir()) if d.is_dir()]
    found = [m for m in found if m is not None]
    if not found:
        raise KvbenchError(f"{results_dir} holds no asv result files")
    return found, benchmarks


def class_of(benchmark: str) -> str:
    """The class of a benchmark name (module.Class.method)."""
    return benchmark.rsplit(".", 2)[-2] if benchmark.count(".") >= 2 else benchmark


def suite(benchmark_dir: pathlib.Path, module: str = "benchmarks"):
    """The suite's module (its classes' `case` give the bytes a case moves), or the exception importing it."""
    path = benchmark_dir / f"{module}.py"
    try:
        spec = importlib.util.spec_from_file_location(f"_kvbench_landing_{module}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    except Exception as exc:  # noqa: BLE001 - any failure only costs the ideal line
        return exc


def bytes_moved(mod, benchmark: str, params: dict[str, str]) -> int | None:
    """Bytes one call of a combination must move, from the suite's `case(*params)`; None where it cannot say."""
    cls = getattr(mod, class_of(benchmark), None) if not isinstance(mod, Exception) else None
    if cls is None:
        return None
    try:
        names = list(cls.param_names)
        return int(cls().case(*[literal(params[n]) for n in names]).bytes_moved)
    except Exception:  # noqa: BLE001 - a case this host cannot build (an unknown implementation, a bad value)
        return None


def bandwidth_from_results(m: Machine, mod) -> tuple[float | None, int, float]:
    """The copy bandwidth (bytes/s) the run used, from KVCacheWriteBF16's x ideal and KVCacheWrite's time of the
    same cases: bytes x (x ideal) / time (median, number of cases, relative spread)."""
    ideal_cls, time_cls, extra = X_IDEAL
    tracks = [n for n in m.results if class_of(n) == ideal_cls and m.units.get(n) == "x ideal"]
    times = {n: {tuple(sorted(c.params.items())): c.value for c in m.results[n] if c.status == "ran"}
             for n in m.results if class_of(n) == time_cls and n.rsplit(".", 1)[-1].startswith("time_")}
    found = []
    for track in tracks:
        for c in m.results[track]:
            if c.status != "ran" or not c.value:
                continue
            key = tuple(sorted({**c.params, **extra}.items()))
            t = next((v[key] for v in times.values() if key in v), None)
            moved = bytes_moved(mod, track, c.params) if t else None
            if moved:
                found.append(moved * c.value / t)
    if not found:
        return None, 0, 0.0
    mid = statistics.median(found)
    return mid, len(found), (max(found) - min(found)) / mid


def bandwidth_of_this_host() -> tuple[float | None, str]:
    """This host's copy bandwidth from KVBENCH_COPY_BW or kvbench's cache (KVBENCH_CACHE_DIR), never measured."""
    from kvbench import config as kv_config

    override = kv_config.positive_float("KVBENCH_COPY_BW")
    if override is not None:
        return override, "KVBENCH_COPY_BW"
    path = kv_config.cache_dir() / "copy_bandwidth.json"
    try:
        from kvbench.measure import machine
        from kvbench.measure.device import default_device

        entry = json.loads(path.read_text())[machine.device_key(machine.info(default_device()))]
        return float(entry["bytes_per_s"]), f"kvbench's cache on this host (measured {entry.get('measured_at', '?')})"
    except Exception:  # noqa: BLE001 - no cache, no entry for this device: no ideal line
        return None, ""


def set_bandwidth(m: Machine, mod, this_host: bool) -> None:
    """The machine's copy bandwidth and a sentence saying where it comes from (or why there is none)."""
    bw, n, spread = bandwidth_from_results(m, mod)
    if bw is not None:
        m.bandwidth = bw
        m.bandwidth_note = (f"copy bandwidth {bw / 1e9:,.1f} GB/s (bytes read + written per second), the one this "
                            f"run measured × ideal against: bytes moved × (× ideal) / time, from {n} KVCacheWriteBF16 "
                            f"cases and KVCacheWrite's times of the same cases in these results (they agree to "
                            f"{spread:.1e})")
        return
    if this_host:
        bw, source = bandwidth_of_this_host()
        if bw is not None:
            m.bandwidth = bw
            m.bandwidth_note = f"copy bandwidth {bw / 1e9:,.1f} GB/s from {source}"
            return
    m.bandwidth_note = ("no ideal line: these results hold no KVCacheWriteBF16 × ideal next to KVCacheWrite's "
                        "times, and no copy bandwidth of this machine was given (KVBENCH_COPY_BW or kvbench's "
                        "cache, on the host itself with --machine)")


def state_reasons(path: str | pathlib.Path) -> dict:
    """(class, parameters as shown) -> (status, reason, known vLLM defect id or None) of each benchmark process in a
    KVBENCH_STATE_LOG."""
    from kvbench import files

    out = {}
    for entry in files.read_json_lines(str(path), "--state-log"):
        params = entry.get("params")
        if isinstance(params, dict) and entry.get("benchmark"):
            key = (entry["benchmark"], tuple(sorted((k, str(v)) for k, v in params.items())))
            out[key] = (entry.get("status"), entry.get("reason"), entry.get("known_defect"))
    return out


def reason_of(m: Machine, benchmark: str, c: Combo) -> str:
    """Why a combination failed or was skipped, from the state log where there is one."""
    if m.reasons is None:
        return ""
    status, reason, _ = _logged(m, benchmark, c)
    if status != c.status or not reason:
        return "(not in the state log)"
    return reason.split(" [")[0]


def _logged(m: Machine, benchmark: str, c: Combo) -> tuple:
    key = (class_of(benchmark), tuple(sorted((k, display(v)) for k, v in c.params.items())))
    return (m.reasons or {}).get(key, (None, None, None))


def known_defect_of(m: Machine, benchmark: str, c: Combo) -> str:
    """For a failure the state log marks as a known vLLM defect (kvbench.defects): 'known vLLM defect ID
    (reference)'; otherwise ''. Such a case is still a failure on the page, shown apart from new ones."""
    from kvbench import defects

    status, _, defect_id = _logged(m, benchmark, c)
    if c.status != "failed" or status != "failed" or defect_id not in defects.BY_ID:
        return ""
    reference = defects.BY_ID[defect_id].reference
    return f"known vLLM defect {defect_id}" + (f" ({reference})" if reference else "")


def is_latency(m: Machine, benchmark: str) -> bool:
    params = m.results[benchmark][0].params if m.results[benchmark] else {}
    return m.units.get(benchmark) == "seconds" and X_PARAM in params and IMPL_PARAM in params


def panels(m: Machine, benchmark: str) -> list[Panel]:
    """One panel per combination of the parameters other than num_tokens and implementation that has a number."""
    grouped: dict[tuple, Panel] = {}
    for c in m.results[benchmark]:
        fixed = {k: v for k, v in c.params.items() if k not in (X_PARAM, IMPL_PARAM)}
        p = grouped.setdefault(tuple(fixed.items()), Panel(benchmark, fixed, {}, {}))
        impl, tokens = c.shown(IMPL_PARAM), int(literal(c.params[X_PARAM]))
        if c.status == "ran":
            p.lines.setdefault(impl, {})[tokens] = c.value
        else:
            p.missing.setdefault(impl, {}).setdefault(c.status, 0)
            p.missing[impl][c.status] += 1
    return [p for p in grouped.values() if p.lines]


def ideal_line(p: Panel, m: Machine, mod, implementations: dict[str, str]) -> None:
    """The panel's ideal time per token count: bytes moved (the suite's case, any implementation) / bandwidth."""
    if m.bandwidth is None:
        return
    for tokens in sorted({t for line in p.lines.values() for t in line}):
        for impl in p.lines:
            params = {**p.fixed, X_PARAM: str(tokens), IMPL_PARAM: implementations[impl]}
            moved = bytes_moved(mod, p.benchmark, params)
            if moved:
                p.ideal[tokens] = moved / m.bandwidth
                break


def asv_link(benchmark: str, machine: str, fixed: dict[str, str], implementations: list[str]) -> str:
    """asv's page with the benchmark's graph against num_tokens (log y), the panel's parameters chosen and its
    implementations (asv 0.6 reads `#NAME?x-axis=P&p-NAME=VALUE...`, values as asv's repr: 'bfloat16', 16)."""
    parts = [("machine", machine), ("x-axis", X_PARAM), ("y-axis-scale", "log")]
    parts += [(f"p-{k}", v) for k, v in fixed.items()] + [(f"p-{IMPL_PARAM}", v) for v in implementations]
    query = "&".join(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in parts)
    return f"index.html#{urllib.parse.quote(benchmark, safe='.')}?{query}"


def _tokens_label(v: float) -> str:
    return f"{int(v)}" if v < 1e5 else f"{v:.0e}"


def draw(p: Panel, path: pathlib.Path, colors: dict[str, str], title: str) -> None:
    """The panel's chart as an SVG: µs per call against tokens, log-log, the ideal dashed."""
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "kvbench", "font.size": 8}):
        fig = Figure(figsize=FIGURE)
        ax = fig.add_subplot()
        for impl, line in p.lines.items():
            xs = sorted(line)
            ax.plot(xs, [line[x] * 1e6 for x in xs], marker="o", markersize=3.5, linewidth=1.4, label=impl,
                    color=colors[impl])
        if p.ideal:
            xs = sorted(p.ideal)
            ax.plot(xs, [p.ideal[x] * 1e6 for x in xs], linestyle="--", color="black", linewidth=1.1,
                    label="ideal (copy bw)")
        tokens = sorted({t for line in p.lines.values() for t in line} | set(p.ideal))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator(tokens))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tokens_label(v)))
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        if len(tokens) == 1:
            ax.set_xlim(tokens[0] / 2, tokens[0] * 2)
        ax.set_xlabel("tokens")
        ax.set_ylabel("µs per call")
        ax.set_title(textwrap.fill(title, 64), fontsize=8)
        ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="svg", metadata={"Date": None})


def _draw_job(job: tuple) -> None:
    draw(*job)


def draw_all(jobs: list[tuple]) -> None:
    """Draw every chart (`draw`'s arguments, a tuple each): in worker processes where there are several CPUs and
    charts (a whole suite's page has a hundred or more, ~0.25 s each), else here. The workers come from a fresh
    server process (forkserver), not from this one, whatever this one has initialised."""
    workers = min(DRAW_WORKERS, os.cpu_count() or 1, len(jobs) // 4)
    if workers >= 2:
        try:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["kvbench.asv.landing"])
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                list(pool.map(_draw_job, jobs, chunksize=4))
            return
        except (OSError, concurrent.futures.process.BrokenProcessPool):  # no worker processes here: draw here
            pass
    for job in jobs:
        draw(*job)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "machine"


def _when(ms: float) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _facts(info: dict) -> str:
    """The machine file's cpu and os fields (kvbench puts the GPU and the versions there)."""
    lines = [_esc(info[k]) for k in ("cpu", "os") if info.get(k)]
    return f'<p class="facts">{"<br>".join(lines)}</p>' if lines else ""


def _measured(started: list[float]) -> str:
    """When asv ran the benchmarks shown: a time, or a span."""
    times = sorted({_when(t) for t in started})
    return "?" if not times else times[0] if len(times) == 1 else f"{times[0]} to {times[-1]}"


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _fixed_text(fixed: dict[str, str]) -> str:
    return ", ".join(f"{k} {display(v)}" for k, v in fixed.items()) or "all cases"


def _us(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us:.3g}" if us < 1000 else f"{us:,.0f}"


def panel_html(p: Panel, tokens: list[int], problems: str) -> str:
    """A panel: the chart, its parameters, the link into asv, what has no points, and the numbers (collapsed)."""
    missing = "; ".join(f"{impl}: " + ", ".join(f"{n} {s}" for s, n in counts.items())
                        for impl, counts in p.missing.items())
    head = "".join(f"<th>{t}</th>" for t in tokens)
    rows = "".join(f"<tr><td>{_esc(impl)}</td>" + "".join(
        f"<td>{_us(line[t]) if t in line else ''}</td>" for t in tokens) + "</tr>" for impl, line in p.lines.items())
    if p.ideal:
        rows += "<tr><td><i>ideal</i></td>" + "".join(
            f"<td>{_us(p.ideal[t]) if t in p.ideal else ''}</td>" for t in tokens) + "</tr>"
    fixed = _esc(_fixed_text(p.fixed))
    return (f'<figure class="panel"><img src="{_esc(p.chart)}" alt="{_esc(p.benchmark)}: {fixed}" '
            f'width="{FIGURE[0] * 96:.0f}" height="{FIGURE[1] * 96:.0f}" loading="lazy"><figcaption>{fixed} · '
            f'<a class="asv-link" href="{_esc(p.link)}">asv graph</a>'
            + (f'<br><span class="missing">no number: {_esc(missing)} (<a href="#{problems}">why</a>)</span>'
               if missing else "")
            + f'<details class="numbers"><summary>µs per call</summary><table><tr><th>tokens</th>{head}</tr>'
              f"{rows}</table></details></figcaption></figure>")


def x_ideal_html(m: Machine, benchmark: str) -> str:
    """The latest x ideal per case: a row per combination of the other parameters, a column per token count."""
    cs = m.results[benchmark]
    tokens = sorted({int(literal(c.params[X_PARAM])) for c in cs}) if cs and X_PARAM in cs[0].params else []
    if not tokens:
        return ""
    names = [n for n in cs[0].params if n != X_PARAM]
    table: dict[tuple, dict[int, Combo]] = {}
    for c in cs:
        table.setdefault(tuple(c.shown(n) for n in names), {})[int(literal(c.params[X_PARAM]))] = c
    rows = []
    for key, by_tokens in table.items():
        cells = []
        for t in tokens:
            c = by_tokens.get(t)
            text = "" if c is None else f"{c.value:.2f}" if c.status == "ran" else c.status
            cells.append(f'<td class="{c.status if c else ""}">{text}</td>')
        rows.append("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in key) + "".join(cells) + "</tr>")
    head = "".join(f"<th>{_esc(n)}</th>" for n in names) + "".join(f"<th>{t}</th>" for t in tokens)
    return (f'<details open class="x-ideal"><summary>{_esc(benchmark)}: × ideal (time / ideal time; 1.0 = the '
            f'copy bandwidth)</summary><table><tr>{head}</tr>{"".join(rows)}</table></details>')


def problems_html(m: Machine, order: list[str]) -> str:
    """Failures and skips, grouped by benchmark, status and reason, with the parameter values they cover."""
    groups: dict[tuple, list[Combo]] = {}
    for name in order:
        for c in m.results[name]:
            if c.status != "ran":
                known = known_defect_of(m, name, c)
                key = (c.status != "failed", bool(known), name, c.status, known, reason_of(m, name, c))
                groups.setdefault(key, []).append(c)
    if not groups:
        return f'<p class="problems" id="problems-{_esc(_slug(m.name))}">No failures or skips.</p>'
    rows = []
    for (_, _, name, status, known, reason), cs in sorted(groups.items(), key=lambda kv: kv[0][:3]):
        values = {k: list(dict.fromkeys(c.shown(k) for c in cs)) for k in cs[0].params}
        covered = "; ".join(f"{k}: {', '.join(v)}" for k, v in values.items())
        shown = f"{status}: {known}" if known else status
        rows.append(f'<tr class="{status}{" known" if known else ""}"><td>{_esc(name)}</td><td>{_esc(shown)}</td>'
                    f"<td>{len(cs)}</td><td>{_esc(reason) or '<i>no reason recorded</i>'}</td>"
                    f"<td>{_esc(covered)}</td></tr>")
    failed = sum(len(v) for k, v in groups.items() if k[3] == "failed")
    known = sum(len(v) for k, v in groups.items() if k[3] == "failed" and k[4])
    skipped = sum(len(v) for k, v in groups.items() if k[3] == "skipped")
    known_note = f" ({known} of them known vLLM defects)" if known else ""
    note = ("Reasons from the run's state log (KVBENCH_STATE_LOG)." if m.reasons is not None else
            "No state log given for this machine: asv's result files record only that a case failed (null) or was "
            "skipped (NaN), not why (kvbench site-landing --state-log .asv/run-log.jsonl).")
    return (f'<details open class="problems" id="problems-{_esc(_slug(m.name))}"><summary>Failures and skips: '
            f"{failed} failed{known_note}, {skipped} skipped</summary><p>{_esc(note)}</p><table><tr><th>benchmark</th>"
            f"<th>status</th><th>cases</th><th>reason</th><th>parameter values they cover</th></tr>{''.join(rows)}"
            f"</table></details>")


def ordered(names: list[str], mod) -> list[str]:
    """Benchmarks in the suite's class order (the module's definition order), the rest after, alphabetically."""
    classes = list(vars(mod)) if not isinstance(mod, Exception) else []
    return sorted(names, key=lambda n: (classes.index(class_of(n)) if class_of(n) in classes else len(classes), n))


def tags_by_hash(html_dir: pathlib.Path) -> dict[str, list[str]]:
    """Commit hash -> the tags asv publish found on it (from the site's index.json; empty where there is none)."""
    try:
        index = json.loads((html_dir / "index.json").read_text())
        revisions = index.get("revision_to_hash", {})
        out: dict[str, list[str]] = {}
        for tag, rev in index.get("tags", {}).items():
            out.setdefault(revisions.get(str(rev), ""), []).append(tag)
        return out
    except (OSError, ValueError, AttributeError):
        return {}


def latency_html(m: Machine, name: str, mod, html_dir: pathlib.Path, colors: dict, reprs: dict, is_open: bool,
                 charts: list[tuple]):
    """A latency benchmark's collapsible block of panels and its number of panels; the charts to draw are added to
    `charts` (draw_all)."""
    ps = panels(m, name)
    varying = [k for k in (ps[0].fixed if ps else {}) if len({p.fixed[k] for p in ps}) > 1]
    for i, p in enumerate(ps):
        ideal_line(p, m, mod, reprs)
        p.chart = f"{CHARTS}/{_slug(m.name)}/{_slug(name)}-{i:02d}.svg"
        title = class_of(name) + (f": {_fixed_text({k: p.fixed[k] for k in varying})}" if varying else "")
        charts.append((p, html_dir / p.chart, colors, title))
        p.link = asv_link(name, m.name, p.fixed, [reprs[impl] for impl in p.lines])
    tokens = sorted({int(literal(c.params[X_PARAM])) for c in m.results[name]})
    ran = sum(c.status == "ran" for c in m.results[name])
    body = ('<div class="panels">' + "".join(panel_html(p, tokens, f"problems-{_slug(m.name)}") for p in ps)
            + "</div>") if ps else "<p>No case of this benchmark has a number here.</p>"
    return (f'<details class="benchmark"{" open" if is_open else ""}><summary>{_esc(name)} — {len(ps)} panel(s), '
            f"{ran} of {len(m.results[name])} cases measured</summary>{body}</details>"), len(ps)


def machine_html(m: Machine, mod, html_dir: pathlib.Path, tags: dict) -> tuple[str, int]:
    """A machine's section (charts written under html_dir/kvbench/MACHINE/) and its number of panels."""
    names = ordered([n for n in m.results if m.results[n]], mod)
    combos_ = [c for n in names for c in m.results[n]]
    impls = sorted({c.shown(IMPL_PARAM) for c in combos_ if IMPL_PARAM in c.params})
    colors = {impl: COLORS[i % len(COLORS)] for i, impl in enumerate(impls)}
    reprs = {c.shown(IMPL_PARAM): c.params[IMPL_PARAM] for c in combos_ if IMPL_PARAM in c.params}
    tag = f" (tag {', '.join(tags[m.commit])})" if tags.get(m.commit) else ""
    counts = {s: sum(c.status == s for c in combos_) for s in ("ran", "skipped", "failed")}
    parts = [f'<section class="machine" id="machine-{_esc(_slug(m.name))}"><h2>Machine {_esc(m.name)}</h2>',
             _facts(m.info),
             f'<p class="commit">Newest commit: <b><code>{_esc(m.commit[:12])}</code></b>{_esc(tag)}, commit date '
             f"{_when(m.date)}; measured {_measured(m.started)} (environment {_esc(', '.join(m.envs))}). "
             f"{counts['ran']} ran, {counts['skipped']} skipped, {counts['failed']} failed. {m.commits_seen} "
             f"commit(s) of this machine in the results: asv's graphs (commit axis) show them all; the links below "
             f"open asv's graph of the last commit.</p>",
             f'<p class="ideal-note">Ideal line: {_esc(m.bandwidth_note)}.</p>']
    parts += [x_ideal_html(m, name) for name in names if m.units.get(name) == "x ideal"]
    total, charts = 0, []
    for name in (n for n in names if is_latency(m, n)):
        text, n = latency_html(m, name, mod, html_dir, colors, reprs, is_open=total == 0, charts=charts)
        parts.append(text)
        total += n
    draw_all(charts)
    parts += [problems_html(m, names), "</section>"]
    return "\n".join(parts), total


STYLE = """body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222;max-width:1800px}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em}
nav a{margin-right:1.2em}.panels{display:flex;flex-wrap:wrap;gap:12px}
figure.panel{margin:0;border:1px solid #ddd;padding:4px;width:424px}figure img{display:block}
figcaption{font-size:.82em}.missing{color:#a33}details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
details.numbers summary{font-weight:normal}table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}td:first-child{text-align:left}
td.failed,tr.failed td{background:#fde4e4}tr.known td{background:#fdf1dc}td.skipped,tr.skipped td{background:#f2f2f2}
.problems td,.problems th{text-align:left}.facts{color:#555;font-size:.9em}"""


def page(sections: list[str], names: list[str], log_note: str) -> str:
    """The whole page: header, a link back to asv's, how to read it, and a section per machine."""
    toc = " ".join(f'<a href="#machine-{_esc(_slug(n))}">{_esc(n)}</a>' for n in names)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>kvbench: latency against tokens</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="swallow.ico">
<style>{STYLE}</style></head><body>
<nav><a href="index.html">← asv's graphs (index.html)</a> machines: {toc}</nav>
<h1>kvbench: KV-cache write latency against tokens</h1>
<p>For each machine, its newest commit's results: per benchmark, a chart per combination of its other parameters,
latency per call (µs; CUDA-graph device time on a GPU, CPU time on a CPU) against tokens on log-log axes, a line per
implementation, and the <b>ideal</b> (dashed): the bytes the case must move / the machine's measured copy bandwidth
(a line on it moves its bytes at the copy rate; warm-L2 cases can run below it). "asv graph" opens asv's
interactive graph with the same parameters chosen (its token axis is linear). Then the latest × ideal, and the
failures and skips with their reasons. {_esc(log_note)}</p>
{"".join(sections)}
</body></html>
"""


def link_from_index(html_dir: pathlib.Path) -> bool:
    """Add a link to the page into asv's navigation bar (once); False when index.html has no bar to add it to."""
    index = html_dir / "index.html"
    text = index.read_text()
    if NAV_ID in text:
        return True
    item = f'<li id="{NAV_ID}"><a href="{PAGE}"><b>Latency vs tokens (kvbench)</b></a></li>'
    anchor = re.search(r'<li id="nav-li-regressions">.*?</li>', text, re.S) or \
        re.search(r'<ul class="nav navbar-nav navbar-left">', text)
    if anchor is None:
        return False
    index.write_text(text[:anchor.end()] + "\n\t" + item + text[anchor.end():])
    return True


def write(html_dir: str | pathlib.Path, results_dir: str | pathlib.Path, benchmark_dir: str | pathlib.Path,
          state_log: str | None = None, machine: str | None = None) -> dict:
    """Write html_dir/kvbench.html (and its charts) and link it from asv's index.html; what was written."""
    html_dir, results_dir = pathlib.Path(html_dir), pathlib.Path(results_dir)
    if not (html_dir / "index.html").exists():
        raise KvbenchError(f"no published site in {html_dir} (run asv publish first)")
    found, _ = machines(results_dir)
    names = [m.name for m in found]
    log_owner = machine if machine is not None else names[0] if len(names) == 1 else None
    missing_log = bool(state_log) and not pathlib.Path(state_log).exists()  # the run wrote none (asv stopped first)
    reasons = state_reasons(state_log) if state_log and not missing_log else None
    log_note = ("No state log given: failures and skips are shown without their reasons." if not state_log else
                f"The state log {state_log} does not exist: failures and skips are shown without their reasons."
                if missing_log else
                f"The state log is machine {log_owner}'s run." if log_owner in names else
                f"The state log is machine {log_owner}'s run, which has no results here." if log_owner else
                "A state log was given but no --machine: with several machines its reasons are not attributed.")
    mod = suite(pathlib.Path(benchmark_dir))
    tags = tags_by_hash(html_dir)
    if (html_dir / CHARTS).is_dir() and not (html_dir / CHARTS).is_symlink():
        shutil.rmtree(html_dir / CHARTS)  # an earlier page's charts
    sections, panels_total = [], 0
    for m in found:
        m.reasons = reasons if m.name == log_owner and reasons is not None else None
        set_bandwidth(m, mod, this_host=m.name == machine)
        text, n = machine_html(m, mod, html_dir, tags)
        sections.append(text)
        panels_total += n
    (html_dir / PAGE).write_text(page(sections, names, log_note))
    linked = link_from_index(html_dir)
    if isinstance(mod, Exception):
        print(f"kvbench: warning: site-landing: the suite did not import ({type(mod).__name__}: {mod}); no ideal "
              f"lines", file=sys.stderr)
    return {"page": str(html_dir / PAGE), "machines": names, "panels": panels_total, "linked": linked}
