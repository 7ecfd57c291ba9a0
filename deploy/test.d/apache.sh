# shellcheck shell=bash
# Sourced by deploy/test.sh: provides Apache httpd for the deploy tests (deploy/apache_test.go
# runs the shipped deploy/apache/calipso.conf in front of a real calipso) and exports
# CALIPSO_TEST_APACHE. It installs Debian's apache2 when it is missing; the package's own
# service is not used (the test runs its own httpd in the foreground on a loopback port).
calipso_apache() {
  if [ ! -x /usr/sbin/apache2 ]; then
    log "installing apache2 from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends apache2 >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq --no-install-recommends apache2 >/dev/null \
        || { log "apache2 could not be installed: the Apache tests will skip (and fail under CI)"; return 0; }
    fi
    # Debian starts the packaged service where it can; ours must not fight it for port 80.
    command -v service >/dev/null 2>&1 && service apache2 stop >/dev/null 2>&1 || true
  fi
  export CALIPSO_TEST_APACHE=/usr/sbin/apache2
  log "Apache: $($CALIPSO_TEST_APACHE -v | sed -n 's/^Server version: //p')"
}
calipso_apache
