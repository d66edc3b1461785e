#!/usr/bin/env bash
# The demo job: what an unmodified job script does on gkfs. `gkfs-run run` starts the
# daemons, runs this under the preload library, and stops them. Input: $1 (a source
# tree on the normal file system); results come back to $2.
set -euo pipefail
src=$1 out=$2
M=${GKFS_MOUNTDIR:-/tmp/gkfs}
echo "== copying $src into gkfs ($M) with cp -r"
cp -r "$src" "$M/input"
echo "== the job works on gkfs: ls, find, sort, md5sum, tar, python"
ls -l "$M/input" | sed -n 1,5p
find "$M/input" -type f | wc -l | sed 's/^/files: /'
cat "$M"/input/src/*.rs | sort | uniq -c | sort -rn | sed -n 1,3p > "$M/top-lines.txt"
( cd "$M/input" && find . -type f -print0 | sort -z | xargs -0 md5sum ) > "$M/checksums.txt"
tar czf "$M/input.tgz" -C "$M" input
python3 -c "import os; print('python sees', len(os.listdir('$M')), 'entries in', '$M')"
echo "== copying the results out"
mkdir -p "$out"
cp "$M/top-lines.txt" "$M/checksums.txt" "$M/input.tgz" "$out/"
mkdir "$out/roundtrip" && tar xzf "$out/input.tgz" -C "$out/roundtrip"
diff -r "$src" "$out/roundtrip/input" && echo "== round trip identical: diff -r $src $out/roundtrip/input"
