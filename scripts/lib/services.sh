# Shared by the scripts: make sure PostgreSQL, Redis, RabbitMQ and NATS run on 127.0.0.1, installing
# them from Debian's packages when the machine has none. Source it, then call ensure_services.

log() { printf '[ragq] %s\n' "$*" >&2; }

apt_install() {
  log "installing $* from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "${RAGQ_APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; RAGQ_APT_UPDATED=1; fi
  apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "$what did not come up within ${secs}s"; return 1
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql
    local v; v=$(ls /etc/postgresql | sort -V | tail -1)
    # Local development: trust connections from this machine (as on the CI machines).
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\nlocal all all trust' "/etc/postgresql/$v/main/pg_hba.conf"
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    wait_for 30 PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
  fi
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  if ! redis-cli -h 127.0.0.1 ping 2>/dev/null | grep -q PONG; then
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for 15 Redis sh -c 'redis-cli -h 127.0.0.1 ping | grep -q PONG'
  fi
}

ensure_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
  if ! rabbitmq-diagnostics -q check_port_connectivity >/dev/null 2>&1; then
    log "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    timeout 90 rabbitmqctl await_startup >/dev/null 2>&1 || true
    wait_for 60 RabbitMQ rabbitmq-diagnostics -q check_port_connectivity
  fi
}

ensure_nats() {
  command -v nats-server >/dev/null 2>&1 || apt_install nats-server
  if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    log "starting NATS (JetStream)"
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
      -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_for 15 NATS sh -c 'exec 3<>/dev/tcp/127.0.0.1/4222'
  fi
}

ensure_services() {
  ensure_postgres
  ensure_redis
  ensure_rabbitmq
  ensure_nats
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { log "cargo (Rust) is required"; exit 1; }
}
