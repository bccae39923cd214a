#!/usr/bin/env bash
# Pretrain the streaming transducer foundation on one GPU, from nothing, in under 10 minutes.
#
#   1. synthesise the corpus (run.sh stage 0) with more of everything than the CPU recipe:
#      6,000 train utterances per head locale from 32 training voices (the CPU recipe: 1,000
#      from 4); dev/test are byte-identical to the CPU recipe's (same seed, same held-out voices);
#   2. character tokenizer and `compact` initialisation (stages 1-2);
#   3. pretraining (stage 5) with the whole training set featurised once on the GPU
#      (--data.feature_cache: a step is a gather plus the model; no audio, feature or token work
#      on the host) for a wall-clock budget (--time-budget: step count and LR decay fitted to it),
#      fp32 weights (the transducer joint and loss are fp32 anyway), 240 s batches;
#   4. export the best checkpoint (stage 6), decode the held-out-voice test set in both modes on
#      the GPU and write the CER table.
#
# Usage (from egs/synth_tail/asr2):
#   local/pretrain_gpu.sh [--budget 390 | --steps 3000] [--envelope 1.5] [--engines "espeak-ng espeak-ng-named"]
#                         [--nj 16] [--beam-size 4] [--exp exp_gpu]
# --steps fixes the step count (and the LR schedule) instead of fitting it to a wall-clock budget:
# the same command then trains the same schedule on any GPU (what a reproduction needs).
# --envelope A trains with the random spectral-envelope augmentation from step 0 (amplitude A).
# --beam-size N > 1 also decodes dev and test in full context with beam search of N hypotheses
# (columns foundation-full-beamN / foundation-dev-full-beamN); the greedy tables stay as they were.
# --lm-order K > 0 (with --beam-size > 1) also counts a K-gram character LM per head locale from
# the pretraining transcripts (--lm-data, default $data/train; never dev/test text) and decodes dev
# and test in full context with it fused into beam search (columns ...-beamN-lm; weight and
# per-token bonus: the decoder's defaults, chosen on dev in RESULTS.md section 3k).
# Timings of each phase go to $exp/timings.tsv; steps/s and GPU utilisation to the training log.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh

budget=390          # seconds of pretraining (training + validation); ignored with --steps
steps=""            # fixed step count (overrides --budget)
envelope=""         # spectral-envelope augmentation amplitude (log-mel nats); empty: none
warmup=300
decode_only=false   # true: only decode + score an exported $exp/foundation (e.g. after a timeout)
beam_size=1         # >1: full-context decodes with beam search as well (the first pass streams greedily)
lm_order=0          # >0 (with beam_size > 1): and with a character n-gram LM of this order fused in
lm_data=""          # Kaldi dirs whose transcripts the LM counts (default: $data/train)
heads="en-US de-DE fr-FR es-ES ru-RU pl-PL"  # locales that get an LM (the pretraining locales)
nj=16               # synthesis processes
train_utts=6000
train_speakers=32
engines=espeak-ng   # "espeak-ng espeak-ng-named": half the training speakers are named variants (section 3d)
batch_seconds=240
val_every=500
full_context=600   # full-context steps before dynamic chunks (of ~2-4k on one GPU)
data=data_gpu
exp=exp_gpu
device=cuda
trainer_conf=../../../recipes/common/trainer_gpu.yaml
. utils/parse_options.sh

mkdir -p "$exp"
timings="$exp/timings.tsv"
[ "$decode_only" = true ] || : > "$timings"
phase() {  # phase NAME CMD...: run and record its wall seconds
  local name=$1 t0=$SECONDS
  shift
  "$@"
  printf '%s\t%d\n' "$name" $((SECONDS - t0)) | tee -a "$timings"
}

if [ "$decode_only" != true ]; then
phase synthesis ./run.sh --pretrain true --stage 0 --stop-stage 0 --data "$data" --exp "$exp" --nj "$nj" \
  --train-utts "$train_utts" --train-speakers "$train_speakers" --engines "$engines"
phase tokenizer_init ./run.sh --pretrain true --stage 1 --stop-stage 2 --data "$data" --exp "$exp"
if [ -n "$steps" ]; then pace=(--pretrain-steps "$steps"); else pace=(--pretrain-steps 1000000 --pretrain-budget "$budget"); fi
aug=""
[ -n "$envelope" ] && aug="--model.init_args.feature_augment {\"spectral_envelope\":$envelope}"
phase pretraining ./run.sh --pretrain true --stage 5 --stop-stage 5 --data "$data" --exp "$exp" \
  --trainer-conf "$trainer_conf" --batch-seconds "$batch_seconds" "${pace[@]}" --pretrain-warmup "$warmup" \
  --pretrain-val-every "$val_every" --pretrain-full-context "$full_context" \
  --pretrain-args "--data.feature_cache true --data.num_workers 4 --trainer.precision 32-true $aug"
phase export ./run.sh --pretrain true --stage 6 --stop-stage 6 --data "$data" --exp "$exp"
fi

score="$exp/foundation_score"
decode_test() {
  for mode in full streaming; do
    args="--mode full"
    [ $mode = streaming ] && args="--mode streaming --chunk-ms 320"
    # shellcheck disable=SC2086
    asr-adapt decode "$data/test" -o "$exp/foundation_test_$mode" --backbone transducer \
      --model "$exp/foundation" --device "$device" $args --no-progress
    asr-adapt score "$data/test" "$exp/foundation_test_$mode" --name "foundation-$mode" -o "$score" \
      --no-plots > /dev/null
  done
  # Dev (full context): the number a reproduction is judged on.
  asr-adapt decode "$data/dev" -o "$exp/foundation_dev_full" --backbone transducer \
    --model "$exp/foundation" --device "$device" --mode full --no-progress
  asr-adapt score "$data/dev" "$exp/foundation_dev_full" --name "foundation-dev-full" -o "$exp/foundation_dev_score" \
    --no-plots > /dev/null
  [ "$beam_size" -gt 1 ] || return 0
  beam_full "beam$beam_size"
  [ "$lm_order" -gt 0 ] || return 0
  rm -rf "$exp/lm$lm_order"  # no stale locale from an earlier run's LM set
  # shellcheck disable=SC2086
  asr-adapt lm train ${lm_data:-$data/train} --model "$exp/foundation" --order "$lm_order" --locales $heads \
    -o "$exp/lm$lm_order" > /dev/null
  beam_full "beam$beam_size-lm" --lm "$exp/lm$lm_order"
}
beam_full() {  # beam_full TAG [decode args...]: test and dev in full context with beam search
  local tag=$1 split
  shift
  for split in test dev; do
    local out="$exp/foundation_${split}_full_${tag//-/_}" name="foundation-full-$tag" sc=$score
    [ $split = dev ] && name="foundation-dev-full-$tag" && sc="$exp/foundation_dev_score"
    asr-adapt decode "$data/$split" -o "$out" --backbone transducer --model "$exp/foundation" --device "$device" \
      --mode full --beam-size "$beam_size" --no-progress "$@"
    asr-adapt score "$data/$split" "$out" --name "$name" -o "$sc" --no-plots > /dev/null
  done
}
phase test_decode decode_test
beam_cols=""
[ "$beam_size" -gt 1 ] && beam_cols="foundation-full-beam$beam_size"
[ "$beam_size" -gt 1 ] && [ "$lm_order" -gt 0 ] && beam_cols="$beam_cols $beam_cols-lm"
# shellcheck disable=SC2086
python3 local/cer_table.py "$score" --systems foundation-full foundation-streaming $beam_cols | tee "$score/cer-table.md"
# shellcheck disable=SC2086
python3 local/cer_table.py "$exp/foundation_dev_score" --systems foundation-dev-full ${beam_cols//foundation-/foundation-dev-} \
  | tee "$exp/foundation_dev_score/cer-table.md"
cat "$timings"
