# shellcheck shell=bash
# Sourced by deploy/test.sh: provides mailpit, the real SMTP server that the mail tests
# send to (internal/testenv.StartSMTPServer starts one per test and reads what arrived
# through mailpit's HTTP API), and exports CALIPSO_TEST_MAILPIT (the binary). There is no
# release download here, so it is built from the Go module proxy once (pure Go, no CGO:
# its SQLite is modernc.org/sqlite) and cached by version under
#   ${CALIPSO_CACHE:-$HOME/.cache/calipso}/mailpit/<mailpit-version>/mailpit
# The build uses a throwaway GOCACHE that is deleted afterwards; only the binary (~25 MB)
# is kept. The module zip has no built web UI (that is made with npm for the releases):
# the HTTP API, which is all the tests use, works without it. Cold: about 1.5 minutes on
# 2 cores. Run it directly to build the cache: bash deploy/test.d/mailpit.sh

calipso_mailpit() {
  local version=${CALIPSO_MAILPIT_VERSION:-1.33.1}
  local cache=${CALIPSO_CACHE:-$HOME/.cache/calipso}/mailpit
  local dir=$cache/$version
  _mp_log() { printf '== mailpit: %s\n' "$*" >&2; }

  if [ -n "${CALIPSO_TEST_MAILPIT:-}" ] && [ -x "$CALIPSO_TEST_MAILPIT" ]; then
    _mp_log "using CALIPSO_TEST_MAILPIT=$CALIPSO_TEST_MAILPIT"
    return 0
  fi
  if [ -x "$dir/mailpit" ]; then
    export CALIPSO_TEST_MAILPIT=$dir/mailpit
    _mp_log "cached in $dir"
    return 0
  fi
  command -v go >/dev/null 2>&1 || { _mp_log "go not found: mail tests will skip"; return 0; }

  mkdir -p "$cache" 2>/dev/null || true
  local work
  work=$(mktemp -d "$cache/build.XXXXXX") || { _mp_log "cannot write $cache: mail tests will skip"; return 0; }
  # Everything below runs in a subshell so that a failed build leaves the caller's
  # environment and working directory alone; the caller then skips the tests. The
  # subshell is the condition of an `if`, where bash ignores `set -e`: each step
  # therefore exits on failure itself.
  if (
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOCACHE=$work/gocache GOWORK=off CGO_ENABLED=0 GOBIN=$work/bin
    mkdir -p "$work/bin" && cd "$work" || exit 1

    _mp_log "building mailpit v$version (about 1.5 minutes cold)"
    go install -trimpath \
      -ldflags "-s -w -X github.com/axllent/mailpit/config.Version=v$version" \
      "github.com/axllent/mailpit@v$version" >>"$work/build.log" 2>&1 || exit 1

    "$work/bin/mailpit" version --no-release-check >>"$work/build.log" 2>&1 || exit 1
    rm -rf "$dir" && mv "$work/bin" "$dir"
  ); then
    rm -rf "$work"
    export CALIPSO_TEST_MAILPIT=$dir/mailpit
    _mp_log "built into $dir"
  else
    tail -n 30 "$work/build.log" >&2 2>/dev/null
    rm -rf "$work"
    _mp_log "build failed: mail tests will skip (and fail under CI)"
  fi
  return 0
}

calipso_mailpit
