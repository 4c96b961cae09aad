#!/usr/bin/env bash
# Real services on 127.0.0.1 for the integration and end-to-end tests.
#
#   scripts/services.sh start   start whatever is not running yet, write the env file,
#                               print one line per service and, last, the env file path
#   scripts/services.sh env     print the env file (eval "$(scripts/services.sh env)")
#   scripts/services.sh stop    stop every service by PID and remove the state directory
#
# Typical use:  . "$(scripts/services.sh start | tail -n1)" && .venv/bin/pytest
#
# Services (all on 127.0.0.1):
#   PostgreSQL 15  55432  superuser postgres/superpw, databases postgres and breakglass_test
#   Redis 7        56379  user default/adminpw, no persistence
#   moto_server    55000  AWS IAM/STS/S3 emulator
#   sshd           52222  trusts a user CA (TrustedUserCAKeys), RevokedKeys KRL, user bgtest
#   OIDC provider  53000  scripts/oidc/provider.mjs (npm oidc-provider)
#
# State (data, keys, logs, pid files) lives in ${BG_SERVICES_DIR:-/tmp/breakglass-services}.
# Missing Debian packages are installed with apt-get; the npm package is installed into
# scripts/oidc/node_modules. The script runs as root (it creates the bgtest account and
# runs PostgreSQL as the postgres account, since initdb refuses root).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${BG_SERVICES_DIR:-/tmp/breakglass-services}
VENV=${VENV:-$REPO/.venv}
PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=55432
REDIS_PORT=56379
MOTO_PORT=55000
SSH_PORT=52222
OIDC_PORT=53000
WAIT_SECONDS=60
MARKER=.breakglass-services

log() { echo "$*"; }
die() { echo "services.sh: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() {  # pid_alive NAME: the process recorded in $STATE/NAME.pid is running
  local f="$STATE/$1.pid" stat
  [[ -s $f ]] || return 1
  stat=$(ps -o stat= -p "$(cat "$f")" 2>/dev/null) || return 1
  [[ $stat != Z* ]]  # a zombie left by an exited daemon is not running
}

pg_running() {
  [[ -f $STATE/pg/data/PG_VERSION ]] &&
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE/pg/data" status >/dev/null 2>&1
}

wait_port() {  # wait_port NAME PORT LOGFILE [PIDNAME]
  local name=$1 port=$2 logfile=$3 pidname=${4:-} deadline=$((SECONDS + WAIT_SECONDS))
  until port_open "$port"; do
    if [[ -n $pidname ]] && ! pid_alive "$pidname"; then
      tail -n 20 "$logfile" >&2 || true
      die "$name exited before opening port $port; see $logfile"
    fi
    ((SECONDS < deadline)) || die "$name did not open port $port within ${WAIT_SECONDS}s; see $logfile"
    sleep 0.1
  done
}

refuse_foreign_port() {  # a port already taken by a process this script did not start
  if port_open "$2"; then
    die "port $2 for $1 is already in use by a process not started from $STATE; stop it first"
  fi
}

spawn() {  # spawn NAME LOGFILE CMD...: run CMD detached, record its PID in $STATE/NAME.pid
  local name=$1 logfile=$2
  shift 2
  nohup setsid "$@" </dev/null >"$logfile" 2>&1 9>&- &
  echo $! >"$STATE/$name.pid"
}

install_packages() {
  local missing=()
  [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v redis-server >/dev/null || missing+=(redis-server)
  [[ -x $PG_BIN/initdb ]] || missing+=(postgresql-15)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)  # the browser tests drive it headless
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
  "${apt[@]}" >/dev/null 2>&1 || { apt-get update -qq && "${apt[@]}" >/dev/null; }
}

install_oidc_provider() {
  [[ -d $REPO/scripts/oidc/node_modules/oidc-provider ]] && return 0
  log "installing npm oidc-provider into scripts/oidc/node_modules"
  (cd "$REPO/scripts/oidc" && npm install --no-audit --no-fund --loglevel=error >/dev/null)
}

start_postgres() {
  local data=$STATE/pg/data logfile=$STATE/logs/postgres.log
  if pg_running; then
    log "postgres  already running on 127.0.0.1:$PG_PORT"
    return 0
  fi
  refuse_foreign_port postgres "$PG_PORT"
  if [[ ! -f $data/PG_VERSION ]]; then
    install -d -o postgres -m 700 "$STATE/pg"
    printf 'superpw\n' >"$STATE/pg/pwfile"
    chown postgres "$STATE/pg/pwfile"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$data" -A scram-sha-256 -U postgres \
      --pwfile="$STATE/pg/pwfile" -E UTF8 --locale=C.UTF-8 >"$STATE/logs/initdb.log" 2>&1 ||
      die "initdb failed; see $STATE/logs/initdb.log"
    rm -f "$STATE/pg/pwfile"
    # In the configuration file, so a bare `pg_ctl -D DATA start` (outage tests) comes back the same.
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$STATE/pg'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  fi
  touch "$logfile" && chown postgres "$logfile"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$logfile" -w -t "$WAIT_SECONDS" start \
    >/dev/null 9>&- || die "postgres did not start; see $logfile"
  wait_port postgres "$PG_PORT" "$logfile"
  if [[ -z $(PGPASSWORD=superpw "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -tAc "SELECT 1 FROM pg_database WHERE datname = 'breakglass_test'") ]]; then
    PGPASSWORD=superpw "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -q \
      -c "CREATE DATABASE breakglass_test"
  fi
  log "postgres  started on 127.0.0.1:$PG_PORT (data $data)"
}

start_redis() {
  local logfile=$STATE/logs/redis.log
  if pid_alive redis; then log "redis     already running on 127.0.0.1:$REDIS_PORT"; return 0; fi
  refuse_foreign_port redis "$REDIS_PORT"
  mkdir -p "$STATE/redis"
  spawn redis "$logfile" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
    --appendonly no --requirepass adminpw --dir "$STATE/redis" --daemonize no
  wait_port redis "$REDIS_PORT" "$logfile" redis
  log "redis     started on 127.0.0.1:$REDIS_PORT"
}

start_moto() {
  local logfile=$STATE/logs/moto.log
  if pid_alive moto; then log "moto      already running on 127.0.0.1:$MOTO_PORT"; return 0; fi
  [[ -x $VENV/bin/moto_server ]] || die "$VENV/bin/moto_server not found: pip install 'moto[server]'"
  refuse_foreign_port moto "$MOTO_PORT"
  spawn moto "$logfile" "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
  wait_port moto "$MOTO_PORT" "$logfile" moto
  log "moto      started on 127.0.0.1:$MOTO_PORT"
}

start_sshd() {
  local dir=$STATE/ssh logfile=$STATE/logs/sshd.log
  if pid_alive sshd; then log "sshd      already running on 127.0.0.1:$SSH_PORT"; return 0; fi
  refuse_foreign_port sshd "$SSH_PORT"
  mkdir -p /run/sshd "$dir/principals"
  id bgtest >/dev/null 2>&1 || useradd -m -s /bin/bash bgtest
  usermod -p '*' bgtest  # a new account is locked; '*' unlocks it without any password
  [[ -f $dir/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C breakglass-test-host -f "$dir/host_ed25519"
  [[ -f $dir/user_ca ]] || ssh-keygen -q -t ed25519 -N '' -C breakglass-test-user-ca -f "$dir/user_ca"
  [[ -f $dir/revoked.krl ]] || ssh-keygen -q -k -f "$dir/revoked.krl"
  echo bg-bgtest >"$dir/principals/bgtest"
  cat >"$dir/sshd_config" <<CFG
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
TrustedUserCAKeys $dir/user_ca.pub
AuthorizedPrincipalsFile $dir/principals/%u
AuthorizedKeysFile none
RevokedKeys $dir/revoked.krl
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes no
LogLevel VERBOSE
CFG
  /usr/sbin/sshd -t -f "$dir/sshd_config" 2>"$logfile" || die "sshd config invalid; see $logfile"
  spawn sshd "$logfile" /usr/sbin/sshd -D -e -f "$dir/sshd_config"
  wait_port sshd "$SSH_PORT" "$logfile" sshd
  log "sshd      started on 127.0.0.1:$SSH_PORT (user CA $dir/user_ca, KRL $dir/revoked.krl)"
}

start_oidc() {
  local logfile=$STATE/logs/oidc.log
  if pid_alive oidc; then log "oidc      already running on 127.0.0.1:$OIDC_PORT"; return 0; fi
  refuse_foreign_port oidc "$OIDC_PORT"
  spawn oidc "$logfile" env PORT="$OIDC_PORT" node "$REPO/scripts/oidc/provider.mjs"
  wait_port oidc "$OIDC_PORT" "$logfile" oidc
  log "oidc      started on 127.0.0.1:$OIDC_PORT"
}

write_env() {
  cat >"$STATE/env.tmp" <<ENV
export BG_SERVICES_DIR=$STATE
export BG_TEST_PG_ADMIN_DSN=postgresql://postgres:superpw@127.0.0.1:$PG_PORT/postgres
export BG_TEST_PG_DB_DSN=postgresql://postgres:superpw@127.0.0.1:$PG_PORT/breakglass_test
export BG_TEST_PG_BIN=$PG_BIN
export BG_TEST_PG_DATA=$STATE/pg/data
export BG_TEST_PG_OS_USER=postgres
export BG_TEST_REDIS_URL=redis://default:adminpw@127.0.0.1:$REDIS_PORT/0
export BG_TEST_SSH_HOST=127.0.0.1
export BG_TEST_SSH_PORT=$SSH_PORT
export BG_TEST_SSH_USER=bgtest
export BG_TEST_SSH_CA_KEY=$STATE/ssh/user_ca
export BG_TEST_SSH_KRL=$STATE/ssh/revoked.krl
export BG_TEST_SSH_PRINCIPAL=bg-bgtest
export BG_TEST_AWS_ENDPOINT=http://127.0.0.1:$MOTO_PORT
export BG_TEST_OIDC_ISSUER=http://127.0.0.1:$OIDC_PORT
ENV
  mv "$STATE/env.tmp" "$STATE/env"
}

stop_pid() {  # stop_pid NAME: TERM, then KILL after 10 s
  local f="$STATE/$1.pid" pid
  [[ -s $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    log "$1 stopped (pid $pid)"
  fi
  rm -f "$f"
}

cmd_start() {
  mkdir -p "$STATE/logs"
  chmod 755 "$STATE"
  touch "$STATE/$MARKER"
  install_packages
  install_oidc_provider
  start_postgres
  start_redis
  start_moto
  start_sshd
  start_oidc
  write_env
  echo "$STATE/env"
}

cmd_stop() {
  [[ -d $STATE ]] || return 0
  [[ -f $STATE/$MARKER ]] || die "$STATE was not made by this script; not touching it"
  for name in oidc sshd moto redis; do stop_pid "$name"; done
  if pg_running; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null
    log "postgres stopped"
  fi
  rm -rf "$STATE"
}

cmd_env() {
  [[ -f $STATE/env ]] || die "no env file in $STATE: run scripts/services.sh start"
  cat "$STATE/env"
}

# One start or stop at a time: concurrent test runs may all call start.
exec 9>"$STATE.lock"
flock -w 300 9 || die "another services.sh holds $STATE.lock"

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  env) cmd_env ;;
  *) die "usage: $0 start|stop|env" ;;
esac
