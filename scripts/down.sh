#!/usr/bin/env bash
# Stops what scripts/up.sh started (SIGTERM, then SIGKILL after 20 s). Leaves the services and
# the data alone.
set -uo pipefail
cd "$(dirname "$0")/.."
PIDS=.ragq/pids
[ -d "$PIDS" ] || exit 0
for f in "$PIDS"/*.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  kill -TERM "$pid" 2>/dev/null || true
done
for f in "$PIDS"/*.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
done
echo "[ragq] stopped" >&2
