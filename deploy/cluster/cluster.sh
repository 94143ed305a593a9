#!/usr/bin/env bash
# The local stand-in of the cluster profile on this one machine (`./run cluster up|down|status`):
# PostgreSQL (Dagster's runs, events, schedules), an S3-compatible server for the compute logs (moto,
# in memory) when DAGSTER_S3_ENDPOINT_URL is a loopback address, dagster-daemon and dagster-webserver,
# all with DAGSTER_HOME=deploy/cluster. Settings: $CLUSTER_ENV_FILE, else deploy/cluster/cluster.env, else
# the .example. State and logs: $CLUSTER_STATE_DIR, else data/cluster/ (the Postgres data survives
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

is_loopback() { case "$1" in 127.0.0.1|localhost) return 0 ;; *) return 1 ;; esac; }
alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

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
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  rm -f "$STATE/$name.pid"
  say "$name stopped"
}

wait_port() {  # host, port, name (of the process that must be running meanwhile)
  for _ in $(seq 1 300); do
    alive "$3" || { say "$3 exited (see $STATE/$3.log)"; return 1; }
    python3 -c "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()" "$1" "$2" \
      2>/dev/null && return 0
    sleep 0.2
  done
  say "$3 did not listen on $1:$2 (see $STATE/*.log)"; return 1
}

postgres_up() {
  is_loopback "$DAGSTER_PG_HOST" || { say "DAGSTER_PG_HOST=$DAGSTER_PG_HOST: using that server as is"; return; }
  [ -n "$PG_BIN" ] || { say "PostgreSQL server binaries not found: apt-get install -y postgresql"; exit 1; }
  # trust authentication, loopback only (a stand-in for one user's machine, never a server): the
  # password is not checked, but dagster.yaml reads the variable, so it must be set
  export DAGSTER_PG_PASSWORD="${DAGSTER_PG_PASSWORD:-unused-with-trust-auth}"
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
  host="$(python3 -c "import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).hostname)" "$DAGSTER_S3_ENDPOINT_URL")"
  port="$(python3 -c "import sys, urllib.parse as u; print(u.urlsplit(sys.argv[1]).port or 80)" "$DAGSTER_S3_ENDPOINT_URL")"
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
bucket = os.environ["DAGSTER_COMPUTE_LOG_BUCKET"]
if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
    s3.create_bucket(Bucket=bucket)
PY
}

up() {
  mkdir -p "$STATE" "$DAGSTER_LOCAL_ARTIFACT_DIR" "$DAGSTER_COMPUTE_LOG_LOCAL_DIR"
  postgres_up
  s3_up
  start_bg daemon dagster-daemon run -w workspace.yaml
  start_bg webserver dagster-webserver -h 127.0.0.1 -p "$WEB_PORT" -w workspace.yaml
  wait_port 127.0.0.1 "$WEB_PORT" webserver
  say "up: http://127.0.0.1:$WEB_PORT (DAGSTER_HOME=deploy/cluster, settings $ENV_FILE); stop: ./run cluster down"
}

down() {
  stop_bg webserver
  stop_bg daemon
  stop_bg s3
  if [ -n "$PG_BIN" ] && [ -f "$STATE/pg/data/PG_VERSION" ] \
      && as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null
    say "postgres stopped"
  fi
}

status() {
  for name in s3 daemon webserver; do
    if alive "$name"; then echo "$name: running (pid $(cat "$STATE/$name.pid"))"; else echo "$name: stopped"; fi
  done
  if [ -n "$PG_BIN" ] && [ -f "$STATE/pg/data/PG_VERSION" ] \
      && as_pg "$PG_BIN/pg_ctl" -D "$STATE/pg/data" status >/dev/null 2>&1; then
    echo "postgres: running"; else echo "postgres: stopped"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: ./run cluster up|down|status" >&2; exit 2 ;;
esac
