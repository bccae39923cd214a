#!/usr/bin/env bash
# Second stage of the shipped foundation: fine-tune a pretrained foundation on fresh speech of
# 32 training voices per head locale with the random spectral-envelope augmentation (a voice
# whose equaliser no training voice has, espeak-ng's m8, is the held-out voice the
# GPU-pretrained model failed on: RESULTS.md section 3). With --arm plain the same run without
# the augmentation (the control).
#
# Usage (from egs/synth_tail/asr2):
#   local/finetune_envelope.sh [--init exp_gpu/foundation] [--arm envelope|plain] [--amplitude 1.5]
#                              [--steps 300] [--named-data DIR] [--data data_voices] [--exp exp_voices]
# Writes EXP/ARM/model (the fine-tuned foundation) and EXP/score (dev and test CER, both modes).
# --named-data DIR adds DIR/train to the training data: 1,000 more utterances per head locale
# (seed 11) from 96 speakers, half of them espeak-ng's named voice variants (engine
# espeak-ng-named: other formant tables, equalisers, Klatt voicing), synthesised if missing.
#
# The shipped transducer-synth-compact (RESULTS.md section 3d):
#   local/finetune_envelope.sh --init exp_gpu/foundation16 --steps 600 --named-data data_named --exp exp_named
# Its control (the same data volume and steps, numbered variants only):
#   local/finetune_envelope.sh --init exp_gpu/foundation16 --steps 600 --named-data data_numbered \
#     --named-engines espeak-ng --exp exp_numbered
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh

init=exp_gpu/foundation     # the GPU-pretrained foundation (local/pretrain_gpu.sh, stage 6)
arm=envelope
amplitude=1.5               # max amplitude (log-mel nats) of each cosine term
steps=300
lr=2e-4
data=data_voices
exp=exp_voices
named_data=""
named_engines="espeak-ng espeak-ng-named"   # engines of --named-data (the control: espeak-ng alone)
heads="en-US de-DE fr-FR es-ES ru-RU pl-PL"
. utils/parse_options.sh
train_dirs="$data/train"
if [ -n "$named_data" ]; then
  train_dirs="$train_dirs $named_data/train"
  if [ ! -f "$named_data/train/wav.scp" ]; then
    asr-adapt synth "$named_data" --locales $heads --utts-per-locale 30 --train-utts-per-locale 1000 \
      --train-speakers 96 --engines $named_engines --splits train --jobs 2 --seed 11
  fi
fi
train_list="[$(echo $train_dirs | sed 's/ /,/g')]"
head_list="[$(echo $heads | sed 's/ /,/g')]"

if [ ! -f "$data/train/wav.scp" ]; then
  # Fresh text (seed 7, not the pretraining's 0) spoken by 32 of the 112 training voices per locale.
  asr-adapt synth "$data" --locales $heads --utts-per-locale 30 --train-utts-per-locale 1000 \
    --train-speakers 32 --splits train --jobs 2 --seed 7
fi
aug=()
[ "$arm" = envelope ] && aug=(--model.init_args.feature_augment "{spectral_envelope: $amplitude}")
asr-adapt train fit --config ../../../recipes/common/trainer_cpu.yaml --config ../../../recipes/transducer/pretrain.yaml \
  --model.init_args.model "$init" --model.init_args.locales "$head_list" \
  --model.init_args.full_context_steps 0 --model.init_args.optimizer.init_args.lr "$lr" \
  --model.init_args.lr_scheduler.init_args.warmup_steps 30 --model.init_args.lr_scheduler.init_args.total_steps "$steps" \
  --data.train "$train_list" --data.dev "[data/dev]" --data.locales "$head_list" \
  --data.max_batch_seconds 60 --data.feature_cache true --data.num_workers 0 \
  --trainer.max_steps "$steps" --trainer.val_check_interval 150 --trainer.default_root_dir "$exp/$arm" --overwrite \
  "${aug[@]}"
asr-adapt init-model --backbone transducer --from-experiment "$exp/$arm" --pick last \
  --init-dir "$init" -o "$exp/$arm/model" --overwrite
for split in dev test; do
  for mode in full streaming; do
    args="--mode full"
    [ $mode = streaming ] && args="--mode streaming --chunk-ms 320"
    # shellcheck disable=SC2086
    asr-adapt decode data/$split -o "$exp/$arm/${split}_$mode" --backbone transducer --model "$exp/$arm/model" $args --no-progress
    asr-adapt score data/$split "$exp/$arm/${split}_$mode" --name "$arm-$split-$mode" -o "$exp/score" --no-plots > /dev/null
  done
done
