"""asv configurations written for one use: a template of this checkout (asv.conf.json, asv.vllm.conf.json,
asv.vllm-commits.conf.json) with its paths made absolute and some entries replaced, so that asv can be pointed at
another repository (vLLM's) or another benchmark directory (an older commit's) from anywhere.

    python -m kvbench.asv.config_file OUT [--template T] [--repo R] [--benchmark-dir D] [--results-dir D]
"""

from __future__ import annotations

import argparse
import json
import pathlib

PATHS = ("benchmark_dir", "results_dir", "html_dir", "env_dir")


def load(path: pathlib.Path) -> dict:
    from asv.util import load_json

    return load_json(str(path), js_comments=True)


def write(out: pathlib.Path, template: str = "asv.conf.json", root: pathlib.Path | None = None,
          data_dir: pathlib.Path | None = None, fills: dict[str, str] | None = None, **entries) -> pathlib.Path:
    """Write `template` (under `root`, default the current directory: a kvbench checkout) to `out` with absolute
    paths: results, html and env under `data_dir` when given (else where the template puts them), `entries`
    replacing the template's, and each `fills` token replaced in the build/install commands."""
    root = pathlib.Path(root or pathlib.Path.cwd())
    conf = load(root / template)
    for key in PATHS:
        if key in conf:
            conf[key] = str((data_dir / pathlib.Path(conf[key]).name) if data_dir and key != "benchmark_dir"
                            else (root / conf[key]).resolve())
    conf.update({k: str(v) if isinstance(v, pathlib.Path) else v for k, v in entries.items() if v is not None})
    for key in ("build_command", "install_command", "uninstall_command"):
        if key in conf:
            commands = []
            for command in conf[key]:
                for token, value in (fills or {}).items():
                    command = command.replace(token, value)
                commands.append(command)
            conf[key] = commands
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(conf, indent=1) + "\n")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=pathlib.Path)
    p.add_argument("--template", default="asv.conf.json")
    p.add_argument("--repo", type=pathlib.Path, default=None)
    p.add_argument("--benchmark-dir", type=pathlib.Path, default=None)
    p.add_argument("--results-dir", type=pathlib.Path, default=None)
    args = p.parse_args(argv)
    print(write(args.out, args.template, repo=args.repo and args.repo.resolve(),
                benchmark_dir=args.benchmark_dir and args.benchmark_dir.resolve(),
                results_dir=args.results_dir and args.results_dir.resolve()))


if __name__ == "__main__":
    main()
