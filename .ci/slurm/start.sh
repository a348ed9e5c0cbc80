#!/usr/bin/env bash
# Start a single-node SLURM cluster on loopback for CI: munged, slurmctld and slurmd as plain
# background processes (no systemd), everything (config, munge key and socket, state, logs,
# job-completion log) in one scratch folder; under /etc only a link /etc/slurm/slurm.conf to
# that config (never over an existing one; stop.sh removes it).
#
#   .ci/slurm/start.sh DIR      then   . DIR/env   (exports SLURM_CONF for sbatch/squeue/...)
#   .ci/slurm/stop.sh DIR       stops what this started, by the PIDs recorded in DIR/pids
#
# Needs root (slurmd runs jobs as their submitting user) and Debian's slurm-wlm + munge
# (.ci/slurm/install.sh).  Accounting: none (no slurmdbd/database); every finished job is
# recorded by slurmctld in DIR/jobcomp.txt (JobCompType=jobcomp/filetxt, readable with
# `sacct --completion`), and MinJobAge keeps finished jobs in squeue for 10 minutes, so the
# profile's executor (hklflow-slurm, the Snakemake SLURM plugin's subclass) can poll with
# `--hklflow-slurm-status-command squeue`.
# Every wait is bounded; on any failure the daemons already started are stopped.
set -euo pipefail

DIR=${1:?usage: start.sh SCRATCH_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
# ports of our own, away from a real cluster's 6817/6818 on a developer's machine
CTLD_PORT=${HKLFLOW_SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${HKLFLOW_SLURM_SLURMD_PORT:-16818}
NODE=ci1
PARTITION=ci

die() { echo "start.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (slurmd must be able to run jobs as their user)"
for exe in munged slurmctld slurmd sbatch squeue scontrol setpriv; do
    command -v "$exe" >/dev/null || die "$exe not found (run .ci/slurm/install.sh)"
done
id munge >/dev/null 2>&1 || die "no user 'munge' (Debian's munge package creates it)"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$CTLD_PORT" "$SLURMD_PORT"; do
    port_busy "$p" && die "port $p on 127.0.0.1 is in use (another cluster still running? $HERE/stop.sh)"
done

if [ -e "$DIR/pids" ] && [ -s "$DIR/pids" ]; then
    die "$DIR/pids exists: a cluster from this folder may still run; stop it first ($HERE/stop.sh $DIR)"
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# munged runs as user munge and must reach its key and socket: the folder is world-readable,
# munge's own subfolder is munge's alone (munged refuses group/other-writable key folders)
chmod 755 "$DIR"
mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/munge"
chown munge:munge "$DIR/munge"
chmod 700 "$DIR/munge"
: > "$DIR/pids"

# stop what was started if anything below fails
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "start.sh: failed, stopping the daemons started so far" >&2; \
      "$HERE/stop.sh" "$DIR" || true; fi' EXIT

# Each daemon runs in the foreground of a session of its own (setsid, which like setpriv execs
# in place, so $! is the daemon's PID): a signal to the CI job's process group does not reach
# it, and stop.sh ends it in order (jobs cancelled first) by the PID recorded here.
record() {  # record NAME PID: once the PID is the daemon itself (setsid/setpriv have exec'd)
    for _ in $(seq 50); do
        [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ] && break
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "$1 $2" >> "$DIR/pids"
    [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ] || die "$1 (pid $2) did not start; see $DIR/log"
}

# --- munge: a fresh key for this cluster only, on a socket of its own --------------------
KEY=$DIR/munge/munge.key
SOCKET=$DIR/munge/munge.socket
head -c 1024 /dev/urandom > "$KEY"
chown munge:munge "$KEY"
chmod 400 "$KEY"
setsid setpriv --reuid=munge --regid=munge --init-groups \
    munged --foreground --force --key-file="$KEY" --socket="$SOCKET" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
    --seed-file="$DIR/munge/munged.seed" --num-threads=2 \
    </dev/null >"$DIR/log/munged.out" 2>&1 &
record munged $!
for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.2; done
[ -S "$SOCKET" ] || { cat "$DIR/log/munged.out" "$DIR/munge/munged.log" >&2 || true; die "munged did not start"; }
if ! timeout 10 munge --socket="$SOCKET" -n | timeout 10 unmunge --socket="$SOCKET" >/dev/null; then
    die "munge round trip failed"
fi

# --- slurm.conf ---------------------------------------------------------------------------
NCPU=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
cat > "$DIR/etc/slurm.conf" <<EOF
# written by .ci/slurm/start.sh: a throw-away single-node cluster on loopback
ClusterName=hklflow-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/state/slurmctld.pid
SlurmdPidFile=$DIR/spool/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in a CI container: track processes by their parent, bind nothing
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# a job that asks for no memory gets 1 GB per CPU, not the whole node
DefMemPerCPU=1000
# no accounting database; every finished job goes to a text file (sacct --completion reads it)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
# finished jobs stay visible to squeue this long (s): snakemake's squeue status mode needs it
MinJobAge=600
# a dead node would otherwise be waited on for minutes
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeHostname=localhost NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
# The config must also be at the default path: the plugin's job step runs `srun` with every
# SLURM_* variable but a few removed (SLURM_CONF too), so srun inside a job finds only
# /etc/slurm/slurm.conf.  A symbolic link to ours; never over a slurm.conf that is not ours.
SYS_CONF=/etc/slurm/slurm.conf
if [ -e "$SYS_CONF" ] || [ -L "$SYS_CONF" ]; then
    head -1 "$SYS_CONF" 2>/dev/null | grep -q "written by .ci/slurm/start.sh" \
        || die "$SYS_CONF exists and is not ours: this machine has a SLURM of its own; not touching it"
    rm -f "$SYS_CONF"
fi
mkdir -p /etc/slurm
ln -s "$DIR/etc/slurm.conf" "$SYS_CONF"
echo "conf $SYS_CONF" >> "$DIR/pids"
cat > "$DIR/env" <<EOF
export SLURM_CONF=$DIR/etc/slurm.conf
EOF
export SLURM_CONF=$DIR/etc/slurm.conf

# --- slurmctld, slurmd (foreground mode, backgrounded here, so $! is the daemon itself) ----
setsid slurmctld -D -i -f "$SLURM_CONF" </dev/null >"$DIR/log/slurmctld.out" 2>&1 &
record slurmctld $!
for _ in $(seq 100); do timeout 5 scontrol ping 2>/dev/null | grep -q "UP" && break; sleep 0.2; done
timeout 5 scontrol ping 2>/dev/null | grep -q "UP" \
    || { tail -20 "$DIR/log/slurmctld.log" "$DIR/log/slurmctld.out" >&2 || true; die "slurmctld did not answer"; }

mkdir -p "$DIR/spool/$NODE"
setsid slurmd -D -N "$NODE" -f "$SLURM_CONF" </dev/null >"$DIR/log/slurmd.out" 2>&1 &
record slurmd $!
state=""
for _ in $(seq 150); do
    state=$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
    case "$state" in idle*|mixed*|allocated*) break ;; esac
    sleep 0.2
done
case "$state" in
    idle*|mixed*|allocated*) ;;
    *) tail -20 "$DIR/log/slurmd.log" "$DIR/log/slurmctld.log" >&2 || true
       die "node $NODE not idle after 30 s (state: ${state:-none})" ;;
esac

# --- a real job round trip -----------------------------------------------------------------
out=$(cd "$DIR" && timeout 60 srun -p "$PARTITION" -N1 -n1 -t 1 --export=ALL \
      bash -c 'echo "job=$SLURM_JOB_ID node=$SLURMD_NODENAME"') || die "test job (srun) failed"
echo "== SLURM cluster up: $(sinfo -h -o '%P %D %c CPUs %m MB %T' | head -1); test job: $out"
echo "== daemons: $(tr '\n' ' ' < "$DIR/pids")(recorded in $DIR/pids)"
