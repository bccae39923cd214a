#!/usr/bin/env bash
# Common Voice release -> Kaldi data dirs DATA/{train,dev,test,unlabelled}, each validated.
# Usage: local/data.sh CV_ROOT DATA "LOCALES" JOBS
#   CV_ROOT: the unpacked cv-corpus-<version> folder (one folder per locale: clips/ + *.tsv)
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 CV_ROOT DATA 'LOCALES' JOBS" >&2; exit 1; }
src=$1 data=$2 locales=$3 jobs=$4
# The caller's .done sentinel decides whether to redo this, so existing dirs are replaced.
# Empty LOCALES: every locale in the release.
loc_opt=()
# shellcheck disable=SC2206
[ -n "$locales" ] && loc_opt=(--locales $locales)
asr-adapt prepare commonvoice "$src" "$data" "${loc_opt[@]}" --jobs "$jobs" --overwrite
for split in train dev test unlabelled; do
  if [ -f "$data/$split/wav.scp" ]; then
    asr-adapt data validate "$data/$split"
  elif [ "$split" != unlabelled ]; then
    echo "$0: no usable $split utterances; see $data/prepare.json" >&2; exit 1
  fi
done
