#!/usr/bin/env bash
# CI's full run (.ci/run), N times in a row, each in a fresh clone, beside a CPU hog
# (`python -c 'while 1: pass'`): the issue's "passes 5 times in a row on a loaded machine".
#
#   bash tools/repeat_suite.sh            # 5 runs of HEAD
#   bash tools/repeat_suite.sh 3 main     # 3 runs of the branch main
#
# Each clone lies in a scratch folder with a link to this checkout's ../shared beside it, as
# CI has it. Prints one line per run (passed / failed / skipped counts, rc, seconds) and a
# summary (rc 0 when every run passed); each run's whole log is kept in the scratch folder, whose path it prints. The hog
# is ended when the script ends, however it ends (Ctrl-C and failures included).
set -uo pipefail

runs="${1:-5}"
ref="${2:-HEAD}"
command="${REPEAT_SUITE_COMMAND:-bash .ci/run}"  # run in each clone; another only to try this script out
repo="$(cd "$(dirname "$0")/.." && pwd)"
shared="$(cd "$repo/.." && pwd)/shared"
commit="$(git -C "$repo" rev-parse --verify "$ref^{commit}")" || { echo "repeat_suite: no commit $ref" >&2; exit 2; }
scratch="$(mktemp -d "${TMPDIR:-/tmp}/howold-repeat-XXXXXX")"
[ -d "$shared" ] && ln -s "$shared" "$scratch/shared" || echo "repeat_suite: $shared is absent: the tests that need it will skip" >&2

python3 -c 'while 1: pass' &
hog=$!
child=
trap 'kill "$hog" 2>/dev/null; wait "$hog" 2>/dev/null' EXIT
trap '[ -n "$child" ] && kill -- -"$child" 2>/dev/null; exit 130' INT TERM

echo "repeat_suite: $runs run(s) of ${commit:0:12} beside a CPU hog (pid $hog); logs in $scratch"
green=0
for i in $(seq 1 "$runs"); do
    clone="$scratch/run$i"
    git clone -q --no-local "$repo" "$clone" && git -C "$clone" checkout -q "$commit" || { echo "run $i: clone failed"; continue; }
    log="$scratch/run$i.log"
    started=$(date +%s)
    (cd "$clone" && exec setsid bash -c "$command") > "$log" 2>&1 &  # its own process group, to end it whole
    child=$!
    wait "$child"
    rc=$?
    child=
    seconds=$(( $(date +%s) - started ))
    summary="$(grep -E '^=*\s*[0-9]+ (passed|failed)|^[0-9]+ (passed|failed)' "$log" | tail -1)"
    count() { echo "$summary" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0; }
    echo "run $i: $(count passed) passed, $(count failed) failed, $(count error) errors, $(count skipped) skipped; rc $rc; ${seconds} s"
    [ "$rc" -eq 0 ] && green=$((green + 1))
    rm -rf "$clone"  # the log stays; the clone (with its venv) is large
done
echo "repeat_suite: $green of $runs run(s) passed (rc 0); logs in $scratch"
[ "$green" -eq "$runs" ]
