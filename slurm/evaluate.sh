#!/usr/bin/env bash
# Evaluation (`rkd evaluate`): accuracy over channel x SNR x channel uses, sizes, FLOPs, plots and
# report. The SNR grid is dealt round-robin over the processes and gathered on the main process;
# the records do not depend on the process count. Finished upstream stages are skipped.
#   sbatch slurm/evaluate.sh
#   sbatch --gres=gpu:2 --export=ALL,GPUS_PER_NODE=2,RKD_NAME=exp1 slurm/evaluate.sh
# Resources: the #SBATCH lines below are defaults; sbatch options on the command line override
# them (-N, -c, --gres, --time, -p partition, -A account). Run settings are environment variables
# documented in slurm/common.sh. On SIGUSR1 the job requeues itself (evaluation restarts; it keeps
# no checkpoint).
#SBATCH --job-name=rkd-evaluate
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=rkd-%x-%j.out

RKD_SIGNAL_LEAD="${RKD_SIGNAL_LEAD:-120}"  # seconds: the --signal lead above (change both together)
# shellcheck source=slurm/common.sh
. "${RKD_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
[ "$RKD_USE_SWEEP" = 1 ] && rkd_sweep_override
rkd_run evaluate
