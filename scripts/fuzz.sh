#!/usr/bin/env bash
# Runs every libFuzzer target for SECONDS each over its corpus:
#   scripts/fuzz.sh BUILD_DIR SECONDS [TARGET...]
# The checked-in seeds (tests/fuzz/corpus/<target>) and past crashes
# (tests/fuzz/regressions/<target>, each also a unit test) are read, never written;
# what the fuzzer learns goes to BUILD_DIR/corpus/<target>. A crash leaves
# its input in BUILD_DIR/artifacts/ and fails the run: turn it into a test.
set -euo pipefail
build=$1
seconds=$2
shift 2
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(job_spec config http_api wire)
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build/artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  extra=()
  [[ -d "$root/tests/fuzz/regressions/$t" ]] && extra+=("$root/tests/fuzz/regressions/$t")
  echo "== fuzz_$t for ${seconds} s"
  "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" \
    "$build/corpus/$t" "$root/tests/fuzz/corpus/$t" "${extra[@]}" 2>&1 | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==|SUMMARY|INFO: Running with entropic)|ERROR|artifact" || true
  if ls "$build/artifacts/$t-"* >/dev/null 2>&1; then
    echo "fuzz_$t: found a crash: $(ls "$build/artifacts/$t-"*)" >&2
    exit 1
  fi
done
