#!/usr/bin/env bash
# run.pl [JOB=1:N] LOG command...  — runs the command N times in parallel locally,
# substituting JOB in the log path and arguments; fails if any job failed (Kaldi semantics).
set -uo pipefail
jobs_spec=""
if [[ "${1:-}" =~ ^([A-Za-z_]+)=([0-9]+):([0-9]+)$ ]]; then
  var=${BASH_REMATCH[1]}; first=${BASH_REMATCH[2]}; last=${BASH_REMATCH[3]}; jobs_spec=1; shift
else
  var=JOB; first=1; last=1
fi
[ $# -lt 2 ] && { echo "usage: run.pl [JOB=1:N] LOG command..." >&2; exit 1; }
log=$1; shift
pids=()
for ((j = first; j <= last; j++)); do
  jlog=${log//$var/$j}
  mkdir -p "$(dirname "$jlog")"
  args=()
  for a in "$@"; do args+=("${a//$var/$j}"); done
  (
    echo "# ${args[*]}"; echo "# started at $(date)"
    "${args[@]}"; rc=$?
    echo "# ended at $(date) with status $rc"; exit $rc
  ) >"$jlog" 2>&1 &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
if [ $failed -gt 0 ]; then
  echo "run.pl: $failed of $((last - first + 1)) jobs failed; see $log" >&2
  [ -z "$jobs_spec" ] && tail -n 20 "$log" >&2
  exit 1
fi
