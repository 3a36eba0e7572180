# Shared by the rkd SLURM job scripts (sourced, never submitted). It sets the defaults below,
# activates the environment, and provides rkd_run: one `accelerate launch` per node through srun,
# with SIGUSR1/SIGTERM forwarded to the training processes and a requeue after SIGUSR1.
#
# Every variable can be set in the environment of `sbatch` (sbatch exports it by default) or with
# `sbatch --export=ALL,NAME=value`:
#   RKD_HOME           repository root (default: the directory sbatch was called from)
#   RKD_VENV           virtualenv to activate (default: $RKD_HOME/.venv; empty: use PATH as is)
#   RKD_CONFIG         config files or packaged names, space-separated, layered in order (default: default)
#   RKD_QUICK          1: add --quick (the packaged smoke profile)
#   RKD_NAME           run name: the run directory is $RKD_RUNS_DIR/$RKD_NAME (default: default)
#   RKD_RUNS_DIR       parent of run directories (default: $RKD_HOME/runs)
#   RKD_OVERRIDES      extra section.field=value overrides, space-separated
#   GPUS_PER_NODE      GPUs per node; 0 = CPU run (default: what SLURM allocated: SLURM_GPUS_ON_NODE,
#                      SLURM_GPUS_PER_NODE such as "a100:4", or SLURM_JOB_GPUS; 0 without GPUs)
#   NPROC_PER_NODE     training processes per node (default: GPUS_PER_NODE, or 1 on CPU)
#   RKD_LAUNCH_CONFIG  Accelerate config (default: launch_configs/cpu_2proc.yaml on CPU,
#                      launch_configs/gpu_multi.yaml with GPUs; any file from launch_configs/ works,
#                      e.g. deepspeed_zero2.yaml; the node count, ranks and rendezvous are set here)
#   MASTER_PORT        rendezvous port on the first node (default: 20000 + job id mod 20000)
#   RKD_MAX_REQUEUES   stop requeueing after this many restarts (default: 20)
#   RKD_SIGNAL_LEAD    seconds between SLURM's warning signal and the time limit: the job script's
#                      #SBATCH --signal=B:USR1@N sets it to N (keep the two equal when you change one)
#   RKD_SHUTDOWN_TIMEOUT  seconds the launcher waits for processes to checkpoint after a signal before
#                      killing them (default: 4/5 of RKD_SIGNAL_LEAD, so the job still requeues itself
#                      before the time limit; refused when not below RKD_SIGNAL_LEAD)
#   RKD_CPUS_PER_GPU   a GPU job with fewer CPUs per GPU than this gets a warning (default: 4)
#   RKD_MODULE         Python module holding rkd's command line (default: rkd.cli; tests swap in a stand-in)
#   RKD_USE_SWEEP      1: distill/evaluate the cells the search sweep chose (search/sweep/genotype.json);
#                      slurm/pipeline.sh sets it with RKD_SEARCH_SWEEP=1

set -uo pipefail

RKD_HOME="${RKD_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}"
RKD_VENV="${RKD_VENV-$RKD_HOME/.venv}"
RKD_CONFIG="${RKD_CONFIG:-default}"
RKD_QUICK="${RKD_QUICK:-0}"
RKD_NAME="${RKD_NAME:-default}"
RKD_RUNS_DIR="${RKD_RUNS_DIR:-$RKD_HOME/runs}"
RKD_OVERRIDES="${RKD_OVERRIDES:-}"
# GPUs of this node's allocation, from SLURM's own variables (0 when it allocated none).
rkd_slurm_gpus() {
  local v n
  if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then echo "$SLURM_GPUS_ON_NODE"; return; fi
  if [ -n "${SLURM_GPUS_PER_NODE:-}" ]; then  # "4", "a100:4" or "gpu:a100:2,gpu:v100:1"
    n=0
    for v in ${SLURM_GPUS_PER_NODE//,/ }; do v="${v##*:}"; v="${v%%(*}"; [[ "$v" =~ ^[0-9]+$ ]] && n=$((n + v)); done
    echo "$n"; return
  fi
  if [ -n "${SLURM_JOB_GPUS:-}" ]; then v="${SLURM_JOB_GPUS//[^,]/}"; echo $(( ${#v} + 1 )); return; fi
  echo 0
}
GPUS_PER_NODE="${GPUS_PER_NODE:-$(rkd_slurm_gpus)}"
if [ "$GPUS_PER_NODE" -gt 0 ]; then
  NPROC_PER_NODE="${NPROC_PER_NODE:-$GPUS_PER_NODE}"
  RKD_LAUNCH_CONFIG="${RKD_LAUNCH_CONFIG:-launch_configs/gpu_multi.yaml}"
else
  NPROC_PER_NODE="${NPROC_PER_NODE:-1}"
  RKD_LAUNCH_CONFIG="${RKD_LAUNCH_CONFIG:-launch_configs/cpu_2proc.yaml}"
fi
RKD_MAX_REQUEUES="${RKD_MAX_REQUEUES:-20}"
RKD_SIGNAL_LEAD="${RKD_SIGNAL_LEAD:-300}"
RKD_SHUTDOWN_TIMEOUT="${RKD_SHUTDOWN_TIMEOUT:-$((RKD_SIGNAL_LEAD * 4 / 5))}"
RKD_CPUS_PER_GPU="${RKD_CPUS_PER_GPU:-4}"
RKD_MODULE="${RKD_MODULE:-rkd.cli}"
RKD_USE_SWEEP="${RKD_USE_SWEEP:-0}"
export RKD_HOME RKD_VENV RKD_CONFIG RKD_QUICK RKD_NAME RKD_RUNS_DIR RKD_OVERRIDES GPUS_PER_NODE NPROC_PER_NODE \
  RKD_LAUNCH_CONFIG RKD_MAX_REQUEUES RKD_SIGNAL_LEAD RKD_SHUTDOWN_TIMEOUT RKD_MODULE RKD_USE_SWEEP

# Batch logs are files: redraw progress bars every 30 s, not 10 times a second.
export TQDM_MININTERVAL="${TQDM_MININTERVAL:-30}"

rkd_log() { echo "[rkd-slurm $(date +%H:%M:%S)] $*"; }

# Settings that cannot work, refused (exit 2) or flagged before anything starts.
rkd_check_settings() {
  if [ "$RKD_SHUTDOWN_TIMEOUT" -ge "$RKD_SIGNAL_LEAD" ]; then
    echo "RKD_SHUTDOWN_TIMEOUT=$RKD_SHUTDOWN_TIMEOUT is not below RKD_SIGNAL_LEAD=$RKD_SIGNAL_LEAD (#SBATCH --signal=B:USR1@$RKD_SIGNAL_LEAD): a slow checkpoint would be killed at the time limit and the job never requeued; set RKD_SHUTDOWN_TIMEOUT below it (default: 4/5 of it)" >&2
    return 2
  fi
  local cpus="${SLURM_CPUS_ON_NODE:-0}"
  if [ "$GPUS_PER_NODE" -gt 0 ] && [ "$cpus" -gt 0 ] && [ "$cpus" -lt $((GPUS_PER_NODE * RKD_CPUS_PER_GPU)) ]; then
    rkd_log "warning: $cpus CPU(s) for $GPUS_PER_NODE GPU(s) on this node starve data loading and the CPU-side work; submit with -c $((GPUS_PER_NODE * 8)) --mem=$((GPUS_PER_NODE * 64))G (slurm/pipeline.sh does: CPUS_PER_GPU, MEM_PER_GPU)"
  fi
  return 0
}
rkd_check_settings || exit 2

cd "$RKD_HOME" || { echo "RKD_HOME=$RKD_HOME does not exist: submit from the repository root or set RKD_HOME" >&2; exit 2; }
if [ -n "$RKD_VENV" ]; then
  [ -f "$RKD_VENV/bin/activate" ] || { echo "RKD_VENV=$RKD_VENV has no bin/activate: create it (make install) or set RKD_VENV= to use PATH" >&2; exit 2; }
  # shellcheck disable=SC1091
  . "$RKD_VENV/bin/activate"
fi

# The rendezvous: the first node of the allocation hosts it (127.0.0.1 on a single node).
RKD_NNODES="${SLURM_NNODES:-1}"
if [ "$RKD_NNODES" -gt 1 ]; then
  MASTER_ADDR="${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}"
else
  MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
fi
MASTER_PORT="${MASTER_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}"
export MASTER_ADDR MASTER_PORT RKD_NNODES

# rkd's command-line arguments shared by every stage (word splitting of the lists is intended).
rkd_args() {
  local c
  RKD_ARGS=()
  for c in $RKD_CONFIG; do RKD_ARGS+=(--config "$c"); done
  [ "$RKD_QUICK" = 1 ] && RKD_ARGS+=(--quick)
  RKD_ARGS+=(--name "$RKD_NAME" --runs-dir "$RKD_RUNS_DIR")
  # shellcheck disable=SC2206
  RKD_ARGS+=($RKD_OVERRIDES)
}

# RKD_USE_SWEEP=1: point the student at the sweep's chosen cells (the same override for every stage,
# so stage hashes agree between the distill and evaluate jobs). The search stage is switched off:
# with it on (the packaged default) stage 1 would train search/genotype.json instead.
rkd_sweep_override() {
  RKD_OVERRIDES="$RKD_OVERRIDES search.enabled=false student.genotype=$RKD_RUNS_DIR/$RKD_NAME/search/sweep/genotype.json"
}

RKD_STEP_PID=""
RKD_REQUEUE=0

_rkd_forward() {  # a signal reached the batch shell: pass it to every process of the running step
  local sig=$1
  [ "$sig" = USR1 ] && RKD_REQUEUE=1
  rkd_log "got SIG$sig: forwarding to the training processes (they checkpoint and exit)"
  [ -n "$RKD_STEP_PID" ] && kill -s "$sig" "$RKD_STEP_PID" 2>/dev/null
}

# rkd_run COMMAND [ARGS...]: run `rkd COMMAND ARGS` on every node of the allocation and wait.
# After SIGUSR1 (SLURM's warning before the time limit, or `scancel --signal=USR1 --batch`), the job
# requeues itself once the processes have checkpointed; the requeued job resumes from the checkpoint.
rkd_run() {
  rkd_args
  local gres=()
  [ "$GPUS_PER_NODE" -gt 0 ] && gres=(--gres="gpu:$GPUS_PER_NODE")
  trap '_rkd_forward USR1' USR1
  trap '_rkd_forward TERM' TERM
  rkd_log "job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on $RKD_NNODES node(s) x $NPROC_PER_NODE process(es): rkd $* ${RKD_ARGS[*]}"
  srun --nodes="$RKD_NNODES" --ntasks-per-node=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" "${gres[@]}" \
    --kill-on-bad-exit=1 bash "$RKD_HOME/slurm/node_launch.sh" "$@" "${RKD_ARGS[@]}" &
  RKD_STEP_PID=$!
  local rc
  while :; do
    wait "$RKD_STEP_PID"
    rc=$?
    kill -0 "$RKD_STEP_PID" 2>/dev/null || break  # wait was cut short by a trapped signal: keep waiting
  done
  RKD_STEP_PID=""
  if [ "$RKD_REQUEUE" = 1 ]; then
    local restarts="${SLURM_RESTART_COUNT:-0}"
    if [ "$restarts" -ge "$RKD_MAX_REQUEUES" ]; then
      rkd_log "step ended (exit $rc) after SIGUSR1; not requeueing: restart $restarts >= RKD_MAX_REQUEUES=$RKD_MAX_REQUEUES"
      exit 1
    fi
    rkd_log "step ended (exit $rc) after SIGUSR1; requeueing job $SLURM_JOB_ID to resume from the checkpoint"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  rkd_log "step ended (exit $rc)"
  return "$rc"
}
