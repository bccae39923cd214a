#!/usr/bin/env bash
# FLEURS release -> Kaldi data dirs DATA/{train,dev,test}, each validated.
# Usage: local/data.sh FLEURS_ROOT DATA "LOCALES" TEXT JOBS
#   FLEURS_ROOT: the dataset's data/ folder (one folder per code, e.g. el_gr/, with
#   audio/{train,dev,test}/*.wav unpacked from audio/*.tar.gz, and {train,dev,test}.tsv)
#   TEXT: raw (cased, punctuated transcription) or normalized
set -euo pipefail
[ $# -eq 5 ] || { echo "usage: $0 FLEURS_ROOT DATA 'LOCALES' TEXT JOBS" >&2; exit 1; }
src=$1 data=$2 locales=$3 text=$4 jobs=$5
# The caller's .done sentinel decides whether to redo this, so existing dirs are replaced.
# Empty LOCALES: every locale in the release.
loc_opt=()
# shellcheck disable=SC2206
[ -n "$locales" ] && loc_opt=(--locales $locales)
asr-adapt prepare fleurs "$src" "$data" "${loc_opt[@]}" --text "$text" --jobs "$jobs" --overwrite
for split in train dev test; do
  [ -f "$data/$split/wav.scp" ] || { echo "$0: no usable $split utterances; see $data/prepare.json" >&2; exit 1; }
  asr-adapt data validate "$data/$split"
done
