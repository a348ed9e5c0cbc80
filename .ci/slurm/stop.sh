#!/usr/bin/env bash
# Stop the CI cluster that .ci/slurm/start.sh DIR started: cancel its jobs, then end the
# daemons by the PIDs recorded in DIR/pids (never by name), TERM first, KILL after a bounded
# wait.  Safe to run twice, and on a folder where start.sh failed half-way.
set -uo pipefail

DIR=${1:?usage: stop.sh SCRATCH_DIR}
PIDS=$DIR/pids
[ -f "$PIDS" ] || exit 0

# a recorded PID is only ours while /proc/PID/comm is still the daemon's name (PIDs get reused)
alive() { [ -r "/proc/$2/comm" ] && [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ]; }

if [ -f "$DIR/etc/slurm.conf" ]; then
    export SLURM_CONF=$DIR/etc/slurm.conf
    if alive slurmctld "$(awk '$1=="slurmctld"{print $2}' "$PIDS")"; then
        ids=$(timeout 10 squeue -h -t PENDING,RUNNING,CONFIGURING,COMPLETING -o %i 2>/dev/null | tr '\n' ' ')
        if [ -n "${ids// /}" ]; then
            echo "stop.sh: cancelling jobs still queued or running: $ids"
            # shellcheck disable=SC2086
            timeout 10 scancel $ids 2>/dev/null || true
            for _ in $(seq 30); do
                [ -z "$(timeout 5 squeue -h -t PENDING,RUNNING,CONFIGURING,COMPLETING -o %i 2>/dev/null)" ] && break
                sleep 1
            done
        fi
    fi
fi

# reverse start order: slurmd, slurmctld, the config link, munged
tac "$PIDS" | while read -r name pid; do
    [ -n "${pid:-}" ] || continue
    if [ "$name" = conf ]; then
        # the /etc/slurm/slurm.conf link start.sh made, removed while it still points here
        if [ -L "$pid" ] && [ "$(readlink "$pid")" = "$DIR/etc/slurm.conf" ]; then
            rm -f "$pid" && echo "stop.sh: removed $pid"
        fi
        continue
    fi
    alive "$name" "$pid" || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$name" "$pid" || break; sleep 0.2; done
    if alive "$name" "$pid"; then
        echo "stop.sh: $name ($pid) ignored SIGTERM for 10 s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stop.sh: stopped $name ($pid)"
done
mv "$PIDS" "$PIDS.stopped"
exit 0
