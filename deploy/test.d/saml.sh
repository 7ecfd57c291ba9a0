# shellcheck shell=bash
# Sourced by deploy/test.sh: provides the real SAML parts of the federation tests
# (internal/testenv: StartSAMLIdP runs SimpleSAMLphp as the identity provider in a private
# Apache with mod_php, StartShibbolethSP runs Apache with mod_shib and a private shibd as
# the service provider), all from Debian's packages: simplesamlphp, libapache2-mod-php
# (+ php-xml, php-mbstring) and libapache2-mod-shib (with shibd). It installs only what is
# missing; nothing of the packages' own services or configuration is used (the tests run
# their own httpd and shibd in the foreground on loopback ports, with private config
# directories), so the services Debian may start are stopped. Exports
# CALIPSO_TEST_SIMPLESAMLPHP (the installation), CALIPSO_TEST_MOD_PHP,
# CALIPSO_TEST_SHIBD and CALIPSO_TEST_MOD_SHIB.
# Installed already: no apt-get, a few stat calls. Cold: ~30 s (about 60 MB of packages).
calipso_saml() {
  _saml_log() { printf '== saml: %s\n' "$*" >&2; }
  local need=()
  [ -f /usr/share/simplesamlphp/www/_include.php ] || need+=(simplesamlphp)
  compgen -G '/usr/lib/apache2/modules/libphp*.so' >/dev/null || need+=(libapache2-mod-php)
  compgen -G '/usr/lib/php/*/dom.so' >/dev/null || need+=(php-xml)
  compgen -G '/usr/lib/php/*/mbstring.so' >/dev/null || need+=(php-mbstring)
  { [ -f /usr/lib/apache2/modules/mod_shib.so ] && [ -x /usr/sbin/shibd ]; } || need+=(libapache2-mod-shib)
  if [ ${#need[@]} -gt 0 ]; then
    _saml_log "installing ${need[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
      apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || { _saml_log "${need[*]} could not be installed: the SAML tests will skip (and fail under CI)"; return 0; }
    fi
    # Debian starts the packaged services where it can; ours must not share their
    # ports, sockets or caches.
    if command -v service >/dev/null 2>&1; then
      service shibd stop >/dev/null 2>&1 || true
      service apache2 stop >/dev/null 2>&1 || true
    fi
  fi
  if [ -f /usr/share/simplesamlphp/www/_include.php ]; then
    export CALIPSO_TEST_SIMPLESAMLPHP=/usr/share/simplesamlphp
  fi
  local php
  for php in /usr/lib/apache2/modules/libphp*.so; do
    if [ -f "$php" ]; then export CALIPSO_TEST_MOD_PHP=$php; fi
  done
  if [ -x /usr/sbin/shibd ] && [ -f /usr/lib/apache2/modules/mod_shib.so ]; then
    export CALIPSO_TEST_SHIBD=/usr/sbin/shibd CALIPSO_TEST_MOD_SHIB=/usr/lib/apache2/modules/mod_shib.so
  fi
  _saml_log "SimpleSAMLphp ${CALIPSO_TEST_SIMPLESAMLPHP:-missing}, mod_php ${CALIPSO_TEST_MOD_PHP:-missing}, shibd ${CALIPSO_TEST_SHIBD:-missing}"
  return 0
}
calipso_saml
