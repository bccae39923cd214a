#!/usr/bin/env bash
# slurm.pl [JOB=1:N] LOG command...  — same contract as run.pl, as a Slurm array job.
# Extra sbatch options come from $ASR_ADAPT_SLURM_OPTS (e.g. "-p gpu --gres=gpu:1").
set -euo pipefail
var=JOB; first=1; last=1
if [[ "${1:-}" =~ ^([A-Za-z_]+)=([0-9]+):([0-9]+)$ ]]; then
  var=${BASH_REMATCH[1]}; first=${BASH_REMATCH[2]}; last=${BASH_REMATCH[3]}; shift
fi
log=$1; shift
command -v sbatch >/dev/null || { echo "slurm.pl: sbatch not found; use ASR_ADAPT_RUNNER=local" >&2; exit 1; }
mkdir -p "$(dirname "$log")"
cmd=$(printf '%q ' "$@")
cmd=${cmd//$var/\$SLURM_ARRAY_TASK_ID}
# shellcheck disable=SC2086
sbatch --wait --array="${first}-${last}" ${ASR_ADAPT_SLURM_OPTS:-} \
  --output="${log//$var/%a}" --job-name="asr-adapt" --wrap="$cmd"
