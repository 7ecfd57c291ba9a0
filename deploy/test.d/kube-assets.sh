# shellcheck shell=bash
# Sourced by deploy/test.sh: provides the etcd and kube-apiserver binaries that the
# Kubernetes provisioner's envtest integration tests run against, and exports
# KUBEBUILDER_ASSETS. There is no container registry or release download here, so both
# are built from the Go module proxy once and cached by version under
#   ${CALIPSO_CACHE:-$HOME/.cache/calipso}/kube/<k8s-version>-<etcd-version>/
# The builds use a throwaway GOCACHE (kube-apiserver fills GBs of build cache) that is
# deleted afterwards; only the two binaries (~150 MB) are kept. Cold: ~10 min on 2 cores.
# Run it directly to build the cache: bash deploy/test.d/kube-assets.sh

calipso_kube_assets() {
  local kube_version=${CALIPSO_KUBE_VERSION:-1.37.2}
  local etcd_version=${CALIPSO_ETCD_VERSION:-3.7.0}
  local staging_version="0.${kube_version#*.}" # k8s.io/api etc. are published as v0.<minor>.<patch>
  local cache=${CALIPSO_CACHE:-$HOME/.cache/calipso}/kube
  local dir=$cache/$kube_version-$etcd_version
  _ka_log() { printf '== kube-assets: %s\n' "$*" >&2; }

  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
    _ka_log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    return 0
  fi
  if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ]; then
    export KUBEBUILDER_ASSETS=$dir
    _ka_log "cached in $dir"
    return 0
  fi
  command -v go >/dev/null 2>&1 || { _ka_log "go not found: Kubernetes tests will skip"; return 0; }

  mkdir -p "$cache" 2>/dev/null || true
  local work
  work=$(mktemp -d "$cache/build.XXXXXX") || { _ka_log "cannot write $cache: Kubernetes tests will skip"; return 0; }
  # Everything below runs in a subshell so that a failed build leaves the caller's
  # environment and working directory alone; the caller then skips the tests.
  if (
    set -euo pipefail
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOCACHE=$work/gocache GOWORK=off
    mkdir -p "$work/bin"

    if [ ! -x "$dir/etcd" ]; then
      _ka_log "building etcd v$etcd_version (about 1 min)"
      mkdir -p "$work/etcd" && cd "$work/etcd"
      go mod init calipso.local/etcd >>"$work/build.log" 2>&1
      go get -tool "go.etcd.io/etcd/server/v3@v$etcd_version" >>"$work/build.log" 2>&1
      go build -trimpath -ldflags '-s -w' -o "$work/bin/etcd" go.etcd.io/etcd/server/v3 >>"$work/build.log" 2>&1
    else
      cp "$dir/etcd" "$work/bin/etcd"
    fi

    if [ ! -x "$dir/kube-apiserver" ]; then
      _ka_log "building kube-apiserver v$kube_version (about 8 min cold, 2.4 GB memory)"
      mkdir -p "$work/apiserver" && cd "$work/apiserver"
      go mod init calipso.local/apiserver >>"$work/build.log" 2>&1
      # k8s.io/kubernetes replaces its staging modules with ./staging/... paths that do
      # not exist in the module zip: point each one at its published version instead.
      local gomod
      gomod=$(go mod download -json "k8s.io/kubernetes@v$kube_version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
      [ -f "$gomod" ] || { _ka_log "no go.mod for k8s.io/kubernetes@v$kube_version"; exit 1; }
      {
        echo "require k8s.io/kubernetes v$kube_version"
        sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#replace \1 => \1 v'"$staging_version"'#p' "$gomod"
      } >>go.mod
      grep -c '^replace' go.mod | { read -r n; _ka_log "$n staging modules replaced"; }
      go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$kube_version" >>"$work/build.log" 2>&1
      go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$kube_version" \
        -o "$work/bin/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >>"$work/build.log" 2>&1
    else
      cp "$dir/kube-apiserver" "$work/bin/kube-apiserver"
    fi

    "$work/bin/etcd" --version >/dev/null
    "$work/bin/kube-apiserver" --version >/dev/null
    rm -rf "$dir" && mv "$work/bin" "$dir"
  ); then
    rm -rf "$work"
    export KUBEBUILDER_ASSETS=$dir
    _ka_log "built into $dir"
  else
    tail -n 30 "$work/build.log" >&2 2>/dev/null
    rm -rf "$work"
    _ka_log "build failed: Kubernetes tests will skip (and fail under CI)"
  fi
  return 0
}

calipso_kube_assets
