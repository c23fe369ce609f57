"""kvbench's page of the published site (kvbench.html, kvbench.asv.landing): built from the committed H200 history of
vLLM 0.31-0.33 (several commits, GPU implementations) and from a small real CPU run with a state log and a writer
that fails; its content, its links into asv's graphs, and the page and one link in headless Chromium."""

import json
import math
import os
import pathlib
import re
import subprocess
import sys
import urllib.parse

import pytest

from kvbench.asv import landing

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = pathlib.Path(__file__).resolve().parent
HISTORY = ROOT / "data" / "vllm-history-h200" / "results"
NEWEST = "ecfbd74b"  # vLLM 0.33.0's commit in scripts/vllm-tags.sh's repository: the newest commit date
ARTIFACTS = ROOT / "artifacts"  # CI keeps what lands here (the screenshots)


def asv(config, *args, env=None):
    run = subprocess.run([sys.executable, "-m", "asv", *args, "--config", str(config)], cwd=ROOT, capture_output=True,
                         text=True, timeout=900, env={**os.environ, **(env or {})})
    assert run.returncode in (0, 2), run.stdout[-3000:] + run.stderr[-3000:]  # 2: a benchmark failed (expected)
    return run


def asv_hash(href: str) -> tuple[str, dict[str, list[str]]]:
    """(benchmark, parameters) of a link into asv's page, read as asv 0.6's parse_hash_string reads location.hash."""
    page, _, fragment = href.partition("#")
    assert page == "index.html"
    location, _, query = fragment.partition("?")
    params: dict[str, list[str]] = {}
    for part in query.split("&"):
        key, value = part.split("=")
        params.setdefault(urllib.parse.unquote(key), []).append(urllib.parse.unquote(value))
    return urllib.parse.unquote(location), params


def check_links(html_dir: pathlib.Path, machine: str) -> list[tuple[str, dict]]:
    """Every link of the page into asv's graphs names a benchmark of the site and only parameter values asv knows,
    with num_tokens as the x-axis; returns them parsed."""
    index = json.loads((html_dir / "index.json").read_text())
    text = (html_dir / landing.PAGE).read_text()
    links = [asv_hash(h.replace("&amp;", "&")) for h in re.findall(r'class="asv-link" href="([^"]+)"', text)]
    assert links
    for benchmark, params in links:
        known = index["benchmarks"][benchmark]
        assert params["x-axis"] == ["num_tokens"] and params["machine"] == [machine]
        chosen = {k[2:]: v for k, v in params.items() if k.startswith("p-")}
        assert set(chosen) == set(known["param_names"]) - {"num_tokens"}
        for name, values in chosen.items():
            assert set(values) <= set(known["params"][known["param_names"].index(name)]), (name, values)
    return links


def rows_of(result_file: pathlib.Path) -> dict[str, list]:
    """benchmark -> (parameter reprs, value) of every combination of a result file, in asv's order."""
    data = json.loads(result_file.read_text())
    bench = json.loads((result_file.parent.parent / "benchmarks.json").read_text())
    out = {}
    for name, values in data["results"].items():
        row = dict(zip(data["result_columns"], values))
        out[name] = [(c.params, c.value) for c in landing.combos(row, bench[name]["param_names"])]
    return out


# ---------------------------------------------------------------------------------------------------- the history

@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """asv publish of the committed H200 history, and kvbench's page added to it (twice: it must stay one link)."""
    from kvbench.asv import config_file

    tmp = tmp_path_factory.mktemp("history")
    repo = tmp / "vllm"
    subprocess.run(["bash", "scripts/vllm-tags.sh", str(repo)], cwd=ROOT, check=True)
    conf = config_file.write(tmp / "asv.conf.json", "asv.vllm.conf.json", ROOT, tmp, repo=repo,
                             results_dir=str(HISTORY))
    subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(conf)], cwd=ROOT, check=True,
                   capture_output=True)
    html = tmp / "html"
    landing.write(html, HISTORY, ROOT / "benchmarks")
    done = landing.write(html, HISTORY, ROOT / "benchmarks")
    return html, conf, done


def test_history_page_shows_the_newest_release_per_implementation_with_the_ideal(history):
    html, _, done = history
    assert done["machines"] == ["h200-device"] and done["panels"] == 2 and done["linked"]
    text = (html / landing.PAGE).read_text()
    assert f"<code>{NEWEST}" in text and "(tag v0.33.0)" in text and "3 commit(s) of this machine" in text
    (machine,), _ = landing.machines(HISTORY)
    assert machine.commit.startswith(NEWEST)
    newest = next(HISTORY.glob(f"h200-device/{NEWEST}*.json"))
    rows = rows_of(newest)
    times = {tuple(p.values()): v for p, v in rows["benchmarks.KVCacheWrite.time_cudagraph"]}
    x_ideal = {tuple(p.values()): v for p, v in rows["benchmarks.KVCacheWriteBF16.track_x_ideal"]}
    landing.set_bandwidth(machine, landing.suite(ROOT / "benchmarks"), this_host=False)
    assert "12 KVCacheWriteBF16 cases" in machine.bandwidth_note
    panels = landing.panels(machine, "benchmarks.KVCacheWrite.time_cudagraph")
    assert [p.fixed["kv_cache_dtype"] for p in panels] == ["'auto'", "'fp8'"]
    mod = landing.suite(ROOT / "benchmarks")
    reprs = {"vllm-flash": "'vllm-flash'", "vllm-triton": "'vllm-triton'"}
    for p in panels:
        # a line per implementation that has numbers (vLLM's paged op fails verification at 128 heads: none)
        assert sorted(p.lines) == ["vllm-flash", "vllm-triton"] and p.missing == {"vllm": {"failed": 3}}
        landing.ideal_line(p, machine, mod, reprs)
        kv = p.fixed["kv_cache_dtype"]
        for impl, line in p.lines.items():
            for tokens, seconds in line.items():
                key = (str(tokens), "'bfloat16'", kv, f"'{impl}'", "16384")
                assert seconds == times[key]
                # the ideal is KVCacheWrite's time over KVCacheWriteBF16's x ideal of the same case
                x = x_ideal[(str(tokens), kv, f"'{impl}'", "16384")]
                assert p.ideal[tokens] == pytest.approx(seconds / x, rel=1e-9)
        assert sorted(p.ideal) == [16, 1024, 65536]
    for chart in sorted((html / landing.CHARTS / "h200-device").glob("*.svg")):
        svg = chart.read_text()
        assert svg.count(">vllm-flash<") == 1 and svg.count(">vllm-triton<") == 1 and ">ideal (copy bw)<" in svg
        assert ">vllm<" not in svg  # no line for the op with no numbers
    # the latest x ideal: every number of the newest file, and the failures
    for (tokens, kv, impl, _), x in x_ideal.items():
        if x is not None:
            assert f'<td class="ran">{x:.2f}</td>' in text
    assert text.count('<td class="failed">failed</td>') == 6
    # failures without reasons (no state log), said so
    assert "No state log given for this machine" in text
    assert re.search(r"benchmarks\.KVCacheWrite\.time_cudagraph</td><td>failed</td><td>6</td><td><i>no reason", text)


def test_history_links_choose_the_panel_parameters_in_asv(history):
    html, _, _ = history
    links = check_links(html, "h200-device")
    assert [params["p-kv_cache_dtype"] for _, params in links] == [["'auto'"], ["'fp8'"]]
    for benchmark, params in links:
        assert benchmark == "benchmarks.KVCacheWrite.time_cudagraph"
        assert params["p-implementation"] == ["'vllm-flash'", "'vllm-triton'"] and params["p-dtype"] == ["'bfloat16'"]
    index = (html / "index.html").read_text()
    assert index.count(f'id="{landing.NAV_ID}"') == 1 and 'href="kvbench.html"' in index
    assert '<a href="index.html">' in (html / landing.PAGE).read_text()  # and back


def test_cli_writes_the_page_and_a_failure_is_one_line(history, tmp_path, capsys):
    from kvbench import cli

    html, conf, _ = history
    assert cli.main(["site-landing", str(html), "--config", str(conf)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"kvbench page written to {html / landing.PAGE} (1 machine(s), 2 charts; linked from index.html)"
    index = (html / "index.html").read_text()
    empty = tmp_path / "results"
    empty.mkdir()
    assert cli.main(["site-landing", str(html), "--results-dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"kvbench: error: {empty} has no benchmarks.json")
    assert (html / "index.html").read_text() == index


def test_without_x_ideal_the_ideal_comes_from_this_host_or_is_left_out(history, tmp_path, monkeypatch):
    """Results without KVCacheWriteBF16: no ideal line (said so) unless the machine is this host's (--machine),
    whose copy bandwidth comes from KVBENCH_COPY_BW or kvbench's cache; never measured at publish time."""
    import shutil

    from kvbench.measure import machine as facts
    from kvbench.measure.device import default_device

    html, _, _ = history
    results = tmp_path / "results"
    shutil.copytree(HISTORY, results)
    for path in results.glob("h200-device/*-*.json"):
        data = json.loads(path.read_text())
        del data["results"]["benchmarks.KVCacheWriteBF16.track_x_ideal"]
        path.write_text(json.dumps(data))
    site = tmp_path / "html"
    site.mkdir()
    shutil.copy(html / "index.html", site / "index.html")
    monkeypatch.delenv("KVBENCH_COPY_BW", raising=False)
    landing.write(site, results, ROOT / "benchmarks")
    text = (site / landing.PAGE).read_text()
    assert "Ideal line: no ideal line: these results hold no KVCacheWriteBF16" in text
    assert not any(">ideal (copy bw)<" in p.read_text() for p in site.glob("kvbench/*/*.svg"))
    assert "<i>ideal</i>" not in text
    monkeypatch.setenv("KVBENCH_COPY_BW", "4e12")
    landing.write(site, results, ROOT / "benchmarks", machine="h200-device")
    text = (site / landing.PAGE).read_text()
    assert "Ideal line: copy bandwidth 4,000.0 GB/s from KVBENCH_COPY_BW." in text
    assert all(">ideal (copy bw)<" in p.read_text() for p in site.glob("kvbench/*/*.svg"))
    # 16 tokens of 128 x 128 bf16 keys and values, read and written as bf16: 2 MiB at 4e12 B/s
    assert "<td><i>ideal</i></td><td>0.524</td>" in text
    monkeypatch.delenv("KVBENCH_COPY_BW")
    cache = pathlib.Path(os.environ["KVBENCH_CACHE_DIR"])
    cache.mkdir(parents=True, exist_ok=True)
    key = facts.device_key(facts.info(default_device()))
    (cache / "copy_bandwidth.json").write_text(json.dumps({key: {"bytes_per_s": 2e12, "measured_at": "then"}}))
    landing.write(site, results, ROOT / "benchmarks", machine="h200-device")
    assert "copy bandwidth 2,000.0 GB/s from kvbench&#x27;s cache on this host (measured then)" in \
        (site / landing.PAGE).read_text()


def test_several_machines_get_a_section_each(history, tmp_path):
    """Two machines: a section each (its newest commit, its charts, links that choose it); a state log without
    --machine is attributed to neither; one that does not exist is said so, and the page is still written."""
    import shutil

    html, _, _ = history
    results = tmp_path / "results"
    shutil.copytree(HISTORY, results)
    other = results / "other-gpu"
    shutil.copytree(results / "h200-device", other)
    (other / "machine.json").write_text(json.dumps({**json.loads((other / "machine.json").read_text()),
                                                    "machine": "other-gpu"}))
    (next(other.glob(f"{NEWEST}*.json"))).unlink()  # its newest commit is vLLM 0.32.0's
    site = tmp_path / "html"
    site.mkdir()
    shutil.copy(html / "index.html", site / "index.html")
    shutil.copy(html / "index.json", site / "index.json")  # the tags asv found
    log = tmp_path / "state.jsonl"
    log.write_text(json.dumps({"benchmark": "KVCacheWrite", "params": {}, "status": "failed", "reason": "x"}) + "\n")
    done = landing.write(site, results, ROOT / "benchmarks", state_log=str(log))
    assert done["machines"] == ["h200-device", "other-gpu"] and done["panels"] == 4
    text = (site / landing.PAGE).read_text()
    sections = text.split('<section class="machine"')[1:]
    assert [re.search(r"<h2>Machine (\S+)</h2>", s).group(1) for s in sections] == ["h200-device", "other-gpu"]
    assert f"<code>{NEWEST}" in sections[0] and "(tag v0.33.0)" in sections[0]
    assert "<code>52b1c2b0" in sections[1] and "(tag v0.32.0)" in sections[1]
    assert "machine=other-gpu&amp;" in sections[1] and "machine=h200-device" not in sections[1]
    assert "with several machines its reasons are not attributed" in text
    assert len(list(site.glob("kvbench/other-gpu/*.svg"))) == 2
    landing.write(site, results, ROOT / "benchmarks", state_log=str(tmp_path / "none.jsonl"), machine="other-gpu")
    assert "none.jsonl does not exist: failures and skips are shown without their reasons" in \
        (site / landing.PAGE).read_text()


@pytest.mark.slow
def test_history_page_in_a_browser(history, tmp_path):
    """kvbench.html over HTTP in headless Chromium: no JavaScript error, no failed request, every chart loaded and
    drawn; its first link opens asv's graph with that panel's parameters chosen and both releases' lines plotted."""
    from kvbench.asv import site
    from site_browser import landing_page

    html, _, _ = history
    site.vendor(html, tmp_path / "npm")
    seen = landing_page(html, ARTIFACTS / "landing-vllm-history.png")
    assert seen["errors"] == [] and seen["failed_requests"] == []
    assert len(seen["images"]) == 2
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0 and image["inked"] > 5000 and image["colored"] > 500, image
    asv_seen = seen["asv"]
    assert asv_seen["chosen"]["x-axis"] == ["num_tokens"] and asv_seen["chosen"]["kv_cache_dtype"] == ["auto"]
    assert asv_seen["chosen"]["implementation"] == ["vllm-flash", "vllm-triton"]
    assert asv_seen["chosen"]["dtype"] == ["bfloat16"] and asv_seen["chosen"]["num_blocks"] == ["16384"]
    assert [s["points"] for s in asv_seen["series"]] == [3, 3]  # 16, 1024, 65536 tokens
    assert seen["asv_errors"] == [] and seen["nav_links"] == 1


# ------------------------------------------------------------------------------------------------- a real CPU run

@pytest.fixture(scope="module")
def cpu_site(tmp_path_factory):
    """A small real CPU run (KVCacheWrite, KVCacheWriteBF16, IndexerWrite, Served, ServedMLA; 2 and 16 tokens) with
    a writer that fails verification (tests/broken_writers.py) and vllm-flash (skipped on a CPU), its state log,
    asv publish, and kvbench's page; returns (html, state log, copy bandwidth cache file)."""
    from asv.util import load_json

    tmp = tmp_path_factory.mktemp("landing-cpu")
    conf = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "benchmarks"), results_dir=str(tmp / "results"),
                html_dir=str(tmp / "html"), env_dir=str(tmp / "env"))
    config = tmp / "asv.conf.json"
    config.write_text(json.dumps(conf))
    (tmp / "home").mkdir()
    env = {"HOME": str(tmp / "home"), "KVBENCH_NUM_TOKENS": "2,16", "KVBENCH_DTYPES": "bfloat16",
           "KVBENCH_IMPLEMENTATIONS": "torch,vllm-cpu,vllm-flash,zeroes-inputs", "KVBENCH_NUM_BLOCKS": "64",
           "KVBENCH_CACHE_DIR": str(tmp / "cache"), "KVBENCH_BATCH": "1", "KVBENCH_STATE_LOG": str(tmp / "state.jsonl"),
           "KVBENCH_PLUGINS": "broken_writers", "PYTHONPATH": str(HERE), "ASV_PYTHONPATH": str(HERE),
           "KVBENCH_DEVICE": "cpu"}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    asv(config, "machine", "--yes", "--machine", "cpu-landing", env=env)
    asv(config, "run", "--python=same", "--set-commit-hash", commit, "--record-samples", "--machine", "cpu-landing",
        "-b", r"KVCacheWrite\.time_no_graph|KVCacheWriteBF16\.track_x_ideal|IndexerWrite|Served", env=env)
    asv(config, "publish", env=env)
    html = tmp / "html"
    from kvbench import cli

    assert cli.main(["site-landing", str(html), "--config", str(config), "--state-log", str(tmp / "state.jsonl"),
                     "--machine", "cpu-landing"]) == 0
    return html, tmp / "state.jsonl", tmp / "cache" / "copy_bandwidth.json"


@pytest.mark.slow
def test_cpu_page_has_a_panel_per_combination_with_data(cpu_site):
    html, _, cache = cpu_site
    text = (html / landing.PAGE).read_text()
    summaries = dict(re.findall(r'<details class="benchmark"[^>]*><summary>(\S+) — (\d+) panel', text))
    assert summaries == {"benchmarks.KVCacheWrite.time_no_graph": "2", "benchmarks.IndexerWrite.time_no_graph": "1",
                         "benchmarks.Served.time_no_graph": "24", "benchmarks.ServedMLA.time_no_graph": "12"}
    charts = sorted((html / landing.CHARTS / "cpu-landing").glob("*.svg"))
    assert len(charts) == 39 and len(re.findall(r'<img src="kvbench/cpu-landing/', text)) == 39
    (machine,), _ = landing.machines(html.parent / "results")
    mod = landing.suite(ROOT / "benchmarks")
    landing.set_bandwidth(machine, mod, this_host=False)
    bandwidth = next(iter(json.loads(cache.read_text()).values()))["bytes_per_s"]
    assert machine.bandwidth == pytest.approx(bandwidth, rel=1e-9)  # the run's own copy bandwidth, from x ideal
    reprs = {"torch": "'torch'", "vllm-cpu": "'vllm-cpu'"}
    for name in ("benchmarks.KVCacheWrite.time_no_graph", "benchmarks.Served.time_no_graph"):
        for p in landing.panels(machine, name):
            landing.ideal_line(p, machine, mod, reprs)
            assert "torch" in p.lines and sorted(p.ideal) == sorted(p.lines["torch"])
            assert all(0 < v < 1 for line in p.lines.values() for v in line.values())
    auto = landing.panels(machine, "benchmarks.KVCacheWrite.time_no_graph")[0]
    assert auto.fixed["kv_cache_dtype"] == "'auto'"
    assert auto.missing["zeroes-inputs"] == {"failed": 2} and auto.missing["vllm-flash"] == {"skipped": 2}
    for chart in charts:
        svg = chart.read_text()
        assert ">torch<" in svg and ">ideal (copy bw)<" in svg and svg.count("<path") > 5
    assert "model llama-3.1-70b:tp8, batch decode-padded, kv_cache_dtype fp8" in text


@pytest.mark.slow
def test_cpu_page_gives_the_failures_and_skips_with_their_reasons(cpu_site):
    html, state_log, _ = cpu_site
    text = (html / landing.PAGE).read_text()
    assert "Reasons from the run&#x27;s state log" in text
    failed = re.findall(r'<tr class="failed"><td>([^<]+)</td><td>failed</td><td>(\d+)</td><td>([^<]+)</td>', text)
    assert failed == [("benchmarks.KVCacheWrite.time_no_graph", "4", "zeroes-inputs: changed its inputs while "
                       "writing (key)"),
                      ("benchmarks.KVCacheWriteBF16.track_x_ideal", "4", "zeroes-inputs: changed its inputs while "
                       "writing (key)")]
    skipped = re.findall(r'<tr class="skipped"><td>([^<]+)</td><td>skipped</td><td>(\d+)</td><td>([^<]+)</td>', text)
    reasons = {reason for _, _, reason in skipped}
    assert "vllm-flash: runs on cuda only, not cpu" in reasons
    assert "the cpu grid stops at 1024 tokens (KVBENCH_MAX_TOKENS)" in reasons
    assert "(not in the state log)" not in reasons
    # every skip and failure of the result file is in the table, once
    result = next(p for p in (html.parent / "results" / "cpu-landing").glob("*.json") if p.name != "machine.json")
    statuses = [v for combos in rows_of(result).values() for _, v in combos]
    assert sum(int(n) for _, n, _ in failed) == sum(v is None for v in statuses)
    assert sum(int(n) for _, n, _ in skipped) == sum(isinstance(v, float) and math.isnan(v) for v in statuses)


@pytest.mark.slow
def test_cpu_page_in_a_browser_and_a_served_link(cpu_site, tmp_path):
    """The CPU page in headless Chromium: no JavaScript error, every chart drawn; the first Served panel's link
    opens asv's graph with its model, batch and cache dtype chosen."""
    from kvbench.asv import site
    from site_browser import landing_page

    html, _, _ = cpu_site
    links = check_links(html, "cpu-landing")
    served = next(i for i, (name, _) in enumerate(links) if name == "benchmarks.Served.time_no_graph")
    _, params = links[served]
    site.vendor(html, tmp_path / "npm")
    seen = landing_page(html, ARTIFACTS / "landing-cpu.png", follow=served)
    assert seen["errors"] == [] and seen["failed_requests"] == []
    assert len(seen["images"]) == 39
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0 and image["inked"] > 5000 and image["colored"] > 300, image
    chosen = seen["asv"]["chosen"]
    for name in ("model", "batch", "kv_cache_dtype", "implementation"):
        assert chosen[name] == [landing.display(v) for v in params[f"p-{name}"]], name
    assert chosen["x-axis"] == ["num_tokens"]
    assert len(seen["asv"]["series"]) == len(params["p-implementation"])
    assert all(s["points"] >= 1 for s in seen["asv"]["series"])
    assert seen["asv_errors"] == []


def test_known_vllm_defects_are_failures_shown_apart(tmp_path):
    """A failure the state log marks as a known vLLM defect stays a failure on the page, in a row of its own that
    names the defect and its upstream reference; a new failure with the same reason does not."""
    from kvbench import defects

    defect = defects.BY_ID["triton-flash-e5m2-as-e4m3"]
    params = [{"num_tokens": str(n), "implementation": "'vllm-triton'"} for n in (16, 1024, 4096)]
    log = tmp_path / "state.jsonl"
    entries = [{"benchmark": "KVCacheWrite", "params": {"num_tokens": 16, "implementation": "vllm-triton"},
                "status": "failed", "reason": "the bytes are e4m3, not e5m2", "known_defect": defect.id},
               {"benchmark": "KVCacheWrite", "params": {"num_tokens": 1024, "implementation": "vllm-triton"},
                "status": "failed", "reason": "the bytes are e4m3, not e5m2"},
               {"benchmark": "KVCacheWrite", "params": {"num_tokens": 4096, "implementation": "vllm-triton"},
                "status": "failed", "reason": "the bytes are e4m3, not e5m2", "known_defect": "no-such-defect"}]
    entries.append({"benchmark": "MLAWrite", "params": {"num_tokens": 16, "implementation": "vllm"},
                    "status": "failed", "reason": "kv cache: 3 of 9 elements differ from the reference"})
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    names = ["benchmarks.KVCacheWrite.time_cudagraph", "benchmarks.MLAWrite.time_cudagraph"]
    m = landing.Machine(name="gpu", info={}, commit="c", date=0.0, envs=[], units={}, started=[], commits_seen=1,
                        results={names[0]: [landing.Combo(p, None) for p in params],
                                 names[1]: [landing.Combo({"num_tokens": "16", "implementation": "'vllm'"}, None)]},
                        reasons=landing.state_reasons(log))
    html = landing.problems_html(m, names)
    assert "4 failed (1 of them known vLLM defects), 0 skipped" in html
    rows = re.findall(r'<tr class="([^"]+)"><td>([^<]+)</td><td>([^<]+)</td><td>(\d+)</td>', html)
    known = f"failed: known vLLM defect {defect.id} ({landing._esc(defect.reference)})"
    assert rows == [("failed", names[0], "failed", "2"), ("failed", names[1], "failed", "1"),  # new failures first
                    ("failed known", names[0], known, "1")]


def test_charts_drawn_by_worker_processes_are_the_ones_drawn_here(tmp_path, monkeypatch):
    """draw_all's worker processes (several CPUs, 8+ charts) write the same SVG bytes as drawing them one by one."""
    def panel(i):
        return landing.Panel(benchmark="B.time", fixed={"dtype": "'bfloat16'"}, missing={},
                             lines={"torch": {16: (i + 1) * 1e-6, 1024: (i + 2) * 1e-5}}, ideal={16: 1e-7, 1024: 6e-6})

    jobs = {where: [(panel(i), tmp_path / where / f"{i}.svg", {"torch": "#1f77b4"}, f"panel {i}") for i in range(8)]
            for where in ("here", "workers")}
    monkeypatch.setattr(landing.os, "cpu_count", lambda: 1)
    landing.draw_all(jobs["here"])
    monkeypatch.setattr(landing.os, "cpu_count", lambda: 2)
    calls = []
    monkeypatch.setattr(landing, "draw", lambda *job: calls.append(job))  # the workers import their own
    landing.draw_all(jobs["workers"])
    assert calls == []  # nothing was drawn in this process
    for i in range(8):
        here, there = (tmp_path / w / f"{i}.svg" for w in ("here", "workers"))
        assert there.read_bytes() == here.read_bytes() and b"panel %d" % i in here.read_bytes()
