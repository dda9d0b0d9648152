#!/usr/bin/env bash
# The test command the README gives: unit and integration tiers, then the fit benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
DEPLOYER_LLAMA_PREFIX="${DEPLOYER_LLAMA_PREFIX:-$(bash scripts/build-llama.sh)}"
export DEPLOYER_LLAMA_PREFIX
# The fit benchmark first (it fails when its accuracy targets are missed), pytest's summary last.
python3 benchmarks/fit_accuracy.py --quick --out "${TMPDIR:-/tmp}/fit_accuracy_ci.json"
python3 -m pytest -q tests
