#!/usr/bin/env bash
# Copy the `asv-results` branch's results/ into .asv/results, so that the site built after this run shows the
# earlier commits too. `git ls-remote` exit 2 (no such branch: the very first run) starts with no earlier results;
# any other failure (128: network, authentication) is an error, so a site with only the new commit is never
# deployed over the real one. Environment: RESULTS_REMOTE (default: origin); GH_TOKEN, if set, authenticates to
# github.com as in push-results.sh (not in argv, not on disk).
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
. "$here/git-auth.sh"
remote=${RESULTS_REMOTE:-origin}
mkdir -p .asv/results
status=0
git ls-remote --exit-code "$remote" refs/heads/asv-results >/dev/null || status=$?
case $status in
  0) git fetch -q --no-tags "$remote" refs/heads/asv-results
     git archive FETCH_HEAD results | tar -x --strip-components=1 -C .asv/results
     echo "restore-results: $(find .asv/results -name '*.json' | wc -l) files from asv-results" ;;
  2) echo "restore-results: no asv-results branch yet (first run); starting without earlier results" ;;
  *) echo "restore-results: git ls-remote $remote failed (exit $status: network or authentication); not" \
          "publishing a site without the earlier results" >&2
     exit 1 ;;
esac
