#!/usr/bin/env bash
# A one-node SLURM on this machine for the tests: `local_slurm.sh start` installs slurm-wlm and munge if missing
# (needs root and apt), writes a minimal slurm.conf, starts munged, slurmctld and slurmd by hand (no systemd);
# `local_slurm.sh stop` stops the daemons it started. Exit 3 means SLURM cannot be set up here.
set -euo pipefail
action="${1:?start or stop}"
state=/run/midtrain-test-slurm
if [ "$action" = stop ]; then
  for pidfile in "$state"/*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$state"
  exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "SLURM is not installed and cannot be installed here (needs root and apt-get)" >&2
    exit 3
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null 2>&1; } || {
    echo "apt-get could not install slurm-wlm and munge" >&2; exit 3; }
fi
host="$(hostname -s)"
cpus="$(nproc)"
mkdir -p "$state" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/slurm
chown munge:munge /run/munge 2>/dev/null || true
[ -f /etc/munge/munge.key ] || { mkdir -p /etc/munge; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null;
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=midtrain-test
SlurmctldHost=$host
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$host CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
  pgrep -x munged > "$state/munged.pid"
fi
/usr/sbin/slurmctld
/usr/sbin/slurmd
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed"; then exit 0; fi
  sleep 1
done
echo "SLURM daemons started but the node did not become idle; see /var/log/slurm" >&2
exit 3
