# Stages 10-49 shared by the adaptation recipes: train per-locale adapters, noisy-student
# generations, checkpoint-wise merge, decode, score, report. Sourced by a recipe's run.sh
# after its data stages (0-9); every stage is one `asr-adapt ...` call.
#
# The recipe sets (all required):
#   stage stop_stage overwrite   stage gating (utils/stage_lib.sh)
#   data exp                     data dirs ($data/{train,dev,test}) and experiment folder
#   model adapters generations   base model, adapter types to train, noisy-student generations;
#                                the first adapter type is the final system's: noisy-student
#                                generations continue it (a LoRA teacher gets LoRA students)
#   train_conf tail_list         LightningCLI args shared by every training run; locales as a YAML list
# and optionally:
#   student_conf                 extra LightningCLI args for noisy-student runs (e.g. fewer steps)
#   compare_systems              true: decode and score every trained system, not just the final one
#   unlabelled                   data dir pseudo-labelled by each generation (default $data/unlabelled);
#                                without one, generations are skipped with a warning.
#   merge_policy                 how `asr-adapt merge` picks each locale's checkpoint (default
#                                best-significant: the best single checkpoint unless a locale's own
#                                peak is significantly better on its dev set)
#   merge_metric                 dev error rate that ranks checkpoints: wer (default) or cer
#   merge_gate                   true (default): every decoded bundle keeps a locale's adapter only if
#                                it beats the base model on that locale's dev set (`asr-adapt merge`'s
#                                gate; the base's dev decode, $exp/decode_zeroshot_dev, is made by the
#                                first merge that needs it and shared); false: --no-gate
#   lda_budget                   LDA parameters per locale as a fraction of the base (default: the
#                                LDA recipe's, 0.4 %)
#   backbone                     backbone family (default whisper; transducer for the streaming
#                                Conformer-transducer): adapter recipes come from recipes/$backbone/
#   decode_modes                 decode test once per mode (default: "default", one decode whose
#                                outputs carry no mode suffix); with several, the recipe defines
#                                `mode_args MODE` (its `asr-adapt decode` options) and every system
#                                is decoded and scored as SYSTEM-MODE
#   beam                         beam size of the test decodes (default 1: greedy)
#
# Decode dirs are named by what produced them: decode_SYSTEM[-MODE]_beamB[_winW]_test (Whisper:
# W = the encoder window the system decodes at, the adapters' training window or the base's
# default), so changing --beam or --window decodes afresh instead of reusing a stale .done;
# score names carry the beam when it is not 1 (SYSTEM[-MODE][-beamB]).

unlabelled=${unlabelled:-$data/unlabelled}
backbone=${backbone:-whisper}
recipe_dir=${recipe_dir:-../../../recipes/$backbone}
decode_modes=${decode_modes:-default}
declare -F mode_args >/dev/null || mode_args() { :; }
mode_suffix() { [ "$1" = default ] || echo "-$1"; }
beam=${beam:-1}
score_tag() { [ "$beam" = 1 ] || echo "-beam$beam"; }  # score-name suffix for non-default settings
decode_dir() {  # decode_dir SYSTEM MODE_SUFFIX: the test decode of SYSTEM, named by its settings
  local win=""
  if [ "$backbone" = whisper ]; then
    if [ "$1" = zeroshot ]; then win="_win$base_window"; else win="_win$window"; fi
  fi
  echo "$exp/decode_$1$2_beam$beam${win}_test"
}
# Whisper encoder window (s) adapters are trained and decoded at (the zero-shot base keeps the
# decoder's safe default): adapters learn the context they are trained at. Whisper only.
window=${window:-10}
base_window=10   # the decoder's default shortest window (asr-adapt decode without --min-window)
window_args=()
if [ "$backbone" = whisper ]; then
  window_args=(--model.init_args.backbone_conf "{train_min_window_s: $window}" --model.init_args.decode "{min_window_s: $window}")
fi
# The adapter type of the final system (teacher and noisy students alike): the first listed.
main=${adapters%% *}
if [ "$main" = full ]; then
  echo "error: --adapters starts with 'full': list an adapter type (lda, lora, s2lora) first; full" \
       "fine-tuning can only be a system to compare against" >&2
  exit 2
fi
merge_policy=${merge_policy:-best-significant}
merge_metric=${merge_metric:-wer}   # dev error rate the merge ranks checkpoints by (cer: character models)
if [ "${merge_gate:-true}" = true ]; then gate_args=(--base-dev "$exp/decode_zeroshot_dev"); else gate_args=(--no-gate); fi
lda_args=()
if [ -n "${lda_budget:-}" ]; then lda_args=(--model.init_args.adapter_conf "{target_fraction: $lda_budget}"); fi

train_adapter() {  # train_adapter NAME ADAPTER [extra LightningCLI args...]
  local name=$1 adapter=$2; shift 2
  # Teacher and students alike: a student loads its teacher's adapters, so the shapes must match.
  if [ "$adapter" = lda ]; then set -- "$@" "${lda_args[@]}"; fi
  if need_run "$exp/$name/.done"; then
    log "train $name ($adapter)"
    local resume=""
    [ -f "$exp/$name/checkpoints/last.ckpt" ] && resume="--resume"
    # shellcheck disable=SC2086  # train_conf is a list of arguments
    # The adapter recipe comes first so that train_conf's overrides apply on top of it.
    asr-adapt train fit --config "$recipe_dir/$adapter.yaml" $train_conf "${window_args[@]}" \
      --model.init_args.locales "$tail_list" --trainer.default_root_dir "$exp/$name" $resume "$@"
    touch "$exp/$name/.done"
  fi
}

merge() {  # merge "EXP [EXP...]" OUT [policy [gate options (default: $gate_args)]]
  local runs=$1 out=$2 policy=${3:-$merge_policy}
  shift $(($# < 3 ? $# : 3))
  [ $# -gt 0 ] || set -- "${gate_args[@]}"
  if need_run "$out/.done"; then
    # shellcheck disable=SC2086  # $runs is a list of runs
    asr-adapt merge $runs -o "$out" --policy "$policy" --metric "$merge_metric" --overwrite "$@"
    touch "$out/.done"
  fi
}

if [ "$generations" -gt 0 ] && [ ! -f "$unlabelled/wav.scp" ]; then
  # Real corpora may have no unlabelled audio (FLEURS; Common Voice when validated.tsv adds nothing).
  log "warning: no unlabelled data dir at $unlabelled; skipping noisy-student generations"
  generations=0
fi

if should_run 10; then
  for a in $adapters; do
    train_adapter "${a}_gen0" "$a" --data.train "[$data/train]"
  done
fi

if should_run 20; then
  for g in $(seq 1 "$generations"); do
    prev=$((g - 1))
    teacher="$exp/${main}_gen${prev}"
    # Not gated: this bundle also initialises the student, and a locale left out would start
    # from scratch. The final merge (stage 30) pools every generation and gates.
    merge "$teacher" "$teacher/bundle" "$merge_policy" --no-gate
    if need_run "$exp/pl_gen$g/.done"; then
      log "stage 20: generation $g pseudo-labels of $unlabelled from $teacher/bundle"
      asr-adapt pseudo-label "$unlabelled" -o "$exp/pl_gen$g" --backbone "$backbone" --model "$model" \
        --adapters "$teacher/bundle" --keep-top-percent 80
      touch "$exp/pl_gen$g/.done"
    fi
    # Student: labelled + pseudo-labelled data with input noise, starting from the teacher's adapters.
    train_adapter "${main}_gen$g" "$main" --data.train "[$data/train, $exp/pl_gen$g/data]" \
      --model.init_args.init_adapters "$teacher/bundle" \
      --model.init_args.feature_augment "{spec_augment: true}" --data.augment "{noise_prob: 0.5}" \
      ${student_conf:-}
  done
fi

final="${main}_gen$generations"
# Systems decoded on test, as name=adapter-bundle (empty: the base alone). "adapted" is the
# final system: the last noisy-student generation, merged checkpoint-wise ($merge_policy). With
# --compare-systems true, every adapter type trained in stage 10 and the alternatives to that
# merge (last; best macro-average single checkpoint; plain per-locale best) are decoded too.
systems="zeroshot= adapted=$exp/$final/merged"
if [ "${compare_systems:-false}" = true ]; then
  for a in $adapters; do
    [ "${a}_gen0" = "$final" ] && continue
    # Full fine-tuning has no adapters: its best checkpoint is exported as a whole model.
    if [ "$a" = full ]; then systems+=" full_gen0=model:$exp/full_gen0/model"; else systems+=" ${a}_gen0=$exp/${a}_gen0/merged"; fi
  done
  systems+=" ${final}_last=$exp/$final/last ${final}_best_single=$exp/$final/best_single"
  if [ "$merge_policy" != best ]; then systems+=" ${final}_best_per_locale=$exp/$final/best_per_locale"; fi
fi

if should_run 30; then
  # Checkpoint-wise merge over every generation's checkpoints: a locale whose student never
  # beat its teacher (significantly, under best-significant) keeps the teacher's adapter.
  runs=""
  for g in $(seq 0 "$generations"); do runs+=" $exp/${main}_gen$g"; done
  log "stage 30: checkpoint-wise merge of$runs"
  merge "$runs" "$exp/$final/merged"
  if [ "${compare_systems:-false}" = true ]; then
    for a in $adapters; do
      [ "${a}_gen0" = "$final" ] && continue
      if [ "$a" = full ]; then
        if need_run "$exp/full_gen0/model/.done"; then
          asr-adapt init-model --backbone "$backbone" --from-experiment "$exp/full_gen0" --pick best \
            --init-dir "$model" -o "$exp/full_gen0/model" --overwrite
          touch "$exp/full_gen0/model/.done"
        fi
      else
        merge "$exp/${a}_gen0" "$exp/${a}_gen0/merged"
      fi
    done
    merge "$exp/$final" "$exp/$final/last" last
    # The best single checkpoint is chosen from the same pool the checkpoint-wise merge draws
    # on (every generation), so the two differ only in choosing per locale or all at once.
    merge "$runs" "$exp/$final/best_single" best-macro
    if [ "$merge_policy" != best ]; then merge "$runs" "$exp/$final/best_per_locale" best; fi
  fi
fi

if should_run 40; then
  for mode in $decode_modes; do
    sfx=$(mode_suffix "$mode")
    for entry in $systems; do
      sys=${entry%%=*} bundle=${entry#*=}
      out=$(decode_dir "$sys" "$sfx")
      if need_run "$out/.done"; then
        extra="--model $model"
        case "$bundle" in
          "") ;;
          model:*) extra="--model ${bundle#model:}"  # a whole fine-tuned model
                   [ "$backbone" = whisper ] && extra+=" --min-window $window" ;;
          *) extra="--model $model --adapters $bundle" ;;  # the bundle records its training window
        esac
        log "stage 40: decode test ($sys${sfx:+, $mode})"
        # shellcheck disable=SC2086
        asr-adapt decode "$data/test" -o "$out" --backbone "$backbone" --batch-size 8 --beam-size "$beam" $extra \
          $(mode_args "$mode")
        touch "$out/.done"
      fi
    done
  done
fi

if should_run 41 && need_run "$exp/score/.done$(score_tag)"; then
  log "stage 41: score per locale"
  mkdir -p "$exp/score"
  tag=$(score_tag)
  for mode in $decode_modes; do
    sfx=$(mode_suffix "$mode")
    asr-adapt score "$data/test" "$(decode_dir zeroshot "$sfx")" -o "$exp/score" --name "zeroshot$sfx$tag" >/dev/null
    for entry in $systems; do
      sys=${entry%%=*}
      [ "$sys" = zeroshot ] && continue
      asr-adapt score "$data/test" "$(decode_dir "$sys" "$sfx")" -o "$exp/score" --name "$sys$sfx$tag" \
        --baseline "$(decode_dir zeroshot "$sfx")" > "$exp/score/$sys$sfx$tag.txt"
    done
    cat "$exp/score/adapted$sfx$tag.txt"
  done
  touch "$exp/score/.done$tag"
fi

if should_run 42 && need_run "$exp/report/.done$(score_tag)"; then
  log "stage 42: comparison report"
  # The systems table adds what each system cost: trainable parameters per locale and the
  # training wall time of every run behind it (noisy-student teachers included).
  costs=()
  for mode in $decode_modes; do
    sfx=$(mode_suffix "$mode")
    for entry in $systems; do
      sys=${entry%%=*} bundle=${entry#*=}
      costs+=(--system-cost "$sys$sfx$(score_tag)=${bundle#model:}")
    done
  done
  tail_csv=${tail_list#[}
  asr-adapt report "$exp/score" -o "$exp/report" "${costs[@]}" --macro-over "${tail_csv%]}" > /dev/null
  log "report: $exp/report (comparison and systems tables: Markdown, CSV; PNG)"
  cat "$exp/report/comparison.md" "$exp/report/systems.md"
  touch "$exp/report/.done$(score_tag)"
fi
