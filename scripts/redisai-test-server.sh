#!/usr/bin/env bash
# The Redis that docker-compose.yml and k8s/ deploy (redislabs/redisai:1.2.7-cpu-bionic: Redis 6.2.5 +
# RedisAI 1.2.7 on ONNX Runtime 1.11) for the RedisAI-server tests, from the tarballs in the folder that
# AIMQ_REDISAI_DIST names (redis-6.2.5-*.tar.gz, redisai-1.2.7-*.tar.gz; nothing is downloaded). No
# RedisAI server comes from a package registry: `./dev test` runs this only where someone gives the folder.
#
#   scripts/redisai-test-server.sh start DIR   unpack into DIR, start on a free 127.0.0.1 port, print its URL
#   scripts/redisai-test-server.sh stop DIR    stop the server started in DIR (by its recorded PID)
#
# Exits 3 from start, printing why, when the folder has no such tarballs.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${AIMQ_REDISAI_DIST:?name the folder of Redis 6.2.5 + RedisAI 1.2.7 tarballs}
cmd=${1:-}
dir=${2:-}
[[ -n $cmd && -n $dir ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

case "$cmd" in
  start)
    redis_tar=$(ls "$DIST"/redis-6.2.5-*.tar.gz 2>/dev/null | head -n 1 || true)
    ai_tar=$(ls "$DIST"/redisai-1.2.7-*.tar.gz 2>/dev/null | head -n 1 || true)
    if [[ -z $redis_tar || -z $ai_tar ]]; then
      echo "no Redis 6.2.5 / RedisAI 1.2.7 tarballs in $DIST" >&2
      exit 3
    fi
    mkdir -p "$dir"
    tar xzf "$redis_tar" -C "$dir"
    tar xzf "$ai_tar" -C "$dir"
    chmod 755 "$dir/redisai/redisai.so"   # Redis 7 refuses a module that is not executable
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # No persistence, like the image's default; one ONNX Runtime thread per model run, as in compose
    # and k8s (RedisAI's pools default to every core).
    "$dir/redis-6.2.5/bin/redis-server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" \
      --loadmodule "$dir/redisai/redisai.so" BACKENDSPATH "$dir/redisai/backends" \
      INTRA_OP_PARALLELISM 1 INTER_OP_PARALLELISM 1 >&2
    for _ in $(seq 100); do
      if [[ $("$dir/redis-6.2.5/bin/redis-cli" -p "$port" PING 2>/dev/null) == PONG ]]; then
        echo "redis://127.0.0.1:$port/0"
        exit 0
      fi
      sleep 0.1
    done
    echo "Redis 6.2.5 + RedisAI did not answer on port $port; its log:" >&2
    tail -n 20 "$dir/redis.log" >&2 || true
    exit 1
    ;;
  stop)
    if [[ -f $dir/redis.pid ]]; then
      pid=$(cat "$dir/redis.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
