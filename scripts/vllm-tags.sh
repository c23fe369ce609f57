#!/usr/bin/env bash
# A git repository whose tags v0.31.0, v0.32.0 and v0.33.0 stand in for vLLM's (for `kvbench vllm-history` where
# vLLM's own repository cannot be cloned). Empty commits with fixed authors and dates: the same hashes everywhere,
# so results filed under them on one machine can be published on another. Usage: bash scripts/vllm-tags.sh DIR
set -euo pipefail
repo=${1:?usage: vllm-tags.sh DIR}
rm -rf "$repo"; git init -q -b main "$repo"
for v in 0.31.0 0.32.0 0.33.0; do
  case $v in 0.31.0) date=2026-09-01T00:00:00Z ;; 0.32.0) date=2026-10-01T00:00:00Z ;; *) date=2026-11-01T00:00:00Z ;; esac
  GIT_AUTHOR_DATE=$date GIT_COMMITTER_DATE=$date git -C "$repo" -c user.name=t -c user.email=t@t \
    commit -q --allow-empty -m "stands in for vLLM v$v"
  git -C "$repo" tag "v$v"
done
