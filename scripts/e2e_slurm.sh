#!/usr/bin/env bash
# End-to-end run of the workers as a Slurm job array on this machine (`make e2e-slurm`):
#
#   1. Debian's slurm-wlm and munge, installed when missing; a private munged (own key and socket) and a
#      single-node slurmctld + slurmd on 127.0.0.1 from a generated slurm.conf (no cgroups: process
#      tracking by /proc, no task plugin, no accounting), on ports of their own;
#   2. a private PostgreSQL (initdb in a temp folder, its own port) that takes only TLS connections
#      with a password (scram-sha-256, self-signed certificate): no trust anywhere on the cluster path;
#      the workers get the URL (sslmode=require) and PGPASSWORD from the environment sbatch exports;
#   3. db init, SPY imported and built, the smoke studies; `coordinator cluster slurm --workers 3
#      --submit` (the script the product writes, unchanged);
#   4. while they train: `scancel` of one array task and `scontrol requeue` of another, each mid-trial
#      (SIGTERM: the trial is failed as "worker stopped" and re-enqueued; the requeued task comes back
#      as a new worker and claims again);
#   5. checks through the SQL views: targets met exactly, nothing RUNNING or WAITING, three array
#      tasks ran trials, both interrupted trials failed, marked retried and were re-run by another
#      worker, one log per array task (the requeued one appended); then everything is stopped.
#
# Usage: scripts/e2e_slurm.sh [--synthetic SECONDS]   (sleep instead of training: same claim path)
# Needs root (apt-get, daemons as root). Everything lives in one temp folder, removed on exit.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

WORKERS=3
PG_PORT="${E2E_PG_PORT:-25433}"
CTLD_PORT="${E2E_SLURMCTLD_PORT:-26817}"
SLURMD_PORT="${E2E_SLURMD_PORT:-26818}"
SHARED_DATA="$(cd "${SHARED_DATA:-$REPO/../shared/data}" && pwd)"
WAIT_LIMIT_S="${WAIT_LIMIT_S:-1200}"
COORDINATOR="$REPO/.venv/bin/coordinator"
PG_BIN="$(dirname "$(readlink -f "$(command -v initdb)")")"
WORK="$(mktemp -d /tmp/scalesweep-slurm-e2e.XXXXXX)"
chmod 755 "$WORK"
PG="$WORK/pg"  # everything the private PostgreSQL touches, owned by the postgres user
NODE="$(hostname -s)"

WORKER_ARGS=()
case "${1:-}" in
    --synthetic) WORKER_ARGS=(--synthetic "${2:?--synthetic needs SECONDS}") ;;
    "") ;;
    *) echo "usage: $0 [--synthetic SECONDS]" >&2; exit 2 ;;
esac

JOB=""
log() { printf '[e2e-slurm %4ds] %s\n' "$SECONDS" "$*"; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
    local rc=$?
    set +e
    if [ -n "$JOB" ]; then
        if [ "$rc" -ne 0 ]; then
            log "last lines of each task's log:"
            for f in "$WORK"/logs/*.log; do echo "--- $f"; tail -5 "$f"; done
        fi
        scancel "$JOB" 2>/dev/null
    fi
    for pidfile in "$WORK/slurmd.pid" "$WORK/slurmctld.pid" "$WORK/munge/munged.pid"; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
    done
    [ -d "$PG/data" ] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG/data" -m fast -w stop >/dev/null 2>&1
    sleep 1
    rm -rf "$WORK"
    if [ "$rc" -eq 0 ]; then log "PASSED; wall time ${SECONDS}s"; else log "FAILED (exit $rc); wall time ${SECONDS}s"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- 1. Slurm and munge -----------------------------------------------------------------------
[ -x "$COORDINATOR" ] || fail "no $COORDINATOR: run \`make venv\` first"
for port in "$PG_PORT" "$CTLD_PORT" "$SLURMD_PORT"; do port_free "$port" || fail "port $port is in use (another run?)"; done
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    log "installing Debian's slurm-wlm and munge"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
log "$(slurmctld -V), munge $(munged --version 2>&1 | awk '{print $1}' | sed 's/munge-//')"

mkdir -p "$WORK/munge" "$WORK/state" "$WORK/spool" "$WORK/logs" "$WORK/daemons"
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$WORK/munge/munge.key"
munged --force --socket="$WORK/munge/munge.sock" --key-file="$WORK/munge/munge.key" \
    --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/munge/munged.log" --seed-file="$WORK/munge/seed"

export SLURM_CONF="$WORK/slurm.conf"
cat >"$SLURM_CONF" <<EOF
# One node on localhost for the end-to-end test. No cgroups: processes are tracked through /proc
# (proctrack/linuxproc), which is enough to signal and kill a job's processes here.
ClusterName=scalesweep-e2e
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
AuthInfo=socket=$WORK/munge/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/daemons/slurmctld.log
SlurmdLogFile=$WORK/daemons/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
# Time a task has between SIGTERM and SIGKILL: the worker stops at the next batch boundary.
KillWait=60
# Three one-CPU workers on a two-core machine: the node claims 4 CPUs.
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=e2e Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 30); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo -h -o %T | grep -q idle || fail "the Slurm node did not come up: $(tail -3 "$WORK/daemons/slurmctld.log")"
log "slurmctld + slurmd up: $(sinfo -h -o '%P %D node(s) %c CPUs %T')"

# --- 2. a private PostgreSQL: TLS and a password only ---------------------------------------------
PASSWORD="$(openssl rand -hex 16)"
install -d -o postgres -m 700 "$PG"
openssl req -new -x509 -days 1 -nodes -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$PG/server.key" -out "$PG/server.crt" 2>/dev/null
chown postgres "$PG/server.key" "$PG/server.crt" && chmod 600 "$PG/server.key"
printf '%s\n' "$PASSWORD" >"$WORK/pwfile" && chown postgres "$WORK/pwfile"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG/data" -U postgres --pwfile="$WORK/pwfile" \
    --auth=scram-sha-256 >"$WORK/initdb.log" 2>&1 || fail "initdb: $(tail -3 "$WORK/initdb.log")"
rm "$WORK/pwfile"
cat >"$PG/data/pg_hba.conf" <<EOF
# TLS and a password, nothing else (no trust, no plain-text connections).
hostssl all all 127.0.0.1/32 scram-sha-256
EOF
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG/data" -l "$PG/postgres.log" -w start -o \
    "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PG -c ssl=on \
     -c ssl_cert_file=$PG/server.crt -c ssl_key_file=$PG/server.key -c max_connections=50" >/dev/null \
    || fail "postgres did not start: $(tail -3 "$PG/postgres.log")"
export PGPASSWORD="$PASSWORD"
psql "host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres sslmode=require" -X -q -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE scalesweep LOGIN CREATEROLE PASSWORD '$PASSWORD'" -c "CREATE DATABASE scalesweep OWNER scalesweep"
# The password reaches the workers through PGPASSWORD (exported by sbatch), never a file or the URL.
export SCALESWEEP_DATABASE_URL="postgresql://scalesweep@127.0.0.1:$PG_PORT/scalesweep?sslmode=require"
if psql "host=127.0.0.1 port=$PG_PORT user=scalesweep dbname=scalesweep sslmode=disable" -X -c "SELECT 1" >/dev/null 2>&1; then
    fail "the database accepted a connection without TLS"
fi
log "private PostgreSQL on 127.0.0.1:$PG_PORT: TLS + scram-sha-256 only (plain-text connection refused)"

sql() { psql "host=127.0.0.1 port=$PG_PORT user=scalesweep dbname=scalesweep sslmode=require" -X -q -t -A -F ' | ' -v ON_ERROR_STOP=1 -c "$1"; }
table() { psql "host=127.0.0.1 port=$PG_PORT user=scalesweep dbname=scalesweep sslmode=require" -X -q -v ON_ERROR_STOP=1 -c "$1"; }
POLL_S=2
. "$REPO/scripts/e2e_checks.sh"  # wait_for, check

# --- 3. studies, then the job array -----------------------------------------------------------
"$COORDINATOR" db init >/dev/null
"$COORDINATOR" data import SPY "$SHARED_DATA/SPY.csv" >/dev/null
"$COORDINATOR" data build --symbol SPY >/dev/null
"$COORDINATOR" create-studies --preset smoke >/dev/null
STUDIES="$(sql "SELECT count(*) FROM study_progress")"
TARGET="$(sql "SELECT sum(target_trials) FROM study_progress")"
[ "$STUDIES" -gt 0 ] || fail "create-studies made no study"
log "db init, SPY built, $STUDIES smoke studies ($TARGET trials); submitting ${WORKER_ARGS[*]:-real CPU training}"

extra=()
[ ${#WORKER_ARGS[@]} -gt 0 ] && extra=(--worker-command "$REPO/.venv/bin/worker ${WORKER_ARGS[*]}")
"$COORDINATOR" cluster slurm --workers "$WORKERS" --job-name scalesweep-e2e --time 30:00 \
    --log-dir "$WORK/logs" --out "$WORK/workers.sbatch" "${extra[@]}" --submit | tee "$WORK/submit.out"
JOB="$(sed -n 's/^submitted job array \([0-9]*\):.*/\1/p' "$WORK/submit.out")"
[ -n "$JOB" ] || fail "no job id in the submit output"
squeue -j "$JOB" -h -o '  %i %T %R'

# --- 4. interrupt two tasks mid-trial --------------------------------------------------------
running_trial_of() { sql "SELECT study_name || ' #' || trial_number FROM trial_results WHERE worker = '$1' AND state = 'RUNNING' LIMIT 1"; }
wait_for "array tasks 1 and 2 to run a trial each" \
    "SELECT count(DISTINCT worker) = 2 FROM trial_results WHERE state = 'RUNNING' AND worker IN ('slurm-${JOB}_1', 'slurm-${JOB}_2')"
CANCELLED="slurm-${JOB}_1"
REQUEUED="slurm-${JOB}_2"
log "scancel ${JOB}_1 while it runs $(running_trial_of "$CANCELLED")"
scancel "${JOB}_1"
log "scontrol requeue ${JOB}_2 while it runs $(running_trial_of "$REQUEUED")"
scontrol requeue "${JOB}_2"
# A requeued task waits (about two minutes) before it may start again: once it is back in the queue,
# let it start now.
for _ in $(seq 60); do [ "$(squeue -j "${JOB}_2" -h -o %T 2>/dev/null)" = PENDING ] && break; sleep 1; done
scontrol update JobId="${JOB}_2" StartTime=now || fail "could not release the requeued task"

log "waiting for every target ($STUDIES studies, $TARGET trials) and for the array to finish"
wait_for "every study to reach its target" "SELECT bool_and(finished >= target_trials) FROM study_progress"
start=$SECONDS
while [ -n "$(squeue -j "$JOB" -h 2>/dev/null)" ]; do
    [ $((SECONDS - start)) -lt 300 ] || fail "array tasks still queued or running 300 s after the last target: $(squeue -j "$JOB" -h)"
    sleep 2
done

# --- 5. checks ----------------------------------------------------------------------------------
table "SELECT study_name, target_trials, finished, complete, pruned, failed, retried, running, waiting
       FROM study_progress ORDER BY study_name"
table "SELECT worker, count(*) AS trials, string_agg(state || CASE WHEN retried THEN '(retried)' ELSE '' END, ' ' ORDER BY started_at) AS states
       FROM trial_results GROUP BY worker ORDER BY worker"
check "targets met exactly in every study" "SELECT bool_and(finished = target_trials) FROM study_progress"
check "nothing RUNNING or WAITING" "SELECT count(*) = 0 FROM trial_results WHERE state IN ('RUNNING', 'WAITING')"
check "three distinct array tasks ran trials" \
    "SELECT count(DISTINCT regexp_replace(worker, '-requeue[0-9]+$', '')) = $WORKERS FROM trial_results WHERE worker LIKE 'slurm-${JOB}\\_%'"
for victim in "$CANCELLED" "$REQUEUED"; do
    check "$victim: its trial failed as 'worker stopped' and was marked retried" \
        "SELECT count(*) >= 1 FROM trial_results WHERE worker = '$victim' AND state = 'FAIL' AND retried AND reason = 'worker stopped'"
    check "$victim: the stopped trial was re-run by another worker and finished" \
        "SELECT count(*) >= 1 FROM trial_results k JOIN trial_results r ON r.study_name = k.study_name AND r.retry_of = k.trial_number
         WHERE k.worker = '$victim' AND k.state = 'FAIL' AND r.worker <> '$victim' AND r.state IN ('COMPLETE', 'PRUNED')"
done
check "every finished trial has a typed record" \
    "SELECT count(*) = 0 FROM trial_results WHERE state IN ('COMPLETE', 'PRUNED') AND n_params IS NULL"
check "no trial ran on anything but the CPU" "SELECT bool_and(device IN ('cpu', 'synthetic')) FROM trial_results WHERE worker IS NOT NULL"

LOGS="$(ls "$WORK"/logs/scalesweep-e2e-"$JOB"_*.log | wc -l)"
[ "$LOGS" = "$WORKERS" ] || fail "expected $WORKERS task logs, found $LOGS"
grep -q "SIGTERM received" "$WORK/logs/scalesweep-e2e-${JOB}_1.log" || fail "the cancelled task's log shows no SIGTERM"
grep -q "restart 1" "$WORK/logs/scalesweep-e2e-${JOB}_2.log" || fail "the requeued task's log shows no second start"
grep -q "every selected study has met its target" "$WORK/logs/scalesweep-e2e-${JOB}_0.log" || fail "task 0 did not finish cleanly"
log "ok  one log per array task: SIGTERM in task 1's, task 2's appended across its requeue, task 0 ended with every target met"
log "summary: $STUDIES studies, $TARGET target trials, $(sql "SELECT count(*) FROM trial_results") trials stored," \
    "$WORKERS array tasks (+1 requeued start), 1 scancelled and 1 requeued mid-trial, both trials re-run"
