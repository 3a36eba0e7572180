#!/usr/bin/env bash
# Submit the whole rkd pipeline as chained SLURM jobs (run it on the login node, not with sbatch):
#   cache_teacher.sh  ->  distill.sh  ->  evaluate.sh          (each --dependency=afterok on the previous)
# With RKD_SEARCH_SWEEP=1 the architecture-search Pareto sweep runs between the cache and
# distillation (search.sh as a job array), and distillation uses the sweep's chosen cells.
# A failed job cancels the jobs after it; a preempted or time-limited job requeues itself and its
# dependants wait for it. Prints one line: `rkd-pipeline: <stage>=<job id> ...`.
#
#   slurm/pipeline.sh                                                    # CPU defaults
#   RKD_NAME=exp1 RKD_CONFIG=paper-cifar100-vit PARTITION=gpu ACCOUNT=myproj GPUS_PER_NODE=4 \
#     DISTILL_NODES=2 slurm/pipeline.sh
#
# Variables (environment; all optional):
#   PARTITION, ACCOUNT    sbatch -p / -A for every job (default: the cluster's defaults)
#   GPUS_PER_NODE         GPUs per node for every job, 0 = CPU (default 0); adds --gres=gpu:N
#   CPUS_PER_TASK         CPUs per node for every job (default: CPUS_PER_GPU x GPUs with GPUs, else the
#                         scripts' #SBATCH value, 2)
#   MEM                   memory per node for every job (default: MEM_PER_GPU x GPUs with GPUs, else the
#                         scripts' #SBATCH value, 8G)
#   CPUS_PER_GPU, MEM_PER_GPU   what a GPU job gets per GPU (default 8 and 64G): data loading, the teacher
#                         cache and the evaluation's main process need CPUs and host memory beside each GPU
#   DISTILL_NODES         nodes for the distillation job (default 1); other jobs use one node
#   TIME_CACHE, TIME_SEARCH, TIME_DISTILL, TIME_EVAL   time limits (default: the scripts' #SBATCH values)
#   SEARCH_ARRAY          array range of the sweep, one task per search.sweep_weights entry (default 0-3)
#   RKD_LOG_DIR           where job logs go (default: $RKD_RUNS_DIR/$RKD_NAME/slurm-logs)
#   SBATCH_EXTRA          more sbatch options for every job, space-separated (e.g. "--qos=high --mail-type=FAIL")
#   RKD_* / NPROC_PER_NODE / RKD_LAUNCH_CONFIG / MASTER_PORT ...   the run settings of slurm/common.sh,
#                         passed to every job through the environment (sbatch --export=ALL)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export RKD_HOME="${RKD_HOME:-$(dirname "$here")}"
export RKD_NAME="${RKD_NAME:-default}"
export RKD_RUNS_DIR="${RKD_RUNS_DIR:-$RKD_HOME/runs}"
GPUS_PER_NODE="${GPUS_PER_NODE:-0}"
export GPUS_PER_NODE
RKD_LOG_DIR="${RKD_LOG_DIR:-$RKD_RUNS_DIR/$RKD_NAME/slurm-logs}"
mkdir -p "$RKD_LOG_DIR"   # SLURM does not create the directory of --output; a missing one fails the job silently

common=(--parsable --chdir="$RKD_HOME" --export=ALL --kill-on-invalid-dep=yes)
[ -n "${PARTITION:-}" ] && common+=(--partition="$PARTITION")
[ -n "${ACCOUNT:-}" ] && common+=(--account="$ACCOUNT")
if [ "$GPUS_PER_NODE" -gt 0 ]; then
  common+=(--gres="gpu:$GPUS_PER_NODE")
  CPUS_PER_TASK="${CPUS_PER_TASK:-$((GPUS_PER_NODE * ${CPUS_PER_GPU:-8}))}"
  mem_per_gpu="${MEM_PER_GPU:-64G}"
  MEM="${MEM:-$((GPUS_PER_NODE * ${mem_per_gpu%G}))G}"
fi
[ -n "${CPUS_PER_TASK:-}" ] && common+=(--cpus-per-task="$CPUS_PER_TASK")
[ -n "${MEM:-}" ] && common+=(--mem="$MEM")
# shellcheck disable=SC2206
[ -n "${SBATCH_EXTRA:-}" ] && common+=($SBATCH_EXTRA)

submit() {  # submit NAME TIME [extra sbatch options...] SCRIPT -> prints the job id
  local name=$1 time=$2
  shift 2
  local opts=("${common[@]}" --output="$RKD_LOG_DIR/%x-%j.out")
  [ -n "$time" ] && opts+=(--time="$time")
  sbatch "${opts[@]}" "$@" | cut -d';' -f1
}

cache=$(submit cache "${TIME_CACHE:-}" "$RKD_HOME/slurm/cache_teacher.sh")
after=$cache
line="rkd-pipeline: cache_teacher=$cache"
if [ "${RKD_SEARCH_SWEEP:-0}" = 1 ]; then
  search=$(sbatch "${common[@]}" --output="$RKD_LOG_DIR/%x-%A_%a.out" ${TIME_SEARCH:+--time="$TIME_SEARCH"} \
    --array="${SEARCH_ARRAY:-0-3}" --dependency="afterok:$cache" "$RKD_HOME/slurm/search.sh" | cut -d';' -f1)
  after=$search
  line="$line search=$search"
  export RKD_USE_SWEEP=1   # distill.sh collects the sweep's chosen cells and trains them; evaluate.sh uses them
fi
distill=$(submit distill "${TIME_DISTILL:-}" --nodes="${DISTILL_NODES:-1}" --dependency="afterok:$after" \
  "$RKD_HOME/slurm/distill.sh")
evaluate=$(submit evaluate "${TIME_EVAL:-}" --dependency="afterok:$distill" "$RKD_HOME/slurm/evaluate.sh")
echo "$line distill=$distill evaluate=$evaluate logs=$RKD_LOG_DIR"
