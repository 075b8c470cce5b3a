#!/usr/bin/env bash
# Builds one fuzz target with libFuzzer (and AddressSanitizer) and fuzzes it for a bounded time.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer flags...]
#
# TARGET: http-parser or request-json (the executables fuzz-http-parser, fuzz-request-json).
# The committed seed corpus fuzz/corpus/TARGET is copied to a temporary directory, so the run
# never changes the work tree. Exits nonzero when the build fails or libFuzzer reports a crash,
# a broken invariant, a leak, a timeout or an out-of-memory; the reproducer is then kept and its
# path printed (replay it with `.build/release/fuzz-TARGET FILE` or the fuzzer binary).
#
# Environment: FUZZ_SCRATCH (scratch path, default .build-fuzzer), FUZZ_SANITIZE ("address" by
# default; "none" for a libFuzzer-only build), FUZZ_RSS_MB (default 2048), FUZZ_TIMEOUT (seconds
# per input, default 10), FUZZ_MAX_LEN (bytes, default 16384), FUZZ_KEEP (a directory that
# receives the grown corpus), FUZZ_REPORT (a JSON file that receives the run's figures),
# FUZZ_SKIP_BUILD=1 (reuse the last build), FUZZ_CONFIG (release by default; debug builds in about
# half the time and, checked on a 2-core host, runs about as many inputs per second).
set -euo pipefail

usage() { echo "usage: fuzz/run.sh http-parser|request-json SECONDS [libFuzzer flags...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
target=$1; seconds=$2; shift 2
case "$target" in
  http-parser|request-json) ;;
  fuzz-http-parser|fuzz-request-json) target=${target#fuzz-} ;;
  *) echo "unknown fuzz target '$target'; use http-parser or request-json" >&2; exit 2 ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || { echo "SECONDS must be a positive integer, got '$seconds'" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scratch=${FUZZ_SCRATCH:-.build-fuzzer}
sanitize=${FUZZ_SANITIZE:-address}
product=fuzz-$target

# SwiftPM's --sanitize=fuzzer links libFuzzer's main; the compiler gets one combined -sanitize flag
# on top (it honours the last one): given two `--sanitize` options, SwiftPM 6.3
# hands the compiler only one of them (in a random order from run to run), so a build came out
# without coverage instrumentation or without AddressSanitizer depending on the run.
sanitizers=fuzzer
[ "$sanitize" = none ] || sanitizers+=",$sanitize"
config=${FUZZ_CONFIG:-release}
case "$config" in release|debug) ;; *) echo "FUZZ_CONFIG must be release or debug, got '$config'" >&2; exit 2 ;; esac
binary=$scratch/$config/$product
if [ "${FUZZ_SKIP_BUILD:-0}" != 1 ]; then
  echo "building $product (-sanitize=$sanitizers) in $scratch" >&2
  swift build -c "$config" --scratch-path "$scratch" --product "$product" --sanitize=fuzzer \
    -Xswiftc "-sanitize=$sanitizers" -Xswiftc -parse-as-library -Xswiftc -DFUZZING >&2
fi
[ -x "$binary" ] || { echo "$binary was not built" >&2; exit 1; }
# A binary without coverage counters would "fuzz" blind and pass; refuse it.
probe=$(SWIFT_BACKTRACE=enable=no "$binary" -runs=0 2>&1 || true)
if ! grep -q "inline 8-bit counters" <<<"$probe"; then
  echo "$binary has no coverage instrumentation; remove $scratch and rebuild" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/castserve-fuzz-$target.XXXXXX")
mkdir -p "$work/corpus" "$work/artifacts"
cp fuzz/corpus/"$target"/* "$work/corpus/"
seeds=$(ls "$work/corpus" | wc -l)

echo "fuzzing $product for $seconds s from $seeds seeds (work dir $work)" >&2
set +e
# Swift's own crash backtracer would run inside libFuzzer's deadly-signal handler; libFuzzer and
# AddressSanitizer print the stack and keep the reproducer.
SWIFT_BACKTRACE=enable=no "$binary" "$work/corpus" \
  -dict="fuzz/dict/$target.dict" \
  -max_total_time="$seconds" \
  -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
  -timeout="${FUZZ_TIMEOUT:-10}" \
  -max_len="${FUZZ_MAX_LEN:-16384}" \
  -artifact_prefix="$work/artifacts/" \
  -print_final_stats=1 \
  "$@" >"$work/log" 2>&1
status=$?
set -e

artifacts=$(ls "$work/artifacts" | wc -l)
corpus_files=$(ls "$work/corpus" | wc -l)
corpus_bytes=$(cat "$work/corpus"/* | wc -c)
stat() { sed -n "s/^stat::$1: *//p" "$work/log" | tail -1; }
execs=$(stat number_of_executed_units); rate=$(stat average_exec_per_sec); peak=$(stat peak_rss_mb)
last=$(grep -E '^#[0-9]+' "$work/log" | tail -1 || true)
cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last"); ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")

echo "$product: $seconds s, execs ${execs:-?} (${rate:-?}/s), cov ${cov:-?} edges, ft ${ft:-?}, corpus $seeds -> $corpus_files files ($corpus_bytes B), peak RSS ${peak:-?} MB, artifacts $artifacts, exit $status"
if [ -n "${FUZZ_REPORT:-}" ]; then
  cat >"$FUZZ_REPORT" <<JSON
{"target": "$product", "seconds": $seconds, "sanitize": "$sanitize", "execs": ${execs:-null}, "execs_per_s": ${rate:-null},
 "cov": ${cov:-null}, "ft": ${ft:-null}, "seed_files": $seeds, "corpus_files": $corpus_files, "corpus_bytes": $corpus_bytes,
 "peak_rss_mb": ${peak:-null}, "artifacts": $artifacts, "exit_status": $status}
JSON
fi
if [ -n "${FUZZ_KEEP:-}" ]; then
  mkdir -p "$FUZZ_KEEP" && cp "$work/corpus"/* "$FUZZ_KEEP/"
fi

if [ "$status" -ne 0 ] || [ "$artifacts" -ne 0 ]; then
  echo "FAILED: libFuzzer exited $status with $artifacts artifact(s); log and reproducers kept in $work" >&2
  grep -E 'ERROR|fuzz invariant|==[0-9]+==|Test unit written|SUMMARY' "$work/log" | head -20 >&2 || true
  ls "$work/artifacts" >&2
  exit 1
fi
rm -rf "$work"
