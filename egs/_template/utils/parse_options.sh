#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by recipes after their defaults are set:
#   --foo-bar VALUE   sets the existing shell variable foo_bar (dashes become underscores)
#   --config FILE     sources FILE (KEY=VALUE lines) first
#   --help|-h         prints $help_message (if set) and the current option values
# An option whose variable was not defined before sourcing is an error, so typos fail fast.

__po_print_help() {
  [ -n "${help_message:-}" ] && printf '%s\n' "$help_message" >&2
  echo "options (current values):" >&2
  for __v in ${__po_known:-}; do printf '  --%s %q\n' "${__v//_/-}" "${!__v}" >&2; done
}

while true; do
  [ $# -eq 0 ] && break
  case "$1" in
    --help|-h)
      __po_print_help; exit 0 ;;
    --config)
      [ $# -lt 2 ] && { echo "$0: --config needs a file" >&2; exit 1; }
      # shellcheck disable=SC1090
      . "$2" || { echo "$0: cannot source config $2" >&2; exit 1; }
      shift 2 ;;
    --*=*)
      echo "$0: use '--opt value', not '--opt=value' ($1)" >&2; exit 1 ;;
    --*)
      __po_name=$(echo "${1#--}" | sed 's/-/_/g')
      if [ -z "${!__po_name+x}" ]; then
        echo "$0: unknown option $1 (no variable '$__po_name' in this script; see --help)" >&2
        exit 1
      fi
      [ $# -lt 2 ] && { echo "$0: option $1 needs a value" >&2; exit 1; }
      __po_old="${!__po_name}"
      printf -v "$__po_name" '%s' "$2"
      # Boolean options must stay booleans, as in Kaldi.
      if [ "$__po_old" = "true" ] || [ "$__po_old" = "false" ]; then
        if [ "$2" != "true" ] && [ "$2" != "false" ]; then
          echo "$0: option $1 expects true or false, got '$2'" >&2; exit 1
        fi
      fi
      shift 2 ;;
    *) break ;;
  esac
done
true
