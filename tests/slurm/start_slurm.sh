#!/usr/bin/env bash
# Start a one-node SLURM cluster for the tests: Debian 12, slurm 22.05, as root, no systemd.
# Usage: start_slurm.sh STATE_DIR. Installs the packages when missing, writes the config,
# starts munged, slurmctld and slurmd, records their PIDs in STATE_DIR/pids and waits until
# the node is idle. stop_slurm.sh STATE_DIR stops them and removes the packages this script
# installed (listed in STATE_DIR/installed): with SLURM's client installed and no controller,
# every Snakemake start waits 10 s (the SLURM executor plugin runs `scontrol show config`).
set -euo pipefail
state=$(realpath -m "${1:?usage: start_slurm.sh STATE_DIR}")
mkdir -p "$state"/{spool,ctld,log}
: > "$state/pids"
: > "$state/installed"

missing=()
for package in slurmctld slurmd slurm-client munge; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2> /dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    printf '%s\n' "${missing[@]}" > "$state/installed"
fi

host=$(hostname -s)
# The node line as slurmd sees the hardware, with RealMemory at ~90 % of MemTotal.
hardware=$(slurmd -C | head -n 1 | sed -E 's/ RealMemory=[0-9]+//')
memory_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)

if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
# A munged left by an earlier run may have lost its socket: restart it unless it answers.
if ! munge -n > /dev/null 2>&1; then
    pkill -x munged || true
    sleep 1
    su -s /bin/sh munge -c /usr/sbin/munged
fi
echo "munged $(pgrep -x munged | head -n 1)" >> "$state/pids"

mkdir -p /etc/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=hetcv-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=300
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
$hardware RealMemory=$memory_mb Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# A fake GPU: without File= the node drains.
echo "NodeName=$host Name=gpu Count=1 File=/dev/null" > /etc/slurm/gres.conf

setsid slurmctld -D > "$state/log/slurmctld.out" 2>&1 < /dev/null &
echo "slurmctld $!" >> "$state/pids"
setsid slurmd -D > "$state/log/slurmd.out" 2>&1 < /dev/null &
echo "slurmd $!" >> "$state/pids"

for _ in $(seq 60); do
    if sinfo -h -o %t 2> /dev/null | grep -qx idle; then
        echo "SLURM up: $(sinfo -h -o '%P %D %t %G')"
        exit 0
    fi
    sleep 1
done
echo "SLURM did not come up; see $state/log" >&2
exit 1
