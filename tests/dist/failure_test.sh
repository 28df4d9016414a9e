#!/usr/bin/env bash
# A data-parallel job that must end quickly, on every rank, with a message:
#   failure_test.sh [--expect REGEX]... [--within SECONDS] MPIEXEC_COMMAND... -- BINARY [ARGS...]
# Runs the job under `timeout` (a hang fails the test instead of stalling ctest) and checks that
# it exits non-zero, within SECONDS (default 20), with output matching every --expect (extended
# regular expressions; by default rank 1's injected failure of failing_rank.cpp).
set -uo pipefail
expects=()
within=20
while [[ $# -gt 0 ]]; do
  case $1 in
    --expect) expects+=("$2"); shift 2 ;;
    --within) within=$2; shift 2 ;;
    *) break ;;
  esac
done
((${#expects[@]} > 0)) || expects=("cairn: rank 1 of [0-9]* failed: injected failure in step 4")
launcher=()
while [[ $# -gt 0 && $1 != -- ]]; do launcher+=("$1"); shift; done
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s%N)
timeout 60 "${launcher[@]}" "$@" >"$log" 2>&1
status=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
elapsed=$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))
cat "$log"
echo "failure_test: exit status $status after ${elapsed} s"
fail() { echo "failure_test: FAILED: $*" >&2; exit 1; }
((status != 0)) || fail "the job exited 0: nothing ended it"
((status != 124)) || fail "the job hung (killed by timeout after 60 s)"
((elapsed_ms < within * 1000)) || fail "the job took ${elapsed} s to end (limit ${within} s)"
for expect in "${expects[@]}"; do
  grep -qE -- "$expect" "$log" || fail "the log lacks: $expect"
done
echo "failure_test: passed"
