#!/usr/bin/env bash
# Checks deploy/ and docker-compose.yml without a container engine or a cluster:
#   - docker-compose.yml against the compose-spec JSON schema, plus ragq's own rules (service
#     dependencies, worker replicas, sim profile, known RAGQ_* names, passwords on every URL);
#   - deploy/Dockerfile's structure, and deploy/healthcheck.sh against a local HTTP server;
#   - deploy/grafana/ragq-dashboard.json and deploy/prometheus/alerts.yml: structure, and every
#     metric they read is in docs/ARCHITECTURE.md's metric table (promtool check rules, if
#     installed); that each is exported is tests/tests/metrics.rs's job;
#   - the Kubernetes base and example overlay rendered with kustomize (pykustomize), every
#     built-in resource validated by kubernetes-validate (strict) for each Kubernetes version in
#     RAGQ_CHECK_DEPLOY_K8S_VERSIONS, the KEDA resources against KEDA's CRD schemas, and the
#     rules of deploy/README.md (protocol: http, grace > preStop + drain, probes, security);
#   - the Dockerfile's one `cargo build` line, run here unchanged; the binaries must exist, and
#     the health check must pass against the built ragq-sim (skip: RAGQ_CHECK_DEPLOY_BUILD=0).
# Prints one line per check; exits non-zero if any failed. Installs its Python tools from PyPI
# into .ragq/venv-deploy (pinned; reused while the pins are unchanged).
#
# Environment:
#   RAGQ_CHECK_DEPLOY_BUILD=1                 0 skips the release build
#   RAGQ_CHECK_DEPLOY_BUILD_TIMEOUT_S=3600    bound of the release build
#   RAGQ_CHECK_DEPLOY_K8S_VERSIONS="1.33.0 1.37.0"
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib/services.sh
START=$SECONDS

fail() { printf 'FAIL %s\n' "$*"; log "check-deploy failed: $*"; exit 1; }
ok() { printf 'ok   %s\n' "$*"; }

# --- tools: a venv of pinned packages from PyPI --------------------------------------------
VENV=$ROOT/.ragq/venv-deploy
# pykustomize bundles kustomize's Go library (linux x86_64) and declares Python >= 3.14 although
# it runs on 3.11 (its code uses no newer syntax): it is installed alone, without the check.
PINS="PyYAML==6.0.4 jsonschema==4.26.0 referencing==0.37.0 jsonschema-specifications==2025.9.1
rpds-py==2026.9.1 attrs==26.1.0 typing_extensions==4.16.0 kubernetes-validate==1.37.0
importlib_resources==7.1.0 packaging==26.4 cffi==2.1.1 pycparser==3.12"
KUSTOMIZE_PIN="pykustomize==0.1.4"
STAMP="$VENV/.pins"
want="$PINS $KUSTOMIZE_PIN"
command -v python3 >/dev/null 2>&1 || fail "python3 is required"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "installing the check's Python tools into .ragq/venv-deploy"
  rm -rf "$VENV"
  mkdir -p "$ROOT/.ragq"
  python3 -m venv "$VENV" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
  # shellcheck disable=SC2086
  timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check --no-input $PINS ||
    fail "pip install of the check's tools failed"
  timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check --no-input \
    --no-deps --ignore-requires-python "$KUSTOMIZE_PIN" || fail "pip install $KUSTOMIZE_PIN failed"
  printf '%s' "$want" >"$STAMP"
fi
PY=$VENV/bin/python
ok "tools: $("$PY" --version), $KUSTOMIZE_PIN, kubernetes-validate, jsonschema in .ragq/venv-deploy"

# --- static checks (one line each, printed by the helper) -------------------------------------
static_rc=0
timeout 300 "$PY" scripts/lib/check_deploy.py static || static_rc=$?
[ "$static_rc" -eq 0 ] || fail "static checks (see the FAIL lines above; exit $static_rc)"

# --- the Dockerfile's build line, run as-is -------------------------------------------------------
if [ "${RAGQ_CHECK_DEPLOY_BUILD:-1}" = 0 ]; then
  ok "build: skipped (RAGQ_CHECK_DEPLOY_BUILD=0)"
else
  ensure_cargo
  CMD=$("$PY" scripts/lib/check_deploy.py build-command) || fail "no cargo build line in deploy/Dockerfile"
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
  log "running the Dockerfile's build line: $CMD"
  t0=$SECONDS
  LOG=$ROOT/.ragq/check-deploy-build.log
  # $CMD is checked to be plain `cargo build` flags; split on spaces on purpose.
  # shellcheck disable=SC2086
  if ! timeout "${RAGQ_CHECK_DEPLOY_BUILD_TIMEOUT_S:-3600}" $CMD >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    fail "build: \`$CMD\` failed or timed out (log: .ragq/check-deploy-build.log)"
  fi
  for b in ragq-api ragq-worker ragq ragq-sim; do
    [ -x "$BIN/$b" ] || fail "build: $BIN/$b missing after \`$CMD\`"
  done
  ok "build: \`$CMD\` in $((SECONDS - t0))s; ragq-api, ragq-worker, ragq, ragq-sim in $BIN"

  # The compose file's migrate command must be one the CLI knows.
  "$BIN/ragq" --help | grep -qE '^  migrate ' || fail "build: \`ragq --help\` lists no migrate subcommand"
  ok "build: \`ragq --help\` lists migrate"

  # The image's HEALTHCHECK script against a real ragq HTTP server: the simulator (it serves
  # /healthz and needs no services).
  port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  env -u RAGQ_API_ADDR -u RAGQ_WORKER_HEALTH_ADDR RAGQ_SIM_ADDR="127.0.0.1:$port" "$BIN/ragq-sim" >/dev/null 2>&1 &
  SIM_PID=$!
  trap 'kill "$SIM_PID" 2>/dev/null || true' EXIT
  healthy=
  for _ in $(seq 1 50); do
    if env -u RAGQ_API_ADDR -u RAGQ_WORKER_HEALTH_ADDR RAGQ_SIM_ADDR="0.0.0.0:$port" \
      bash deploy/healthcheck.sh /healthz 2>/dev/null; then healthy=1; break; fi
    sleep 0.2
  done
  kill "$SIM_PID" 2>/dev/null || true
  wait "$SIM_PID" 2>/dev/null || true
  trap - EXIT
  [ -n "$healthy" ] || fail "healthcheck: deploy/healthcheck.sh got no 200 from ragq-sim's /healthz within 10 s"
  ok "healthcheck: deploy/healthcheck.sh sees ragq-sim's GET /healthz (axum) as healthy"
fi

log "check-deploy passed in $((SECONDS - START))s"
