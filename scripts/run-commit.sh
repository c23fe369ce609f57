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
conf=$(python3 -m kvbench.asv.config_file "$tree/asv.commit.json" --benchmark-dir "$tree/benchmarks")
bash scripts/asv-run.sh "$commit" --config "$conf" "$@"
