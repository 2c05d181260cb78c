#!/usr/bin/env bash
# End-to-end run of the compose stack on this machine (`make e2e-compose`), with no image registry:
#
#   1. Docker engine and Compose v2, installed and started when missing (Debian packages; the engine
#      runs with no bridge and no iptables: every container uses host networking);
#   2. a local base image (debootstrap bookworm + docker import), the project image on it with the
#      CPU torch, and a PostgreSQL image from Debian's package;
#   3. the stack from docker-compose.yml + docker/compose.e2e.yml: db on 127.0.0.1:55432, dashboard on
#      127.0.0.1:18080, nothing listening anywhere else and no traffic to any other address;
#   4. db init, SPY imported and built, the smoke studies, 4 workers; one worker is `docker kill`ed
#      while it runs a trial; the rest finish every study;
#   5. checks through the SQL views: targets met exactly, nothing RUNNING or WAITING, 4 distinct
#      workers, the killed worker's trial failed and re-run; then everything is torn down.
#
# Usage: scripts/e2e_compose.sh [--synthetic SECONDS]
#   --synthetic S: workers sleep S seconds per trial instead of training (same claim, heartbeat, tell
#   and record path): the container and coordination checks in minutes instead of real CPU training.
#
# Needs root (apt-get, dockerd). Images are kept between runs (the next run skips the builds);
# containers, the volume and a dockerd this script started are removed on exit, pass or fail.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

PROJECT=scalesweep-e2e
WORKERS=4
BASE_IMAGE=scalesweep-base:bookworm
APP_IMAGE=scalesweep:e2e          # must match docker/e2e.env
DB_IMAGE=scalesweep-db:e2e        # idem
SHARED_DATA="$(cd "${SHARED_DATA:-$REPO/../shared/data}" && pwd)"
WAIT_LIMIT_S="${WAIT_LIMIT_S:-2400}"
WORK="$(mktemp -d /tmp/scalesweep-e2e.XXXXXX)"
COORDINATOR="$REPO/.venv/bin/coordinator"
export DOCKER_BUILDKIT=0          # the classic builder: no buildx plugin needed, honours --network host
export DATA_DIR="$SHARED_DATA"    # mounted read-only at /data in the coordinator container

export WORKER_EXTRA_ARGS=""
case "${1:-}" in
    --synthetic) WORKER_EXTRA_ARGS="--synthetic ${2:?--synthetic needs SECONDS}" ;;
    "") ;;
    *) echo "usage: $0 [--synthetic SECONDS]" >&2; exit 2 ;;
esac

DOCKERD_PID=""
COPIED_WHEEL=""

log() { printf '[e2e %5ds] %s\n' "$SECONDS" "$*"; }
fail() { log "FAIL: $*"; exit 1; }
compose() { docker compose --project-name "$PROJECT" -f docker-compose.yml -f docker/compose.e2e.yml --env-file docker/e2e.env "$@"; }
cluster() { "$COORDINATOR" cluster -p "$PROJECT" -f docker-compose.yml -f docker/compose.e2e.yml --env-file docker/e2e.env "$@"; }
coordinator() { compose run --rm --no-TTY coordinator "$@"; }
sql() { compose exec -T db psql -U scalesweep -d scalesweep -X -q -t -A -F ' | ' -v ON_ERROR_STOP=1 -c "$1"; }
table() { compose exec -T db psql -U scalesweep -d scalesweep -X -q -v ON_ERROR_STOP=1 -c "$1"; }

cleanup() {
    local rc=$?
    set +e
    if [ "$rc" -ne 0 ] && docker info >/dev/null 2>&1; then
        log "last worker logs:"
        compose logs --no-color --tail 20 worker 2>/dev/null
    fi
    if docker info >/dev/null 2>&1; then
        log "tearing down (containers, volume)"
        compose --profile tools down --volumes --remove-orphans --timeout 10 >/dev/null 2>&1
    fi
    [ -n "$COPIED_WHEEL" ] && rm -f "$COPIED_WHEEL"
    if [ -n "$DOCKERD_PID" ]; then
        log "stopping the dockerd this script started (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID" && wait "$DOCKERD_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
    if [ "$rc" -eq 0 ]; then log "PASSED; wall time ${SECONDS}s"; else log "FAILED (exit $rc); wall time ${SECONDS}s"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_docker() {
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        log "installing the Docker engine (Debian docker.io)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
    fi
    if docker info >/dev/null 2>&1; then
        log "Docker engine: running already"
        return
    fi
    log "starting dockerd (no bridge, no iptables)"
    dockerd --bridge=none --iptables=false >"$WORK/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
    fail "dockerd did not start; its log: $(tail -3 "$WORK/dockerd.log")"
}

ensure_compose() {
    if docker compose version >/dev/null 2>&1; then
        log "$(docker compose version)"
        return
    fi
    # Debian bookworm has no Compose v2 package; trixie's docker-compose .deb is a static Go binary.
    log "installing Compose v2 from Debian trixie's docker-compose package"
    local apt="$WORK/apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        >"$apt/sources.list.d/trixie.sources"
    local opts=(-o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "Dir::Etc::SourceList=/dev/null"
                -o "Dir::Etc::SourceParts=$apt/sources.list.d")
    apt-get "${opts[@]}" update -qq
    (cd "$apt" && apt-get "${opts[@]}" download docker-compose >/dev/null 2>&1)
    dpkg -x "$apt"/docker-compose_*.deb "$apt/x"
    mkdir -p "$HOME/.docker/cli-plugins"
    install -m 755 "$apt/x/usr/libexec/docker/cli-plugins/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
    docker compose version >/dev/null || fail "Compose v2 did not install"
    log "$(docker compose version)"
}

ensure_base_image() {
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE: present"
        return
    fi
    command -v debootstrap >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    log "building $BASE_IMAGE with debootstrap (Debian bookworm, python3 + venv)"
    local root="$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
        http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 || fail "debootstrap: $(tail -3 "$WORK/debootstrap.log")"
    # Trust what this host trusts (it may reach PyPI through a TLS-inspecting proxy).
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    rm -rf "$root"
}

build_images() {
    # The CPU torch wheel from this machine goes in through the build context (PyPI's Linux torch is
    # the CUDA build); without one, the CPU index is used.
    local wheel torch_args
    wheel="$(ls /opt/wheels/torch-*+cpu-cp311-*.whl 2>/dev/null | head -1 || true)"
    if [ -n "$wheel" ]; then
        if [ ! -e "docker/wheels/$(basename "$wheel")" ]; then
            cp "$wheel" docker/wheels/ && COPIED_WHEEL="docker/wheels/$(basename "$wheel")"
        fi
        local version
        version="$(basename "$wheel" | cut -d- -f2)"
        torch_args=(--build-arg "TORCH_SPEC=torch==$version")
    else
        torch_args=(--build-arg "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu")
    fi
    log "building $APP_IMAGE (CPU torch: ${torch_args[*]})"
    docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" "${torch_args[@]}" -t "$APP_IMAGE" . \
        >"$WORK/build-app.log" 2>&1 || fail "image build: $(tail -5 "$WORK/build-app.log")"
    log "building $DB_IMAGE (PostgreSQL 15 from Debian)"
    docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$DB_IMAGE" docker/db \
        >"$WORK/build-db.log" 2>&1 || fail "db image build: $(tail -5 "$WORK/build-db.log")"
    log "images: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^($APP_IMAGE|$DB_IMAGE|$BASE_IMAGE) " | paste -sd, -)"
}

. "$REPO/scripts/e2e_checks.sh"  # wait_for, check

# --- 1-2: engine, compose, images ----------------------------------------------------------------
[ -x "$COORDINATOR" ] || fail "no $COORDINATOR: run \`make venv\` first"
ensure_docker
ensure_compose
ensure_base_image
build_images

# --- 3-4: the stack ---------------------------------------------------------------------------
compose --profile tools down --volumes --remove-orphans >/dev/null 2>&1 || true  # leftovers of an aborted run
log "cluster up --workers 0 (db + dashboard)"
cluster up --workers 0
coordinator db init
coordinator data import SPY /data/SPY.csv
coordinator data build --symbol SPY
coordinator create-studies --preset smoke
table "SELECT study_name, target_trials FROM study_progress ORDER BY study_name"
STUDIES="$(sql "SELECT count(*) FROM study_progress")"
TARGET="$(sql "SELECT sum(target_trials) FROM study_progress")"
[ "$STUDIES" -gt 0 ] || fail "create-studies made no study"

log "cluster scale $WORKERS (trials: ${WORKER_EXTRA_ARGS:-real CPU training})"
cluster scale "$WORKERS"
wait_for "every worker to claim a trial" \
    "SELECT count(DISTINCT worker) = $WORKERS FROM trial_results WHERE worker IS NOT NULL"
VICTIM="$(sql "SELECT worker FROM trial_results WHERE state = 'RUNNING' ORDER BY started_at LIMIT 1")"
[ -n "$VICTIM" ] || fail "no RUNNING trial to interrupt"
docker kill "$VICTIM" >/dev/null
log "docker kill $VICTIM (SIGKILL) while it runs: $(sql "SELECT study_name || ' #' || trial_number FROM trial_results WHERE worker = '$VICTIM' AND state = 'RUNNING'")"
KILLED_TRIALS="$(sql "SELECT count(*) FROM trial_results WHERE worker = '$VICTIM' AND state = 'RUNNING'")"
[ "$KILLED_TRIALS" -ge 1 ] || fail "$VICTIM finished its trial before the kill landed; rerun"

log "waiting for every target ($STUDIES studies, $TARGET trials) and for the workers to exit"
wait_for "every study to reach its target" \
    "SELECT bool_and(finished >= target_trials) FROM study_progress"
start=$SECONDS
while [ -n "$(compose ps --quiet --status running worker)" ]; do
    [ $((SECONDS - start)) -lt 300 ] || fail "workers still running 300 s after the last target was met"
    sleep 3
done
cluster status

# --- 5: checks -------------------------------------------------------------------------------
table "SELECT study_name, target_trials, finished, complete, pruned, failed, retried, running, waiting
       FROM study_progress ORDER BY study_name"
table "SELECT worker, count(*) AS trials, string_agg(state || CASE WHEN retried THEN '(retried)' ELSE '' END, ' ' ORDER BY started_at) AS states
       FROM trial_results GROUP BY worker ORDER BY worker"
check "targets met exactly in every study" \
    "SELECT bool_and(finished = target_trials) FROM study_progress"
check "nothing RUNNING or WAITING" \
    "SELECT count(*) = 0 FROM trial_results WHERE state IN ('RUNNING', 'WAITING')"
check "$WORKERS distinct workers in trial_results.worker" \
    "SELECT count(DISTINCT worker) = $WORKERS FROM trial_results"
check "the killed worker's trial failed and was marked retried" \
    "SELECT count(*) >= 1 FROM trial_results WHERE worker = '$VICTIM' AND state = 'FAIL' AND retried"
check "the killed worker's trial was re-run by another worker and finished" \
    "SELECT count(*) >= 1 FROM trial_results k JOIN trial_results r
       ON r.study_name = k.study_name AND r.retry_of = k.trial_number
     WHERE k.worker = '$VICTIM' AND k.state = 'FAIL' AND r.worker <> '$VICTIM' AND r.state IN ('COMPLETE', 'PRUNED')"
check "every finished trial has a typed record" \
    "SELECT count(*) = 0 FROM trial_results WHERE state IN ('COMPLETE', 'PRUNED') AND n_params IS NULL"

EXITS="$(compose ps --all --format '{{.ID}} {{.ExitCode}}' worker | sort)"
log "worker exit codes: $(echo "$EXITS" | paste -sd, -)"
while read -r id code; do
    if [[ "$VICTIM" == "$id"* || "$id" == "$VICTIM"* ]]; then
        [ "$code" = 137 ] || fail "killed worker $id exited $code, expected 137"
    else
        [ "$code" = 0 ] || fail "worker $id exited $code, expected 0 (targets met)"
    fi
done <<<"$EXITS"
log "ok  the killed worker exited 137, the other $((WORKERS - 1)) exited 0"

STUDIES_SEEN="$(python3 -c 'import json, urllib.request
print(len(json.load(urllib.request.urlopen("http://127.0.0.1:18080/api/studies", timeout=10))["study_summaries"]))')"
[ "$STUDIES_SEEN" = "$STUDIES" ] || fail "dashboard lists $STUDIES_SEEN studies, expected $STUDIES"
log "ok  dashboard on 127.0.0.1:18080 lists the $STUDIES studies"
log "summary: $STUDIES studies, $TARGET target trials, $(sql "SELECT count(*) FROM trial_results") trials stored, $WORKERS workers, 1 killed and its trial re-run"
