#!/usr/bin/env bash
# CI stage: reduce a simulated experiment once locally and once through a real SLURM cluster,
# check that every job went through SLURM, and that both runs wrote the same outputs.
#
#   bash .ci/slurm/run_stage.sh            (from .ci/run, after the tests; needs root and apt)
#
#   1. install   Debian's slurm-wlm + munge, the Snakemake SLURM plugin (.ci/slurm/install.sh)
#   2. cluster   munged, slurmctld, slurmd on loopback, PIDs recorded (.ci/slurm/start.sh)
#   3. simulate  `hklflow simulate WORK/local --preset PRESET` (demo by default); WORK/slurm gets a copy of config/
#                and hard links to the same raw/ files
#   4. local     snakemake --profile profiles/default          in WORK/local
#   5. SLURM     snakemake --profile profiles/slurm            in WORK/slurm
#   6. jobs      every job of 5 ran inside a SLURM job that COMPLETED (sacct --completion;
#                the SLURM job's own log names the jobs it ran, groups included)
#   7. compare   every file under results/ of 4 and 5 (.ci/slurm/compare_outputs.py)
# The cluster is stopped by its recorded PIDs from a trap, whatever happens; every step is
# bounded by a timeout.  Settings (environment):
#   HKLFLOW_SLURM_PRESET   simulation preset (default demo, the README's demo experiment:
#                          76 jobs, ~3 min for the stage on 2 cores; `tiny`: 43 jobs,
#                          ~75 s)
#   HKLFLOW_SLURM_WORK     scratch folder (default /tmp/hklflow-slurm-ci; emptied first,
#                          removed after a success unless HKLFLOW_SLURM_KEEP=1)
#   HKLFLOW_SLURM_CHECK_SECONDS  seconds between status checks of the SLURM run (default 1)
#   HKLFLOW_SLURM_LOCAL_TIMEOUT, HKLFLOW_SLURM_RUN_TIMEOUT  seconds for the local and the
#                          SLURM snakemake run (default 1200 and 1800)
# Worst case, every step timing out: about an hour; .ci/run bounds the whole stage as well
# (SIGTERM to this script stops the running step and the cluster at once).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
HERE=$REPO/.ci/slurm
PRESET=${HKLFLOW_SLURM_PRESET:-demo}
WORK=${HKLFLOW_SLURM_WORK:-/tmp/hklflow-slurm-ci}
LOCAL_TIMEOUT=${HKLFLOW_SLURM_LOCAL_TIMEOUT:-1200}
RUN_TIMEOUT=${HKLFLOW_SLURM_RUN_TIMEOUT:-1800}
CHECK_SECONDS=${HKLFLOW_SLURM_CHECK_SECONDS:-1}
PY=$REPO/.venv/bin/python
CLUSTER=$WORK/cluster

# the command lines under test: the README's, plus (SLURM) what suits a CI cluster without
# an accounting database: status from squeue (finished jobs stay there for MinJobAge=600 s),
# status checks every second (HKLFLOW_SLURM_CHECK_SECONDS) instead of every 10-30 s (jobs of
# seconds on one idle node; one squeue call each), SLURM logs
# kept as evidence; once the cluster is up, --cores: group jobs of at most the CPUs of its
# one node
LOCAL_ARGS=(--profile "$REPO/profiles/default")
SLURM_ARGS=(--profile "$REPO/profiles/slurm"
            --hklflow-slurm-status-command squeue --hklflow-slurm-init-seconds-before-status-checks "$CHECK_SECONDS"
            --hklflow-slurm-max-seconds-between-status-checks "$CHECK_SECONDS"
            --seconds-between-status-checks "$CHECK_SECONDS"
            --hklflow-slurm-keep-successful-logs)

now() { date +%s; }
say() { echo "== $(date -u +%FT%TZ) slurm stage: $*"; }
declare -a TIMES=()
timed() {  # timed LABEL START
    local s=$(( $(now) - $2 ))
    TIMED_S=$s
    TIMES+=("$1 ${s}s")
    say "$1 took ${s} s"
}
T_STAGE=$(now)
exec 3>&1 4>&2    # the stage's own output, for the trap (a step's output goes to its log)

# Long steps run in the background while this script waits for them: bash runs a trap at
# once during `wait` (not before a foreground child ends), so a SIGTERM from an outer timeout
# stops the step (its `timeout` passes the signal on) and the cluster without delay.
CHILD=""
step() {
    local rc=0
    "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}

# the trap stops the running step and the cluster, whatever ends this script
OK=0
cleanup() {
    local rc=$?
    set +e
    trap '' INT TERM          # finish the cleanup whatever arrives now
    exec 1>&3 2>&4
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        # SIGINT, once, to the command under `timeout` (which would pass it on twice: to
        # the command and to its process group): snakemake takes it as Ctrl-C and scancels
        # its jobs (on SIGTERM it would wait for the running ones).  Then TERM, KILL.
        local inner sig
        inner=$(pgrep -P "$CHILD" | head -n 1)
        say "stopping the running step (pid ${inner:-$CHILD})"
        kill -INT "${inner:-$CHILD}" 2>/dev/null
        for sig in TERM KILL; do
            for _ in $(seq 60); do kill -0 "$CHILD" 2>/dev/null || break 2; sleep 0.5; done
            kill -"$sig" "$CHILD" 2>/dev/null
        done
    fi
    if [ -f "$CLUSTER/pids" ]; then
        say "stopping the cluster"
        if [ "$OK" -ne 1 ] && [ -f "$CLUSTER/log/slurmctld.log" ]; then
            echo "--- last lines of slurmctld.log"; tail -n 15 "$CLUSTER/log/slurmctld.log"
            echo "--- last lines of slurmd.log"; tail -n 15 "$CLUSTER/log/slurmd.log"
        fi
        timeout -k 5 120 bash "$HERE/stop.sh" "$CLUSTER"
    fi
    if [ "$OK" -eq 1 ] && [ "${HKLFLOW_SLURM_KEEP:-0}" != 1 ]; then
        rm -rf "$WORK"
    elif [ "$OK" -ne 1 ]; then
        echo "slurm stage: FAILED; its files are in $WORK" >&2
    fi
    return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. install ------------------------------------------------------------------------------
t=$(now)
rc=0
step timeout -k 10 900 bash "$HERE/install.sh" || rc=$?
if [ "$rc" -eq 2 ]; then
    if [ "${CI:-}" = "true" ]; then
        echo "slurm stage: cannot install SLURM on this CI machine (see above)" >&2
        exit 1
    fi
    echo "WARNING: SLURM stage skipped: cannot install slurm-wlm/munge here (needs root and apt-get)" >&2
    OK=1
    exit 0
fi
[ "$rc" -eq 0 ] || { echo "slurm stage: install failed (exit $rc)" >&2; exit "$rc"; }
timed install "$t"

# the profile and executor tests, now that the plugin is installed (they skip without it)
step timeout -k 10 300 "$PY" -m pytest -q -n 0 -p no:cacheprovider tests/plugins/test_slurm_profile.py tests/plugins/test_slurm_executor.py

# --- 2. cluster --------------------------------------------------------------------------------
if [ -f "$CLUSTER/pids" ]; then
    bash "$HERE/stop.sh" "$CLUSTER"          # a cluster left over by an interrupted run
fi
rm -rf "$WORK"
mkdir -p "$WORK"

t=$(now)
timeout -k 10 120 bash "$HERE/start.sh" "$CLUSTER"
# shellcheck disable=SC1091
. "$CLUSTER/env"
timed "cluster start" "$t"
SLURM_ARGS+=(--cores "$(sinfo -h -o %c | head -n 1)")

# --- 3. simulate ---------------------------------------------------------------------------------
t=$(now)
step timeout -k 10 300 "$PY" -m hklflow simulate "$WORK/local" --preset "$PRESET" >"$WORK/simulate.log" 2>&1 \
    || { tail -n 30 "$WORK/simulate.log"; exit 1; }
mkdir -p "$WORK/slurm"
cp -a "$WORK/local/config" "$WORK/slurm/config"
cp -al "$WORK/local/raw" "$WORK/slurm/raw" 2>/dev/null || cp -a "$WORK/local/raw" "$WORK/slurm/raw"
timed "simulate ($PRESET)" "$t"

run_snakemake() {  # run_snakemake NAME TIMEOUT ARGS...   (in WORK/NAME, log WORK/NAME.log)
    local name=$1 limit=$2; shift 2
    local rc=0
    step timeout -k 10 "$limit" "$PY" -m snakemake --snakefile "$REPO/Snakefile" \
        --directory "$WORK/$name" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "slurm stage: the $name run timed out after $limit s" >&2
        echo "--- last lines of $WORK/$name.log"; tail -n 60 "$WORK/$name.log"
        echo "slurm stage: the $name run failed (exit $rc)" >&2
        exit 1
    fi
    grep -E "^[0-9]+ of [0-9]+ steps" "$WORK/$name.log" | tail -n 1 || true
}

# --- 4. local run ------------------------------------------------------------------------------
t=$(now)
say "local run: snakemake ${LOCAL_ARGS[*]}"
run_snakemake local "$LOCAL_TIMEOUT" "${LOCAL_ARGS[@]}"
timed "local run" "$t"
LOCAL_S=$TIMED_S

# --- 5. SLURM run ------------------------------------------------------------------------------
t=$(now)
say "SLURM run: snakemake ${SLURM_ARGS[*]}"
run_snakemake slurm "$RUN_TIMEOUT" "${SLURM_ARGS[@]}"
timed "SLURM run" "$t"
SLURM_S=$TIMED_S

# --- 6. the jobs went through SLURM ----------------------------------------------------------
t=$(now)
step timeout -k 10 120 "$PY" "$HERE/check_slurm_jobs.py" "$WORK/slurm.log" --local-log "$WORK/local.log"

# --- 7. same outputs ----------------------------------------------------------------------------
step timeout -k 10 300 "$PY" "$HERE/compare_outputs.py" "$WORK/local" "$WORK/slurm" --quiet
timed "checks and comparison" "$t"

# --- 8. a short acquisition watched through SLURM -------------------------------------------
# `hklflow simulate --acquire` writes the tiny experiment in real time while `hklflow watch
# -- <the SLURM arguments>` reduces it as it lands; every run must succeed and the final
# results be the batch results (a local dry run with the experiment's own table plans nothing)
t=$(now)
LIVE=$WORK/live
"$PY" -m hklflow simulate "$LIVE" --preset tiny --acquire --fps 10 --pause 1 >"$WORK/acquire.log" 2>&1 &
ACQUIRE=$!
for _ in $(seq 600); do [ -f "$LIVE/config/config.yaml" ] && break; sleep 0.5; done
sleep 1
rc=0
step timeout -k 10 "$RUN_TIMEOUT" "$PY" -m hklflow watch "$LIVE" --exit-when-idle 5 -- "${SLURM_ARGS[@]}" \
    >"$WORK/watch.log" 2>&1 || rc=$?
wait "$ACQUIRE" || { tail -n 20 "$WORK/acquire.log"; echo "slurm stage: the acquisition failed" >&2; exit 1; }
if [ "$rc" -ne 0 ]; then
    tail -n 40 "$WORK/watch.log"; echo "slurm stage: hklflow watch failed (exit $rc)" >&2; exit 1
fi
grep "hklflow.watch INFO: run " "$WORK/watch.log" || true
if grep -q '"rc": [^0]' "$LIVE/live/history.jsonl"; then
    echo "slurm stage: a watched run failed (live/history.jsonl)" >&2; exit 1
fi
grep -l "submitted with SLURM jobid\|SLURM jobid" "$LIVE"/live/logs/run-*.log >/dev/null \
    || { echo "slurm stage: no job of the watched runs went through SLURM" >&2; exit 1; }
step timeout -k 10 300 "$PY" -m snakemake --snakefile "$REPO/Snakefile" --directory "$LIVE" -n \
    --cores 1 >"$WORK/live_dryrun.log" 2>&1
grep -q "Nothing to be done" "$WORK/live_dryrun.log" \
    || { tail -n 30 "$WORK/live_dryrun.log"; echo "slurm stage: the watched results are not the batch results" >&2; exit 1; }
timed "watched acquisition" "$t"

OK=1
say "passed in $(( $(now) - T_STAGE )) s (${TIMES[*]})"
# issue 15's figure: the SLURM run against the local one (wall seconds of the two snakemake runs)
say "SLURM run / local run: $(awk -v a="$SLURM_S" -v b="$LOCAL_S" 'BEGIN { printf "%.2f", a / (b > 0 ? b : 1) }')x"
