#!/usr/bin/env bash
# Whisper + per-locale adapters on Mozilla Common Voice tail locales.
#
#   stages  0-9   prepare Kaldi data dirs from a downloaded release (+ unlabelled audio:
#                 validated.tsv clips in none of train/dev/test), validate them
#          10-19  train per-locale adapters
#          20-29  noisy-student generations: pseudo-label data/unlabelled, retrain
#          30-39  checkpoint-wise merge (each locale from its best checkpoint)
#          40-49  decode test (zero-shot and adapted), score per locale, report
#
# Usage: ./run.sh --cv-root /path/to/cv-corpus-17.0-2024-03-15 [--locales "el pt-BR"]
#                 [--stage N] [--stop-stage N] [--overwrite true]
# Locales are Common Voice folder names, which are BCP-47 tags already (el, pt-BR, sv-SE).
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh
. utils/stage_lib.sh

stage=0
stop_stage=100
overwrite=false
cv_root=
locales="el pt-BR"
model=whisper-base
adapters="lda"
generations=1
max_steps=2000
val_every=200
data=data
exp=exp
nj=4
merge_policy=best-significant  # per-locale checkpoint choice: best-significant | best | best-macro | last | avg-top-k
lda_budget=""           # LDA parameters per locale as a fraction of the base, e.g. 0.015 (empty: 0.4 %)
help_message="Usage: $0 --cv-root DIR [options]   (stages: 0-9 data, 10-19 train, 20-29 pseudo-labels, 30-39 merge, 40-49 decode/score)"
. utils/parse_options.sh

mkdir -p "$exp"
log "cv_root=$cv_root locales=[$locales] adapters=[$adapters] generations=$generations steps=$max_steps"

if should_run 0 && need_run "$data/.prepare.done"; then
  [ -n "$cv_root" ] || { log "error: --cv-root is required for stage 0"; exit 1; }
  log "stage 0: prepare Common Voice ($locales) from $cv_root"
  local/data.sh "$cv_root" "$data" "$locales" "$nj"
  touch "$data/.prepare.done"
fi

if [ "$stop_stage" -ge 10 ]; then
  # Adapters are keyed by the tags found in the prepared data (utt2lang), not by what was typed.
  [ -f "$data/train/utt2lang" ] || { log "error: no $data/train; run stage 0 first"; exit 1; }
  tags=$(cut -d' ' -f2 "$data/train/utt2lang" | sort -u | tr '\n' ' ')
  # No spaces: train_conf is word-split, and YAML reads [el,pt-BR] as a list of two.
  tail_list="[$(echo $tags | sed 's/ /,/g')]"
  train_conf="--config conf/train.yaml --trainer.max_steps $max_steps --trainer.val_check_interval $val_every \
    --model.init_args.locales $tail_list --model.init_args.model $model \
    --data.locales $tail_list --data.dev [$data/dev]"

  . utils/adapt_stages.sh
fi
log "done"
