#!/usr/bin/env bash
# Runs the whole Switchboard test suite on a fresh machine: installs what the tests need,
# then runs every crate's unit and integration tests. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# Disk: the test build is ~2 GB (30-odd test binaries, each linking everything). Without
# debug info or incremental state it stays there; with the dev profile's line tables it is
# ~2.6 GB, with full debug info far more (it once filled a CI machine's disk). Panics still
# say file and line; backtraces name functions.
export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false CARGO_PROFILE_DEV_STRIP=debuginfo
free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt 4000000 ]; then
  echo "warning: only $((free_kb / 1024)) MB free here; the test build and its Redis data need ~3 GB" >&2
fi

# The broker and cluster tests start real Redis servers and a local Redis Cluster.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  if command -v apt-get >/dev/null; then
    say "installing redis-server (apt-get)"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
    # The package starts a system service on 6379; the tests use their own servers.
    ($SUDO systemctl stop redis-server 2>/dev/null || $SUDO service redis-server stop 2>/dev/null) || true
  else
    echo "error: the tests need redis-server and redis-cli (Redis >= 7); install them with your package manager" >&2
    exit 1
  fi
fi

# Valkey runs the broker suites and part of the fault matrix a second time (Valkey 8 beside
# Redis 7). Debian 12 ships it in bookworm-backports; later releases in main.
if ! command -v valkey-server >/dev/null || ! command -v valkey-cli >/dev/null; then
  if command -v apt-get >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    target=""
    if [ "$codename" = bookworm ]; then
      say "installing valkey-server (apt-get, from bookworm-backports)"
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        | $SUDO tee /etc/apt/sources.list.d/switchboard-bookworm-backports.sources >/dev/null
      target="-t bookworm-backports"
    else
      say "installing valkey-server (apt-get)"
    fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $target valkey-server valkey-tools valkey-sentinel >/dev/null
    # The package starts a system service on 6379; the tests use their own servers.
    ($SUDO systemctl stop valkey-server 2>/dev/null || $SUDO service valkey-server stop 2>/dev/null) || true
  else
    echo "error: the tests need valkey-server and valkey-cli (Valkey >= 8); install them with your package manager" >&2
    exit 1
  fi
fi

# The local-cluster test runs scripts/cluster.sh: nginx as the load balancer, curl for readiness.
missing=""
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
command -v curl >/dev/null || missing="$missing curl"
# openssl: the throwaway certificates of `cluster.sh up --tls` and the chart check.
command -v openssl >/dev/null || missing="$missing openssl"
# make: the build of jemalloc, the binary's allocator (part of any usual Rust setup, but not all).
command -v make >/dev/null || missing="$missing make"
if [ -n "$missing" ]; then
  if command -v apt-get >/dev/null; then
    say "installing$missing (apt-get), for the build, the local-cluster test and the chart check"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    # The package may start a system nginx on port 80; the test runs its own.
    ($SUDO systemctl stop nginx 2>/dev/null || $SUDO service nginx stop 2>/dev/null) || true
  else
    echo "error: the local-cluster test needs$missing; install them with your package manager" >&2
    exit 1
  fi
fi
export PATH="$PATH:/usr/sbin"

# Sharded pub/sub (SSUBSCRIBE, used on Redis Cluster) and the RESP3 push messages the broker
# relies on need Redis 7.
redis_major=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')
if [ -z "$redis_major" ] || [ "$redis_major" -lt 7 ]; then
  echo "error: the tests need Redis >= 7 (sharded pub/sub); found: $(redis-server --version)" >&2
  echo "       install a newer redis-server (Debian 12+ ships 7.0) or put one first on PATH" >&2
  exit 1
fi

# sb-load's --plot test draws with a TrueType font.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && [ ! -f /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf ]; then
  if command -v apt-get >/dev/null; then
    say "installing fonts-dejavu-core (apt-get), for sb-load --plot"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fonts-dejavu-core >/dev/null
  else
    echo "error: sb-load's plot test needs a TrueType font (DejaVu Sans); install fonts-dejavu-core" >&2
    exit 1
  fi
fi

# The document-client tests drive the gateway with seed 000's own Python client, which uses
# the `websockets` library.
if ! python3 -c 'import websockets' 2>/dev/null; then
  say "installing the Python websockets library (seed 000's client)"
  python3 -m pip install --quiet --disable-pip-version-check 'websockets>=12' \
    || { echo "error: could not install the Python 'websockets' package; install it with: python3 -m pip install websockets" >&2; exit 1; }
fi

# The ocvr document-client test runs seed 001's JavaScript client in Node (fetch, WebSocket).
if ! command -v node >/dev/null; then
  if command -v apt-get >/dev/null; then
    say "installing nodejs (apt-get), for seed 001's JavaScript client"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "error: the tests need Node.js (seed 001's JavaScript client); install nodejs" >&2
    exit 1
  fi
fi
# Node 22+ has a global WebSocket, Node 20 behind --experimental-websocket; older ones get the
# `ws` package next to the client.
has_websocket='process.exit(typeof WebSocket === "function" ? 0 : 1)'
if ! node -e "$has_websocket" 2>/dev/null && ! node --experimental-websocket -e "$has_websocket" 2>/dev/null \
  && [ ! -d crates/cli/tests/clients/node_modules/ws ]; then
  say "installing the ws package for Node $(node --version) (no global WebSocket)"
  npm install --silent --no-save --no-package-lock --prefix crates/cli/tests/clients 'ws@8' \
    || { echo "error: could not install the 'ws' npm package for Node" >&2; exit 1; }
fi

# The playground and seed 004's own client run in headless Chromium (Debian's package),
# driven by playwright-core (pinned in tests/browser/package-lock.json).
if ! command -v chromium >/dev/null; then
  if command -v apt-get >/dev/null; then
    say "installing chromium (apt-get), for the browser tests"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "error: the browser tests need Chromium at /usr/bin/chromium (or CHROMIUM=path); install chromium" >&2
    exit 1
  fi
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  say "installing playwright-core (npm ci), for the browser tests"
  (cd tests/browser && npm ci --silent --no-audit --no-fund) \
    || { echo "error: could not install playwright-core (cd tests/browser && npm ci)" >&2; exit 1; }
fi

say "cargo test --workspace"
cargo test --workspace --locked "$@"

# The fault matrix (crates/cli/tests/faults.rs, ../shared/design/ha.md): the real binaries on
# real Redis under live traffic through Sentinel failovers, stalls, pauses, lost
# subscriptions, cluster failovers and slots moved with their keys, one at a time (~3 min),
# then the broker suites and F1, F8, F12 again on Valkey (~3 min). Each scenario's findings
# are in target/tmp/fault-matrix/, gathered in target/fault-matrix.json.
rm -rf target/tmp/fault-matrix
say "fault matrix on Redis $(redis-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p')"
# (`--workspace`, as above: the same features, so nothing is compiled again.)
cargo test --workspace --locked --test faults -- --ignored --test-threads 1
say "Valkey $(valkey-server --version | sed -n 's/.* v=\([0-9.]*\).*/\1/p'): the broker suites, then the fault matrix's F1, F8, F12"
SWITCHBOARD_TEST_SERVER=valkey cargo test --workspace --locked --test redis_broker --test redis_sentinel --test redis_cluster_faults
SWITCHBOARD_TEST_SERVER=valkey cargo test --workspace --locked --test faults -- --ignored --test-threads 1 f1_ f8_ f12_
python3 scripts/fault_report.py target/tmp/fault-matrix target/fault-matrix.json

say "browser: the playground and seed 004's client in headless Chromium"
cargo build --locked --quiet --bin switchboard
node tests/browser/run.mjs target/debug/switchboard target/browser-test

# RFC 6455 conformance, short: the Autobahn suite's cases 1-7 and 9.1-9.2, and a few
# permessage-deflate cases (12.x, 13.x), against the echo endpoint (same decoder, assembler and
# output as the real endpoints). The runner is the machine's Python 3 port of Autobahn in
# ../shared/tools/autobahn (AUTOBAHN_TOOLS to point elsewhere); the full run is in BENCHMARKS.md.
autobahn="${AUTOBAHN_TOOLS:-../shared/tools/autobahn}"
if [ -x "$autobahn/run.sh" ]; then
  say "Autobahn: RFC 6455 cases 1-7, 9.1-9.2 and permessage-deflate samples against the echo endpoint"
  # The runner's first set-up ports the suite to Python 3 in two processes, and once left it
  # unimportable on a busy machine (its own smoke test then fails): build it anew once more.
  if ! bash "$autobahn/setup.sh" >target/autobahn-setup.log 2>&1; then
    echo "the Autobahn runner's set-up failed; building it anew (target/autobahn-setup.log)"
    bash "$autobahn/setup.sh" --force >>target/autobahn-setup.log 2>&1 \
      || { tail -20 target/autobahn-setup.log >&2; echo "error: could not set up the Autobahn runner" >&2; exit 1; }
  fi
  ab_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  SWITCHBOARD_DIAGNOSTICS__ECHO_PATH=/diag/echo target/debug/switchboard serve --listen "127.0.0.1:$ab_port" \
    >target/autobahn-serve.log 2>&1 &
  ab_pid=$!
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$ab_port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  ab_rc=0
  AUTOBAHN_CASES="1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.1.*,9.2.*,12.1.1,12.1.2,12.1.3,13.1.1,13.1.2,13.3.1,13.7.1" \
    "$autobahn/run.sh" "ws://127.0.0.1:$ab_port/diag/echo" target/autobahn >target/autobahn.log 2>&1 || ab_rc=$?
  kill "$ab_pid" 2>/dev/null || true
  tail -1 target/autobahn.log
  if [ "$ab_rc" != 0 ]; then
    tail -20 target/autobahn.log >&2
    echo "error: Autobahn conformance failed (report: target/autobahn/reports/index.html)" >&2
    exit 1
  fi
else
  say "Autobahn: NOT RUN - no runner at $autobahn (set AUTOBAHN_TOOLS); the framing unit tests and fuzz targets still run"
fi

# The Helm chart, without a cluster or a helm binary: Helm's own SDK (helm-python-sdk) lints and
# renders it, kubernetes-validate checks every manifest, the real binary checks the pods' env.
helm_venv=target/helm-venv
if [ ! -x "$helm_venv/bin/python" ] || ! "$helm_venv/bin/python" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null; then
  say "installing helm-python-sdk and kubernetes-validate (a venv in $helm_venv), for the chart check"
  if ! python3 -m venv "$helm_venv" 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$helm_venv"
  fi
  "$helm_venv/bin/pip" install --quiet --disable-pip-version-check -r tests/helm/requirements.txt \
    || { echo "error: could not install the chart check's tools (pip install -r tests/helm/requirements.txt)" >&2; exit 1; }
fi
say "helm chart: lint, render, validate (helm/switchboard)"
"$helm_venv/bin/python" tests/helm/check_chart.py target/debug/switchboard

# The alert rules and the dashboard, with Prometheus' promtool (Debian's prometheus package;
# its service, if the package starts one, is stopped again: the check needs only the tool).
if ! command -v promtool >/dev/null; then
  if command -v apt-get >/dev/null; then
    say "installing prometheus (apt-get), for promtool"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    ($SUDO systemctl stop prometheus 2>/dev/null || $SUDO service prometheus stop 2>/dev/null) || true
  else
    echo "error: the monitoring check needs promtool (the prometheus package)" >&2
    exit 1
  fi
fi
say "alerts and dashboard: promtool check rules, promtool test rules, dashboard queries"
tests/ops/check_monitoring.sh

# What a peer controls must never crash the node: a short run of every fuzz target (nightly
# toolchain, cargo-fuzz), starting from the committed corpus; new inputs go to a scratch dir.
if ! command -v cargo-fuzz >/dev/null; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet \
    || { echo "error: could not install cargo-fuzz (cargo install cargo-fuzz)" >&2; exit 1; }
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  say "installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal \
    || { echo "error: could not install the nightly toolchain for cargo-fuzz" >&2; exit 1; }
fi
fuzz_scratch=$(mktemp -d)
for target in ws_frames dialect_decode brl_frame filter_expression jwt_verify config_load; do
  say "fuzz $target (20 s)"
  mkdir -p "$fuzz_scratch/$target"
  if ! (cd fuzz && cargo +nightly fuzz run -O "$target" "$fuzz_scratch/$target" "corpus/$target" -- \
      -max_total_time=20 -timeout=10 -max_len=1200 -print_final_stats=1) >"$fuzz_scratch/$target.log" 2>&1; then
    tail -40 "$fuzz_scratch/$target.log" >&2
    echo "error: fuzz target $target failed (a crash, leak or timeout is in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units)' "$fuzz_scratch/$target.log" || true
done
rm -rf "$fuzz_scratch"

# README's first command is `cargo run --release -- serve`: the root must resolve to the one
# gateway binary (checked on the debug build the tests made; no second compile).
say "cargo run -- --version (README's command resolves to the gateway)"
cargo run --quiet --locked -- --version
