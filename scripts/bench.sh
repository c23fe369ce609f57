#!/usr/bin/env bash
# The main job: set up, run the asv suite for the current commit on this machine, and publish the site.
# Extra arguments go to `asv run` (e.g. -b KVCacheWriteShapes). Then: `.venv/bin/asv preview` to browse.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
# The machine file, rewritten each run: its name carries the GPU model, its fields the driver, CUDA and versions.
machine=$(kvbench asv-machine | awk '$1 == "machine:" {print $2}')
asv run --python=same --machine "$machine" --set-commit-hash "$(git rev-parse HEAD)" --record-samples --show-stderr "$@"
asv publish
# asv's page loads its JavaScript libraries from CDNs; local copies make the site work without internet too.
kvbench site-vendor .asv/html || echo "note: the site needs internet access to load its libraries (no npm here)"
echo "Site written to .asv/html (serve it with: .venv/bin/asv preview)"
