"""The GitHub workflows: linted (check-jsonschema's GitHub schema, zizmor's security audits in its default and
auditor personas, both from PyPI and offline), and the security rules the README claims, checked on the real files
and shown to catch violations. Also the results scripts they run (push-results.sh, restore-results.sh), offline
against a local bare repository standing in for GitHub."""

import base64
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
LABEL_GATE = "github.event.label.name == 'run-benchmarks'"
# The environment every self-hosted (GPU) job must set: an unavailable GPU is an error, and the runner user's
# ~/.local packages stay out of the .venv that sees the system's site-packages.
GPU_ENV = {"KVBENCH_DEVICE": "cuda", "PYTHONNOUSERSITE": "1"}
REPOSITORY_GUARD = re.compile(r"github\.repository == '([^']+)'")


def load(text: str) -> dict:
    wf = yaml.safe_load(text)
    wf["on"] = wf.pop(True, wf.get("on"))  # YAML 1.1 reads the key `on` as true
    return wf


def triggers(wf: dict) -> dict:
    on = wf["on"]
    return {on: None} if isinstance(on, str) else {t: None for t in on} if isinstance(on, list) else on


def steps(job: dict) -> list:
    return job.get("steps", [])


def problems(name: str, wf: dict) -> list[str]:
    """Violations of kvbench's workflow security rules in one parsed workflow."""
    out = []
    on = triggers(wf)
    top = wf.get("permissions")
    if top is None or top == "write-all" or (isinstance(top, dict) and "write" in top.values()):
        out.append(f"{name}: top-level permissions must be set and read-only")
    if "pull_request_target" in on:
        out.append(f"{name}: pull_request_target is not allowed")
    for job_name, job in wf["jobs"].items():
        runs_on = job.get("runs-on", [])
        self_hosted = "self-hosted" in (runs_on if isinstance(runs_on, list) else [runs_on])
        uses_pr_code = "pull_request" in on
        if self_hosted and uses_pr_code:
            types = (on["pull_request"] or {}).get("types")
            if types != ["labeled"] or LABEL_GATE not in str(job.get("if", "")):
                out.append(f"{name}/{job_name}: PR code on a self-hosted runner without the maintainer label gate")
        if self_hosted and set(on) - {"push", "workflow_dispatch", "pull_request"}:
            out.append(f"{name}/{job_name}: self-hosted runner reachable from {sorted(set(on))}")
        if self_hosted:
            env = {**(wf.get("env") or {}), **(job.get("env") or {})}
            for key, value in GPU_ENV.items():
                if str(env.get(key)) != value:
                    out.append(f"{name}/{job_name}: a self-hosted job must set {key}={value}")
            if "concurrency" not in wf and "concurrency" not in job:
                out.append(f"{name}/{job_name}: a self-hosted job must be limited by a concurrency group")
            if not REPOSITORY_GUARD.search(str(job.get("if", ""))):
                out.append(f"{name}/{job_name}: a self-hosted job must be guarded by `if: github.repository == ...`")
            if "push" in on and "github.ref == 'refs/heads/main'" not in str(job.get("if", "")):
                out.append(f"{name}/{job_name}: a self-hosted push job must be guarded by github.ref == main")
        for step in steps(job):
            if str(step.get("uses", "")).startswith("actions/checkout"):
                if (step.get("with") or {}).get("persist-credentials") is not False:
                    out.append(f"{name}/{job_name}: checkout must set persist-credentials: false")
                if "workflow_run" in on:
                    out.append(f"{name}/{job_name}: a workflow_run job must not check out code")
    return out


def test_real_workflows_follow_the_rules():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} == {"ci.yml", "bench-main.yml", "bench-pr.yml", "bench-pr-comment.yml"}
    found = [p for f in files for p in problems(f.name, load(f.read_text()))]
    assert found == []


def test_ci_runs_the_readme_test_command_and_main_publishes():
    ci = load((WORKFLOWS / "ci.yml").read_text())
    assert any(s.get("run") == "bash scripts/test.sh" for s in steps(ci["jobs"]["test"]))
    assert "bash scripts/test.sh" in (WORKFLOWS.parents[1] / "README.md").read_text()
    main = load((WORKFLOWS / "bench-main.yml").read_text())
    assert triggers(main)["push"] == {"branches": ["main"]}
    assert main["jobs"]["deploy"]["permissions"] == {"pages": "write", "id-token": "write"}
    assert any("push-results.sh" in str(s.get("run")) for s in steps(main["jobs"]["bench"]))


BAD = {
    "target-checkout": """
on: pull_request_target
permissions: {contents: read}
jobs:
  b:
    runs-on: ubuntu-latest
    steps: [{uses: actions/checkout@v4, with: {ref: "${{ github.event.pull_request.head.sha }}"}}]
""",
    "fork-on-gpu": """
on: {pull_request: {types: [opened, synchronize]}}
permissions: {contents: read}
jobs:
  b: {runs-on: [self-hosted, gpu], steps: [{run: make bench}]}
""",
    "write-all": """
on: push
permissions: write-all
jobs:
  b: {runs-on: ubuntu-latest, steps: [{run: "true"}]}
""",
}

# A GPU job that follows every rule; each case of test_each_gpu_rule_is_enforced breaks one.
GOOD_GPU = """
on: {push: {branches: [main]}}
permissions: {contents: read}
concurrency: {group: bench}
jobs:
  b:
    if: github.repository == 'o/r' && github.ref == 'refs/heads/main'
    runs-on: [self-hosted, gpu]
    env: {KVBENCH_DEVICE: cuda, PYTHONNOUSERSITE: "1"}
    steps: [{run: make bench}]
"""
BROKEN_GPU = {
    "KVBENCH_DEVICE=cuda": lambda wf: wf["jobs"]["b"]["env"].pop("KVBENCH_DEVICE"),
    "PYTHONNOUSERSITE=1": lambda wf: wf["jobs"]["b"]["env"].update(PYTHONNOUSERSITE="0"),
    "concurrency group": lambda wf: wf.pop("concurrency"),
    "github.repository": lambda wf: wf["jobs"]["b"].update({"if": "github.ref == 'refs/heads/main'"}),
    "github.ref == main": lambda wf: wf["jobs"]["b"].update({"if": "github.repository == 'o/r'"}),
}


def test_a_gpu_job_that_follows_the_rules_passes():
    assert problems("good", load(GOOD_GPU)) == []


@pytest.mark.parametrize("rule", sorted(BROKEN_GPU))
def test_each_gpu_rule_is_enforced(rule):
    wf = load(GOOD_GPU)
    BROKEN_GPU[rule](wf)
    found = problems("broken", wf)
    assert len(found) == 1 and rule in found[0], found


@pytest.mark.parametrize("name", sorted(BAD))
def test_rules_catch_insecure_workflows(name):
    assert problems(name, load(BAD[name]))


@pytest.mark.parametrize("tool, args", [
    ("check-jsonschema", ["--builtin-schema", "vendor.github-workflows"]),
    ("zizmor", ["--offline", "--no-progress"]),
    ("zizmor", ["--offline", "--no-progress", "--persona=auditor"]),  # every audit; ignores carry their reasons
])
def test_linters_pass(tool, args):
    exe = shutil.which(tool)
    assert exe, f"{tool} is installed by the test extras"
    targets = [str(p) for p in sorted(WORKFLOWS.glob("*.yml"))] if tool == "check-jsonschema" else [str(WORKFLOWS)]
    run = subprocess.run([exe, *args, *targets], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def test_zizmor_catches_an_injection(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("""
on: pull_request
permissions: {contents: read}
jobs:
  b:
    runs-on: ubuntu-latest
    steps: [{run: "echo ${{ github.event.pull_request.title }}"}]
""")
    run = subprocess.run([shutil.which("zizmor"), "--offline", "--no-progress", str(bad)], capture_output=True,
                         text=True)
    assert run.returncode != 0 and "template-injection" in run.stdout + run.stderr


def test_every_zizmor_ignore_gives_its_reason():
    """An ignored finding is justified in a comment: on the ignore's line, or in the comment lines just above."""
    for path in sorted(WORKFLOWS.glob("*.yml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "zizmor: ignore[" not in line:
                continue
            reason = [re.sub(r"#?\s*zizmor: ignore\[[^]]*\]", "", line.partition("#")[2])]
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("#"):
                reason.append(lines[j].strip().lstrip("#"))
                j -= 1
            assert len(" ".join(reason).split()) >= 8, f"{path.name}:{i + 1}: say why the finding is ignored"


def test_gpu_jobs_run_only_in_the_upstream_repository():
    """The repository named in the self-hosted jobs' `if:` is the project's (asv.conf.json's project_url)."""
    url = re.search(r'"project_url":\s*"https://github.com/([^"]+)"', (ROOT / "asv.conf.json").read_text())
    guarded = set()
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in load(path.read_text())["jobs"].values():
            if "self-hosted" in job.get("runs-on", []):
                guarded |= set(REPOSITORY_GUARD.findall(str(job.get("if"))))
    assert guarded == {url.group(1)}


def test_main_pushes_results_and_deploys_even_when_benchmarks_fail():
    """bench.sh exits non-zero after publishing when a benchmark failed; the job goes on to push the results and
    upload the site, Pages is deployed, and only the last job (verdict) fails."""
    main = load((WORKFLOWS / "bench-main.yml").read_text())
    jobs = main["jobs"]
    bench = steps(jobs["bench"])
    runs = [str(s.get("run", s.get("uses", ""))) for s in bench]
    suite = next(i for i, r in enumerate(runs) if "scripts/bench.sh" in r)
    push = next(i for i, r in enumerate(runs) if "scripts/push-results.sh" in r)
    upload = next(i for i, r in enumerate(runs) if r.startswith("actions/upload-pages-artifact"))
    restore = next(i for i, r in enumerate(runs) if "scripts/restore-results.sh" in r)
    assert restore < suite < push < upload
    assert bench[suite].get("continue-on-error") is True and bench[suite]["id"] == "suite"
    assert "continue-on-error" not in bench[restore] and "if" not in bench[restore]  # no results, no site
    assert "if" not in bench[push]  # runs after a failed suite (continue-on-error keeps the job going)
    assert "failure" not in str(bench[upload].get("if", "")) and "success()" not in str(bench[upload].get("if"))
    assert jobs["bench"]["outputs"]["suite"] == "${{ steps.suite.outcome }}"
    assert jobs["deploy"]["needs"] == "bench" and "suite" not in str(jobs["deploy"].get("if"))
    verdict = jobs["verdict"]
    assert set(verdict["needs"]) == {"bench", "deploy"} and "!cancelled()" in verdict["if"]
    script = steps(verdict)[0]
    assert script["env"]["SUITE"] == "${{ needs.bench.outputs.suite }}"
    for outcome, expect in [("success", 0), ("failure", 1)]:
        env = {**os.environ, "BENCH": "success", "DEPLOY": "success", "SUITE": outcome}
        assert subprocess.run(["bash", "-c", script["run"]], env=env, capture_output=True).returncode == expect


def test_pr_benchmarks_keep_their_artifact():
    pr = load((WORKFLOWS / "bench-pr.yml").read_text())
    bench = steps(pr["jobs"]["bench"])
    upload = next(s for s in bench if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "pr/"
    assert "${{" not in "".join(str(s.get("run", "")) for s in bench)  # values reach scripts through env only


# --- scripts/push-results.sh and scripts/restore-results.sh, against a local bare repository -----------------

TOKEN = "ghs_kvbenchTestToken0123456789"


def git(*args, cwd=None, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=check,
                          capture_output=True, text=True)


@pytest.fixture
def results_env(tmp_path):
    """A project checkout with .asv/results, an empty bare "remote", and an environment that logs every git and
    base64 command line (to show the token is never an argument)."""
    project, remote, bin_dir, home = (tmp_path / d for d in ("project", "remote.git", "bin", "home"))
    for d in (project, bin_dir, home):
        d.mkdir()
    for script in ("push-results.sh", "restore-results.sh", "git-auth.sh"):
        (project / "scripts").mkdir(exist_ok=True)
        shutil.copy(ROOT / "scripts" / script, project / "scripts" / script)
    git("init", "-q", "--bare", str(remote))
    git("init", "-q", cwd=project)
    git("commit", "-q", "--allow-empty", "-m", "benchmarked commit", cwd=project)
    sha = git("rev-parse", "HEAD", cwd=project).stdout.strip()
    for tool in ("git", "base64"):
        shim = bin_dir / tool
        shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> "$ARGV_LOG"\nexec {shutil.which(tool)} "$@"\n')
        shim.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
           "ARGV_LOG": str(tmp_path / "argv.log"), "GH_TOKEN": TOKEN, "REPO": "o/r", "GITHUB_SHA": sha,
           "RESULTS_REMOTE": str(remote)}
    return {"project": project, "remote": remote, "sha": sha, "env": env, "tmp": tmp_path}


def write_results(project: pathlib.Path, sha: str, value: str, older: dict | None = None):
    results = project / ".asv" / "results"
    (results / "gpu-box").mkdir(parents=True, exist_ok=True)
    (results / "benchmarks.json").write_text('{"benchmarks": 1}')
    (results / "gpu-box" / "machine.json").write_text('{"machine": "gpu-box"}')
    (results / "gpu-box" / f"{sha[:8]}-env.json").write_text(value)
    for name, text in (older or {}).items():
        (results / "gpu-box" / name).write_text(text)


def run_script(ctx, name, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", f"scripts/{name}"], cwd=ctx["project"], env={**ctx["env"], **env},
                          capture_output=True, text=True)


def branch_file(ctx, path, rev="asv-results") -> str:
    return git("show", f"{rev}:{path}", cwd=ctx["remote"]).stdout


def test_first_push_starts_the_branch_without_the_token_in_argv_or_on_disk(results_env):
    ctx = results_env
    write_results(ctx["project"], ctx["sha"], '{"run": 1}')
    clone = ctx["tmp"] / "clone"
    run = run_script(ctx, "push-results.sh", RESULTS_WORKDIR=str(clone))
    assert run.returncode == 0, run.stderr
    assert "starting it" in run.stdout
    result = f"results/gpu-box/{ctx['sha'][:8]}-env.json"
    assert branch_file(ctx, result) == '{"run": 1}'
    assert branch_file(ctx, "results/benchmarks.json") and branch_file(ctx, "results/gpu-box/machine.json")
    encoded = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    argv = (ctx["tmp"] / "argv.log").read_text()
    assert " push -q origin asv-results" in argv and "base64" in argv  # the log does see the commands
    on_disk = "".join(p.read_text(errors="replace") for p in (clone / ".git").rglob("*") if p.is_file())
    for secret in (TOKEN, encoded):
        assert secret not in argv and secret not in on_disk and secret not in run.stdout + run.stderr


def test_the_token_goes_to_github_only_as_a_header_from_the_environment(results_env):
    env = {**results_env["env"], "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.pager",
           "GIT_CONFIG_VALUE_0": "cat"}
    script = ". scripts/git-auth.sh && git config --get http.https://github.com/.extraheader && " \
             "git config --get core.pager"
    run = subprocess.run(["bash", "-c", script], cwd=results_env["project"], env=env, capture_output=True,
                         text=True, check=True)
    header, pager = run.stdout.splitlines()
    assert header == "AUTHORIZATION: basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert pager == "cat"  # earlier GIT_CONFIG_* entries are kept


def test_a_rerun_replaces_the_commits_result_and_keeps_the_old_one_in_history(results_env):
    ctx = results_env
    stale = {"0ld0c0mm-env.json": '{"older commit": "as on the branch"}'}
    write_results(ctx["project"], ctx["sha"], '{"run": 1}', older=stale)
    assert run_script(ctx, "push-results.sh").returncode == 0
    # The next run restored the branch, then reran this commit; its copy of an older commit's file differs (say, an
    # older restore): that one must not overwrite the branch's.
    write_results(ctx["project"], ctx["sha"], '{"run": 2}', older={"0ld0c0mm-env.json": '{"stale": true}'})
    run = run_script(ctx, "push-results.sh")
    assert run.returncode == 0, run.stderr
    assert "replaces 1 result file" in run.stdout
    result = f"results/gpu-box/{ctx['sha'][:8]}-env.json"
    assert branch_file(ctx, result) == '{"run": 2}'
    assert branch_file(ctx, result, "asv-results~1") == '{"run": 1}'  # the old file, in history
    assert branch_file(ctx, "results/gpu-box/0ld0c0mm-env.json") == stale["0ld0c0mm-env.json"]


def test_nothing_new_is_success_without_a_commit(results_env):
    ctx = results_env
    write_results(ctx["project"], ctx["sha"], '{"run": 1}')
    assert run_script(ctx, "push-results.sh").returncode == 0
    head = git("rev-parse", "asv-results", cwd=ctx["remote"]).stdout
    run = run_script(ctx, "push-results.sh")
    assert run.returncode == 0 and "nothing new" in run.stdout
    assert git("rev-parse", "asv-results", cwd=ctx["remote"]).stdout == head


def test_a_failing_commit_is_an_error_not_nothing_to_commit(results_env):
    ctx = results_env
    write_results(ctx["project"], ctx["sha"], '{"run": 1}')
    hook_dir = ctx["tmp"] / "hooks"
    hook_dir.mkdir()
    (hook_dir / "pre-commit").write_text("#!/bin/sh\nexit 1\n")
    (hook_dir / "pre-commit").chmod(0o755)
    run = run_script(ctx, "push-results.sh", GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="core.hooksPath",
                     GIT_CONFIG_VALUE_0=str(hook_dir))
    assert run.returncode != 0
    assert git("rev-parse", "--verify", "-q", "asv-results", cwd=ctx["remote"], check=False).returncode != 0


def test_an_unreachable_remote_fails_instead_of_starting_a_new_branch(results_env):
    ctx = results_env
    write_results(ctx["project"], ctx["sha"], '{"run": 1}')
    missing = ctx["tmp"] / "no-such-remote.git"
    for script in ("push-results.sh", "restore-results.sh"):
        run = run_script(ctx, script, RESULTS_REMOTE=str(missing))
        assert run.returncode != 0, script
        assert "exit 128" in run.stderr, run.stderr
    assert not missing.exists()


def test_github_needs_repo_and_token(results_env):
    ctx = results_env
    write_results(ctx["project"], ctx["sha"], '{"run": 1}')
    env = {k: v for k, v in ctx["env"].items() if k not in ("RESULTS_REMOTE", "GH_TOKEN")}
    run = subprocess.run(["bash", "scripts/push-results.sh"], cwd=ctx["project"], env=env, capture_output=True,
                         text=True)
    assert run.returncode != 0 and "GH_TOKEN is not set" in run.stderr


def test_restore_copies_the_branch_or_starts_empty(results_env):
    ctx = results_env
    first = run_script(ctx, "restore-results.sh")  # no branch yet (ls-remote exit 2)
    assert first.returncode == 0 and "first run" in first.stdout
    assert (ctx["project"] / ".asv" / "results").is_dir()
    write_results(ctx["project"], ctx["sha"], '{"run": 1}')
    assert run_script(ctx, "push-results.sh").returncode == 0
    shutil.rmtree(ctx["project"] / ".asv")
    run = run_script(ctx, "restore-results.sh")
    assert run.returncode == 0, run.stderr
    restored = ctx["project"] / ".asv" / "results" / "gpu-box" / f"{ctx['sha'][:8]}-env.json"
    assert restored.read_text() == '{"run": 1}'
