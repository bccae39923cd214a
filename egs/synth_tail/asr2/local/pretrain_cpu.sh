#!/usr/bin/env bash
# Pretrain the streaming transducer foundation from nothing on this CPU, in a wall-clock budget,
# with the two levers that closed the voice gap on the GPU side (RESULTS.md sections 3a, 3d)
# from step 0: more and more varied training voices, and the spectral-envelope augmentation.
#
#   1. the corpus of run.sh stage 0 (1,000 train utterances from 4 voices per head locale;
#      dev/test with held-out voices) plus two more training sets of 1,000 utterances per head
#      locale each, fresh text: 32 numbered voices (seed 7) and 96 voices half of which are
#      espeak-ng's named variants (seed 11); the same sets local/finetune_envelope.sh uses;
#   2. character tokenizer and `compact` initialisation (run.sh stages 1-2);
#   3. pretraining on the three training sets (18,000 head utterances, 12.9 h) with their
#      features cached once, the envelope augmentation, and a wall-clock budget (--time-budget:
#      the step count and the cosine decay are fitted to it from the measured step time);
#   4. export of the best checkpoint (stage 6), test decode in both modes, CER tables.
#
# Usage (from egs/synth_tail/asr2; one thread, so it can run beside other work):
#   OMP_NUM_THREADS=2 local/pretrain_cpu.sh [--budget 6900] [--envelope 1.5] [--precision auto]
#                                           [--dropout 0.0] [--preset-set "context_size=4 prune_range=5"]
#                                           [--locale-weights "en-US=3 fr-FR=2.5 pl-PL=1.25"]
#                                           [--flush-denormal true] [--beam-size 4] [--lm-order 6]
#                                           [--exp exp_cpu_var]
# (OMP_NUM_THREADS=2: both cores, for a run that has the machine to itself, as in RESULTS.md
# section 3j; OMP_NUM_THREADS=1 leaves a core for other work at about half the steps.)
# The defaults are section 3j's run, decoded also with section 3k's LM (--lm-order 0: without).
# Sections 3b-3i: --locale-weights "" --preset-set "" --beam-size 1 (and --flush-denormal false
# before 3i).
# Phase wall times go to $exp/timings.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
. ./path.sh

budget=6900        # seconds of pretraining (training + validation)
envelope=1.5       # spectral-envelope augmentation amplitude (log-mel nats); empty: none
precision=auto     # Lightning precision; auto: bf16-mixed where the CPU has bf16 matrix units
                   # (AMX or AVX-512-BF16; RESULTS.md section 3f), else 32-true
dropout=""         # dropout of the model (empty: the preset's 0.1). 0.0 makes a step 12 % faster
                   # but stalled on the blank plateau (CER 91 % at step 1,750 against 41 %;
                   # RESULTS.md section 3g), so the preset's value stays
preset_set="context_size=4"  # more preset overrides, "FIELD=VALUE ..." (init-model --set). The
                   # stateless predictor sees 4 characters instead of the preset's 2 (section 3j);
                   # add "prune_range=5" for the pruned transducer loss (section 3h)
locale_weights="en-US=3 fr-FR=2.5 pl-PL=1.25"  # multipliers of head locales' sampling
                   # probabilities, "LOCALE=W ..." (empty: every head locale drawn alike): the
                   # locales with the least regular spelling drawn more often (sections 3i, 3j)
beam_size=4        # full-context test/dev decodes with beam search as well (1: greedy only;
                   # chosen on dev in section 3j: head macro 11.95 against 12.43 greedy)
lm_order=6         # and fused with a 6-gram character LM per head locale from the training transcripts
                   # (0: none; section 3k: head test CER 11.3 -> 5.5 with the beam)
flush_denormal=true  # flush denormal floats to zero while training: 1.2-1.6x per step
                   # (RESULTS.md section 3h); false reproduces sections 3b-3h bit for bit
nj=1               # synthesis processes
data=data
voices_data=data_voices
named_data=data_named
exp=exp_cpu_var
heads="en-US de-DE fr-FR es-ES ru-RU pl-PL"
. utils/parse_options.sh
mkdir -p "$exp"
if [ "$precision" = auto ]; then
  # Without such units the bf16 products are emulated: no speed to gain, only rounding.
  if grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo 2>/dev/null; then precision=bf16-mixed; else precision=32-true; fi
fi
timings="$exp/timings.tsv"
phase() {  # phase NAME CMD...: run and record its wall seconds
  local name=$1 t0=$SECONDS
  shift
  "$@"
  printf '%s\t%d\n' "$name" $((SECONDS - t0)) | tee -a "$timings"
}
synth_extra() {  # synth_extra DIR SEED SPEAKERS ENGINES...: 1,000 more train utterances per head locale
  local dir=$1 seed=$2 speakers=$3
  shift 3
  [ -f "$dir/train/wav.scp" ] && return 0
  # shellcheck disable=SC2086
  asr-adapt synth "$dir" --locales $heads --utts-per-locale 30 --train-utts-per-locale 1000 \
    --train-speakers "$speakers" --engines "$@" --splits train --jobs "$nj" --seed "$seed"
}

phase synthesis_base ./run.sh --pretrain true --stage 0 --stop-stage 0 --data "$data" --exp "$exp" --nj "$nj"
phase synthesis_voices synth_extra "$voices_data" 7 32 espeak-ng
phase synthesis_named synth_extra "$named_data" 11 96 espeak-ng espeak-ng-named
[ -n "$dropout" ] && preset_set="$preset_set dropout=$dropout"
phase tokenizer_init ./run.sh --pretrain true --stage 1 --stop-stage 2 --data "$data" --exp "$exp" --preset-set "$preset_set"
# AdamW's multi-tensor update: on the CPU torch defaults to a Python loop over the ~160
# parameter tensors (6 % of a step). fused=True would be cheaper still, but Lightning refuses
# gradient clipping with a fused optimizer under mixed precision.
train_opts="--model.init_args.optimizer.init_args.foreach true"
if [ -n "$locale_weights" ]; then
  w=$(printf '%s\n' $locale_weights | sed 's/^\(.*\)=/"\1":/' | paste -sd, -)  # JSON, no spaces: run.sh splits words
  train_opts="$train_opts --data.locale_weights {$w}"
fi
[ "$flush_denormal" = true ] && train_opts="$train_opts --flush-denormal"
[ -n "$envelope" ] && train_opts="$train_opts --model.init_args.feature_augment {\"spectral_envelope\":$envelope}"
phase pretraining ./run.sh --pretrain true --stage 5 --stop-stage 5 --data "$data" --exp "$exp" \
  --pretrain-steps 1000000 --pretrain-budget "$budget" \
  --pretrain-args "--data.train [$data/train,$voices_data/train,$named_data/train] --data.feature_cache true --data.num_workers 0 --trainer.precision $precision $train_opts"
phase export ./run.sh --pretrain true --stage 6 --stop-stage 6 --data "$data" --exp "$exp"

# Test (both modes) and dev decodes, CER tables and timings: the GPU recipe's decode step, on the CPU.
local/pretrain_gpu.sh --decode-only true --device cpu --data "$data" --exp "$exp" --beam-size "$beam_size" \
  --lm-order "$lm_order" --lm-data "$data/train $voices_data/train $named_data/train"
python3 local/voice_cer.py "$data/test" "$exp/foundation_test_full" "$exp/foundation_test_streaming"
