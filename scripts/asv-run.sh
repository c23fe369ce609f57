#!/usr/bin/env bash
# kvbench's one `asv run` line: the current interpreter (nothing built), results filed under COMMIT, raw samples
# kept (asv compare's significance test needs them), benchmark stderr shown (WARNINGs, failure reasons). The run's
# temporary files (among them the batches' store of measured cases, kvbench.asv.batch) go to a folder of its own,
# removed afterwards.
# Usage: bash scripts/asv-run.sh COMMIT [asv run arguments...]   (--machine NAME, --config FILE, -b REGEX, ...)
set -uo pipefail
commit=${1:?usage: asv-run.sh COMMIT [asv run arguments...]}; shift
TMPDIR=$(mktemp -d) || exit 3
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
python3 -m asv run --python=same --set-commit-hash "$commit" --record-samples --show-stderr "$@"
