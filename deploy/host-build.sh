#!/usr/bin/env bash
# Performs the Dockerfile's steps on this host (no container engine needed) and checks the result:
# the same Debian packages, the same `swift build` command, the same runtime staging
# (deploy/stage-runtime.sh) and model fetch (deploy/fetch-model.sh), the same config file, assembled
# into $OUT (default .build-image/) with the image's layout:
#
#   $OUT/opt/castserve/bin/cast-serve   + the Swift runtime libraries it links
#   $OUT/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   $OUT/etc/castserve/config.json
#
# Then it checks that every library the staged binary needs is either staged beside it or provided
# by the runtime packages (or their dependencies), runs `cast-serve --help`, and serves the
# staged model with the staged config until GET /health answers 200, then stops it with SIGTERM.
#
# The build reuses $SCRATCH (default .build, what `make test` builds), so after `make test` it links
# nothing new. tests/test_deploy_sync.py checks that the package lists and build command below equal
# the Dockerfile's.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-.build-image}"
SCRATCH="${SCRATCH:-.build}"
HEALTH_TIMEOUT="${HEALTH_TIMEOUT:-60}"

BUILD_PACKAGES=(libopenblas-dev libssl-dev zlib1g-dev)
RUNTIME_PACKAGES=(libopenblas0-pthread libstdc++6 libssl3 zlib1g ca-certificates curl)
BUILD_COMMAND=(swift build -c release)
MODEL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"

logs="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$logs"; }
trap cleanup EXIT

say() { echo "host-build: $*" >&2; }
fail() { echo "host-build: FAILED: $*" >&2; exit 1; }

# 1. Packages (the build stage's and the runtime stage's), installed when missing.
missing=()
for p in "${BUILD_PACKAGES[@]}" "${RUNTIME_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The release build (a no-op when `make test` has just built it).
say "${BUILD_COMMAND[*]} --scratch-path $SCRATCH"
"${BUILD_COMMAND[@]}" --scratch-path "$SCRATCH" >"$logs/build.log" 2>&1 || { tail -n 40 "$logs/build.log" >&2; fail "the build failed"; }
tail -n 1 "$logs/build.log" >&2

# 3. The runtime layout.
rm -rf "$OUT"
deploy/stage-runtime.sh "$SCRATCH/release/cast-serve" "$OUT"
deploy/fetch-model.sh "$OUT/models" "models/$MODEL_FILE"
install -D -m 0644 deploy/config.json "$OUT/etc/castserve/config.json"
bin="$(cd "$OUT/opt/castserve/bin" && pwd)"

# The image has no toolchain: run the staged binary with the toolchain's library directory hidden
# (an empty tmpfs over it in a private mount namespace, where `unshare -m` is allowed, e.g. as
# root), so it must find the Swift libraries beside itself through its $ORIGIN RUNPATH. Elsewhere
# LD_LIBRARY_PATH puts the staged copies first.
toolchain_lib="$(dirname "$(ldd "$SCRATCH/release/cast-serve" | awk '$3 ~ /\/swift\/linux\// { print $3; exit }')")"
if unshare -m sh -c 'mount -t tmpfs none "$0"' "$toolchain_lib" 2>/dev/null; then
    isolation="toolchain hidden"
    staged_run=(unshare -m sh -c 'mount -t tmpfs none "$0" && exec "$@"' "$toolchain_lib")
else
    isolation="LD_LIBRARY_PATH"
    staged_run=(env LD_LIBRARY_PATH="$bin")
fi

# 4. Libraries: staged beside the binary, or owned by a runtime package or one of its dependencies
#    (Depends and Pre-Depends, recursively, as installed here: what apt-get brings into the runtime
#    stage).
dependency_closure() {
    local queue=("$@") seen=" " p d
    while ((${#queue[@]})); do
        p="${queue[0]%%:*}"
        queue=("${queue[@]:1}")
        case "$seen" in *" $p "*) continue ;; esac
        seen+="$p "
        echo "$p"
        for d in $(dpkg-query -W -f='${Depends}, ${Pre-Depends}' "$p" 2>/dev/null | sed -e 's/([^)]*)//g' -e 's/[,|]/ /g'); do
            queue+=("$d")
        done
    done
}
allowed="$(dependency_closure "${RUNTIME_PACKAGES[@]}")"
staged=0 system=0
while read -r name _ path _; do
    [ "$name" = "linux-vdso.so.1" ] && continue
    [ "$path" = "not" ] && fail "library $name is not found for the staged binary"
    case "$name" in /*) path="$name" ;; esac
    real="$(readlink -f "$path")"
    if [ "$(dirname "$real")" = "$bin" ]; then
        staged=$((staged + 1))
        continue
    fi
    owner="$(dpkg -S "$real" 2>/dev/null | head -n1 | cut -d: -f1)" || true
    [ -n "$owner" ] || owner="$(dpkg -S "$path" 2>/dev/null | head -n1 | cut -d: -f1)" || true
    [ -n "$owner" ] || fail "library $path ($real) belongs to no Debian package: stage it or add its package"
    if ! grep -qx "$owner" <<<"$allowed"; then
        fail "library $path comes from $owner, which is neither staged nor in the runtime packages (${RUNTIME_PACKAGES[*]}) or their dependencies"
    fi
    system=$((system + 1))
done < <("${staged_run[@]}" ldd "$bin/cast-serve" | sed 's/^[[:space:]]*//')
((staged > 0)) || fail "no Swift runtime library resolved from $bin"
say "libraries ($isolation): $staged staged beside the binary, $system from the runtime packages"

# 5. The staged binary runs, and serves the staged model with the staged config.
"${staged_run[@]}" "$bin/cast-serve" --help >/dev/null || fail "cast-serve --help"
log="$logs/serve.log"
stdout="$logs/serve.out"
CASTSERVE_HOST=127.0.0.1 CASTSERVE_PORT=0 CASTSERVE_THREADS=1 CASTSERVE_MODEL="$OUT/models/$MODEL_FILE" \
    "${staged_run[@]}" "$bin/cast-serve" serve --config "$OUT/etc/castserve/config.json" >"$stdout" 2>"$log" &
pid=$!
port=""
for _ in $(seq 1 100); do
    port="$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$stdout")"
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || fail "cast-serve exited before listening: $(tail -n 5 "$log")"
    sleep 0.1
done
[ -n "$port" ] || fail "cast-serve printed no address in 10 s: $(tail -n 5 "$log")"
deadline=$((SECONDS + HEALTH_TIMEOUT))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/health")" = 200 ]; do
    kill -0 "$pid" 2>/dev/null || fail "cast-serve exited while loading: $(tail -n 5 "$log")"
    ((SECONDS < deadline)) || fail "GET /health was not 200 within $HEALTH_TIMEOUT s: $(tail -n 5 "$log")"
    sleep 0.2
done
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
((status == 0)) || fail "cast-serve exited with $status after SIGTERM: $(tail -n 5 "$log")"
say "ok: $OUT ($(du -sh "$OUT" | cut -f1)); /health answered 200 on port $port; SIGTERM exit 0"
