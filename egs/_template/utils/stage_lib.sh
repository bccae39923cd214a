# Helpers shared by recipes: timestamped logging, stage gating with .done sentinels.
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [$(basename "$0")] $*" >&2; }

# should_run N  -> true when stage N is inside [stage, stop_stage]
should_run() { [ "$1" -ge "$stage" ] && [ "$1" -le "$stop_stage" ]; }

# done_or_run SENTINEL -> false (skip) when SENTINEL exists and --overwrite false.
# Re-running a finished stage needs --overwrite true, so finished outputs are never replaced silently.
need_run() {
  local sentinel=$1
  if [ -f "$sentinel" ] && [ "${overwrite:-false}" != true ]; then
    log "skip: $(dirname "$sentinel") is done (pass --overwrite true to redo)"
    return 1
  fi
  rm -f "$sentinel"
  return 0
}
