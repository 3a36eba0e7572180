#!/usr/bin/env bash
# Teacher fine-tuning and the teacher cache (`rkd cache`: data -> teacher -> cache), as one job.
#   sbatch slurm/cache_teacher.sh                                  # from the repository root
#   sbatch -p gpu -A myproj --gres=gpu:4 --export=ALL,GPUS_PER_NODE=4,RKD_NAME=exp1 slurm/cache_teacher.sh
# The cache pass is split over the processes (shard i -> process i mod N) and resumes per shard.
# Resources: the #SBATCH lines below are defaults; sbatch options on the command line override
# them (-N nodes, -c CPUs per task, --gres, --time, -p partition, -A account: the cluster's default
# partition and account apply unless given). Run settings (RKD_CONFIG, RKD_NAME, RKD_RUNS_DIR,
# RKD_OVERRIDES, GPUS_PER_NODE, NPROC_PER_NODE, RKD_LAUNCH_CONFIG, ...) are environment variables,
# documented in slurm/common.sh. Preemption: SIGUSR1 arrives 5 min before the time limit; training
# checkpoints, the job requeues itself and resumes (see slurm/common.sh).
#SBATCH --job-name=rkd-cache
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=rkd-%x-%j.out

RKD_SIGNAL_LEAD="${RKD_SIGNAL_LEAD:-300}"  # seconds: the --signal lead above (change both together)
# shellcheck source=slurm/common.sh
. "${RKD_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
rkd_run cache
