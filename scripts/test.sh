#!/usr/bin/env bash
# Set up and run the tests (CPU tests everywhere; the `gpu` tests run too where a CUDA device is visible).
# Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
python -m pytest -q -p no:cacheprovider "$@"
