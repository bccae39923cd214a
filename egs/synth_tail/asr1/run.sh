#!/usr/bin/env bash
# Whisper + per-locale adapters on synthetic tail locales, end to end.
#
#   stages  0-9   synthesise head and tail locales (+ unlabelled audio)
#          10-19  train per-locale adapters (LDA; S2-LoRA and LoRA unless --quick)
#          20-29  noisy-student generations: pseudo-label unlabelled audio, retrain
#          30-39  checkpoint-wise merge (each locale from its best checkpoint)
#          40-49  decode test (zero-shot and adapted), score per locale, report
#
# Usage: ./run.sh [--quick true] [--stage N] [--stop-stage N] [--overwrite true]
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh
. ./cmd.sh
. utils/stage_lib.sh

stage=0
stop_stage=100
quick=false
overwrite=false
seed=0
model=whisper-base
head_locales="en-US de-DE"
tail_locales="el-GR uk-UA ar-EG he-IL"
utts_per_locale=60
generations=1
adapters="lda s2lora lora"
max_steps=300
val_every=50
data=data
exp=exp
nj=2
help_message="Usage: $0 [options]   (stages: 0-9 data, 10-19 train, 20-29 pseudo-labels, 30-39 merge, 40-49 decode/score)"
. utils/parse_options.sh

if [ "$quick" = true ]; then
  # The README's `make demo`: few locales, few utterances, one generation, LDA only.
  tail_locales="el-GR uk-UA"
  head_locales="en-US"
  utts_per_locale=24
  adapters="lda"
  max_steps=60
  val_every=20
  data=data_quick
  exp=exp_quick
fi
all_locales="$head_locales $tail_locales"
tail_list="[$(echo $tail_locales | sed 's/ /, /g')]"
train_conf="--config conf/train.yaml --trainer.max_steps $max_steps --trainer.val_check_interval $val_every \
  --model.init_args.locales $tail_list --model.init_args.model $model \
  --data.locales $tail_list --data.dev [$data/dev]"
mkdir -p "$exp"
log "quick=$quick tail=[$tail_locales] head=[$head_locales] adapters=[$adapters] steps=$max_steps"

if should_run 0 && need_run "$data/.synth.done"; then
  log "stage 0: synthesise $utts_per_locale utterances per locale"
  asr-adapt synth "$data" --locales $all_locales --utts-per-locale "$utts_per_locale" --seed "$seed" --jobs "$nj"
  for split in train dev test unlabelled; do asr-adapt data validate "$data/$split"; done
  touch "$data/.synth.done"
fi

train_adapter() {  # train_adapter NAME ADAPTER [extra LightningCLI args...]
  local name=$1 adapter=$2; shift 2
  if need_run "$exp/$name/.done"; then
    log "train $name ($adapter)"
    local resume=""
    [ -f "$exp/$name/checkpoints/last.ckpt" ] && resume="--resume"
    asr-adapt train fit $train_conf --config "../../../recipes/whisper/$adapter.yaml" \
      --model.init_args.locales "$tail_list" --trainer.default_root_dir "$exp/$name" $resume "$@"
    touch "$exp/$name/.done"
  fi
}

if should_run 10; then
  for a in $adapters; do
    train_adapter "${a}_gen0" "$a" --data.train "[$data/train]"
  done
fi

merge() {  # merge EXP OUT [policy]
  if need_run "$2/.done"; then
    asr-adapt merge "$1" -o "$2" --policy "${3:-best}" --overwrite
    touch "$2/.done"
  fi
}

if should_run 20; then
  for g in $(seq 1 "$generations"); do
    prev=$((g - 1))
    teacher="$exp/lda_gen${prev}"
    merge "$teacher" "$teacher/bundle"
    if need_run "$exp/pl_gen$g/.done"; then
      log "stage 20: generation $g pseudo-labels from $teacher/bundle"
      asr-adapt pseudo-label "$data/unlabelled" -o "$exp/pl_gen$g" --model "$model" \
        --adapters "$teacher/bundle" --keep-top-percent 80
      touch "$exp/pl_gen$g/.done"
    fi
    # Student: labelled + pseudo-labelled data with input noise, starting from the teacher's adapters.
    train_adapter "lda_gen$g" lda --data.train "[$data/train, $exp/pl_gen$g/data]" \
      --model.init_args.init_adapters "$teacher/bundle" \
      --model.init_args.augment "{spec_augment: true}" --data.augment "{noise_prob: 0.5}"
  done
fi

final="lda_gen$generations"
if should_run 30; then
  log "stage 30: checkpoint-wise merge of $final"
  merge "$exp/$final" "$exp/$final/merged" best
fi

if should_run 40; then
  for sys in zeroshot adapted; do
    out="$exp/decode_${sys}_test"
    if need_run "$out/.done"; then
      extra=""
      [ $sys = adapted ] && extra="--adapters $exp/$final/merged"
      log "stage 40: decode test ($sys)"
      asr-adapt decode "$data/test" -o "$out" --model "$model" --batch-size 8 $extra
      touch "$out/.done"
    fi
  done
fi

if should_run 41; then
  log "stage 41: score per locale"
  asr-adapt score "$data/test" "$exp/decode_zeroshot_test" -o "$exp/score" --name zeroshot >/dev/null
  asr-adapt score "$data/test" "$exp/decode_adapted_test" -o "$exp/score" --name adapted \
    --baseline "$exp/decode_zeroshot_test" > "$exp/score/adapted.txt"
  cat "$exp/score/adapted.txt"
fi

if should_run 42; then
  log "stage 42: comparison report"
  asr-adapt report "$exp/score" -o "$exp/report"
  log "report: $exp/report (Markdown, CSV, PNG)"
  cat "$exp/report/"*.md
fi
log "done"
