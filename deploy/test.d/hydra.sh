# shellcheck shell=bash
# Sourced by deploy/test.sh: provides ORY Hydra, the real OpenID provider that the OIDC
# login tests run against (internal/testenv.StartOIDCProvider starts one per test), and
# exports CALIPSO_TEST_HYDRA (the binary). There is no container registry or release
# download here, so it is built from the Go module proxy once (with CGO, for the
# in-memory SQLite database that `DSN=memory` uses) and cached by version under
#   ${CALIPSO_CACHE:-$HOME/.cache/calipso}/hydra/<hydra-version>/hydra
# The build uses a throwaway GOCACHE that is deleted afterwards; only the binary (~60 MB)
# is kept. Cold: a few minutes on 2 cores.
# Run it directly to build the cache: bash deploy/test.d/hydra.sh

calipso_hydra() {
  local version=${CALIPSO_HYDRA_VERSION:-2.3.0}
  local cache=${CALIPSO_CACHE:-$HOME/.cache/calipso}/hydra
  local dir=$cache/$version
  _hy_log() { printf '== hydra: %s\n' "$*" >&2; }

  if [ -n "${CALIPSO_TEST_HYDRA:-}" ] && [ -x "$CALIPSO_TEST_HYDRA" ]; then
    _hy_log "using CALIPSO_TEST_HYDRA=$CALIPSO_TEST_HYDRA"
    return 0
  fi
  if [ -x "$dir/hydra" ]; then
    export CALIPSO_TEST_HYDRA=$dir/hydra
    _hy_log "cached in $dir"
    return 0
  fi
  command -v go >/dev/null 2>&1 || { _hy_log "go not found: OIDC tests will skip"; return 0; }
  command -v gcc >/dev/null 2>&1 || { _hy_log "gcc not found (SQLite needs CGO): OIDC tests will skip"; return 0; }

  mkdir -p "$cache" 2>/dev/null || true
  local work
  work=$(mktemp -d "$cache/build.XXXXXX") || { _hy_log "cannot write $cache: OIDC tests will skip"; return 0; }
  # Everything below runs in a subshell so that a failed build leaves the caller's
  # environment and working directory alone; the caller then skips the tests.
  if (
    set -euo pipefail
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOCACHE=$work/gocache GOWORK=off CGO_ENABLED=1
    mkdir -p "$work/bin" "$work/hydra" && cd "$work/hydra"

    _hy_log "building hydra v$version (a few minutes cold)"
    # set -e does not hold in a subshell that is an if's condition: each step that
    # can fail says so itself.
    go mod init calipso.local/hydra >>"$work/build.log" 2>&1 || exit 1
    # A dependency's replace directives are ignored, so hydra's own must be repeated
    # here: the ones to a published version as they are. The ones to a directory of
    # hydra's repository point at that directory in the module cache when the module zip
    # has it; a nested module (./internal/httpclient, github.com/ory/hydra-client-go/v2)
    # is not in the zip: its published version, as hydra requires it, is used instead.
    local info gomod src
    info=$(go mod download -json "github.com/ory/hydra/v2@v$version" 2>>"$work/build.log")
    gomod=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    src=$(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -f "$gomod" ] && [ -d "$src" ] || {
      _hy_log "no go.mod for github.com/ory/hydra/v2@v$version: $(printf '%s\n' "$info" | sed -n 's/^[[:space:]]*"Error": "\(.*\)",*$/\1/p')"
      exit 1
    }
    echo "require github.com/ory/hydra/v2 v$version" >>go.mod
    awk '/^replace[[:space:]]*\(/ {blk=1; next}
         blk && /^\)/ {blk=0; next}
         /^replace[[:space:]]/ {sub(/^replace[[:space:]]+/, ""); print; next}
         blk && NF {print}' "$gomod" |
      while read -r line; do
        local old=${line%%=>*} new=${line#*=>}
        new=${new#"${new%%[![:space:]]*}"}
        case $new in
          ./*|../*)
            if [ -f "$src/${new#./}/go.mod" ]; then
              echo "replace $old=> $src/${new#./}"
            else
              _hy_log "not in the module zip: $new (for $old): the published version is used"
            fi ;;
          *) echo "replace $line" ;;
        esac
      done >>go.mod
    _hy_log "$(grep -c '^replace' go.mod || true) replace directives carried over"
    go get -tool "github.com/ory/hydra/v2@v$version" >>"$work/build.log" 2>&1 || exit 1
    go build -trimpath -tags sqlite,sqlite_omit_load_extension \
      -ldflags "-s -w -X github.com/ory/hydra/v2/driver/config.Version=v$version" \
      -o "$work/bin/hydra" github.com/ory/hydra/v2 >>"$work/build.log" 2>&1 || exit 1

    "$work/bin/hydra" version >/dev/null || exit 1
    rm -rf "$dir" && mv "$work/bin" "$dir" || exit 1
  ); then
    rm -rf "$work"
    export CALIPSO_TEST_HYDRA=$dir/hydra
    _hy_log "built into $dir"
  else
    tail -n 30 "$work/build.log" >&2 2>/dev/null
    rm -rf "$work"
    _hy_log "build failed: OIDC tests will skip (and fail under CI)"
  fi
  return 0
}

calipso_hydra
