#!/usr/bin/env bash
# Stop the daemons start_slurm.sh started (by PID), leaving munged to other users.
set -uo pipefail
state=$(realpath -m "${1:?usage: stop_slurm.sh STATE_DIR}")
[ -f "$state/pids" ] || exit 0
while read -r name pid; do
    [ "$name" = munged ] && continue
    kill "$pid" 2> /dev/null
done < "$state/pids"
sleep 1
while read -r name pid; do
    [ "$name" = munged ] && continue
    kill -9 "$pid" 2> /dev/null
done < "$state/pids"
exit 0
