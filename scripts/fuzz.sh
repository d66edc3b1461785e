#!/usr/bin/env bash
# Fuzzes every decoder a peer can reach (see fuzz/README.md), with two engines:
#   loop  the structured mutation loop (gkfs-fuzz run): seeded with valid encodings,
#         not coverage-guided; one worker process per target catches panics, aborts
#         and hangs (> 1 s) and saves their inputs;
#   afl   AFL++ through cargo-afl on stable Rust: coverage-guided (SanitizerCoverage),
#         persistent mode, exec timeout 1 s (a timeout is a hang).
# Both run the same target functions, built here with overflow checks and debug
# assertions on. Prints execs, execs/s and crashes per decoder; exits non-zero if any
# engine found a crash, a hang or a failed round trip.
#
# usage: scripts/fuzz.sh [--execs N] [--target T]... [--engine loop|afl|both]
#                        [--parallel] [--afl-max-seconds S] [--seed S] [--out DIR]
#   --execs N    inputs per decoder and engine (default 10000000)
#   --target T   one target (repeatable; default all: request reply frame handshake
#                hosts record manifest)
#   --engine E   loop, afl or both (default both)
#   --parallel   run the two engines side by side (one core each)
#   --afl-max-seconds S  also stop AFL on a target after S seconds (afl-fuzz -V)
#   --out DIR    results (default /tmp/gkfs-fuzz-<time>): loop/report.json,
#                loop/crashes/, afl/<target>/out/default/{fuzzer_stats,crashes,hangs}
set -euo pipefail
cd "$(dirname "$0")/.."

execs=10000000
engine=both
seed=1
parallel=0
afl_limit=()
out="/tmp/gkfs-fuzz-$(date +%Y%m%d-%H%M%S)"
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --execs) execs="$2"; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    --engine) engine="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --parallel) parallel=1; shift ;;
    --afl-max-seconds) afl_limit=(-V "$2"); shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$engine" in loop|afl|both) ;; *) echo "fuzz.sh: --engine loop|afl|both" >&2; exit 2 ;; esac

# Own target dirs: the fuzz builds use other flags (overflow checks; AFL's
# instrumentation) and must not replace the workspace's artifacts.
base="${CARGO_TARGET_DIR:-$PWD/target}"
loop_dir="$base/fuzz-loop"
afl_dir="$base/fuzz-afl"
mkdir -p "$out"

echo "fuzz.sh: building the mutation loop (overflow checks on) in $loop_dir"
CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true \
  cargo build --release -p gkfs-fuzz --target-dir "$loop_dir"
fz="$loop_dir/release/gkfs-fuzz"
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("$fz" list | awk '{print $1}')
fi

afl_fuzz=""
if [ "$engine" != loop ]; then
  if ! cargo afl --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-afl (builds AFL++ from the crate's bundled source)"
    cargo install cargo-afl --version 0.18.2 --locked
  fi
  echo "fuzz.sh: building the AFL++ harness in $afl_dir"
  (cd fuzz/afl && CARGO_TARGET_DIR="$afl_dir" cargo afl build --release)
  # afl-fuzz itself, as cargo-afl built it. `cargo afl fuzz` would add -c0 (CmpLog
  # through the same binary), which halves the exec rate; seeds already hold every
  # magic value, so the plain coverage-guided mode is used.
  afl_fuzz=$(find "${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs" -path '*/afl/bin/afl-fuzz' -type f | head -1)
  [ -x "$afl_fuzz" ] || { echo "fuzz.sh: afl-fuzz not found under afl.rs" >&2; exit 1; }
fi

run_loop() {
  local args=()
  for t in "${targets[@]}"; do args+=(--target "$t"); done
  "$fz" run --execs "$execs" --seed "$seed" --out "$out/loop" "${args[@]}" \
    >"$out/loop.txt" 2>"$out/loop.log"
}

stat_of() { awk -F' *: *' -v k="$2" '$1 == k {print $2}' "$1"; }

run_afl() {
  local status=0
  printf '%s\n' "target execs seconds execs/s corpus edges coverage crashes hangs" >"$out/afl.tsv"
  for t in "${targets[@]}"; do
    local dir="$out/afl/$t"
    mkdir -p "$dir"
    "$fz" seeds --target "$t" --out "$dir/seeds" --count 64 >/dev/null
    AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
      GKFS_FUZZ_TARGET="$t" \
      "$afl_fuzz" -i "$dir/seeds" -o "$dir/out" -t 1000 -m 4096 -E "$execs" "${afl_limit[@]}" \
      -- "$afl_dir/release/gkfs-fuzz-afl" >"$dir/afl.log" 2>&1 || {
        echo "fuzz.sh: afl-fuzz failed on $t (see $dir/afl.log)" >&2; status=1; continue; }
    local s="$dir/out/default/fuzzer_stats"
    printf '%s %s %s %s %s %s/%s %s %s %s\n' "$t" "$(stat_of "$s" execs_done)" \
      "$(stat_of "$s" run_time)" "$(stat_of "$s" execs_per_sec)" "$(stat_of "$s" corpus_count)" \
      "$(stat_of "$s" edges_found)" "$(stat_of "$s" total_edges)" "$(stat_of "$s" bitmap_cvg)" \
      "$(stat_of "$s" saved_crashes)" "$(stat_of "$s" saved_hangs)" >>"$out/afl.tsv"
    # What each saved crash or hang is, replayed through the same target.
    for f in "$dir"/out/default/crashes/id:* "$dir"/out/default/hangs/id:*; do
      [ -e "$f" ] || continue
      status=1
      timeout 5 "$fz" repro --target "$t" "$f" || echo "$f: still failing or hanging on replay"
    done
  done
  return $status
}

status=0
if [ "$parallel" = 1 ] && [ "$engine" = both ]; then
  echo "fuzz.sh: $execs inputs per decoder, loop and AFL++ side by side; results in $out"
  run_loop & lp=$!
  run_afl || status=1
  wait $lp || status=1
else
  echo "fuzz.sh: $execs inputs per decoder ($engine); results in $out"
  if [ "$engine" != afl ]; then run_loop || status=1; fi
  if [ "$engine" != loop ]; then run_afl || status=1; fi
fi

if [ "$engine" != afl ]; then
  echo
  echo "== structured mutation loop (not coverage-guided)"
  cat "$out/loop.txt"
fi
if [ "$engine" != loop ]; then
  echo
  echo "== AFL++ (coverage-guided; crashes and hangs are AFL's saved, distinct ones)"
  column -t "$out/afl.tsv"
fi
if [ "$status" = 0 ]; then
  echo; echo "fuzz.sh: no crash, hang or round-trip failure"
else
  echo; echo "fuzz.sh: FAILURES found (see above and $out)" >&2
fi
exit $status
