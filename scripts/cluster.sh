#!/usr/bin/env bash
# A local Switchboard cluster without Docker: the docker-compose topology from local binaries.
#
#   scripts/cluster.sh up       Redis, two edges, a persistence worker, nginx in front of the
#                               edges (deploy/nginx.conf), Prometheus with the alert rules when
#                               it is installed; prints the addresses
#   scripts/cluster.sh up --tls the same with native TLS on the edges and the load balancer
#                               (https://, wss://), with a self-signed certificate made by
#                               openssl in the state directory for trying it out
#   scripts/cluster.sh status   what runs, and whether each node is ready
#   scripts/cluster.sh down     stops everything `up` started (by PID), nothing else
#
# Environment:
#   SWITCHBOARD_CLUSTER_DIR   state, logs and generated configs (default target/local-cluster)
#   SWITCHBOARD_CLUSTER_BIN   the switchboard binary (default: target/release/switchboard,
#                             built with `cargo build --release` when missing)
#   SWITCHBOARD_CLUSTER_PORT  the load balancer's port (default 8080; 0: any free port)
#   Any SWITCHBOARD_* setting (e.g. SWITCHBOARD_DRAIN_WINDOW=5s) reaches every node.
#
# Everything listens on 127.0.0.1 with the development credentials (loopback only), so the
# playground can mint tokens. `addresses.env` in the state directory lists where things are.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${SWITCHBOARD_CLUSTER_DIR:-target/local-cluster}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
BIN="${SWITCHBOARD_CLUSTER_BIN:-target/release/switchboard}"
COMPONENTS="prometheus lb worker edge-2 edge-1 redis"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pid_of() {
  local f="$DIR/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

# With --tls: curl trusts the cluster's own certificate.
CURL_TLS=()
[ -f "$DIR/tls/tls.crt" ] && CURL_TLS=(--cacert "$DIR/tls/tls.crt")

# Waits until `$2` (a URL) answers 200, or the process of component `$1` dies.
wait_ready() {
  local name=$1 url=$2
  for _ in $(seq 1 300); do
    if curl -fsS "${CURL_TLS[@]}" -o /dev/null "$url" 2>/dev/null; then return 0; fi
    if ! pid_of "$name" >/dev/null; then
      echo "error: $name exited; its log:" >&2
      tail -20 "$DIR/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "error: $name not ready at $url after 30 s; see $DIR/$name.log" >&2
  return 1
}

# Starts `$2...` in the background as component `$1` (its own process group, log and PID file).
start() {
  local name=$1
  shift
  if pid_of "$name" >/dev/null; then
    echo "error: $name already runs (PID $(pid_of "$name")); run \`$0 down\` first" >&2
    exit 1
  fi
  setsid "$@" >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

# A self-signed certificate for localhost and 127.0.0.1 (not a CA: clients take it as the
# server's own), valid 30 days.
make_certificate() {
  command -v openssl >/dev/null || { echo "error: --tls needs openssl (apt-get install openssl)" >&2; exit 1; }
  mkdir -p "$DIR/tls"
  printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >"$DIR/tls/ext.cnf"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$DIR/tls/tls.key" \
    -subj "/CN=localhost" -out "$DIR/tls/tls.csr" 2>/dev/null
  openssl x509 -req -in "$DIR/tls/tls.csr" -signkey "$DIR/tls/tls.key" -days 30 \
    -extfile "$DIR/tls/ext.cnf" -out "$DIR/tls/tls.crt" 2>/dev/null
  CURL_TLS=(--cacert "$DIR/tls/tls.crt")
}

up() {
  local tls=0
  [ "${1:-}" = "--tls" ] && tls=1
  command -v redis-server >/dev/null || { echo "error: redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
  command -v nginx >/dev/null || { echo "error: nginx is needed as the load balancer (apt-get install nginx)" >&2; exit 1; }
  if [ ! -x "$BIN" ]; then
    echo "building $BIN (cargo build --release)"
    cargo build --release --locked --quiet -p switchboard
  fi
  local lb_port="${SWITCHBOARD_CLUSTER_PORT:-8080}"
  [ "$lb_port" = 0 ] && lb_port=$(free_port)
  local redis_port edge1 edge2 worker prom
  redis_port=$(free_port); edge1=$(free_port); edge2=$(free_port); worker=$(free_port); prom=$(free_port)
  mkdir -p "$DIR/redis" "$DIR/nginx"
  rm -rf "$DIR/tls"
  CURL_TLS=()
  local http=http ws=ws edge_tls=()
  if [ "$tls" = 1 ]; then
    make_certificate
    http=https ws=wss
    edge_tls=(SWITCHBOARD_TLS_CERT="$DIR/tls/tls.crt" SWITCHBOARD_TLS_KEY="$DIR/tls/tls.key")
  fi

  start redis redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$DIR/redis" \
    --appendonly yes --appendfsync everysec --save ""
  for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  local redis_url="redis://127.0.0.1:$redis_port"

  # The development credentials: loopback only, and what the playground mints tokens with.
  local node_env=(env -u SWITCHBOARD_JWT_SECRET -u SWITCHBOARD_ADMIN_KEY -u SWITCHBOARD_CONFIG
    SWITCHBOARD_REDIS_URL="$redis_url")
  start edge-1 "${node_env[@]}" "${edge_tls[@]}" SWITCHBOARD_LISTEN="127.0.0.1:$edge1" "$BIN" edge
  start edge-2 "${node_env[@]}" "${edge_tls[@]}" SWITCHBOARD_LISTEN="127.0.0.1:$edge2" "$BIN" edge
  start worker "${node_env[@]}" SWITCHBOARD_LISTEN="127.0.0.1:$worker" "$BIN" worker
  wait_ready edge-1 "$http://127.0.0.1:$edge1/readyz"
  wait_ready edge-2 "$http://127.0.0.1:$edge2/readyz"
  wait_ready worker "http://127.0.0.1:$worker/readyz"

  # deploy/nginx.conf with the local addresses, and its files in the state directory.
  sed -e "s/server edge-1:8080/server 127.0.0.1:$edge1/" \
      -e "s/server edge-2:8080/server 127.0.0.1:$edge2/" \
      -e "s/listen 8080;/listen 127.0.0.1:$lb_port;/" \
      -e "s#access_log /dev/stdout#access_log $DIR/lb-access.log#" \
      -e "s#^http {#pid $DIR/nginx/nginx.pid;\nerror_log $DIR/lb-error.log;\nhttp {\n  client_body_temp_path $DIR/nginx/body;\n  proxy_temp_path $DIR/nginx/proxy;\n  fastcgi_temp_path $DIR/nginx/fastcgi;\n  uwsgi_temp_path $DIR/nginx/uwsgi;\n  scgi_temp_path $DIR/nginx/scgi;#" \
      deploy/nginx.conf >"$DIR/nginx.conf"
  if [ "$tls" = 1 ]; then
    # TLS from the client to nginx and from nginx to the edges (checked against the same
    # certificate).
    sed -i -e "s#listen 127.0.0.1:$lb_port;#listen 127.0.0.1:$lb_port ssl;\n    ssl_certificate $DIR/tls/tls.crt;\n    ssl_certificate_key $DIR/tls/tls.key;#" \
      -e "s#proxy_pass http://edges;#proxy_pass https://edges;\n      proxy_ssl_trusted_certificate $DIR/tls/tls.crt;\n      proxy_ssl_verify on;\n      proxy_ssl_name localhost;\n      proxy_ssl_session_reuse on;#" \
      "$DIR/nginx.conf"
  fi
  start lb nginx -p "$DIR/nginx" -e "$DIR/lb-error.log" -c "$DIR/nginx.conf" -g "daemon off;"
  wait_ready lb "$http://127.0.0.1:$lb_port/readyz"

  local prometheus_line="Prometheus: not installed (apt-get install prometheus), skipped"
  if command -v prometheus >/dev/null; then
    sed -e "s#edge-1:8080#127.0.0.1:$edge1#; s#edge-2:8080#127.0.0.1:$edge2#; s#worker:8080#127.0.0.1:$worker#" \
        -e "s#/etc/prometheus/alerts.yml#$(pwd)/deploy/prometheus/alerts.yml#" \
        deploy/prometheus/prometheus.yml >"$DIR/prometheus.yml"
    if [ "$tls" = 1 ]; then
      sed -i "s#^  - job_name: switchboard-edge#&\n    scheme: https\n    tls_config: { ca_file: $DIR/tls/tls.crt, server_name: localhost }#" "$DIR/prometheus.yml"
    fi
    start prometheus prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/prometheus-data" \
      --web.listen-address="127.0.0.1:$prom"
    prometheus_line="Prometheus: http://127.0.0.1:$prom (alerts: /alerts)"
  fi

  cat >"$DIR/addresses.env" <<EOF
LB=127.0.0.1:$lb_port
EDGE_1=127.0.0.1:$edge1
EDGE_2=127.0.0.1:$edge2
WORKER=127.0.0.1:$worker
REDIS=$redis_url
PROMETHEUS=127.0.0.1:$prom
SCHEME=$http
EOF
  cat <<EOF
Switchboard local cluster is up (state and logs in $DIR):
  load balancer (nginx): $http://127.0.0.1:$lb_port   playground: $http://127.0.0.1:$lb_port/playground
  edges:                 $http://127.0.0.1:$edge1  $http://127.0.0.1:$edge2
  worker:                http://127.0.0.1:$worker/metrics
  Redis:                 $redis_url
  $prometheus_line
  a token:               $BIN token --sub alice
  connect:               $ws://127.0.0.1:$lb_port/ws/notifications?token=...$( [ "$tls" = 1 ] && printf '\n  certificate:           %s (self-signed: trust it in the client, e.g. curl --cacert)' "$DIR/tls/tls.crt")
  drain an edge:         kill -TERM \$(cat $DIR/edge-1.pid)
  stop everything:       $0 down
EOF
}

status() {
  local any=0
  for name in redis edge-1 edge-2 worker lb prometheus; do
    if pid=$(pid_of "$name"); then
      any=1
      printf '%-11s PID %-8s running\n' "$name" "$pid"
    elif [ -f "$DIR/$name.pid" ]; then
      printf '%-11s stopped (see %s)\n' "$name" "$DIR/$name.log"
    fi
  done
  if [ -f "$DIR/addresses.env" ]; then
    # shellcheck disable=SC1091
    . "$DIR/addresses.env"
    for node in "edge-1 $EDGE_1 ${SCHEME:-http}" "edge-2 $EDGE_2 ${SCHEME:-http}" "worker $WORKER http" "lb $LB ${SCHEME:-http}"; do
      set -- $node
      code=$(curl -s "${CURL_TLS[@]}" -o /dev/null -w '%{http_code}' "$3://$2/readyz" || true)
      printf '%-11s %s://%s/readyz -> %s\n' "$1" "$3" "$2" "$code"
    done
  fi
  [ "$any" = 1 ] || echo "nothing runs (state directory $DIR)"
}

down() {
  for name in $COMPONENTS; do
    if pid=$(pid_of "$name"); then
      # Each component runs in its own process group (setsid): stop the group.
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      echo "stopped $name (PID $pid)"
    fi
    rm -f "$DIR/$name.pid"
  done
}

case "${1:-}" in
  up) up "${2:-}" ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 up [--tls]|status|down" >&2; exit 2 ;;
esac
