#!/bin/bash
# Redis CPU per command for what the persistence worker sends per event (BENCHMARKS.md, "The
# copy into a user's log without Lua"): Redis on core 0, redis-benchmark (pipelines of 50, 1,000
# users' logs) on core 1, Redis's own CPU time from /proc divided by the commands run.
# The Lua script the copy used to be is given as an argument to compare (git show a998485:crates/broker/src/redis/scripts/xadd_if_newer.lua).
set -euo pipefail
PORT=${PORT:-6499}
N=${N:-300000}
SCRIPT=${1:-}
ENTRY='{"id":"evt_01M8V0MQFA2PCABCDEFGHJKMN","type":"notification","payload":{"t":1796202978795.123},"user":"many-123","time":"2026-12-02T09:16:18.795Z","sid":"1796202978795-0"}'
DIR=$(mktemp -d)
taskset -c 0 redis-server --port "$PORT" --save '' --appendonly no --dir "$DIR" --daemonize no >"$DIR/redis.log" 2>&1 &
REDIS=$!
trap 'kill $REDIS; rm -rf "$DIR"' EXIT
for _ in $(seq 50); do redis-cli -p "$PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
cpu() { awk '{print ($14+$15)}' "/proc/$REDIS/stat"; }
bench() {
  local label=$1; shift
  redis-cli -p "$PORT" flushall >/dev/null
  local before; before=$(cpu)
  taskset -c 1 redis-benchmark -p "$PORT" -n "$N" -P 50 -r 1000 -q "$@" >/dev/null
  echo "$label: $(( ($(cpu) - before) * 10000000 / N )) ns of Redis CPU per command"
}
if [ -n "$SCRIPT" ]; then
  BODY=$(cat "$SCRIPT")
  SHA=$(redis-cli -p "$PORT" script load "$BODY")
  bench "EVAL script" EVAL "$BODY" 1 "u:__rand_int__" '*' 0 "$ENTRY" 86400000 101
  bench "EVALSHA script" EVALSHA "$SHA" 1 "u:__rand_int__" '*' 0 "$ENTRY" 86400000 101
fi
bench "XADD MINID" XADD "u:__rand_int__" MINID 0 '*' d "$ENTRY"
bench "XTRIM MAXLEN" XTRIM "u:__rand_int__" MAXLEN 101
bench "PEXPIRE" PEXPIRE "u:__rand_int__" 86400000
bench "SET PX (index)" SET "e:__rand_int__" "1796202978795-0" PX 86400000
bench "PUBLISH (no subscriber)" PUBLISH "u:__rand_int__" "$ENTRY"
