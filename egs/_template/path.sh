# Sourced by every recipe: puts the project's virtualenv and the shared utils first on PATH.
# Recipes live at egs/<corpus>/<asrN>/, so the project root is three levels up.
# Resolve the symlink recipes use (egs/<corpus>/<asrN>/path.sh -> ../../_template/path.sh).
ASR_ADAPT_ROOT="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)"
export ASR_ADAPT_ROOT
if [ -f "$ASR_ADAPT_ROOT/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  . "$ASR_ADAPT_ROOT/.venv/bin/activate"
elif ! command -v asr-adapt >/dev/null 2>&1; then
  echo "asr-adapt is not installed: run 'make setup' in $ASR_ADAPT_ROOT" >&2
  return 1 2>/dev/null || exit 1
fi
export PATH="$ASR_ADAPT_ROOT/egs/_template/utils:$PATH"
export PYTHONUNBUFFERED=1
export LC_ALL=C.UTF-8
