#!/usr/bin/env bash
# A rank that fails mid-step must end the whole job quickly, saying which rank and why:
#   failure_test.sh MPIEXEC_COMMAND... -- FAILING_RANK_BINARY
# Runs the job under `timeout` (a hang fails the test instead of stalling ctest) and checks that
# it exits non-zero, within 20 s, with rank 1's message.
set -uo pipefail
launcher=()
while [[ $# -gt 0 && $1 != -- ]]; do launcher+=("$1"); shift; done
shift
binary=$1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s%N)
timeout 60 "${launcher[@]}" "$binary" >"$log" 2>&1
status=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
elapsed=$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))
cat "$log"
echo "failure_test: exit status $status after ${elapsed} s"
fail() { echo "failure_test: FAILED: $*" >&2; exit 1; }
((status != 0)) || fail "the job exited 0: the failing rank did not end it"
((status != 124)) || fail "the job hung (killed by timeout after 60 s)"
((elapsed_ms < 20000)) || fail "the job took ${elapsed} s to end (limit 20 s)"
grep -q "cairn: rank 1 of [0-9]* failed: injected failure in step 4" "$log" ||
  fail "the log lacks rank 1's message"
echo "failure_test: passed"
