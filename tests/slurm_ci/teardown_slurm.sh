#!/usr/bin/env bash
# The project's copy (tests/test_slurm.py calls it after the session).
# Stop the CI Slurm cluster started by setup_slurm.sh. Idempotent.
# Stops only the processes named in pid files (checked against their command
# name), never by pkill/killall. munged is stopped only if setup_slurm.sh started it.
set -uo pipefail
RUN=/run/slurm
log() { echo "[teardown_slurm] $*" >&2; }

alive() {  # alive PIDFILE COMM
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

stop_pidfile() {  # stop_pidfile PIDFILE COMM
  local pf=$1 comm=$2 pid
  [ -s "$pf" ] || return 0
  pid=$(cat "$pf" 2>/dev/null)
  if alive "$pf" "$comm"; then
    log "stopping $comm pid $pid"
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "$comm pid $pid ignored SIGTERM, SIGKILL"; kill -9 "$pid" 2>/dev/null; fi
  fi
  rm -f "$pf"
}

# 1. cancel remaining jobs while the controller is still up, so slurmd reaps
#    their slurmstepd/user processes itself
if alive "$RUN/slurmctld.pid" slurmctld && command -v squeue >/dev/null; then
  jobs=$(squeue -h -o '%A' 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(echo $jobs)"
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 1 50); do [ -z "$(squeue -h -o '%A' 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi

# 2. daemons, node first
stop_pidfile "$RUN/slurmd.pid" slurmd
stop_pidfile "$RUN/slurmctld.pid" slurmctld
if [ -s "$RUN/ci-started-munged.pid" ]; then
  if [ "$(cat "$RUN/ci-started-munged.pid")" = "$(cat /run/munge/munged.pid 2>/dev/null)" ]; then
    stop_pidfile /run/munge/munged.pid munged
  fi
  rm -f "$RUN/ci-started-munged.pid"
fi
log "done"
exit 0
