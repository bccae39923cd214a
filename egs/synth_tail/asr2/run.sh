#!/usr/bin/env bash
# Streaming cascaded Conformer-transducer foundation + per-locale LDA adapters on synthetic
# speech, end to end (the LDA paper's setting, scaled to a CPU).
#
#   stages  0-9   synthesise head and tail locales (0). With --pretrain true only: train the
#                 character tokenizer (1), initialise the foundation (2: preset + CMVN), pretrain
#                 it on the head locales (5: every parameter, CTC + transducer, dynamic chunks
#                 after a full-context start), export the best checkpoint (6). Otherwise the
#                 foundation shipped with the package ($foundation_name) is used as it is.
#          10-42  the shared adaptation stages (utils/adapt_stages.sh, as in asr1): LDA per tail
#                 locale on both encoder passes (10), noisy student (20), checkpoint-wise merge
#                 (30), decode test offline (second pass) and streaming (first pass, 320 ms)
#                 (40), score per locale (41), report (42), CER table (43)
#          45     stream-eval at 160/320/640 ms: emission delay, first-token latency, RTF
#
# Usage: ./run.sh [--quick true] [--pretrain true] [--stage N] [--stop-stage N] [--overwrite true]
#                 [--trainer-conf ../../../recipes/common/trainer_gpu.yaml] [--pretrain-args "..."]
#
# One GPU, from nothing to an exported foundation in under 10 minutes: local/pretrain_gpu.sh
# (more training voices and utterances, features cached on the GPU, a wall-clock budget).
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
pretrain=false          # true: train the foundation here (stages 1-6) instead of the shipped one
foundation_name=transducer-synth-compact
preset=compact
preset_set=""           # architecture fields replacing the preset's, e.g. "dropout=0.0" (init-model --set)
head_locales="en-US de-DE fr-FR es-ES ru-RU pl-PL"   # Latin + Cyrillic scripts (pretraining)
tail_locales="el-GR uk-UA cs-CZ"                     # Greek is unseen in pretraining
utts_per_locale=30      # dev/test/unlabelled utterances per locale
train_utts=1000         # train utterances per head locale
train_speakers=""       # speakers per locale in train (default 4, as dev/test; the GPU recipe uses 32)
engines=""              # synthesis engines (default espeak-ng; "espeak-ng espeak-ng-named" adds the named voice variants to train)
tail_fraction=0.3       # tail locales' train size: train_utts x tail_fraction
pretrain_steps=4000     # upper bound; --max-time usually ends pretraining first
pretrain_warmup=300
pretrain_full_context=1000   # full-context steps before dynamic chunk training starts
pretrain_val_every=250
max_time=""             # e.g. 00:02:00:00: Lightning stops (after a last validation) at this wall time
pretrain_budget=""      # seconds: fit the step count and LR schedule to this wall time (GPU recipe)
adapters=lda
max_steps=800           # LDA steps (teacher)
student_steps=300       # noisy-student steps per generation (from the teacher's adapters)
val_every=100
compare_systems=true    # also decode gen0, the last and the best single checkpoint (vs the merge)
generations=1
batch_seconds=60
stream_chunks=160,320,640
beam=1                  # beam size of the offline test decodes (streaming is greedy: keep 1 with it)
merge_policy=best-significant
merge_metric=cer        # random-word dictation: words stay mostly wrong long after characters improve
lda_budget=0.02         # LDA parameters per locale as a fraction of the base (the paper's 0.4 %: 0.004)
data=data
exp=exp
nj=2
trainer_conf=../../../recipes/common/trainer_cpu.yaml   # trainer_gpu.yaml: one GPU, bf16
pretrain_args=""        # extra LightningCLI arguments for stage 5, e.g. "--data.num_workers 8"
help_message="Usage: $0 [options]   (stages: 0-9 data/foundation, 10-42 adaptation, 45 stream-eval)"
. utils/parse_options.sh

if [ "$quick" = true ]; then
  # Minutes on a laptop: the shipped foundation, three tail locales, few utterances and steps.
  head_locales="en-US"
  utts_per_locale=10
  train_utts=100
  tail_fraction=0.5
  max_steps=60
  student_steps=30
  val_every=30
  compare_systems=false
  batch_seconds=30
  stream_chunks=320
  [ "$data" = data ] && data=data_quick
  [ "$exp" = exp ] && exp=exp_quick
fi
to_list() { echo "[$(echo "$*" | sed 's/ /,/g')]"; }
all_locales="$head_locales $tail_locales"
head_list=$(to_list $head_locales)
tail_list=$(to_list $tail_locales)
mkdir -p "$exp"
if [ "$pretrain" = true ]; then model="$exp/foundation"; else model="$foundation_name"; fi
log "quick=$quick pretrain=$pretrain foundation=$model head=[$head_locales] tail=[$tail_locales]"

# ----------------------------------------------------------------------------- data
if should_run 0 && need_run "$data/.synth.done"; then
  log "stage 0: synthesise $utts_per_locale dev/test/unlabelled and $train_utts train utterances per locale"
  asr-adapt synth "$data" --locales $all_locales --utts-per-locale "$utts_per_locale" \
    --train-utts-per-locale "$train_utts" --tail-fraction "$tail_fraction" --seed "$seed" --jobs "$nj" \
    ${train_speakers:+--train-speakers "$train_speakers"} ${engines:+--engines $engines} --overwrite
  touch "$data/.synth.done"
fi

# ----------------------------------------------------------------------------- foundation (--pretrain true)
if [ "$pretrain" = true ]; then
  if should_run 1 && need_run "$exp/tokenizer/.done"; then
    # Head and tail training text: every script the adapters will ever need is in the vocabulary.
    log "stage 1: multilingual character tokenizer"
    asr-adapt tokenizer train --text "$data/train/text" --kind char -o "$exp/tokenizer" --overwrite
    touch "$exp/tokenizer/.done"
  fi

  if should_run 2 && need_run "$exp/foundation_init/.done"; then
    log "stage 2: initialise the $preset foundation (random weights, CMVN from head-locale train audio)"
    sets=""
    for kv in $preset_set; do sets="$sets --set $kv"; done
    # shellcheck disable=SC2086
    asr-adapt init-model --backbone transducer --preset "$preset" --tokenizer "$exp/tokenizer" $sets \
      --cmvn-data "$data/train" --cmvn-locales $head_locales --seed "$seed" -o "$exp/foundation_init" --overwrite
    touch "$exp/foundation_init/.done"
  fi

  if should_run 5 && need_run "$exp/pretrain/.done"; then
    log "stage 5: pretrain the foundation on head locales (all parameters, CTC + transducer)"
    resume=""
    [ -f "$exp/pretrain/checkpoints/last.ckpt" ] && resume="--resume"
    extra=""
    [ -n "$max_time" ] && extra="--trainer.max_time $max_time"
    [ -n "$pretrain_budget" ] && extra="$extra --time-budget $pretrain_budget"
    # shellcheck disable=SC2086
    asr-adapt train fit --config "$trainer_conf" --config ../../../recipes/transducer/pretrain.yaml \
      --model.init_args.model "$exp/foundation_init" --model.init_args.locales "$head_list" \
      --model.init_args.full_context_steps "$pretrain_full_context" \
      --model.init_args.lr_scheduler.init_args.total_steps "$pretrain_steps" \
      --model.init_args.lr_scheduler.init_args.warmup_steps "$pretrain_warmup" \
      --data.train "[$data/train]" --data.dev "[$data/dev]" --data.locales "$head_list" \
      --data.max_batch_seconds "$batch_seconds" \
      --trainer.max_steps "$pretrain_steps" --trainer.val_check_interval "$pretrain_val_every" \
      --trainer.default_root_dir "$exp/pretrain" $extra $pretrain_args $resume
    touch "$exp/pretrain/.done"
  fi

  if should_run 6 && need_run "$exp/foundation/.done"; then
    # The full-finetune checkpoint holds every trained weight; buffers (CMVN) come from the init dir.
    log "stage 6: export the best pretraining checkpoint (macro dev CER) to $exp/foundation"
    asr-adapt init-model --backbone transducer --from-experiment "$exp/pretrain" --pick best \
      --init-dir "$exp/foundation_init" -o "$exp/foundation" --overwrite
    touch "$exp/foundation/.done"
  fi
fi

# ----------------------------------------------------------------------------- adaptation (shared)
backbone=transducer
decode_modes="full streaming"
mode_args() {  # offline = full attention + second pass; streaming = first pass, 320 ms chunks
  case "$1" in
    full) echo "--mode full" ;;
    streaming) echo "--mode streaming --chunk-ms 320" ;;
  esac
}
train_conf="--config $trainer_conf --trainer.max_steps $max_steps --trainer.val_check_interval $val_every \
  --model.init_args.model $model --data.locales $tail_list --data.dev [$data/dev] \
  --data.max_batch_seconds $batch_seconds --model.init_args.lr_scheduler.init_args.total_steps $max_steps"
student_conf="--trainer.max_steps $student_steps --trainer.val_check_interval $((student_steps / 2)) \
  --model.init_args.lr_scheduler.init_args.total_steps $student_steps"
. utils/adapt_stages.sh

if should_run 43; then
  # CER is the headline metric here (random-word dictation: one wrong letter is a wrong word).
  log "stage 43: per-locale CER/WER, zero-shot vs adapted, offline (2nd pass) vs streaming (1st pass, 320 ms)"
  python local/cer_table.py "$exp/score" --systems zeroshot-full zeroshot-streaming adapted-full adapted-streaming \
    | tee "$exp/score/cer-table.md"
fi

if should_run 45; then
  for sys in zeroshot adapted; do
    out="$exp/stream_eval_$sys"
    if need_run "$out/.done"; then
      extra=""
      [ $sys = adapted ] && extra="--adapters $exp/${main}_gen$generations/merged"
      log "stage 45: stream-eval ($sys) at $stream_chunks ms"
      # shellcheck disable=SC2086
      asr-adapt stream-eval "$data/test" -o "$out" --backbone transducer --model "$model" \
        --chunk-ms "$stream_chunks" --no-progress $extra
      touch "$out/.done"
    fi
    cat "$out/stream-summary.md"
  done
fi
log "done"
