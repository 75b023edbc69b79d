#!/usr/bin/env bash
# A Ray cluster on this machine: a head and N worker nodes on 127.0.0.1, token auth on.
#
#   cluster/local.sh up [N]     start the head and N worker nodes (default 1)
#   cluster/local.sh status     the nodes, their PIDs and the addresses to use
#   cluster/local.sh down       stop exactly the processes started by `up` (never `ray stop`)
#
# Each node has its own temp dir under $DISTGAN_CLUSTER_DIR and its own ports, so several
# clusters (and other Ray instances) can share the machine. Settings (environment):
#   DISTGAN_CLUSTER_DIR     state and temp dirs             (default /tmp/distgan-cluster-$USER)
#   DISTGAN_PORT_BASE       GCS port; the nodes' ports follow it       (default 6379)
#   DISTGAN_DASHBOARD_PORT  the dashboard and Jobs API (127.0.0.1 only) (default 8265)
#   DISTGAN_NODE_CPUS       logical CPUs of each node                   (default 2)
#   RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH   the cluster's token; default ~/.ray/auth_token
#                           (created with `ray get-auth-token --generate` when missing)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
DIR="${DISTGAN_CLUSTER_DIR:-/tmp/distgan-cluster-${USER:-$(id -un)}}"
BASE="${DISTGAN_PORT_BASE:-6379}"
DASH="${DISTGAN_DASHBOARD_PORT:-8265}"
CPUS="${DISTGAN_NODE_CPUS:-2}"
# The project's virtualenv first: job entrypoints run `python` from the nodes' PATH.
if [[ -x "$ROOT/.venv/bin/ray" ]]; then
  export PATH="$ROOT/.venv/bin:$PATH"
fi
RAY="$(command -v ray || true)"

die() { echo "local.sh: $*" >&2; exit 2; }

# Ports of node i (0 = head): BASE+10+10i ... BASE+17+10i; worker ports BASE+100+100i ... +189.
node_ports() {
  local i=$1 p=$((BASE + 10 + 10 * $1)) w=$((BASE + 100 + 100 * $1))
  echo "--node-manager-port=$p --object-manager-port=$((p + 1))" \
    "--metrics-export-port=$((p + 2)) --dashboard-agent-listen-port=$((p + 3))" \
    "--dashboard-agent-grpc-port=$((p + 4)) --runtime-env-agent-port=$((p + 5))" \
    "--min-worker-port=$w --max-worker-port=$((w + 89))"
}

token_env() {
  # The nodes (and the jobs they run) read the token from here; it never goes on a command line.
  export RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0
  if [[ -n "${RAY_AUTH_TOKEN:-}" || -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
    return
  fi
  if [[ ! -s "$HOME/.ray/auth_token" ]]; then
    "$RAY" get-auth-token --generate >/dev/null
  fi
}

# Starts one node with `ray start --block` in its own session, so that `down` can end the node
# and everything it spawned by process group. `python -m distgan.loopback` is `ray` for a node
# that listens on 127.0.0.1 only: plain `ray start` binds every interface (distgan/loopback.py).
start_node() {
  local name=$1; shift
  mkdir -p "$DIR/$name"
  setsid python -m distgan.loopback start --block --disable-usage-stats --node-ip-address=127.0.0.1 \
    --temp-dir="$DIR/$name" --num-cpus="$CPUS" --num-gpus=0 "$@" \
    >"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

wait_nodes() {
  local want=$1 deadline=$((SECONDS + 120))
  while ((SECONDS < deadline)); do
    for f in "$DIR"/*.pid; do
      kill -0 "$(cat "$f")" 2>/dev/null || die "$(basename "$f" .pid) exited; see ${f%.pid}.log"
    done
    local have
    have=$(RAY_ADDRESS="127.0.0.1:$BASE" RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 python - <<'EOF' 2>/dev/null || echo 0
import ray
ray.init(logging_level="error", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
EOF
    )
    if [[ "$have" == "$want" ]]; then
      return
    fi
    sleep 2
  done
  die "the cluster did not come up within 120 s; see $DIR/*.log"
}

# The nodes can be up before the head's dashboard, which serves the Jobs API (submit, status,
# logs, stop): `up` returns once that answers too.
wait_jobs_api() {
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    python - "$DASH" <<'EOF' 2>/dev/null && return
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/version", timeout=5)
except urllib.error.HTTPError:
    pass  # it answers (asking for the token): it is up
EOF
    sleep 1
  done
  die "the Jobs API at http://127.0.0.1:$DASH did not answer within 60 s; see $DIR/head.log"
}

up() {
  local n=${1:-1}
  [[ -n "$RAY" ]] || die "ray is not on PATH; run 'make test' once to create .venv, or pip install distgan"
  [[ "$n" =~ ^[0-9]+$ ]] || die "up N: N must be a number of worker nodes, got '$n'"
  if ls "$DIR"/*.pid >/dev/null 2>&1; then
    die "a cluster is already up (state in $DIR); run 'cluster/local.sh down' first"
  fi
  mkdir -p "$DIR"
  token_env
  # The head's dashboard and autoscaler serve metrics on ports of their own, which Ray fixes
  # (44227, 44217) whatever the flags say: two Rays on one machine would both want them.
  export DASHBOARD_METRIC_PORT=$((BASE + 3)) AUTOSCALER_METRIC_PORT=$((BASE + 4))
  # shellcheck disable=SC2046  # node_ports is a list of flags
  start_node head --head --port="$BASE" --ray-client-server-port=$((BASE + 2)) \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASH" $(node_ports 0)
  sleep 3
  local i
  for ((i = 1; i <= n; i++)); do
    # shellcheck disable=SC2046
    start_node "worker$i" --address="127.0.0.1:$BASE" $(node_ports "$i")
  done
  wait_nodes $((n + 1))
  wait_jobs_api
  echo "up: head + $n worker node(s) on 127.0.0.1, token auth on, state in $DIR"
  echo "  export RAY_ADDRESS=http://127.0.0.1:$DASH   # what distgan submit/status/logs/stop use"
}

status() {
  if ! ls "$DIR"/*.pid >/dev/null 2>&1; then
    echo "down: no local cluster (state dir $DIR)"
    return 1
  fi
  local f
  for f in "$DIR"/*.pid; do
    local pid state
    pid=$(cat "$f")
    state=$(kill -0 "$pid" 2>/dev/null && echo running || echo exited)
    printf '%-8s pid %-7s %s\n' "$(basename "$f" .pid)" "$pid" "$state"
  done
  echo "GCS 127.0.0.1:$BASE · Jobs API / dashboard http://127.0.0.1:$DASH"
}

# Every process of ours: the `ray start` session groups, plus anything that names our temp dir
# (Ray daemonizes some helpers into other sessions).
our_pids() {
  local f pid
  for f in "$DIR"/*.pid; do
    [[ -e "$f" ]] || continue
    pid=$(cat "$f")
    pgrep -g "$pid" || true
  done
  pgrep -f -- "$DIR/" || true
}

down() {
  if ! ls "$DIR"/*.pid >/dev/null 2>&1; then
    echo "down: no local cluster (state dir $DIR)"
    return 0
  fi
  local f pids
  # Workers first, then the head, so the head does not wait on nodes that are going away.
  for f in $(ls "$DIR"/worker*.pid 2>/dev/null) "$DIR/head.pid"; do
    [[ -e "$f" ]] && kill -TERM -- "-$(cat "$f")" 2>/dev/null || true
  done
  # `ray start --block` and the GCS do not exit on SIGTERM (measured: still there after 30 s):
  # what is left after 5 s gets SIGKILL (the whole cluster is going away; no state to save).
  local deadline=$((SECONDS + 5))
  while ((SECONDS < deadline)); do
    pids=$(our_pids | grep -vx "$$" | sort -u || true)
    [[ -z "$pids" ]] && break
    sleep 1
  done
  pids=$(our_pids | grep -vx "$$" | sort -u || true)
  if [[ -n "$pids" ]]; then
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  rm -f "$DIR"/*.pid
  echo "down: stopped the local cluster (logs kept in $DIR)"
}

case "${1:-}" in
  up) up "${2:-1}" ;;
  down) down ;;
  status) status ;;
  *) die "usage: cluster/local.sh up [N] | down | status" ;;
esac
