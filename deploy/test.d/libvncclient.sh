# shellcheck shell=bash
# Sourced by deploy/test.sh: provides libvncclient, the VNC library of Guacamole's guacd,
# for internal/demo's TestDesktopWithLibVNCClient (a viewer built against it connects to
# the demo desktop). It installs Debian's libvncserver-dev (headers and pkg-config file)
# when pkg-config does not find the library.
calipso_libvncclient() {
  if ! pkg-config --exists libvncclient 2>/dev/null; then
    log "installing libvncserver-dev (libvncclient) from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends libvncserver-dev pkg-config >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq --no-install-recommends libvncserver-dev pkg-config >/dev/null \
        || { log "libvncclient could not be installed: its test will skip (and fail under CI)"; return 0; }
    fi
  fi
  log "libvncclient: $(pkg-config --modversion libvncclient)"
}
calipso_libvncclient
