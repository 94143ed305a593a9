#!/usr/bin/env bash
# The local stand-in of the cluster profile on this one machine (`./run cluster up|down|status`):
# PostgreSQL (Dagster's runs, events, schedules; MLflow's backend store), an S3-compatible server for
# the compute logs and MLflow's artifacts (moto, in memory) when DAGSTER_S3_ENDPOINT_URL is a loopback
# address, Redis (the Celery broker) and CLUSTER_WORKERS Celery workers when CRYPTO_EXECUTOR=celery,
# an MLflow tracking server when MLFLOW_TRACKING_URI is a loopback http URL, dagster-daemon and
# dagster-webserver, all with DAGSTER_HOME=deploy/cluster. `up` starts everything, or only the parts
# named (`up postgres s3 redis mlflow workers`). Settings: $CLUSTER_ENV_FILE, else
# deploy/cluster/cluster.env, else the .example. State and logs: $CLUSTER_STATE_DIR, else data/cluster/ (the Postgres data survives
# `down`; the in-memory moto bucket does not).
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE="${CLUSTER_STATE_DIR:-$PWD/data/cluster}"
if [ -n "${CLUSTER_ENV_FILE:-}" ]; then
  ENV_FILE="$CLUSTER_ENV_FILE"
  [ -f "$ENV_FILE" ] || { echo "cluster: CLUSTER_ENV_FILE=$ENV_FILE does not exist" >&2; exit 1; }
else
  ENV_FILE=deploy/cluster/cluster.env
  [ -f "$ENV_FILE" ] || ENV_FILE=deploy/cluster/cluster.env.example
fi
# An empty value (NAME=) leaves the variable as the caller's environment has it: e.g. AWS credentials
# (else boto3's default chain), MLFLOW_TRACKING_URI (else the embedded store).
set -a; . <(grep -vE '^[A-Za-z_][A-Za-z0-9_]*=$' "$ENV_FILE"); set +a
export DAGSTER_HOME="$PWD/deploy/cluster"
WEB_PORT="${PORT:-3000}"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
say() { echo "cluster: $*" >&2; }
# The stand-in's Postgres uses trust authentication, loopback only (one user's machine, never a
# server): the password is not checked, but dagster.yaml reads the variable in every process that
# opens the instance (daemon, webserver, workers), so it must be set.
case "$DAGSTER_PG_HOST" in
  127.0.0.1|localhost) export DAGSTER_PG_PASSWORD="${DAGSTER_PG_PASSWORD:-unused-with-trust-auth}" ;;
esac

is_loopback() { case "$1" in 127.0.0.1|localhost) return 0 ;; *) return 1 ;; esac; }
# A process that has exited but is not reaped yet (a zombie) is not running: a container's init may
# reap orphans only every ~2 s, and `kill -0` still succeeds until then.
running() {  # pid
  local stat
  [ -d /proc/self ] || { kill -0 "$1" 2>/dev/null; return; }
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}
alive() { [ -f "$STATE/$1.pid" ] && running "$(cat "$STATE/$1.pid")"; }
group_running() {  # pgid: whether a process of the group (a start_bg session) still runs, zombies aside
  local f line state ppid pgrp
  [ -d /proc/self ] || { kill -0 -- "-$1" 2>/dev/null; return; }
  for f in /proc/[0-9]*/stat; do
    read -r line 2>/dev/null < "$f" || continue
    read -r state ppid pgrp _ <<< "${line##*) }"
    [ "$pgrp" = "$1" ] && [ "$state" != Z ] && return 0
  done
  return 1
}
url_part() {  # url, hostname|port: one part of a URL (port: the scheme's default when absent)
  python3 -c "import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); d = {'http': 80, 'https': 443, 'redis': 6379}
print({'hostname': p.hostname, 'port': p.port or d.get(p.scheme, '')}[sys.argv[2]] or '')" "$1" "$2"
}
WORKERS="${CLUSTER_WORKERS:-2}"

start_bg() {  # name, command...: its own session (pid = process group), so `down` stops its children
  local name="$1"; shift
  if alive "$name"; then say "$name already running (pid $(cat "$STATE/$name.pid"))"; return; fi
  setsid "$@" >"$STATE/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/$name.pid"
  say "$name started (pid $!, log $STATE/$name.log)"
}

stop_bg() {
  local name="$1" pid
  alive "$name" || { rm -f "$STATE/$name.pid"; return 0; }
  pid="$(cat "$STATE/$name.pid")"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do group_running "$pid" || break; sleep 0.1; done
  if group_running "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  rm -f "$STATE/$name.pid"
  say "$name stopped"
}

wait_port() {  # host, port, name (of the process that must be running meanwhile)[, seconds (60)]
  for _ in $(seq 1 $((${4:-60} * 5))); do
    alive "$3" || { say "$3 exited (see $STATE/$3.log)"; return 1; }
    # bash's own connect (a subshell, no new interpreter): a Python probe every 0.2 s cost ~5 CPU s
    # over the MLflow server's first start
    (: <"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.2
  done
  say "$3 did not listen on $1:$2 (see $STATE/*.log)"; return 1
}

postgres_up() {
  is_loopback "$DAGSTER_PG_HOST" || { say "DAGSTER_PG_HOST=$DAGSTER_PG_HOST: using that server as is"; return; }
  [ -n "$PG_BIN" ] || { say "PostgreSQL server binaries not found: apt-get install -y postgresql"; exit 1; }
  mkdir -p "$STATE/pg"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$STATE/pg"
  if [ ! -f "$STATE/pg/data/PG_VERSION" ]; then
    as_pg "$PG_BIN/initdb" -D "$STATE/pg/data" -U "$DAGSTER_PG_USERNAME" -A trust -E UTF8 >"$STATE/initdb.log"
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" -l "$STATE/pg/server.log" -w start \
      -o "-c listen_addresses=$DAGSTER_PG_HOST -p $DAGSTER_PG_PORT -k $STATE/pg" >/dev/null
    say "postgres started on $DAGSTER_PG_HOST:$DAGSTER_PG_PORT (data $STATE/pg/data)"
  fi
  if [ -z "$("$PG_BIN/psql" -h "$DAGSTER_PG_HOST" -p "$DAGSTER_PG_PORT" -U "$DAGSTER_PG_USERNAME" -d postgres -tAc \
      "select 1 from pg_database where datname = '$DAGSTER_PG_DB'")" ]; then
    "$PG_BIN/createdb" -h "$DAGSTER_PG_HOST" -p "$DAGSTER_PG_PORT" -U "$DAGSTER_PG_USERNAME" "$DAGSTER_PG_DB"
  fi
}

s3_up() {
  local host port
  host="$(url_part "$DAGSTER_S3_ENDPOINT_URL" hostname)"
  port="$(url_part "$DAGSTER_S3_ENDPOINT_URL" port)"
  if is_loopback "$host"; then
    command -v moto_server >/dev/null || { say "moto_server not found: pip install 'moto[server]'"; exit 1; }
    : "${AWS_ACCESS_KEY_ID:=stand-in}" "${AWS_SECRET_ACCESS_KEY:=stand-in}"
    export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    start_bg s3 moto_server -H "$host" -p "$port"
    wait_port "$host" "$port" s3
  fi
  python - <<'PY'
import os
import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["DAGSTER_S3_ENDPOINT_URL"])
dest = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
buckets = {os.environ["DAGSTER_COMPUTE_LOG_BUCKET"]}
if dest.startswith("s3://") and os.environ.get("MLFLOW_TRACKING_URI", ""):
    buckets.add(dest[len("s3://") :].split("/")[0])
lake = os.environ.get("CRYPTO_LAKE_ROOT", "")
if lake.startswith("s3://"):  # the lake on the stand-in's S3 server
    buckets.add(lake[len("s3://") :].split("/")[0])
for bucket in buckets - {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
    s3.create_bucket(Bucket=bucket)
PY
}

redis_up() {  # the Celery broker, when CRYPTO_EXECUTOR=celery and the broker is on this machine
  [ "${CRYPTO_EXECUTOR:-in_process}" = celery ] || return 0
  local host port
  host="$(url_part "$CRYPTO_CELERY_BROKER_URL" hostname)"
  port="$(url_part "$CRYPTO_CELERY_BROKER_URL" port)"
  is_loopback "$host" || { say "broker on $host: using it as is"; return; }
  command -v redis-server >/dev/null || { say "redis-server not found: apt-get install -y redis-server"; exit 1; }
  # in memory only (no snapshot, no append-only file): queued steps are lost at `down`
  start_bg redis redis-server --bind "$host" --port "$port" --save "" --appendonly no --dir "$STATE"
  wait_port "$host" "$port" redis
}

mlflow_up() {  # the tracking server, when MLFLOW_TRACKING_URI is a loopback http URL
  case "${MLFLOW_TRACKING_URI:-}" in http://*) ;; *) return 0 ;; esac
  local host port db
  host="$(url_part "$MLFLOW_TRACKING_URI" hostname)"
  port="$(url_part "$MLFLOW_TRACKING_URI" port)"
  is_loopback "$host" || { say "MLflow server on $host: using it as is"; return; }
  db="${MLFLOW_BACKEND_DB:-mlflow}"
  if is_loopback "$DAGSTER_PG_HOST" && [ -z "$("$PG_BIN/psql" -h "$DAGSTER_PG_HOST" -p "$DAGSTER_PG_PORT" \
      -U "$DAGSTER_PG_USERNAME" -d postgres -tAc "select 1 from pg_database where datname = '$db'")" ]; then
    "$PG_BIN/createdb" -h "$DAGSTER_PG_HOST" -p "$DAGSTER_PG_PORT" -U "$DAGSTER_PG_USERNAME" "$db"
  fi
  # the same SQLAlchemy 2.1 scheme rule as Dagster's storage (docs/deploy.md)
  local store="postgresql+psycopg2://$DAGSTER_PG_USERNAME:${DAGSTER_PG_PASSWORD:-}@$DAGSTER_PG_HOST:$DAGSTER_PG_PORT/$db"
  # no server-side job runner (MLflow's GenAI jobs; the platform has none): 5 fewer processes
  MLFLOW_S3_ENDPOINT_URL="${MLFLOW_S3_ENDPOINT_URL:-$DAGSTER_S3_ENDPOINT_URL}" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    start_bg mlflow mlflow server --host "$host" --port "$port" --workers 1 \
    --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-$store}" \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"
  wait_port "$host" "$port" mlflow 240  # its first start creates the tables: ~45 s on this machine
}

workers_up() {  # CLUSTER_WORKERS Celery workers, one step at a time each (distributed.py)
  [ "${CRYPTO_EXECUTOR:-in_process}" = celery ] || return 0
  local i
  for i in $(seq 1 "$WORKERS"); do
    start_bg "worker$i" celery -A crypto_platform.automation.celery_worker worker -Q dagster \
      --concurrency 1 --hostname "worker$i@%h" --loglevel INFO
  done
  for i in $(seq 1 "$WORKERS"); do
    for _ in $(seq 1 900); do  # ~10-25 s each; minutes when the machine's cores are busy
      alive "worker$i" || { say "worker$i exited (see $STATE/worker$i.log)"; return 1; }
      grep -q "worker$i@.* ready" "$STATE/worker$i.log" && break
      sleep 0.2
    done
    grep -q "worker$i@.* ready" "$STATE/worker$i.log" || { say "worker$i not ready in 180 s"; return 1; }
  done
}

PARTS="postgres s3 redis mlflow workers daemon webserver"

up() {  # [part...]: the parts to start (default: all, in this order)
  local part
  for part in "$@"; do
    case " $PARTS " in *" $part "*) ;; *) say "unknown part '$part' (parts: $PARTS)"; exit 2 ;; esac
  done
  mkdir -p "$STATE" "$DAGSTER_LOCAL_ARTIFACT_DIR" "$DAGSTER_COMPUTE_LOG_LOCAL_DIR"
  for part in ${*:-$PARTS}; do
    case "$part" in
      postgres) postgres_up ;;
      s3) s3_up ;;
      redis) redis_up ;;
      mlflow) mlflow_up ;;
      workers) workers_up ;;
      daemon) start_bg daemon dagster-daemon run -w workspace.yaml ;;
      webserver)
        start_bg webserver dagster-webserver -h 127.0.0.1 -p "$WEB_PORT" -w workspace.yaml
        wait_port 127.0.0.1 "$WEB_PORT" webserver ;;
    esac
  done
  say "up: ${*:-$PARTS} (DAGSTER_HOME=deploy/cluster, settings $ENV_FILE; UI http://127.0.0.1:$WEB_PORT); stop: ./run cluster down"
}

worker_names() { local f; for f in "$STATE"/worker*.pid; do [ -f "$f" ] && basename "$f" .pid; done; }

down() {  # in two waves, each stopped together: what uses the servers, then the servers
  local name
  for name in webserver daemon $(worker_names); do stop_bg "$name" & done
  wait
  for name in mlflow redis s3; do stop_bg "$name" & done
  wait
  if [ -n "$PG_BIN" ] && [ -f "$STATE/pg/data/PG_VERSION" ] \
      && as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null
    say "postgres stopped"
  fi
}

status() {
  for name in s3 redis mlflow $(worker_names) daemon webserver; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
  if [ -n "$PG_BIN" ] && [ -f "$STATE/pg/data/PG_VERSION" ] \
      && as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" status >/dev/null 2>&1; then
    echo "postgres: running"; else echo "postgres: stopped"; fi
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: ./run cluster up|down|status" >&2; exit 2 ;;
esac
