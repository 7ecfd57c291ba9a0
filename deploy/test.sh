#!/usr/bin/env bash
# The test command: installs and starts what the tests need, then runs every test.
#   bash deploy/test.sh            # everything (needs root for apt-get on a fresh machine)
#   bash deploy/test.sh -run Quota ./quotas/...   # extra arguments go to `go test`
# It starts a private MariaDB on a unix socket under $CALIPSO_TEST_DIR (never touches a
# system database), checks the Docker engine, builds the FROM-scratch test images, and
# exports the CALIPSO_TEST_* variables the integration tests read.
set -euo pipefail
cd "$(dirname "$0")/.."

export CALIPSO_TEST_DIR=${CALIPSO_TEST_DIR:-/tmp/calipso-test}
mkdir -p "$CALIPSO_TEST_DIR"
log() { printf '== %s\n' "$*" >&2; }

need_apt=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server mariadb-client)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# --- MariaDB: a throwaway instance of our own, on a socket, no network port.
start_mariadb() {
  local dir=$CALIPSO_TEST_DIR/mariadb sock=$CALIPSO_TEST_DIR/mariadb.sock
  if mariadb -uroot --socket="$sock" -e 'select 1' >/dev/null 2>&1; then
    log "MariaDB already running on $sock"
  else
    rm -rf "$dir"; mkdir -p "$dir"
    mariadb-install-db --no-defaults --user=root --datadir="$dir" --auth-root-authentication-method=normal >/dev/null
    (mariadbd --no-defaults --user=root --datadir="$dir" --socket="$sock" --skip-networking \
       --pid-file="$CALIPSO_TEST_DIR/mariadb.pid" --log-error="$CALIPSO_TEST_DIR/mariadb.err" \
       --max-connections=1000 --innodb-flush-log-at-trx-commit=2 >/dev/null 2>&1 &)
    for _ in $(seq 1 60); do
      mariadb -uroot --socket="$sock" -e 'select 1' >/dev/null 2>&1 && break
      sleep 0.5
    done
    mariadb -uroot --socket="$sock" -e 'select 1' >/dev/null || { cat "$CALIPSO_TEST_DIR/mariadb.err" >&2; exit 1; }
    log "MariaDB started on $sock"
  fi
  export CALIPSO_TEST_MYSQL_DSN="root@unix($sock)/"
}
start_mariadb

# --- Docker engine: the tests use it when it answers; CI must have it.
if docker info >/dev/null 2>&1; then
  log "Docker engine: $(docker version --format '{{.Server.Version}}')"
  export CALIPSO_TEST_DOCKER=1
else
  log "no Docker engine answers: the Docker tests will skip (and fail under CI)"
fi

# --- The other parts: PostgreSQL (Guacamole's second dialect), kube-apiserver + etcd
# (built once from the Go module proxy and cached), Apache for the deploy tests.
for part in deploy/test.d/*.sh; do
  # shellcheck source=/dev/null
  . "$part"
done

log "go vet"
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi

log "go test -race"
if [ $# -gt 0 ]; then
  go test -race -count=1 "$@"
else
  go test -race -count=1 -timeout 30m ./...
fi

# --- Short fuzzing of what parses and resolves untrusted volume definitions (full runs
# only; about 30 s). A failing input is kept under experiments/testdata/fuzz/ and then
# runs with every plain `go test`. Minimizing is capped: it would otherwise stall the
# workers for up to a minute on each new input.
if [ $# -eq 0 ]; then
  for target in FuzzParseVolumes FuzzResolveHostPaths; do
    log "fuzz $target"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime 10s -fuzzminimizetime 1s ./experiments/
  done
fi
