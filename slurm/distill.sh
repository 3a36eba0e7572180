#!/usr/bin/env bash
# Both distillation stages (`rkd distill`: stage 1 KD, then stage 2 robust KD over the channels);
# finished upstream stages (teacher, cache) are skipped. Multi-node: one `accelerate launch` per
# node through srun, rendezvous on the first node (MASTER_ADDR/MASTER_PORT), machine rank =
# SLURM_NODEID, processes = nodes x NPROC_PER_NODE.
#   sbatch slurm/distill.sh                                        # CPU defaults, from the repository root
#   sbatch -N 2 --gres=gpu:8 -c 32 --export=ALL,GPUS_PER_NODE=8,RKD_NAME=exp1 slurm/distill.sh
#   sbatch -N 2 --gres=gpu:8 --export=ALL,GPUS_PER_NODE=8,RKD_LAUNCH_CONFIG=launch_configs/deepspeed_zero2.yaml slurm/distill.sh
# With N processes each one draws its training SNRs from its own bucket of the SNR range at every
# step (rkd.draws.SNRSampler); stage2/snr_buckets.json records the buckets each rank used.
# Resources: the #SBATCH lines below are defaults; sbatch options on the command line override
# them (-N, -c, --gres, --time, -p partition, -A account). Run settings are environment variables
# documented in slurm/common.sh. Preemption: SIGUSR1 arrives 5 min before the time limit (raise
# the lead time with --signal=B:USR1@600 --export=ALL,RKD_SIGNAL_LEAD=600 for big models); training checkpoints, the job requeues
# itself and the requeued job resumes from the checkpoint ("resumed from" in the log).
#SBATCH --job-name=rkd-distill
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=rkd-%x-%j.out

RKD_SIGNAL_LEAD="${RKD_SIGNAL_LEAD:-300}"  # seconds: the --signal lead above (change both together)
# shellcheck source=slurm/common.sh
. "${RKD_HOME:-${SLURM_SUBMIT_DIR:-$PWD}}/slurm/common.sh"
if [ "$RKD_USE_SWEEP" = 1 ]; then
  # the search array ran every sweep point: this only writes pareto.json and the chosen genotype.json
  rkd_run search --sweep || exit $?
  rkd_sweep_override
fi
rkd_run distill
