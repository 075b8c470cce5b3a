#!/usr/bin/env bash
# Runs one phase of `make test` and records how long it took, so every CI log ends with the measured
# breakdown (tests/README.md keeps the figures of a fresh 2-core host).
#
#   tools/ci/phase.sh NAME COMMAND [ARGS...]   run COMMAND, append "NAME SECONDS STATUS" to $CI_TIMES
#   tools/ci/phase.sh --report                 print the recorded phases as a table and clear them
#
# CI_TIMES defaults to .build-ci/times (git-ignored). The command's exit status is passed through.
set -u
times=${CI_TIMES:-.build-ci/times}
mkdir -p "$(dirname "$times")"
if [ "${1:-}" = "--report" ]; then
  [ -f "$times" ] || exit 0
  total=0
  printf '\n%-28s %8s  %s\n' "phase" "seconds" "status"
  while read -r name secs status; do
    printf '%-28s %8s  %s\n' "$name" "$secs" "$status"
    total=$((total + secs))
  done < "$times"
  printf '%-28s %8s\n' "total (sequential phases)" "$total"
  rm -f "$times"
  exit 0
fi
[ $# -ge 2 ] || { echo "usage: tools/ci/phase.sh NAME COMMAND [ARGS...] | --report" >&2; exit 2; }
name=$1; shift
start=$(date +%s)
"$@"
status=$?
secs=$(( $(date +%s) - start ))
echo "$name $secs $([ $status = 0 ] && echo ok || echo "failed($status)")" >> "$times"
echo "[phase] $name: ${secs}s" >&2
exit $status
