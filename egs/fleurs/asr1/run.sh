#!/usr/bin/env bash
# Whisper + per-locale adapters on Google FLEURS locales.
#
#   stages  0-9   prepare Kaldi data dirs from a downloaded release, validate them
#          10-19  train per-locale adapters
#          20-29  noisy-student generations (FLEURS has no unlabelled audio: pass
#                 --unlabelled DIR, e.g. a Common Voice recipe's data/unlabelled, and
#                 --generations 1)
#          30-39  checkpoint-wise merge (each locale from its best checkpoint)
#          40-49  decode test (zero-shot and adapted), score per locale, report
#
# Usage: ./run.sh --fleurs-root /path/to/fleurs/data [--locales "el_gr pt_br"]
#                 [--text raw|normalized] [--stage N] [--stop-stage N] [--overwrite true]
# Locales are FLEURS codes or BCP-47 tags (el_gr or el-GR); data and adapters use the tags.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh
. utils/stage_lib.sh

stage=0
stop_stage=100
overwrite=false
fleurs_root=
locales="el_gr pt_br"
text=raw
model=whisper-base
adapters="lda"
generations=0
unlabelled=
max_steps=2000
val_every=200
data=data
exp=exp
nj=4
merge_policy=best-significant  # per-locale checkpoint choice: best-significant | best | best-macro | last | avg-top-k
lda_budget=""           # LDA parameters per locale as a fraction of the base, e.g. 0.015 (empty: 0.4 %)
help_message="Usage: $0 --fleurs-root DIR [options]   (stages: 0-9 data, 10-19 train, 20-29 pseudo-labels, 30-39 merge, 40-49 decode/score)"
. utils/parse_options.sh

mkdir -p "$exp"
log "fleurs_root=$fleurs_root locales=[$locales] text=$text adapters=[$adapters] generations=$generations"

if should_run 0 && need_run "$data/.prepare.done"; then
  [ -n "$fleurs_root" ] || { log "error: --fleurs-root is required for stage 0"; exit 1; }
  log "stage 0: prepare FLEURS ($locales, $text transcripts) from $fleurs_root"
  local/data.sh "$fleurs_root" "$data" "$locales" "$text" "$nj"
  touch "$data/.prepare.done"
fi

if [ "$stop_stage" -ge 10 ]; then
  # Adapters are keyed by the tags found in the prepared data (utt2lang): el_gr -> el-GR.
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
