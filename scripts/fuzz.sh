#!/usr/bin/env bash
# Run every cargo-fuzz target (fuzz/fuzz_targets/*.rs) for SECONDS each, one after
# the other, in-process on one core, starting from fuzz/corpus/<target> (seeded by
# fuzz/seed.sh, grown by earlier runs). Prints the executions per target and
# stops with a non-zero status when a target crashed (the input is left in
# fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh SECONDS [TARGET…]      default: all targets
#   FUZZ_RUNS=N scripts/fuzz.sh 0 [TARGET…] N executions per target instead of a time
#   FUZZ_SANITIZER=none scripts/fuzz.sh …    no AddressSanitizer (≈ 3–20× the executions
#                                            per second; the code under test has no unsafe)
#
# Needs a nightly toolchain (rustup toolchain install nightly) and cargo-fuzz
# (cargo install --locked cargo-fuzz). Logs: fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:?usage: scripts/fuzz.sh SECONDS [TARGET…]}"
shift
if (($#)); then
  targets=("$@")
else
  targets=()
  for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

cargo +nightly --version >/dev/null 2>&1 || { echo "scripts/fuzz.sh: no nightly toolchain" >&2; exit 2; }
cargo +nightly fuzz --version >/dev/null 2>&1 || { echo "scripts/fuzz.sh: cargo-fuzz missing (cargo install --locked cargo-fuzz)" >&2; exit 2; }

./seed.sh
mkdir -p logs
san="${FUZZ_SANITIZER:-address}"
echo "building ${#targets[@]} targets (release, debug assertions, sanitizer: $san)"
cargo +nightly fuzz build -O -s "$san" >logs/build.log 2>&1 || { tail -30 logs/build.log; exit 1; }

# per-target libFuzzer options
opts_for() {
  case "$1" in
    endpoint) echo "-max_len=4096" ;;
    config|profile) echo "-max_len=16384" ;;
    *) echo "" ;;
  esac
}

limit=(-max_total_time="$secs")
if [[ -n "${FUZZ_RUNS:-}" ]]; then limit=(-runs="$FUZZ_RUNS"); fi

failed=()
printf '\n%-12s %12s %8s %10s  %s\n' target executions secs exec/s result
results=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  start=$(date +%s)
  # shellcheck disable=SC2046
  if cargo +nightly fuzz run -O -s "$san" "$t" "corpus/$t" -- "${limit[@]}" -timeout=10 \
       -print_final_stats=1 $(opts_for "$t") >"logs/$t.log" 2>&1; then
    result=ok
  else
    result="CRASH (see fuzz/logs/$t.log, fuzz/artifacts/$t/)"
    failed+=("$t")
  fi
  took=$(( $(date +%s) - start ))
  # (a crashed run has no final stats: then the last progress line counts)
  runs=$({ grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" || true; } | grep -o '[0-9]*$' | tail -1 || true)
  runs=${runs:-$({ grep -o '^#[0-9]*' "logs/$t.log" || true; } | tail -1 | tr -d '#')}
  runs=${runs:-0}
  rate=$(( runs / (took > 0 ? took : 1) ))
  line=$(printf '%-12s %12s %8s %10s  %s' "$t" "$runs" "$took" "$rate" "$result")
  echo "$line"
  results+=("$line")
done

echo
echo "summary ($(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?')):"
printf '%s\n' "${results[@]}"
if ((${#failed[@]})); then
  echo "scripts/fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
