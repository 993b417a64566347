#!/usr/bin/env bash
# ragq-healthcheck [PATH]: exit 0 when `GET PATH` (default /healthz) on this container's own
# health port answers 200, else 1. The runtime image has no curl: bash's /dev/tcp makes the
# HTTP/1.0 request (the server closes the connection after the answer).
#
# The port is that of RAGQ_WORKER_HEALTH_ADDR (the worker's health server), else RAGQ_API_ADDR
# (the api), else RAGQ_SIM_ADDR (the simulator), else 9380. The request goes to 127.0.0.1, which
# reaches a server bound to 0.0.0.0 or 127.0.0.1. RAGQ_HEALTHCHECK_TIMEOUT_S bounds the wait
# (default 4 s; Docker's --timeout should be longer).
set -u
path=${1:-/healthz}
addr=${RAGQ_WORKER_HEALTH_ADDR:-${RAGQ_API_ADDR:-${RAGQ_SIM_ADDR:-127.0.0.1:9380}}}
port=${addr##*:}
timeout_s=${RAGQ_HEALTHCHECK_TIMEOUT_S:-4}
case $port in '' | *[!0-9]*) echo "ragq-healthcheck: no port in '$addr'" >&2; exit 1 ;; esac

if ! { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
  echo "ragq-healthcheck: nothing listens on port $port" >&2
  exit 1
fi
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
status=
IFS= read -r -t "$timeout_s" status <&3 || true
exec 3<&-
case $status in
  "HTTP/1."?" 200"*) exit 0 ;;
esac
echo "ragq-healthcheck: GET $path on port $port answered '${status%$'\r'}'" >&2
exit 1
