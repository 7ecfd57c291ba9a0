package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
)

// SAML attribute names (urn:oid form) of the well-known attributes that AddUser
// translates from their short names.
const (
	AttrUID                     = "urn:oid:0.9.2342.19200300.100.1.1"
	AttrMail                    = "urn:oid:0.9.2342.19200300.100.1.3"
	AttrEduPersonTargetedID     = "urn:oid:1.3.6.1.4.1.5923.1.1.1.10"
	AttrEduPersonUniqueID       = "urn:oid:1.3.6.1.4.1.5923.1.1.1.13"
	AttrEduPersonEntitlement    = "urn:oid:1.3.6.1.4.1.5923.1.1.1.7"
	AttrEduPersonPrincipalName  = "urn:oid:1.3.6.1.4.1.5923.1.1.1.6"
	AttrEduPersonAffiliation    = "urn:oid:1.3.6.1.4.1.5923.1.1.1.1"
	AttrEduPersonScopedAffil    = "urn:oid:1.3.6.1.4.1.5923.1.1.1.9"
	AttrDisplayName             = "urn:oid:2.16.840.1.113730.3.1.241"
	AttrCommonName              = "urn:oid:2.5.4.3"
	AttrSurname                 = "urn:oid:2.5.4.4"
	AttrGivenName               = "urn:oid:2.5.4.42"
	AttrSchacHomeOrganization   = "urn:oid:1.3.6.1.4.1.25178.1.2.9"
	NameIDFormatTransient       = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
	NameIDFormatPersistent      = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
	samlAttrNameFormatURI       = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
	simpleSAMLphpDefaultInstall = "/usr/share/simplesamlphp"
)

// SAMLAttributeNames maps the short (friendly) names AddUser knows to their SAML 2.0
// names. Any other name is released as given.
var SAMLAttributeNames = map[string]string{
	"uid":                        AttrUID,
	"mail":                       AttrMail,
	"eduPersonTargetedID":        AttrEduPersonTargetedID,
	"eduPersonUniqueId":          AttrEduPersonUniqueID,
	"eduPersonEntitlement":       AttrEduPersonEntitlement,
	"eduPersonPrincipalName":     AttrEduPersonPrincipalName,
	"eduPersonAffiliation":       AttrEduPersonAffiliation,
	"eduPersonScopedAffiliation": AttrEduPersonScopedAffil,
	"displayName":                AttrDisplayName,
	"cn":                         AttrCommonName,
	"sn":                         AttrSurname,
	"givenName":                  AttrGivenName,
	"schacHomeOrganization":      AttrSchacHomeOrganization,
}

// SAMLIdP is a real SAML 2.0 identity provider of one test's own: Debian's
// SimpleSAMLphp (1.19) served by a private Apache httpd with mod_php on a free
// loopback port, with a private configuration directory under a temporary directory
// (SIMPLESAMLPHP_CONFIG_DIR, passed with SetEnv). Users log in on SimpleSAMLphp's own
// username/password form (exampleauth:UserPass); they are added with AddUser, service
// providers with AddSP, both read by SimpleSAMLphp on every request. It signs
// assertions (not responses, not encrypted) and every logout message it sends
// (HTTP-Redirect binding: the query-string signature), and requires the logout
// messages it receives to be signed by the SP's metadata key. NameIDs are transient
// unless the SP asks for persistent (NameIDPolicy or the first NameIDFormat of its
// metadata): then the eduPersonTargetedID value, or a hash of uid, is the persistent
// NameID. eduPersonTargetedID is released as a NameID-valued attribute (persistent,
// qualified by the IdP and SP entity IDs), every other attribute as xs:string, all
// with NameFormat uri and no FriendlyName (SimpleSAMLphp 1.19 does not write one).
// Everything is stopped and removed when the test ends.
type SAMLIdP struct {
	// BaseURL is SimpleSAMLphp's base URL, ending in /simplesaml/.
	BaseURL string
	// EntityID is the IdP's entity ID (its metadata URL).
	EntityID string
	// MetadataURL is the IdP's SAML 2.0 metadata (saml2/idp/metadata.php).
	MetadataURL string
	// SSOURL and SLOURL are the IdP's single sign-on and single logout services
	// (HTTP-Redirect binding).
	SSOURL, SLOURL string

	dir    string // the private installation: config/, metadata/, cert/, sp/, state
	httpd  *httpd
	mu     sync.Mutex
	users  map[string]samlUser
	spSeq  int
	client *http.Client
}

type samlUser struct {
	password string
	attrs    map[string][]string
}

// StartSAMLIdP starts SimpleSAMLphp (CALIPSO_TEST_SIMPLESAMLPHP, default
// /usr/share/simplesamlphp) in Apache (CALIPSO_TEST_APACHE, default
// /usr/sbin/apache2) and waits until its metadata answers; it skips the test (fails it
// under CI) when a part is missing.
func StartSAMLIdP(t testing.TB) *SAMLIdP {
	t.Helper()
	install := partPath(t, "SimpleSAMLphp", "CALIPSO_TEST_SIMPLESAMLPHP", simpleSAMLphpDefaultInstall, "www/_include.php")
	modPHP := modPHPPath(t)
	bin := apachePath(t)

	p := &SAMLIdP{users: map[string]samlUser{}, client: &http.Client{Timeout: 15 * time.Second}}
	p.dir = sharedTempDir(t, "calipso-samlidp-")
	run := apacheRunAs()
	for _, d := range []string{"config", "config/metadata", "cert", "sp"} {
		mustMkdir(t, filepath.Join(p.dir, d), 0o755, "")
	}
	// What PHP writes runs as Apache's worker user.
	for _, d := range []string{"sessions", "log", "data", "tmp"} {
		mustMkdir(t, filepath.Join(p.dir, d), 0o700, run.user)
	}
	keyPEM, certPEM := selfSignedPEM(t, "SimpleSAMLphp test IdP")
	mustWrite(t, filepath.Join(p.dir, "cert", "idp.key"), keyPEM, 0o640, run.group)
	mustWrite(t, filepath.Join(p.dir, "cert", "idp.crt"), certPEM, 0o644, "")
	p.writeUsers(t)
	mustWrite(t, filepath.Join(p.dir, "config", "authsources.php"), p.authsources(), 0o644, "")
	mustWrite(t, filepath.Join(p.dir, "config", "metadata", "saml20-sp-remote.php"), p.spRemote(), 0o644, "")

	var last error
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			t.Fatalf("free port for SimpleSAMLphp: %v", err)
		}
		p.BaseURL = fmt.Sprintf("http://127.0.0.1:%d/simplesaml/", ports[0])
		p.EntityID = p.BaseURL + "saml2/idp/metadata.php"
		p.MetadataURL = p.EntityID
		p.SSOURL = p.BaseURL + "saml2/idp/SSOService.php"
		p.SLOURL = p.BaseURL + "saml2/idp/SingleLogoutService.php"
		mustWrite(t, filepath.Join(p.dir, "config", "config.php"), p.config(), 0o644, "")
		mustWrite(t, filepath.Join(p.dir, "config", "metadata", "saml20-idp-hosted.php"), p.idpHosted(), 0o644, "")
		conf := p.httpdConf(ports[0], install, modPHP, run)
		p.httpd, err = startHTTPD(t, "SimpleSAMLphp's Apache", bin, p.dir, conf, p.MetadataURL, "log/simplesamlphp.log", nil)
		if err == nil {
			return p
		}
		last = err
		if !errors.Is(err, errPortInUse) {
			break
		}
	}
	t.Fatalf("SimpleSAMLphp did not come up: %v", last)
	return nil
}

// config is SimpleSAMLphp's config.php.
func (p *SAMLIdP) config() []byte {
	d := func(sub string) string { return phpString(filepath.Join(p.dir, sub) + "/") }
	return []byte(`<?php
// Written by internal/testenv (StartSAMLIdP): a private SimpleSAMLphp for one test.
$config = [
    'baseurlpath' => ` + phpString(p.BaseURL) + `,
    'certdir' => ` + d("cert") + `,
    'loggingdir' => ` + d("log") + `,
    'datadir' => ` + d("data") + `,
    'tempdir' => ` + phpString(filepath.Join(p.dir, "tmp")) + `,
    'metadatadir' => ` + d("config/metadata") + `,
    'metadata.sources' => [['type' => 'flatfile']],
    'technicalcontact_name' => 'Calipso tests',
    'technicalcontact_email' => 'tests@example.org',
    'timezone' => 'UTC',
    'secretsalt' => ` + phpString(RandomHex(16)) + `,
    'auth.adminpassword' => ` + phpString(RandomHex(16)) + `,
    'admin.protectindexpage' => false,
    'admin.protectmetadata' => false,
    'admin.checkforupdates' => false,
    // Any loopback URL (the SPs' and backends' ports vary).
    'trusted.url.domains' => ['127\.0\.0\.1(:[0-9]+)?', 'localhost(:[0-9]+)?'],
    'trusted.url.regex' => true,
    'enable.http_post' => false,
    'assertion.allowed_clock_skew' => 180,
    'debug' => ['saml' => true, 'backtraces' => true, 'validatexml' => false],
    'showerrors' => true,
    'errorreporting' => false,
    'logging.level' => SimpleSAML\Logger::DEBUG,
    'logging.handler' => 'file',
    'logging.logfile' => 'simplesamlphp.log',
    'logging.processname' => 'simplesamlphp',
    'statistics.out' => [],
    'enable.saml20-idp' => true,
    'enable.shib13-idp' => false,
    'enable.adfs-idp' => false,
    'module.enable' => ['exampleauth' => true, 'core' => true, 'saml' => true, 'admin' => true],
    'session.duration' => 8 * 3600,
    'session.datastore.timeout' => 4 * 3600,
    'session.state.timeout' => 3600,
    'session.cookie.name' => 'SimpleSAMLSessionID',
    'session.cookie.lifetime' => 0,
    'session.cookie.path' => '/simplesaml/',
    'session.cookie.domain' => null,
    'session.cookie.secure' => false,
    'session.cookie.samesite' => null,
    'session.phpsession.cookiename' => 'SimpleSAML',
    'session.phpsession.savepath' => ` + phpString(filepath.Join(p.dir, "sessions")) + `,
    'session.phpsession.httponly' => true,
    'session.authtoken.cookiename' => 'SimpleSAMLAuthToken',
    'session.rememberme.enable' => false,
    'store.type' => 'phpsession',
    'language.available' => ['en'],
    'language.default' => 'en',
    'language.cookie.secure' => false,
    'language.cookie.samesite' => null,
    'theme.use' => 'default',
    'usenewui' => false,
    'production' => false,
];
`)
}

// authsources.php: the users come from users.json, read on every request.
func (p *SAMLIdP) authsources() []byte {
	return []byte(`<?php
// Written by internal/testenv (StartSAMLIdP). The users ("name:password" => attributes)
// are in users.json, which AddUser rewrites.
$users = json_decode((string) file_get_contents(` + phpString(filepath.Join(p.dir, "users.json")) + `), true);
$config = [
    'admin' => ['core:AdminPassword'],
    'example-userpass' => array_merge(['exampleauth:UserPass'], is_array($users) ? $users : []),
];
`)
}

// spRemote is saml20-sp-remote.php: every SP metadata file in sp/ (AddSP), parsed
// by SimpleSAMLphp's own metadata parser on each request, with the logout settings.
func (p *SAMLIdP) spRemote() []byte {
	return []byte(`<?php
// Written by internal/testenv (StartSAMLIdP): the SPs registered with AddSP.
foreach (glob(` + phpString(filepath.Join(p.dir, "sp")+"/*.xml") + `) as $file) {
    $entities = \SimpleSAML\Metadata\SAMLParser::parseDescriptorsString((string) file_get_contents($file));
    foreach ($entities as $entityId => $entity) {
        $sp = $entity->getMetadata20SP();
        if ($sp === null) {
            continue;
        }
        $sp['validate.logout'] = true;
        $sp['sign.logout'] = true;
        $metadata[$entityId] = $sp;
    }
}
`)
}

// eptidFilter is the core:PHP code that makes eduPersonTargetedID a persistent
// NameID-valued attribute and offers a persistent NameID.
const eptidFilter = `
$eptid = 'urn:oid:1.3.6.1.4.1.5923.1.1.1.10';
$idp = $state['Source']['entityid'];
$sp = isset($state['Destination']['entityid']) ? $state['Destination']['entityid'] : null;
$persistent = null;
if (isset($attributes[$eptid])) {
    $values = [];
    foreach ($attributes[$eptid] as $v) {
        if (is_string($v)) {
            if ($persistent === null) {
                $persistent = $v;
            }
            $n = new \SAML2\XML\saml\NameID();
            $n->setValue($v);
            $n->setFormat(\SAML2\Constants::NAMEID_PERSISTENT);
            $n->setNameQualifier($idp);
            if ($sp !== null) {
                $n->setSPNameQualifier($sp);
            }
            $v = $n;
        }
        $values[] = $v;
    }
    $attributes[$eptid] = $values;
}
if ($persistent === null && isset($attributes['urn:oid:0.9.2342.19200300.100.1.1'][0])) {
    $persistent = hash('sha256', $idp . '!' . $sp . '!' . $attributes['urn:oid:0.9.2342.19200300.100.1.1'][0]);
}
if ($persistent !== null) {
    $n = new \SAML2\XML\saml\NameID();
    $n->setValue($persistent);
    $n->setFormat(\SAML2\Constants::NAMEID_PERSISTENT);
    $n->setNameQualifier($idp);
    if ($sp !== null) {
        $n->setSPNameQualifier($sp);
    }
    $state['saml:NameID'][\SAML2\Constants::NAMEID_PERSISTENT] = $n;
}
`

// idpHosted is saml20-idp-hosted.php.
func (p *SAMLIdP) idpHosted() []byte {
	return []byte(`<?php
// Written by internal/testenv (StartSAMLIdP).
$metadata[` + phpString(p.EntityID) + `] = [
    'host' => '__DEFAULT__',
    'privatekey' => 'idp.key',
    'certificate' => 'idp.crt',
    'auth' => 'example-userpass',
    'attributes.NameFormat' => 'urn:oasis:names:tc:SAML:2.0:attrname-format:uri',
    'attributeencodings' => ['urn:oid:1.3.6.1.4.1.5923.1.1.1.10' => 'raw'],
    'NameIDFormat' => ['urn:oasis:names:tc:SAML:2.0:nameid-format:transient', 'urn:oasis:names:tc:SAML:2.0:nameid-format:persistent'],
    'sign.logout' => true,
    'validate.logout' => true,
    'saml20.sign.assertion' => true,
    'logouttype' => 'traditional',
    'authproc' => [
        50 => ['class' => 'core:PHP', 'code' => ` + phpString(eptidFilter) + `],
    ],
];
`)
}

// httpdConf is the private Apache's configuration: mod_php (prefork), SimpleSAMLphp
// under /simplesaml/.
func (p *SAMLIdP) httpdConf(port int, install, modPHP string, run runAs) string {
	var b strings.Builder
	b.WriteString(apacheCommon(p.dir, port, run, []string{"mpm_prefork", "authz_core", "mime", "dir", "alias", "env", "setenvif"}))
	fmt.Fprintf(&b, `LoadModule php_module %[1]s
Alias /simplesaml %[2]s/www
<Directory %[2]s/www>
  Require all granted
  Options FollowSymLinks
  AcceptPathInfo On
  DirectoryIndex index.php
  SetEnv SIMPLESAMLPHP_CONFIG_DIR %[3]s/config
  <FilesMatch "\.php$">
    SetHandler application/x-httpd-php
  </FilesMatch>
</Directory>
# The metadata and users files change during a test: no cached compiled copies.
php_admin_flag opcache.enable Off
php_admin_value session.save_path %[3]s/sessions
php_admin_value error_log %[3]s/log/php.log
php_admin_flag log_errors On
php_admin_flag display_errors Off
`, modPHP, install, p.dir)
	return b.String()
}

// MetadataXML returns the IdP's SAML 2.0 metadata, as SimpleSAMLphp serves it.
func (p *SAMLIdP) MetadataXML(t testing.TB) []byte {
	t.Helper()
	b, err := httpGetBody(p.client, p.MetadataURL)
	if err != nil {
		t.Fatalf("SimpleSAMLphp metadata: %v%s", err, p.logTail())
	}
	return b
}

// AddUser lets username log in on the IdP's form with password; attrs are released
// to every SP, each under its SAML 2.0 name when SAMLAttributeNames knows it (uid,
// mail, eduPersonTargetedID, eduPersonUniqueId, eduPersonEntitlement, displayName...),
// else under the name given. Adding a user again replaces it; logins after the call
// see the change. The username must not hold ':'.
func (p *SAMLIdP) AddUser(username, password string, attrs map[string][]string) {
	if strings.Contains(username, ":") {
		panic("testenv: SAMLIdP.AddUser: a username with ':' cannot be configured in SimpleSAMLphp")
	}
	released := map[string][]string{}
	for name, values := range attrs {
		if urn, ok := SAMLAttributeNames[name]; ok {
			name = urn
		}
		released[name] = append(released[name], values...)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users[username] = samlUser{password: password, attrs: released}
	if err := p.writeUsersLocked(); err != nil {
		panic("testenv: SAMLIdP.AddUser: " + err.Error())
	}
}

func (p *SAMLIdP) writeUsers(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.writeUsersLocked(); err != nil {
		t.Fatal(err)
	}
}

// writeUsersLocked writes users.json (atomically: PHP reads it at any time).
func (p *SAMLIdP) writeUsersLocked() error {
	users := map[string]map[string][]string{}
	for name, u := range p.users {
		attrs := map[string][]string{}
		for k, v := range u.attrs {
			attrs[k] = append([]string{}, v...)
		}
		users[name+":"+u.password] = attrs
	}
	b, err := json.Marshal(users)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(p.dir, "users.json"), b, 0o644)
}

// AddSP registers a service provider from its SAML 2.0 metadata (an EntityDescriptor
// or EntitiesDescriptor with an SPSSODescriptor: entity ID, ACS and SLO endpoints,
// certificates), parsed by SimpleSAMLphp itself. Registering the same entity ID again
// replaces it. The IdP signs the logout messages it sends to the SP and requires the
// SP's to be signed.
func (p *SAMLIdP) AddSP(t testing.TB, metadataXML []byte) {
	t.Helper()
	if !bytes.Contains(metadataXML, []byte("SPSSODescriptor")) {
		t.Fatalf("SAMLIdP.AddSP: no SPSSODescriptor in the metadata:\n%s", metadataXML)
	}
	id := entityIDOf(metadataXML)
	if id == "" {
		t.Fatalf("SAMLIdP.AddSP: no entityID in the metadata:\n%s", metadataXML)
	}
	name := "sp-" + fileKey(id) + ".xml"
	if err := writeAtomic(filepath.Join(p.dir, "sp", name), metadataXML, 0o644); err != nil {
		t.Fatal(err)
	}
}

// LogoutURL is where a browser starts an IdP-initiated single logout of every SP its
// IdP session logged in to, ending at returnTo (which must be a loopback URL).
// SimpleSAMLphp sends each SP a signed LogoutRequest (HTTP-Redirect binding, the
// "traditional" logout type: the browser goes round every SP in turn).
func (p *SAMLIdP) LogoutURL(returnTo string) string {
	return p.SLOURL + "?" + url.Values{"ReturnTo": {returnTo}}.Encode()
}

// LoginURL is where a browser starts an IdP-initiated login (unsolicited response) to
// the SP spEntityID, which then sends it to relayState.
func (p *SAMLIdP) LoginURL(spEntityID, relayState string) string {
	q := url.Values{"spentityid": {spEntityID}}
	if relayState != "" {
		q.Set("RelayState", relayState)
	}
	return p.SSOURL + "?" + q.Encode()
}

// LogTail returns the last lines of SimpleSAMLphp's log and Apache's error log.
func (p *SAMLIdP) LogTail() string { return p.logTail() }

func (p *SAMLIdP) logTail() string {
	return logTails(p.dir, 60, "log/simplesamlphp.log", "log/php.log", "error.log")
}

// --- Shared by the IdP and the SP: Apache, files, keys.

// runAs is the user and group Apache's workers run as (when started by root).
type runAs struct{ user, group string }

func apacheRunAs() runAs {
	if os.Geteuid() != 0 {
		return runAs{}
	}
	r := runAs{user: "www-data", group: "www-data"}
	if _, err := user.Lookup(r.user); err != nil {
		r.user = "nobody"
	}
	if _, err := user.LookupGroup(r.group); err != nil {
		r.group = "nogroup"
	}
	return r
}

// apacheCommon is the start of a private httpd.conf: modules, port, files under dir.
func apacheCommon(dir string, port int, run runAs, modules []string) string {
	var b strings.Builder
	for _, m := range modules {
		fmt.Fprintf(&b, "LoadModule %s_module /usr/lib/apache2/modules/mod_%s.so\n", m, m)
	}
	fmt.Fprintf(&b, `ServerRoot %[1]s
Listen 127.0.0.1:%[2]d
PidFile %[1]s/httpd.pid
DefaultRuntimeDir %[1]s
ErrorLog %[1]s/error.log
LogLevel warn
ServerName 127.0.0.1:%[2]d
UseCanonicalName On
TypesConfig /etc/mime.types
LogFormat "%%h %%l %%u %%t \"%%r\" %%>s %%b %%D" common
CustomLog %[1]s/access.log common
Timeout 60
`, dir, port)
	if run.user != "" {
		fmt.Fprintf(&b, "User %s\nGroup %s\n", run.user, run.group)
	}
	return b.String()
}

// httpd is a running private Apache.
type httpd struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's, once done is closed
}

var errPortInUse = calipso.NewError(calipso.EUNAVAILABLE, "the port is in use")

// startHTTPD checks conf (written to dir/httpd.conf), runs apache (with env added to
// the environment) in the foreground in its own process group and waits until ready answers 200. When the test ends it stops
// it (SIGTERM, then SIGKILL of the whole group) and, when the test failed, logs the
// tail of the error log and of extraLog (a file of dir).
func startHTTPD(t testing.TB, what, bin, dir, conf, ready, extraLog string, env []string) (*httpd, error) {
	t.Helper()
	confPath := filepath.Join(dir, "httpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	errLog := filepath.Join(dir, "error.log")
	_ = os.Remove(errLog)
	check := exec.Command(bin, "-t", "-f", confPath)
	check.Env = append(os.Environ(), env...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("%s: apache2 -t: %v\n%s\n--- %s ---\n%s", what, err, out, confPath, conf)
	}
	out, err := os.Create(filepath.Join(dir, "httpd.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(bin, "-f", confPath, "-DFOREGROUND")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start %s: %v", what, bin, err)
	}
	h := &httpd{cmd: cmd, done: make(chan struct{})}
	go func() { h.err = cmd.Wait(); close(h.done) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.done:
		case <-time.After(15 * time.Second):
		}
		// The workers too, should any be left.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-h.done
	}
	logs := func() string {
		files := []string{"httpd.out", "error.log"}
		if extraLog != "" {
			files = append(files, extraLog)
		}
		return logTails(dir, 60, files...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := waitOK(ctx, ready, h.done); err != nil {
		stop()
		l := logs()
		if strings.Contains(l, "Address already in use") || strings.Contains(l, "could not bind") {
			return nil, fmt.Errorf("%w: %s", errPortInUse, l)
		}
		if errors.Is(err, errExited) {
			return nil, fmt.Errorf("%s exited (%v) before %s answered%s", what, h.err, ready, l)
		}
		return nil, fmt.Errorf("%s: %v%s", what, err, l)
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("%s (%s):%s", what, dir, logs())
		}
	})
	return h, nil
}

// partPath finds a part: the directory in env (else def) holding probe.
func partPath(t testing.TB, part, env, def, probe string) string {
	t.Helper()
	dir := os.Getenv(env)
	how := env + " is not set and " + def + " is missing (deploy/test.d/saml.sh installs it)"
	if dir == "" {
		dir = def
	} else {
		how = env + "=" + dir + " holds no " + probe
	}
	if _, err := os.Stat(filepath.Join(dir, probe)); err != nil {
		Missing(t, part, how)
	}
	return dir
}

// apachePath is Debian's httpd (CALIPSO_TEST_APACHE, default /usr/sbin/apache2).
func apachePath(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("CALIPSO_TEST_APACHE")
	if bin == "" {
		bin = "/usr/sbin/apache2"
	}
	if _, err := os.Stat(bin); err != nil {
		Missing(t, "Apache httpd", bin+" is missing (deploy/test.d/apache.sh installs it)")
	}
	return bin
}

// modPHPPath is Apache's PHP module (CALIPSO_TEST_MOD_PHP, else Debian's libphp*.so).
func modPHPPath(t testing.TB) string {
	t.Helper()
	if m := os.Getenv("CALIPSO_TEST_MOD_PHP"); m != "" {
		if _, err := os.Stat(m); err != nil {
			Missing(t, "Apache's mod_php", "CALIPSO_TEST_MOD_PHP: "+err.Error())
		}
		return m
	}
	matches, _ := filepath.Glob("/usr/lib/apache2/modules/libphp*.so")
	if len(matches) == 0 {
		Missing(t, "Apache's mod_php", "no /usr/lib/apache2/modules/libphp*.so (libapache2-mod-php; deploy/test.d/saml.sh installs it)")
	}
	sort.Strings(matches)
	return matches[len(matches)-1]
}

// sharedTempDir is a temporary directory (removed when the test ends) that Apache's
// workers can enter: t.TempDir's parent is private to its owner.
func sharedTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// mustMkdir makes dir with perm, owned by owner when given (and we are root).
func mustMkdir(t testing.TB, dir string, perm os.FileMode, owner string) {
	t.Helper()
	if err := os.MkdirAll(dir, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		t.Fatal(err)
	}
	if owner != "" {
		chownTo(t, dir, owner, "")
	}
}

// mustWrite writes a file; group, when given, becomes its group (for keys that
// Apache's workers read).
func mustWrite(t testing.TB, path string, data []byte, perm os.FileMode, group string) {
	t.Helper()
	if err := writeAtomic(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if group != "" {
		chownTo(t, path, "", group)
	}
}

func chownTo(t testing.TB, path, owner, group string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	uid, gid := -1, -1
	if owner != "" {
		u, err := user.Lookup(owner)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			t.Fatal(err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic replaces path with data: readers see the old file or the new one.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp-" + RandomHex(4)
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// selfSignedPEM makes an RSA key (PKCS#8 PEM) and a self-signed certificate for it.
func selfSignedPEM(t testing.TB, cn string) (keyPEM, certPEM []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// phpString is s as a single-quoted PHP string literal.
func phpString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// xmlAttr is s escaped for an XML attribute value in double quotes.
func xmlAttr(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// entityIDOf is the entityID of the first EntityDescriptor in a metadata document.
func entityIDOf(metadata []byte) string {
	d := xml.NewDecoder(bytes.NewReader(metadata))
	for {
		tok, err := d.Token()
		if err != nil {
			return ""
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "EntityDescriptor" {
			for _, a := range se.Attr {
				if a.Name.Local == "entityID" {
					return a.Value
				}
			}
		}
	}
}

// fileKey is a short stable hex digest of s (for file names).
func fileKey(s string) string {
	var h uint64 = 1469598103934665603
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return strconv.FormatUint(h, 16)
}

// httpGetBody GETs u and returns the body of a 200 answer.
func httpGetBody(c *http.Client, u string) ([]byte, error) {
	res, err := c.Get(u)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", u, res.Status, tail(string(b), 20))
	}
	return b, nil
}
