#!/usr/bin/env bash
# Stop the daemons start_slurm.sh started (by PID) and remove the packages it installed
# (STATE_DIR/installed), so that the machine is as it was; munged keeps serving other users
# unless its package was installed by start_slurm.sh too.
set -uo pipefail
state=$(realpath -m "${1:?usage: stop_slurm.sh STATE_DIR}")
[ -f "$state/pids" ] || exit 0
keep=munged
grep -qx munge "$state/installed" 2> /dev/null && keep=none
for signal in TERM KILL; do
    while read -r name pid; do
        [ "$name" = "$keep" ] || kill -s "$signal" "$pid" 2> /dev/null
    done < "$state/pids"
    sleep 1
done
if [ -s "$state/installed" ]; then
    mapfile -t installed < "$state/installed"
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "${installed[@]}" > /dev/null 2>&1
fi
exit 0
