#!/usr/bin/env bash
# Pre-provisioned machines (torch, triton, vLLM already installed; no per-commit builds): time kvbench as it was
# at COMMIT with the current interpreter and file the results under COMMIT, so `asv compare A B` compares the code
# of A and B. The commit is checked out in a temporary worktree whose src/ is put first on the benchmark path.
# Usage: bash scripts/run-commit.sh COMMIT [asv run arguments...]      (e.g. -b KVCacheWriteBF16)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
commit=$(git rev-parse --verify "${1:?usage: run-commit.sh COMMIT [asv args]}^{commit}"); shift
tree=$(mktemp -d)
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
git worktree add -q --detach "$tree" "$commit"
# asv passes ASV_PYTHONPATH (not PYTHONPATH) on to its benchmark processes.
export ASV_PYTHONPATH="$tree/src${ASV_PYTHONPATH:+:$ASV_PYTHONPATH}"
conf=$(python3 - "$tree" <<'PY'
import json, pathlib, sys
from asv.util import load_json
tree, here = pathlib.Path(sys.argv[1]), pathlib.Path.cwd()
conf = load_json(str(here / "asv.conf.json"), js_comments=True)
conf.update(repo=str(here), benchmark_dir=str(tree / "benchmarks"),
            **{k: str(here / conf[k]) for k in ("results_dir", "html_dir", "env_dir")})
path = tree / "asv.commit.json"
path.write_text(json.dumps(conf))
print(path)
PY
)
python3 -m asv run --python=same --config "$conf" --set-commit-hash "$commit" --record-samples "$@"
