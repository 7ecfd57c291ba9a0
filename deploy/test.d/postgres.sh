# shellcheck shell=bash
# Sourced by deploy/test.sh (needs its log function and CALIPSO_TEST_DIR): starts the
# private PostgreSQL the guacamole package tests run against, exports CALIPSO_TEST_POSTGRES_DSN.
# --- PostgreSQL (guacamole tests): a throwaway instance on a unix socket, no TCP port.
start_postgres() {
  local dir=$CALIPSO_TEST_DIR/postgres bin
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  if psql -h "$dir" -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
    log "PostgreSQL already running in $dir"
  else
    rm -rf "$dir"; mkdir -p "$dir"
    local as=(bash -c)   # initdb refuses to run as root: use the postgres account then
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; as=(su postgres -s /bin/bash -c); fi
    "${as[@]}" "$bin/initdb -D $dir/data -U postgres --auth=trust >/dev/null &&
      $bin/pg_ctl -D $dir/data -l $dir/log -w -o \"-c listen_addresses='' -c unix_socket_directories=$dir -c max_connections=200 -c fsync=off\" start >/dev/null" \
      || { cat "$dir/log" >&2; exit 1; }
    log "PostgreSQL started in $dir"
  fi
  export CALIPSO_TEST_POSTGRES_DSN="host=$dir user=postgres dbname=postgres sslmode=disable"
}
start_postgres
