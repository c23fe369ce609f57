#!/usr/bin/env bash
# The main job: set up, run the asv suite for the current commit on this machine, and publish the site.
# Extra arguments go to `asv run` (e.g. -b KVCacheWriteShapes). Then: `.venv/bin/asv preview` to browse.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
asv machine --yes >/dev/null
asv run --python=same --set-commit-hash "$(git rev-parse HEAD)" --record-samples --show-stderr "$@"
asv publish
echo "Site written to .asv/html (serve it with: .venv/bin/asv preview)"
