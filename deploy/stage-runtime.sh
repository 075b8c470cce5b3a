#!/bin/sh
# Stages the runtime files of a release cast-serve build under DEST_ROOT, as the container image lays
# them out: DEST_ROOT/opt/castserve/bin/ holds the binary and the Swift runtime libraries it links
# (found with ldd: every resolved library under a .../swift/linux/ toolchain directory). The binary's
# RUNPATH ends in $ORIGIN, so it finds them beside itself once the toolchain is gone. Everything else
# it links comes from the runtime image's Debian packages (deploy/host-build.sh checks which).
# Used by the Dockerfile's build stage and by deploy/host-build.sh.
#
#   deploy/stage-runtime.sh BINARY DEST_ROOT
set -eu

binary="${1:?usage: stage-runtime.sh BINARY DEST_ROOT}"
root="${2:?usage: stage-runtime.sh BINARY DEST_ROOT}"
bin="$root/opt/castserve/bin"

[ -x "$binary" ] || { echo "stage-runtime.sh: $binary is not an executable; build it first (swift build -c release)" >&2; exit 1; }
mkdir -p "$bin"
cp "$binary" "$bin/cast-serve"
libs="$(ldd "$binary" | awk '$3 ~ /\/swift\/linux\// { print $3 }')"
if ldd "$binary" | grep -q "not found"; then
    echo "stage-runtime.sh: $binary has unresolved libraries:" >&2
    ldd "$binary" | grep "not found" >&2
    exit 1
fi
count=0
for lib in $libs; do
    cp -L "$lib" "$bin/"
    count=$((count + 1))
done
echo "stage-runtime.sh: staged cast-serve and $count Swift runtime libraries in $bin" >&2
