#!/usr/bin/env bash
# The architecture-search Pareto sweep as a job array: task i runs
# `rkd search --sweep-index i`, one complexity weight per task (the weights are in the config's
# search section, search.sweep_weights; the array range must cover them: --array=0-3 for the
# default four). Run `rkd cache` (slurm/cache_teacher.sh) first so the tasks share one teacher cache;
# `rkd search --sweep` afterwards writes pareto.json and the chosen genotype (distill.sh does it
# with RKD_USE_SWEEP=1).
#   sbatch slurm/search.sh                                         # tasks 0-3 (the 4 default weights)
#   sbatch --array=0-9%4 --export=ALL,RKD_NAME=exp1 slurm/search.sh   # ten weights, four at a time
# Resources: the #SBATCH lines below are defaults (per task); sbatch options on the command line
# override them (--array, -N, -c, --gres, --time, -p partition, -A account). Run settings are
# environment variables documented in slurm/common.sh, plus
#   RKD_SEARCH_ARGS   extra arguments for `rkd search` (default: none)
# Preemption: as for the other jobs, each task checkpoints on SIGUSR1 and requeues itself.
#SBATCH --job-name=rkd-search
#SBATCH --array=0-3
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=12:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=rkd-%x-%A_%a.out

RKD_SIGNAL_LEAD="${RKD_SIGNAL_LEAD:-300}"  # seconds: the --signal lead above (change both together)
# shellcheck source=slurm/common.sh
. "${RKD_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
: "${SLURM_ARRAY_TASK_ID:?slurm/search.sh is a job array: submit it with sbatch (its --array sets the task ids)}"
# shellcheck disable=SC2086
rkd_run search --sweep-index "$SLURM_ARRAY_TASK_ID" ${RKD_SEARCH_ARGS:-}
