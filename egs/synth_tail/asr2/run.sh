#!/usr/bin/env bash
# Streaming cascaded Conformer-transducer foundation model + per-locale LDA adapters on
# synthetic speech, end to end (the LDA paper's setting, scaled to a CPU).
#
#   stages  0-9   synthesise head and tail locales, train the multilingual tokenizer,
#                 initialise the foundation model directory (preset + tokenizer + CMVN)
#          10-19  pretrain the foundation on head locales (every parameter, dynamic chunks),
#                 export it to a model directory, train LDA adapters on tail locales on the
#                 frozen foundation (both encoder passes)
#          20-29  noisy-student generations: pseudo-label unlabelled tail audio, retrain
#          30-39  checkpoint-wise merge (each locale's adapter from its best checkpoint)
#          40-49  decode test zero-shot vs adapted, offline (second pass) and streaming
#                 (first pass, 320 ms chunks), score per locale (41), per-token test loss
#                 streaming vs full (42); stream-eval at 160/320/640 ms (45)
#
# Usage: ./run.sh [--quick true] [--stage N] [--stop-stage N] [--overwrite true]
#                 [--max-time DD:HH:MM:SS] [--teacher-model whisper-base --teacher-adapters DIR]
#                 [--trainer-conf ../../../recipes/common/trainer_gpu.yaml] [--pretrain-args "..."]
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
preset=small
head_locales="en-US de-DE fr-FR es-ES ru-RU pl-PL"   # Latin + Cyrillic scripts
tail_locales="el-GR uk-UA"
utts_per_locale=30      # dev/test/unlabelled utterances per locale
train_utts=300          # train utterances per head locale
tail_fraction=0.25      # tail locales' train size: train_utts x tail_fraction
tokenizer_kind=sentencepiece
vocab_size=500
pretrain_steps=2000     # upper bound; --max-time usually ends pretraining first
pretrain_warmup=60
max_time=""             # e.g. 00:00:35:00: Lightning stops (after a last validation) at this wall time
pretrain_val_every=100
val_batches=1.0         # fraction (or count) of dev batches per validation
lda_steps=300
lda_val_every=50
generations=1
batch_seconds=40
teacher_model=""        # e.g. whisper-base: noisy-student teacher instead of the foundation + LDA
teacher_adapters=""     # adapter bundle for --teacher-model
stream_chunks=160,320,640
data=data
exp=exp
nj=2
trainer_conf=../../../recipes/common/trainer_cpu.yaml   # trainer_gpu.yaml: one GPU, bf16
pretrain_args=""        # extra LightningCLI arguments for stage 10, e.g. "--data.num_workers 8"
help_message="Usage: $0 [options]   (stages: 0-9 data/tokenizer/init, 10-19 pretrain/export/LDA, 20-29 pseudo-labels, 30-39 merge, 40-49 decode/score)"
. utils/parse_options.sh

if [ "$quick" = true ]; then
  # A few minutes on a laptop: tiny model, two head locales, a handful of steps.
  preset=tiny
  head_locales="en-US ru-RU"
  utts_per_locale=6
  train_utts=24
  tail_fraction=0.5
  tokenizer_kind=char     # too little text for a 500-piece sentencepiece model
  pretrain_steps=30
  pretrain_warmup=5
  pretrain_val_every=15
  lda_steps=20
  lda_val_every=10
  batch_seconds=20
  stream_chunks=160,320
  data=data_quick
  exp=exp_quick
fi
to_list() { echo "[$(echo "$*" | sed 's/ /,/g')]"; }
all_locales="$head_locales $tail_locales"
head_list=$(to_list $head_locales)
tail_list=$(to_list $tail_locales)
foundation="$exp/foundation"
mkdir -p "$exp"
log "quick=$quick preset=$preset head=[$head_locales] tail=[$tail_locales]"

# ----------------------------------------------------------------------------- data
if should_run 0 && need_run "$data/.synth.done"; then
  log "stage 0: synthesise $utts_per_locale dev/test/unlabelled and $train_utts train utterances per locale"
  asr-adapt synth "$data" --locales $all_locales --utts-per-locale "$utts_per_locale" \
    --train-utts-per-locale "$train_utts" --tail-fraction "$tail_fraction" --seed "$seed" --jobs "$nj" \
    --overwrite
  touch "$data/.synth.done"
fi

if should_run 1 && need_run "$exp/tokenizer/.done"; then
  # Head and tail training text: every script the adapters will ever need is in the vocabulary.
  log "stage 1: multilingual $tokenizer_kind tokenizer"
  asr-adapt tokenizer train --text "$data/train/text" --kind "$tokenizer_kind" --vocab-size "$vocab_size" \
    -o "$exp/tokenizer" --overwrite
  touch "$exp/tokenizer/.done"
fi

if should_run 2 && need_run "$exp/foundation_init/.done"; then
  log "stage 2: initialise the $preset foundation (random weights, CMVN from head-locale train audio)"
  asr-adapt init-model --backbone transducer --preset "$preset" --tokenizer "$exp/tokenizer" \
    --cmvn-data "$data/train" --cmvn-locales $head_locales --seed "$seed" -o "$exp/foundation_init" --overwrite
  touch "$exp/foundation_init/.done"
fi

# ----------------------------------------------------------------------------- training
if should_run 10 && need_run "$exp/pretrain/.done"; then
  log "stage 10: pretrain the foundation on head locales (all parameters, dynamic chunk training)"
  resume=""
  [ -f "$exp/pretrain/checkpoints/last.ckpt" ] && resume="--resume"
  extra=""
  [ -n "$max_time" ] && extra="--trainer.max_time $max_time"
  # shellcheck disable=SC2086
  asr-adapt train fit --config "$trainer_conf" \
    --config ../../../recipes/transducer/pretrain.yaml \
    --model.init_args.model "$exp/foundation_init" --model.init_args.locales "$head_list" \
    --model.init_args.lr_scheduler.init_args.total_steps "$pretrain_steps" \
    --model.init_args.lr_scheduler.init_args.warmup_steps "$pretrain_warmup" \
    --data.train "[$data/train]" --data.dev "[$data/dev]" --data.locales "$head_list" \
    --data.max_batch_seconds "$batch_seconds" \
    --trainer.max_steps "$pretrain_steps" --trainer.val_check_interval "$pretrain_val_every" \
    --trainer.limit_val_batches "$val_batches" \
    --trainer.default_root_dir "$exp/pretrain" $extra $pretrain_args $resume
  touch "$exp/pretrain/.done"
fi

if should_run 11 && need_run "$foundation/.done"; then
  # The full-finetune checkpoint holds every trained weight; buffers (CMVN) come from the init dir.
  log "stage 11: export the best pretraining checkpoint (macro dev CER) to $foundation"
  asr-adapt init-model --backbone transducer --from-experiment "$exp/pretrain" --pick best \
    --init-dir "$exp/foundation_init" -o "$foundation" --overwrite
  touch "$foundation/.done"
fi

train_lda() {  # train_lda NAME [extra LightningCLI args...]
  local name=$1; shift
  if need_run "$exp/$name/.done"; then
    log "train $name (LDA on the frozen foundation, first_pass + second_pass)"
    local resume=""
    [ -f "$exp/$name/checkpoints/last.ckpt" ] && resume="--resume"
    asr-adapt train fit --config "$trainer_conf" \
      --config ../../../recipes/transducer/lda.yaml \
      --model.init_args.model "$foundation" --model.init_args.locales "$tail_list" \
      --model.init_args.lr_scheduler.init_args.total_steps "$lda_steps" \
      --data.dev "[$data/dev]" --data.locales "$tail_list" --data.max_batch_seconds "$batch_seconds" \
      --trainer.max_steps "$lda_steps" --trainer.val_check_interval "$lda_val_every" \
      --trainer.default_root_dir "$exp/$name" $resume "$@"
    touch "$exp/$name/.done"
  fi
}

merge() {  # merge EXP OUT [policy]
  if need_run "$2/.done"; then
    asr-adapt merge "$1" -o "$2" --policy "${3:-best}" --overwrite
    touch "$2/.done"
  fi
}

if should_run 12; then
  log "stage 12: LDA adapters for [$tail_locales]"
  train_lda lda_gen0 --data.train "[$data/train]"
fi

# ----------------------------------------------------------------------------- noisy student
if should_run 20; then
  for g in $(seq 1 "$generations"); do
    prev=$((g - 1))
    teacher="$exp/lda_gen${prev}"
    merge "$teacher" "$teacher/bundle"
    if need_run "$exp/pl_gen$g/.done"; then
      if [ -n "$teacher_model" ]; then
        log "stage 20: generation $g pseudo-labels from $teacher_model + ${teacher_adapters:-no adapters}"
        t_args="--backbone whisper --model $teacher_model"
        [ -n "$teacher_adapters" ] && t_args="$t_args --adapters $teacher_adapters"
      else
        # Teacher: the foundation's second (full-context) pass with the previous generation's LDA.
        log "stage 20: generation $g pseudo-labels from $foundation + $teacher/bundle (second pass)"
        t_args="--backbone transducer --model $foundation --adapters $teacher/bundle"
      fi
      # shellcheck disable=SC2086
      asr-adapt pseudo-label "$data/unlabelled" -o "$exp/pl_gen$g" $t_args --keep-top-percent 80
      touch "$exp/pl_gen$g/.done"
    fi
    # Student: labelled + pseudo-labelled data with input noise, starting from the teacher's adapters.
    train_lda "lda_gen$g" --data.train "[$data/train, $exp/pl_gen$g/data]" \
      --model.init_args.init_adapters "$teacher/bundle" \
      --model.init_args.feature_augment "{spec_augment: true}" --data.augment "{noise_prob: 0.5}"
  done
fi

final="lda_gen$generations"
if should_run 30; then
  log "stage 30: checkpoint-wise merge of $final"
  merge "$exp/$final" "$exp/$final/merged" best
fi

# ----------------------------------------------------------------------------- decode + score
if should_run 40; then
  # Offline = full attention + second pass; streaming = first pass, 320 ms chunks.
  for sys in zeroshot adapted; do
    extra=""
    [ $sys = adapted ] && extra="--adapters $exp/$final/merged"
    for mode in full streaming; do
      out="$exp/decode_${sys}_${mode}_test"
      if need_run "$out/.done"; then
        log "stage 40: decode test ($sys, $mode)"
        # shellcheck disable=SC2086
        python local/decode_transducer.py "$data/test" -o "$out" --model "$foundation" \
          --mode "$mode" --chunk-ms 320 $extra
        touch "$out/.done"
      fi
    done
  done
fi

if should_run 41; then
  log "stage 41: score per locale (CER and WER)"
  mkdir -p "$exp/score"
  for mode in full streaming; do
    asr-adapt score "$data/test" "$exp/decode_zeroshot_${mode}_test" -o "$exp/score" \
      --name "zeroshot-$mode" --no-plots > "$exp/score/zeroshot-$mode.txt"
    asr-adapt score "$data/test" "$exp/decode_adapted_${mode}_test" -o "$exp/score" \
      --name "adapted-$mode" --baseline "$exp/decode_zeroshot_${mode}_test" --no-plots \
      > "$exp/score/adapted-$mode.txt"
  done
  python local/cer_table.py "$exp/score" --systems zeroshot-full zeroshot-streaming adapted-full adapted-streaming \
    | tee "$exp/score/cer-table.md"
fi

if should_run 42; then
  # Loss per token moves long before greedy CER leaves 100 % (a young transducer emits blanks).
  log "stage 42: per-locale test loss, streaming (1st pass, 320 ms) vs full (2nd pass)"
  for sys in zeroshot adapted; do
    extra=""
    [ $sys = adapted ] && extra="--adapters $exp/$final/merged"
    # shellcheck disable=SC2086
    python local/loss_table.py "$data/test" --model "$foundation" --chunk-ms 320 \
      --json "$exp/score/loss-$sys.json" $extra | tee "$exp/score/loss-$sys.md"
  done
fi

if should_run 45; then
  if asr-adapt stream-eval --help >/dev/null 2>&1; then
    for sys in zeroshot adapted; do
      out="$exp/stream_eval_$sys"
      if need_run "$out/.done"; then
        extra=""
        [ $sys = adapted ] && extra="--adapters $exp/$final/merged"
        log "stage 45: stream-eval ($sys) at $stream_chunks ms"
        # shellcheck disable=SC2086
        asr-adapt stream-eval "$data/test" -o "$out" --backbone transducer --model "$foundation" \
          --chunk-ms "$stream_chunks" --no-progress $extra
        touch "$out/.done"
      fi
      cat "$out/stream-summary.md"
    done
  else
    log "stage 45: this asr-adapt has no stream-eval command; skipped"
  fi
fi
log "done"
