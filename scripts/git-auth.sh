#!/usr/bin/env bash
# Sourced by push-results.sh and restore-results.sh: when GH_TOKEN is set, git sends it to github.com as an HTTP
# Authorization header taken from the environment (GIT_CONFIG_COUNT/KEY/VALUE, git >= 2.31). The token is never an
# argument of a process (printf is a shell builtin; base64 reads it from stdin) and never written to a file, so
# neither `ps` nor a clone's .git/config shows it.
if [ -n "${GH_TOKEN:-}" ]; then
  _kvbench_n=${GIT_CONFIG_COUNT:-0}
  export "GIT_CONFIG_KEY_${_kvbench_n}=http.https://github.com/.extraheader"
  export "GIT_CONFIG_VALUE_${_kvbench_n}=AUTHORIZATION: basic $(printf 'x-access-token:%s' "$GH_TOKEN" | base64 -w0)"
  export GIT_CONFIG_COUNT=$((_kvbench_n + 1))
  unset _kvbench_n
fi
