#!/usr/bin/env bash
# The project's copy of the shared CI script (tests/test_slurm.py starts the cluster with it, so
# the tests need nothing outside this repository); the behaviour is unchanged.
# Start a real single-node Slurm cluster (Debian 12 packages, Slurm 22.05) on this
# machine, for CI. Idempotent: a second run with a healthy cluster does nothing.
# Must run as root. Env knobs:
#   SLURM_CI_AUTH=munge|none   (default munge; falls back to none if munged won't work)
#   SLURM_CI_WAIT=60           seconds to wait for the node to become idle
set -euo pipefail

AUTH="${SLURM_CI_AUTH:-munge}"
WAIT="${SLURM_CI_WAIT:-60}"
CONF=/etc/slurm/slurm.conf
RUN=/run/slurm                     # pid files + our marker files
STATE=/var/spool/slurmctld         # StateSaveLocation (wiped on a fresh start)
SPOOL=/var/spool/slurmd            # SlurmdSpoolDir
LOGS=/var/log/slurm
H="$(hostname -s)"

log() { echo "[setup_slurm] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

alive() {  # alive PIDFILE COMM -> 0 if pidfile names a live process with that comm
  local pf=$1 comm=$2 pid
  [ -s "$pf" ] || return 1
  pid=$(cat "$pf" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$comm" ]
}

node_state() { sinfo -h -n "$H" -o '%T' 2>/dev/null | head -n1 || true; }

# ---------------------------------------------------------------- 0. already up?
if [ -f "$CONF" ] && alive "$RUN/slurmctld.pid" slurmctld && alive "$RUN/slurmd.pid" slurmd; then
  case "$(node_state)" in
    idle*|mixed*|alloc*|completing*) log "cluster already running; nothing to do"; sinfo; exit 0 ;;
  esac
fi

# ---------------------------------------------------------------- 1. packages
PKGS="slurmctld slurmd slurm-client munge"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "installing:$missing"
  # keep postinst scripts from trying to start services (no systemd here)
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  ok=0
  apt-get install -y --no-install-recommends $PKGS >/tmp/setup_slurm_apt.log 2>&1 && ok=1
  if [ "$ok" = 0 ]; then   # stale or missing package lists
    apt-get update >>/tmp/setup_slurm_apt.log 2>&1 || true
    apt-get install -y --no-install-recommends $PKGS >>/tmp/setup_slurm_apt.log 2>&1 && ok=1
  fi
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  if [ "$ok" = 0 ]; then
    log "apt-get install failed, see /tmp/setup_slurm_apt.log"; tail -20 /tmp/setup_slurm_apt.log >&2; exit 1
  fi
fi

mkdir -p "$RUN" "$STATE" "$SPOOL" "$LOGS" /etc/slurm

# ---------------------------------------------------------------- 2. munge
start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    mungekey --create --keyfile=/etc/munge/munge.key --force >/dev/null 2>&1 \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge; chown munge:munge /run/munge; chmod 0755 /run/munge
  if alive /run/munge/munged.pid munged; then
    log "munged already running (pid $(cat /run/munge/munged.pid)); not ours, leaving it"
  else
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged 2>>"$LOGS/munged-start.err" \
      || /usr/sbin/munged --force 2>>"$LOGS/munged-start.err" || return 1
    for _ in $(seq 1 50); do alive /run/munge/munged.pid munged && break; sleep 0.1; done
    alive /run/munge/munged.pid munged || return 1
    cp /run/munge/munged.pid "$RUN/ci-started-munged.pid"   # marker: teardown may stop it
  fi
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}
if [ "$AUTH" = munge ]; then
  if start_munge; then log "munge OK"; else log "munge unusable -> AuthType=auth/none"; AUTH=none; fi
fi

# ---------------------------------------------------------------- 3. slurm.conf
# stop stale daemons we may have left (by pid file, never by name)
for d in slurmd slurmctld; do
  if alive "$RUN/$d.pid" "$d"; then
    pid=$(cat "$RUN/$d.pid"); log "stopping stale $d pid $pid"; kill "$pid" || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" || true
  fi
  rm -f "$RUN/$d.pid"
done
rm -rf "${STATE:?}"/* "${SPOOL:?}"/*      # fresh cluster: no old jobs/node state

# exact topology from the node itself (avoids "reconfigured socket/core" warnings)
hw=$(slurmd -C | head -n1 | sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//')
mem_total=$(free -m | awk '/^Mem:/{print $2}')
real_mem=$(( mem_total * 9 / 10 ))        # must be <= what slurmd detects
if [ "$AUTH" = munge ]; then AUTHLINES=$'AuthType=auth/munge\nCredType=cred/munge'
else AUTHLINES=$'AuthType=auth/none\nCredType=cred/none'; fi

cat > "$CONF" <<EOF
# generated by setup_slurm.sh -- single-node CI cluster
ClusterName=ci
SlurmctldHost=$H(127.0.0.1)
SlurmUser=root
SlurmdUser=root
$AUTHLINES
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
DependencyParameters=kill_invalid_depend
MailProg=/bin/true
ReturnToService=2
KillWait=5
MinJobAge=600
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$H NodeAddr=127.0.0.1 NodeHostname=$(hostname) $hw RealMemory=$real_mem State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
log "wrote $CONF (auth=$AUTH, node: $hw RealMemory=$real_mem)"

# ---------------------------------------------------------------- 4. daemons
slurmctld  || { log "slurmctld failed"; tail -20 "$LOGS/slurmctld.log" >&2; exit 1; }
slurmd -N "$H" || { log "slurmd failed"; tail -20 "$LOGS/slurmd.log" >&2; exit 1; }

deadline=$(( $(date +%s) + WAIT ))
while :; do
  st=$(node_state)
  case "$st" in
    idle) break ;;
    down*|drain*|drained*|fail*) scontrol update NodeName="$H" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "node not idle after ${WAIT}s (state='$st')"
    tail -20 "$LOGS/slurmctld.log" >&2; tail -20 "$LOGS/slurmd.log" >&2; exit 1
  fi
  sleep 0.2
done
log "slurmctld pid $(cat $RUN/slurmctld.pid), slurmd pid $(cat $RUN/slurmd.pid); node $H idle"

# end-to-end readiness: one tiny batch job must complete. This also absorbs the
# ~3 s before slurmctld's first scheduling pass, so the caller's first
# `sbatch --wait` is not pushed from the 2 s poll to the 10 s poll.
J=$(sbatch --parsable -J ci-warmup -o /dev/null -e /dev/null --wrap true)
while :; do
  st=$(scontrol show job "$J" 2>/dev/null | grep -oE 'JobState=[A-Z_]+' | cut -d= -f2 || true)
  case "$st" in
    COMPLETED) break ;;
    FAILED|CANCELLED|NODE_FAIL|BOOT_FAIL|TIMEOUT|OUT_OF_MEMORY)
      log "warm-up job $J ended $st"; tail -20 "$LOGS/slurmd.log" >&2; exit 1 ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then log "warm-up job $J not done (state=$st)"; exit 1; fi
  sleep 0.2
done
log "warm-up batch job $J completed; cluster ready"
sinfo
