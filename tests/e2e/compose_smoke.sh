#!/usr/bin/env bash
# End-to-end smoke test of the container build and docker-compose.yml:
#   build the image (and the nginx load balancer), `docker compose up`, wait for healthy, classify a
#   real Fashion-MNIST test image, call /conv and the health routes, check the container runs as a
#   non-root user with model_store mounted read-only, stop it with SIGTERM (graceful exit), then the
#   `scale` profile: N replicas behind nginx, requests must reach every replica. Cleans up on exit.
#
#   bash tests/e2e/compose_smoke.sh
#
# With no Docker engine running it starts one with ../shared/tools/docker-sandbox.sh (and stops it
# again on exit). Environment:
#   BNN_SMOKE_INDEX=0       Fashion-MNIST test-set index to classify (0 is an ankle boot, label 9)
#   BNN_SMOKE_SCALE=1       also run the `scale` profile (0 to skip)
#   BNN_REPLICAS=3          replicas for the scale profile
#   BNN_SMOKE_KEEP=0        1: leave the containers running (and the engine) for debugging
#   BNN_SMOKE_NO_BUILD=0    1: skip docker build, use the images already tagged
#   BNN_IMAGE, BNN_LB_IMAGE image tags (default bnn-serve:latest, bnn-serve-lb:latest)
#   BNN_MODEL_STORE_DIR     model store mounted into the containers (default ./model_store)
#   BNN_SHARED_DIR          where shared/ is (default: ../shared beside the repository)
set -euo pipefail
SECONDS=0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
SHARED=${BNN_SHARED_DIR:-$ROOT/../shared}
INDEX=${BNN_SMOKE_INDEX:-0}
SCALE=${BNN_SMOKE_SCALE:-1}
export BNN_REPLICAS=${BNN_REPLICAS:-3}
PROJECT=bnn-smoke-$$
# the images stay after the run (they are the build cache of the next one); containers, networks
# and volumes go
export BNN_IMAGE=${BNN_IMAGE:-bnn-serve:latest} BNN_LB_IMAGE=${BNN_LB_IMAGE:-bnn-serve-lb:latest}
WORK=$(mktemp -d)
ENGINE_STARTED=0

log() { printf '\n[compose-smoke %3ds] %s\n' "$SECONDS" "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- engine -------------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
  log "no Docker engine running: starting one with $SHARED/tools/docker-sandbox.sh"
  [ -f "$SHARED/tools/docker-sandbox.sh" ] || { echo "no $SHARED/tools/docker-sandbox.sh (set BNN_SHARED_DIR)" >&2; exit 1; }
  bash "$SHARED/tools/docker-sandbox.sh" up
  ENGINE_STARTED=1
fi
if ! docker compose version >/dev/null 2>&1; then
  export DOCKER_CONFIG=${DOCKER_SANDBOX_DIR:-/tmp/docker-sandbox}/config   # where the sandbox puts the compose v2 plugin
  docker compose version >/dev/null 2>&1 || bash "$SHARED/tools/docker-sandbox.sh" up
fi
docker compose version
docker compose --profile scale config -q  # the file parses the way the engine reads it
compose() { docker compose -p "$PROJECT" "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ]; then
    log "FAILED (rc=$rc): container state and logs"
    compose --profile scale ps -a
    compose --profile scale logs --no-color --tail=80
  fi
  if [ "${BNN_SMOKE_KEEP:-0}" = 1 ]; then
    log "BNN_SMOKE_KEEP=1: leaving project $PROJECT up (docker compose -p $PROJECT --profile scale down -v)"
  else
    compose --profile scale down -v --remove-orphans --timeout 10 >/dev/null 2>&1
    [ "$ENGINE_STARTED" = 1 ] && bash "$SHARED/tools/docker-sandbox.sh" down
  fi
  rm -rf "$WORK"
  log "done, rc=$rc, ${SECONDS}s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- preconditions ------------------------------------------------------------------------------
export BNN_MODEL_STORE_DIR=$(cd "${BNN_MODEL_STORE_DIR:-model_store}" 2>/dev/null && pwd || true)
[ -n "$BNN_MODEL_STORE_DIR" ] && [ -n "$(ls -A "$BNN_MODEL_STORE_DIR")" ] \
  || { echo "the model store (${BNN_MODEL_STORE_DIR:-model_store/}) is missing or empty: nothing to serve" >&2; exit 1; }
log "model store $BNN_MODEL_STORE_DIR: $(ls "$BNN_MODEL_STORE_DIR" | tr '\n' ' ')"
LABEL=$(python3 tests/e2e/smoke_checks.py png --index "$INDEX" --out "$WORK/fashion-mnist-$INDEX.png")
log "Fashion-MNIST test image #$INDEX, label $LABEL -> $WORK/fashion-mnist-$INDEX.png"

# ---- build --------------------------------------------------------------------------------------
if [ "${BNN_SMOKE_NO_BUILD:-0}" != 1 ]; then
  log "docker build $BNN_IMAGE"
  docker build -q -t "$BNN_IMAGE" .
  [ "$SCALE" = 1 ] && { log "docker build $BNN_LB_IMAGE"; docker build -q -t "$BNN_LB_IMAGE" deploy/nginx; }
fi
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$BNN_IMAGE"

# ---- one replica ----------------------------------------------------------------------------------
export BNN_PORT=$(free_port) BNN_LB_PORT=$(free_port) BNN_GRPC_PORT=$(free_port)
URL=http://127.0.0.1:$BNN_PORT
log "docker compose up -d (port $BNN_PORT)"
compose up -d --no-build bnn
CID=$(compose ps -q bnn)

log "waiting for the container's HEALTHCHECK"
for _ in $(seq 180); do
  H=$(docker inspect -f '{{.State.Health.Status}}' "$CID")
  [ "$H" = healthy ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$CID")" = true ] || { echo "container exited" >&2; exit 1; }
  sleep 1
done
[ "$H" = healthy ] || { echo "not healthy after 180s: $H" >&2; exit 1; }
echo "  ok  healthy after ${SECONDS}s"

log "HTTP checks against $URL"
python3 tests/e2e/smoke_checks.py check --url "$URL" --image "$WORK/fashion-mnist-$INDEX.png" --label "$LABEL"

log "container checks"
UID_IN=$(compose exec -T bnn id -u)
[ "$UID_IN" != 0 ] || { echo "the container runs as root" >&2; exit 1; }
PID1_UID=$(compose exec -T bnn sh -c 'awk "/^Uid:/{print \$2}" /proc/1/status')
[ "$PID1_UID" != 0 ] || { echo "PID 1 runs as root" >&2; exit 1; }
echo "  ok  runs as uid $UID_IN (PID 1 uid $PID1_UID)"
compose exec -T bnn sh -c 'touch /app/model_store/.w 2>/dev/null && exit 1 || exit 0' \
  || { echo "model_store is writable inside the container" >&2; exit 1; }
echo "  ok  model_store mounted read-only"
compose exec -T bnn sh -c '! command -v gcc && ! command -v cc && ! command -v cmake' >/dev/null \
  || { echo "a compiler is present in the runtime image" >&2; exit 1; }
echo "  ok  no compiler in the runtime image"

log "docker compose stop (SIGTERM, graceful shutdown)"
T0=$SECONDS
compose stop bnn >/dev/null
EXIT=$(docker inspect -f '{{.State.ExitCode}}' "$CID")
[ "$EXIT" = 0 ] || { echo "exit code $EXIT after SIGTERM (expected 0: graceful)" >&2; compose logs --tail=20 bnn; exit 1; }
echo "  ok  exited 0 after SIGTERM in $((SECONDS - T0))s"
compose rm -f -s bnn >/dev/null

# ---- several replicas behind nginx ------------------------------------------------------------
if [ "$SCALE" = 1 ]; then
  log "profile scale: $BNN_REPLICAS replicas behind nginx (port $BNN_LB_PORT)"
  compose --profile scale up -d --no-build bnn-replica lb
  python3 tests/e2e/smoke_checks.py wait --url "http://127.0.0.1:$BNN_LB_PORT" --timeout 240
  python3 tests/e2e/smoke_checks.py spread --url "http://127.0.0.1:$BNN_LB_PORT" --replicas "$BNN_REPLICAS" --requests $((BNN_REPLICAS * 10))
  python3 tests/e2e/smoke_checks.py check --url "http://127.0.0.1:$BNN_LB_PORT" --image "$WORK/fashion-mnist-$INDEX.png" --label "$LABEL"
  echo "  nginx access log, requests per upstream:"
  compose logs --no-color lb | grep -o 'upstream=[0-9.:]*' | sort | uniq -c | sed 's/^/   /'
fi

log "PASSED"
