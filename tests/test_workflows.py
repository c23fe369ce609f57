"""The GitHub workflows: linted (check-jsonschema's GitHub schema, zizmor's security audits, both from PyPI and
offline), and the security rules the README claims, checked on the real files and shown to catch violations."""

import pathlib
import shutil
import subprocess

import pytest
import yaml

WORKFLOWS = pathlib.Path(__file__).resolve().parents[1] / ".github" / "workflows"
LABEL_GATE = "github.event.label.name == 'run-benchmarks'"


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


@pytest.mark.parametrize("name", sorted(BAD))
def test_rules_catch_insecure_workflows(name):
    assert problems(name, load(BAD[name]))


@pytest.mark.parametrize("tool, args", [
    ("check-jsonschema", ["--builtin-schema", "vendor.github-workflows"]),
    ("zizmor", ["--offline", "--no-progress"]),
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
