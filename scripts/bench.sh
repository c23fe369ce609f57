#!/usr/bin/env bash
# The main job: set up, run the asv suite for the current commit on this machine, and publish the site, always:
# failed benchmarks are recorded (shown failed on the site) and summarised, and only then does the script exit
# non-zero. Extra arguments go to `asv run` (e.g. -b KVCacheWriteShapes). Then: `.venv/bin/asv preview` to browse.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
commit=$(git rev-parse HEAD)
# The machine file, rewritten each run: its name carries the GPU model, its fields the driver, CUDA and versions.
machine=$(kvbench asv-machine ${KVBENCH_MACHINE:+--machine "$KVBENCH_MACHINE"} | awk '$1 == "machine:" {print $2}')
export KVBENCH_STATE_LOG=$PWD/.asv/run-log.jsonl  # one line per benchmark process: what it measured, skipped or failed
mkdir -p .asv && rm -f "$KVBENCH_STATE_LOG"
status=0
bash scripts/asv-run.sh "$commit" --machine "$machine" "$@" || status=$?
asv publish || status=$((status ? status : 1))
# asv's page loads its JavaScript libraries from CDNs; local copies make the site work without internet too.
kvbench site-vendor .asv/html || echo "note: the site needs internet access to load its libraries (no npm here)"
echo "Site written to .asv/html (serve it with: .venv/bin/asv preview)"
kvbench asv-summary .asv/results/"$machine"/"${commit:0:8}"-*.json --state-log "$KVBENCH_STATE_LOG" || true
exit "$status"
