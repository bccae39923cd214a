# Job runners. `$train_cmd`, `$decode_cmd` take `JOB=1:N LOG cmd...` (Kaldi run.pl syntax).
# local: N parallel processes on this machine, one log per job.
# slurm: one sbatch array job (waits for completion); set ASR_ADAPT_SLURM_OPTS for partition/GPUs.
# Multi-GPU training does not go through these: set trainer.strategy/devices/num_nodes in the
# training YAML and launch one `asr-adapt train` per node (srun does that under slurm).
case "${ASR_ADAPT_RUNNER:-local}" in
  local) export train_cmd="run.pl" decode_cmd="run.pl" ;;
  slurm) export train_cmd="slurm.pl" decode_cmd="slurm.pl" ;;
  *) echo "unknown ASR_ADAPT_RUNNER=${ASR_ADAPT_RUNNER}; use local or slurm" >&2; return 1 ;;
esac
