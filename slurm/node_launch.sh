#!/usr/bin/env bash
# One node's share of a job: `accelerate launch` of rkd with this node's rank in the rendezvous.
# Started by rkd_run (slurm/common.sh) through `srun --ntasks-per-node=1`, so it runs once per node
# with the job's environment (RKD_*, MASTER_ADDR, MASTER_PORT, NPROC_PER_NODE, SLURM_*).
#   node_launch.sh COMMAND [rkd args...]     e.g. node_launch.sh distill --name exp1 stage2.epochs=3
#
# Also usable without SLURM (tests start two of these on one machine as two "nodes"):
#   SLURM_NNODES=2 SLURM_NODEID=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29600 NPROC_PER_NODE=1 \
#     RKD_LAUNCH_CONFIG=launch_configs/cpu_2proc.yaml slurm/node_launch.sh distill ...
set -euo pipefail

nnodes="${SLURM_NNODES:-1}"
node_rank="${SLURM_NODEID:-0}"
nproc="${NPROC_PER_NODE:-1}"
config="${RKD_LAUNCH_CONFIG:?RKD_LAUNCH_CONFIG must name an Accelerate config, e.g. launch_configs/cpu_2proc.yaml}"
module="${RKD_MODULE:-rkd.cli}"
[ -f "$config" ] || { echo "RKD_LAUNCH_CONFIG=$config does not exist (relative paths start at $(pwd))" >&2; exit 2; }

# torchrun's agent (inside accelerate launch) dies on SIGUSR1 unless told to handle it; handling it
# means passing it to the training processes and waiting up to the timeout for them to checkpoint.
export PET_SIGNALS_TO_HANDLE="SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
export PET_SHUTDOWN_TIMEOUT="${RKD_SHUTDOWN_TIMEOUT:-240}"  # below the 300 s signal lead of the job scripts

# CPU runs need ACCELERATE_USE_CPU=1 for a synchronised gloo group -- except under DeepSpeed,
# which it switches off (rkd picks gloo for a CPU DeepSpeed run itself).
if [ "${GPUS_PER_NODE:-0}" -eq 0 ]; then
  if grep -Eq '^distributed_type:[[:space:]]*DEEPSPEED' "$config"; then
    unset ACCELERATE_USE_CPU
  else
    export ACCELERATE_USE_CPU=1
  fi
fi

echo "[node $node_rank/$nnodes on $(hostname)] accelerate launch --config_file $config: $nproc process(es), rendezvous $MASTER_ADDR:$MASTER_PORT"
exec accelerate launch --config_file "$config" \
  --num_machines "$nnodes" --machine_rank "$node_rank" --num_processes "$((nnodes * nproc))" \
  --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" \
  -m "$module" "$@"
