#!/usr/bin/env bash
# The test command: builds the workspace in release mode (tests do real I/O) and runs
# every unit and integration test. Afterwards it says how many tests were skipped (and
# why), and fails if any process crashed hard enough to leave a backtrace file (*.btr,
# written by libfabric's signal handler into the crashing process's working directory).
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds the binaries and the preload library (integration tests run them).
cargo build --release --workspace

skips=$(mktemp /tmp/gkfs-skips.XXXXXX)
stamp=$(mktemp /tmp/gkfs-test-start.XXXXXX)
trap 'rm -f "$skips" "$stamp"' EXIT
status=0
GKFS_SKIP_LOG="$skips" cargo test --release --workspace "$@" || status=$?

if [ -s "$skips" ]; then
  echo "test.sh: $(wc -l <"$skips") test(s) SKIPPED (not passed):"
  sed 's/^/  /' "$skips"
else
  echo "test.sh: no test skipped"
fi
crashes=$(find . /tmp /var/tmp -xdev -name '*.btr' -newer "$stamp" 2>/dev/null || true)
if [ -n "$crashes" ]; then
  echo "test.sh: a process crashed during the tests (backtrace files):" >&2
  for f in $crashes; do echo "== $f" >&2; head -20 "$f" >&2; done
  status=1
fi
exit $status
