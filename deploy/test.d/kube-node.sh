# shellcheck shell=bash
# Sourced by deploy/test.sh: provides the rest of a single-node Kubernetes cluster that
# really runs pods (internal/testenv.StartKubeNode): kubelet, kube-controller-manager,
# kube-scheduler and kube-proxy, next to the etcd and kube-apiserver of kube-assets.sh,
# plus Debian's containerd (a private second instance is started by the tests; the one
# Docker uses is never touched), runc, nft and containernetworking-plugins (bridge,
# host-local, portmap), installed when missing. It exports
#   CALIPSO_TEST_KUBE_NODE   the folder of the four binaries
# There is no release download here, so the binaries are built from the Go module proxy
# once, the way kube-assets.sh builds kube-apiserver (same replace directives), and
# cached by version under
#   ${CALIPSO_CACHE:-$HOME/.cache/calipso}/kube/<k8s-version>-node/
# The build uses a throwaway GOCACHE that is deleted afterwards; only the binaries are
# kept (~360 MB). Cold: about 16 minutes on 2 cores (measured 15m53s).
# Run it directly to build the cache: bash deploy/test.d/kube-node.sh

calipso_kube_node() {
  local kube_version=${CALIPSO_KUBE_VERSION:-1.37.2}
  local staging_version="0.${kube_version#*.}" # k8s.io/api etc. are published as v0.<minor>.<patch>
  local cache=${CALIPSO_CACHE:-$HOME/.cache/calipso}/kube
  local dir=$cache/$kube_version-node
  local bins=(kubelet kube-controller-manager kube-scheduler kube-proxy)
  _kn_log() { printf '== kube-node: %s\n' "$*" >&2; }

  # The host parts, from Debian's packages. containerd and runc come with docker.io.
  local need=()
  command -v containerd >/dev/null 2>&1 || need+=(containerd)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  command -v nft >/dev/null 2>&1 || need+=(nftables)
  command -v unshare >/dev/null 2>&1 || need+=(util-linux)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/portmap ] || need+=(containernetworking-plugins)
  if [ ${#need[@]} -gt 0 ]; then
    _kn_log "installing ${need[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || { _kn_log "${need[*]} could not be installed: the Kubernetes node tests will skip (and fail under CI)"; return 0; }
    fi
  fi

  local have=1 b
  for b in "${bins[@]}"; do [ -x "$dir/$b" ] || have=0; done
  if [ -n "${CALIPSO_TEST_KUBE_NODE:-}" ] && [ -x "$CALIPSO_TEST_KUBE_NODE/kubelet" ]; then
    _kn_log "using CALIPSO_TEST_KUBE_NODE=$CALIPSO_TEST_KUBE_NODE"
    return 0
  fi
  if [ $have = 1 ]; then
    export CALIPSO_TEST_KUBE_NODE=$dir
    _kn_log "cached in $dir"
    return 0
  fi
  command -v go >/dev/null 2>&1 || { _kn_log "go not found: the Kubernetes node tests will skip"; return 0; }

  mkdir -p "$cache" 2>/dev/null || true
  local work
  work=$(mktemp -d "$cache/build.XXXXXX") || { _kn_log "cannot write $cache: the Kubernetes node tests will skip"; return 0; }
  # Everything below runs in a subshell so that a failed build leaves the caller's
  # environment and working directory alone; the caller then skips the tests. The
  # subshell is the condition of an `if`, where bash ignores `set -e`: each step
  # therefore exits on failure itself.
  if (
    export GOTOOLCHAIN=local GOFLAGS=-mod=mod GOCACHE=$work/gocache GOWORK=off
    mkdir -p "$work/bin" "$work/node" && cd "$work/node" || exit 1

    _kn_log "building ${bins[*]} v$kube_version (about 16 min cold)"
    go mod init calipso.local/kubenode >>"$work/build.log" 2>&1 || exit 1
    # k8s.io/kubernetes replaces its staging modules with ./staging/... paths that do
    # not exist in the module zip: point each one at its published version instead.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@v$kube_version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [ -f "$gomod" ] || { _kn_log "no go.mod for k8s.io/kubernetes@v$kube_version"; exit 1; }
    {
      echo "require k8s.io/kubernetes v$kube_version"
      sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#replace \1 => \1 v'"$staging_version"'#p' "$gomod"
    } >>go.mod
    _kn_log "$(grep -c '^replace' go.mod || true) staging modules replaced"
    local pkgs=() p
    for p in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$p"); done
    for p in "${pkgs[@]}"; do
      go get -tool "$p@v$kube_version" >>"$work/build.log" 2>&1 || exit 1
    done
    # One go build for the four: the packages they share are compiled once.
    go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$kube_version" \
      -o "$work/bin/" "${pkgs[@]}" >>"$work/build.log" 2>&1 || exit 1

    for b in "${bins[@]}"; do "$work/bin/$b" --version >>"$work/build.log" 2>&1 || exit 1; done
    rm -rf "$dir" && mv "$work/bin" "$dir" || exit 1
  ); then
    rm -rf "$work"
    export CALIPSO_TEST_KUBE_NODE=$dir
    _kn_log "built into $dir"
  else
    tail -n 30 "$work/build.log" >&2 2>/dev/null
    rm -rf "$work"
    _kn_log "build failed: the Kubernetes node tests will skip (and fail under CI)"
  fi
  return 0
}

calipso_kube_node
