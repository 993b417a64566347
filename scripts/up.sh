#!/usr/bin/env bash
# Starts ragq on this machine: services (installing them if absent), release binaries, the
# upstream simulator (unless RAGQ_UPSTREAM_URL points at a real OpenAI-compatible server), the
# api and RAGQ_WORKERS workers; loads the demo dataset and chat; writes .ragq/run.env.
# Idempotent: running it again restarts ragq's processes and keeps the demo data.
#
# Environment:
#   RAGQ_WORKERS=1            number of workers
#   RAGQ_APIS=1               number of api processes (ports from RAGQ_API_ADDR's up; one
#                             Redis subscriber each, any replica resumes any stream)
#   RAGQ_API_ADDR=127.0.0.1:9380
#   RAGQ_SIM_ADDR=127.0.0.1:9390 (plus RAGQ_SIM_* latencies, default workload W1)
#   RAGQ_UPSTREAM_URL=        e.g. http://127.0.0.1:8000/v1 — use this server instead of the simulator
#   RAGQ_UPSTREAM_MODEL=      chat model name on that server (default: sim)
#   RAGQ_UPSTREAM_API_KEY=    its API key, if any (stored encrypted)
#   RAGQ_SECRET_KEY=          key encrypting model API keys (default: .ragq/secret.key, made once)
#   RAGQ_DB_NAME=ragq
#   RAGQ_BROKER=rabbitmq      or nats: the job broker (NATS JetStream at RAGQ_NATS_URL)
#   RAGQ_BUS=redis            or nats: the event bus (any mix with the broker)
#   RAGQ_NATS_URL=nats://127.0.0.1:4222
#   RAGQ_BIN_DIR=             run the binaries in this folder instead of building them
#   RAGQ_DEMO_REFINE_MULTITURN=false  the demo chat answers each question as asked (workload W1
#                             measures single questions); chats created over the API default to true
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib/services.sh
ensure_cargo
ensure_services

WORKERS=${RAGQ_WORKERS:-1}
APIS=${RAGQ_APIS:-1}
API_ADDR=${RAGQ_API_ADDR:-127.0.0.1:9380}
SIM_ADDR=${RAGQ_SIM_ADDR:-127.0.0.1:9390}
DB_NAME=${RAGQ_DB_NAME:-ragq}
export RAGQ_DATABASE_URL=${RAGQ_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$DB_NAME}
STATE=$ROOT/.ragq
mkdir -p "$STATE/pids" "$STATE/logs"

# Model API keys are stored encrypted with RAGQ_SECRET_KEY (docs/OPERATIONS.md). Without one,
# this checkout keeps its own in .ragq/secret.key (owner-only), so the demo data stays readable.
if [ -z "${RAGQ_SECRET_KEY:-}" ]; then
  [ -s "$STATE/secret.key" ] || (umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$STATE/secret.key")
  RAGQ_SECRET_KEY=$(cat "$STATE/secret.key")
  export RAGQ_SECRET_KEY
fi

if [ -n "${RAGQ_BIN_DIR:-}" ]; then
  BIN=$RAGQ_BIN_DIR # prebuilt binaries (e.g. two builds compared by a benchmark)
else
  log "building release binaries"
  cargo build --release --locked -p ragq-api -p ragq-worker -p ragq-cli -p ragq-sim -p ragq-loadgen 2>&1 | tail -n 2 >&2
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
fi

# Stop what a previous run left.
bash scripts/down.sh >/dev/null 2>&1 || true

psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1 ||
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $DB_NAME"
"$BIN/ragq" migrate >/dev/null

start() { # start NAME COMMAND...
  local name=$1; shift
  nohup "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name.pid"
}

if [ -z "${RAGQ_UPSTREAM_URL:-}" ]; then
  start sim "$BIN/ragq-sim" --addr "$SIM_ADDR"
  UPSTREAM=http://$SIM_ADDR/v1
  CHAT_MODEL=sim
  wait_for 15 simulator curl -sf "http://$SIM_ADDR/healthz"
else
  UPSTREAM=$RAGQ_UPSTREAM_URL
  CHAT_MODEL=${RAGQ_UPSTREAM_MODEL:-sim}
fi

RAGQ_API_ADDR=$API_ADDR start api "$BIN/ragq-api"
API_URLS=http://$API_ADDR
for i in $(seq 2 "$APIS"); do
  addr=${API_ADDR%:*}:$((${API_ADDR##*:} + i - 1))
  RAGQ_API_ADDR=$addr RAGQ_INSTANCE=ragq-api-$i start "api-$i" "$BIN/ragq-api"
  API_URLS="$API_URLS http://$addr"
done
for i in $(seq 1 "$WORKERS"); do
  RAGQ_WORKER_ID=worker-$i RAGQ_WORKER_HEALTH_ADDR=127.0.0.1:$((9400 + i)) start "worker-$i" "$BIN/ragq-worker"
done
for url in $API_URLS; do wait_for 30 api curl -sf "$url/readyz"; done

# Demo data: reuse it when run.env names a chat that still exists.
reuse=
if [ -f "$STATE/run.env" ]; then
  chat=$(sed -n 's/^RAGQ_CHAT_ID=//p' "$STATE/run.env")
  [ -n "$chat" ] && psql -h 127.0.0.1 -U postgres -d "$DB_NAME" -tAc "SELECT 1 FROM chats WHERE id = '$chat'" | grep -q 1 && reuse=1
fi
if [ -z "$reuse" ]; then
  log "loading the demo dataset and chat"
  eval "$("$BIN/ragq" create-tenant --name demo)"
  export RAGQ_MODEL_API_KEY=${RAGQ_UPSTREAM_API_KEY:-}
  "$BIN/ragq" add-model --tenant "$RAGQ_TENANT_ID" --kind chat --name demo-llm --provider openai --base-url "$UPSTREAM" --model "$CHAT_MODEL" >/dev/null
  if [ -z "${RAGQ_UPSTREAM_URL:-}" ]; then
    "$BIN/ragq" add-model --tenant "$RAGQ_TENANT_ID" --kind embedding --name demo-embed --provider openai --base-url "$UPSTREAM" --model sim-embed >/dev/null
    "$BIN/ragq" add-model --tenant "$RAGQ_TENANT_ID" --kind rerank --name demo-rerank --provider jina --base-url "$UPSTREAM" --model sim-rerank >/dev/null
    RERANK=demo-rerank
  else
    # A real upstream may not serve embeddings or rerank: use the built-in local embedder.
    "$BIN/ragq" add-model --tenant "$RAGQ_TENANT_ID" --kind embedding --name demo-embed --provider local >/dev/null
    RERANK=
  fi
  eval "$("$BIN/ragq" load-dataset --tenant "$RAGQ_TENANT_ID" --name demo --embedding-model demo-embed demo/docs)"
  eval "$("$BIN/ragq" create-chat --tenant "$RAGQ_TENANT_ID" --name demo --llm demo-llm --dataset "$RAGQ_DATASET_ID" --rerank "$RERANK" \
    --refine-multiturn "${RAGQ_DEMO_REFINE_MULTITURN:-false}")"
  cat >"$STATE/run.env" <<ENV
RAGQ_API_URL=http://$API_ADDR
RAGQ_API_KEY=$RAGQ_API_KEY
RAGQ_CHAT_ID=$RAGQ_CHAT_ID
RAGQ_TENANT_ID=$RAGQ_TENANT_ID
RAGQ_DATASET_ID=$RAGQ_DATASET_ID
ENV
fi
# Every api replica of this run (any of them serves any request and resumes any stream).
sed -i '/^RAGQ_API_URLS=/d; /^RAGQ_DATABASE_URL=/d; /^RAGQ_BROKER=/d; /^RAGQ_BUS=/d; /^RAGQ_NATS_URL=/d' "$STATE/run.env"
echo "RAGQ_API_URLS=\"$API_URLS\"" >>"$STATE/run.env"
# The database of this run, so that `ragq` commands (batch run, list-models, …) find it.
echo "RAGQ_DATABASE_URL=$RAGQ_DATABASE_URL" >>"$STATE/run.env"
# The broker and bus of this run (`ragq dlq-list`, `ragq batch run` use the same).
{
  echo "RAGQ_BROKER=${RAGQ_BROKER:-rabbitmq}"
  echo "RAGQ_BUS=${RAGQ_BUS:-redis}"
  echo "RAGQ_NATS_URL=${RAGQ_NATS_URL:-nats://127.0.0.1:4222}"
} >>"$STATE/run.env"
# shellcheck disable=SC1091
source "$STATE/run.env"
log "ragq is up: api $API_URLS, $WORKERS worker(s), broker $RAGQ_BROKER, bus $RAGQ_BUS; settings in .ragq/run.env, logs in .ragq/logs/"
SESSION=$(curl -s -X POST "$RAGQ_API_URL/api/v1/chats/$RAGQ_CHAT_ID/sessions" -H "Authorization: Bearer $RAGQ_API_KEY" \
  -H 'Content-Type: application/json' -d '{"name":"try"}' | sed -n 's/.*"id": "\([0-9a-f]*\)".*/\1/p')
cat <<TRY
Try it:
  curl -N $RAGQ_API_URL/api/v1/chats/$RAGQ_CHAT_ID/completions -H 'Authorization: Bearer $RAGQ_API_KEY' \\
    -H 'Content-Type: application/json' \\
    -d '{"question": "What is the delivery limit of the job queue?", "stream": true, "session_id": "$SESSION"}'
TRY
