#!/usr/bin/env bash
# kvbench's one `asv run` line: the current interpreter (nothing built), results filed under COMMIT, raw samples
# kept (asv compare's significance test needs them), benchmark stderr shown (WARNINGs, failure reasons).
# Usage: bash scripts/asv-run.sh COMMIT [asv run arguments...]   (--machine NAME, --config FILE, -b REGEX, ...)
set -uo pipefail
commit=${1:?usage: asv-run.sh COMMIT [asv run arguments...]}; shift
exec python3 -m asv run --python=same --set-commit-hash "$commit" --record-samples --show-stderr "$@"
