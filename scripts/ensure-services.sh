#!/usr/bin/env bash
# Make sure Redis and RabbitMQ answer on localhost.
#   running            -> nothing to do
#   installed, down    -> start it (bound to localhost, as the project expects)
#   missing            -> with --install: apt-get install the Debian package, then start it;
#                         without: say how to install it and exit 1
set -euo pipefail

install=0
[[ "${1:-}" == "--install" ]] && install=1

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2 tries=${3:-60}
  for _ in $(seq "$tries"); do port_open "$port" && return 0; sleep 1; done
  echo "error: $name did not start listening on 127.0.0.1:$port" >&2
  return 1
}

apt_install() {
  if [[ $install -eq 0 ]]; then
    echo "error: $1 is not installed. Install it with: sudo apt-get install -y $1   (or set AIMQ_REDIS_URL / AIMQ_RABBITMQ_URL to a server you have)" >&2
    exit 1
  fi
  local sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "installing $1 (Debian package)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null
}

ensure_redis() {
  port_open 6379 && { echo "redis: running on 127.0.0.1:6379"; return; }
  command -v redis-server >/dev/null || apt_install redis-server
  echo "redis: starting"
  mkdir -p /tmp/aimq-redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /tmp/aimq-redis --logfile /tmp/aimq-redis/redis.log
  wait_port 6379 redis 30
}

ensure_rabbitmq() {
  port_open 5672 && { echo "rabbitmq: running on 127.0.0.1:5672"; return; }
  command -v rabbitmq-server >/dev/null || [[ -x /usr/sbin/rabbitmq-server ]] || apt_install rabbitmq-server
  echo "rabbitmq: starting"
  # The Debian package may start it on install; -detached on a running node just fails, so check again.
  port_open 5672 || RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 /usr/sbin/rabbitmq-server -detached || true
  wait_port 5672 rabbitmq 120
}

ensure_redis
ensure_rabbitmq
