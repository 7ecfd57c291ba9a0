package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ShibSPOptions configures the service provider StartShibbolethSP starts.
type ShibSPOptions struct {
	// IdPMetadataXML is the metadata of the (one) IdP the SP trusts and logs in at
	// (e.g. SAMLIdP.MetadataXML). Required.
	IdPMetadataXML []byte
	// Backend is the URL (no trailing slash needed) that the protected paths are
	// proxied to, e.g. http://127.0.0.1:PORT; {{BACKEND}} in Snippet.
	Backend string
	// BasePath is {{BASE_PATH}} in Snippet (default "/calipsoplus-services/").
	BasePath string
	// Snippet is Apache configuration (e.g. taken from a README) with the <Location>
	// blocks: AuthType shibboleth, ShibRequestSetting requireSession 1, ShibUseHeaders
	// On, ProxyPass... {{BACKEND}} and {{BASE_PATH}} are replaced. When empty,
	// DefaultShibSnippet.
	Snippet string
	// Attributes maps SAML attribute names (URNs) to the ids that mod_shib exports
	// (the request header names with ShibUseHeaders On); nil means
	// DefaultShibAttributes. eduPersonTargetedID is decoded as a NameID (its value
	// only, "$Name"), every other attribute as a string. The NameIDs are always
	// mapped too: persistent-id ("idp!sp!value") and transient-id.
	Attributes map[string]string
	// RedirectAllow lists URL prefixes, besides the SP's own, that
	// /Shibboleth.sso/Logout?return= and Login?target= may send a browser to
	// (redirectLimit="exact+allow"); Backend is always allowed.
	RedirectAllow []string
	// Signing is shibboleth2.xml's signing property for the messages the SP sends
	// ("false", "front", "back", "true"); empty means "front". Logout requests and
	// responses are signed either way by this SP (SimpleSAMLphp requires it).
	Signing string
}

// DefaultShibSnippet proxies everything under {{BASE_PATH}} to the backend with
// ShibUseHeaders On and a lazy session (the headers when the browser has a session),
// and requires a session only on umbrella/login/ and umbrella/frontend/.
const DefaultShibSnippet = `<Location {{BASE_PATH}}>
  AuthType shibboleth
  ShibRequestSetting requireSession 0
  ShibUseHeaders On
  Require shibboleth
  ProxyPass {{BACKEND}}{{BASE_PATH}} retry=0
  ProxyPassReverse {{BACKEND}}{{BASE_PATH}}
</Location>
<Location {{BASE_PATH}}umbrella/login/>
  AuthType shibboleth
  ShibRequestSetting requireSession 1
  ShibUseHeaders On
  Require shib-session
</Location>
<Location {{BASE_PATH}}umbrella/frontend/>
  AuthType shibboleth
  ShibRequestSetting requireSession 1
  ShibUseHeaders On
  Require shib-session
</Location>
`

// DefaultShibAttributes is the attribute map of a ShibSP without
// ShibSPOptions.Attributes: Calipso's Umbrella headers.
var DefaultShibAttributes = map[string]string{
	AttrEduPersonTargetedID:  "EAAHash",
	AttrEduPersonUniqueID:    "eduPersonUniqueId",
	AttrUID:                  "uid",
	AttrMail:                 "mail",
	AttrEduPersonEntitlement: "entitlement",
	AttrDisplayName:          "displayName",
}

// ShibSP is a real Shibboleth service provider of one test's own: Debian's Apache
// httpd with mod_shib (Shibboleth SP 3) in front of a backend, and its own shibd run in
// the foreground, both with a private configuration under a temporary directory (their
// own shibboleth2.xml, attribute map, key and certificate, socket, storage in memory).
// Its handler is /Shibboleth.sso: Login, SAML2/POST (the ACS), SLO/Redirect and
// SLO/POST, Logout (SAML 2.0 single logout, then local: ?return=URL), Metadata, Session
// (JSON) and Status. Everything is stopped and removed when the test ends.
type ShibSP struct {
	// BaseURL is Apache's URL, with a trailing slash: http://127.0.0.1:PORT/.
	BaseURL string
	// EntityID is the SP's entity ID (BaseURL + "shibboleth").
	EntityID string
	// MetadataURL is the SP's generated metadata (/Shibboleth.sso/Metadata).
	MetadataURL string
	// HandlerURL is BaseURL + "Shibboleth.sso".
	HandlerURL string

	dir   string
	shibd *exec.Cmd
}

// StartShibbolethSP starts shibd (CALIPSO_TEST_SHIBD, default /usr/sbin/shibd) and
// Apache (CALIPSO_TEST_APACHE) with mod_shib (CALIPSO_TEST_MOD_SHIB, default Debian's)
// and waits until the SP's metadata answers; it skips the test (fails it under CI) when
// a part is missing.
func StartShibbolethSP(t testing.TB, opts ShibSPOptions) *ShibSP {
	t.Helper()
	shibd := os.Getenv("CALIPSO_TEST_SHIBD")
	if shibd == "" {
		shibd = "/usr/sbin/shibd"
	}
	if _, err := os.Stat(shibd); err != nil {
		Missing(t, "shibd", shibd+" is missing (libapache2-mod-shib; deploy/test.d/saml.sh installs it)")
	}
	modShib := os.Getenv("CALIPSO_TEST_MOD_SHIB")
	if modShib == "" {
		modShib = "/usr/lib/apache2/modules/mod_shib.so"
	}
	if _, err := os.Stat(modShib); err != nil {
		Missing(t, "mod_shib", modShib+" is missing (libapache2-mod-shib; deploy/test.d/saml.sh installs it)")
	}
	bin := apachePath(t)
	if len(opts.IdPMetadataXML) == 0 {
		t.Fatal("StartShibbolethSP: no IdPMetadataXML")
	}
	idpEntityID := entityIDOf(opts.IdPMetadataXML)
	if idpEntityID == "" {
		t.Fatalf("StartShibbolethSP: no entityID in the IdP metadata:\n%s", opts.IdPMetadataXML)
	}
	if opts.BasePath == "" {
		opts.BasePath = "/calipsoplus-services/"
	}
	if opts.Snippet == "" {
		opts.Snippet = DefaultShibSnippet
	}
	if opts.Attributes == nil {
		opts.Attributes = DefaultShibAttributes
	}
	if opts.Signing == "" {
		opts.Signing = "front"
	}
	opts.Backend = strings.TrimRight(opts.Backend, "/")

	s := &ShibSP{dir: sharedTempDir(t, "calipso-shibsp-")}
	run := apacheRunAs()
	// Shibboleth's own files that the configuration names: the protocol and security
	// policies, the error and POST templates, from the package (read only, copied).
	for _, f := range []string{"protocols.xml", "security-policy.xml", "attrChecker.html", "bindingTemplate.html",
		"discoveryTemplate.html", "globalLogout.html", "localLogout.html", "metadataError.html",
		"partialLogout.html", "postTemplate.html", "sessionError.html", "sslError.html"} {
		data, err := os.ReadFile(filepath.Join("/etc/shibboleth", f))
		if err != nil {
			Missing(t, "Shibboleth SP's configuration files", err.Error()+" (shibboleth-sp-common)")
		}
		mustWrite(t, filepath.Join(s.dir, f), data, 0o644, "")
	}
	mustWrite(t, filepath.Join(s.dir, "idp-metadata.xml"), opts.IdPMetadataXML, 0o644, "")
	keyPEM, certPEM := selfSignedPEM(t, "Shibboleth test SP")
	// mod_shib in Apache's workers loads the credentials too.
	mustWrite(t, filepath.Join(s.dir, "sp-key.pem"), keyPEM, 0o640, run.group)
	mustWrite(t, filepath.Join(s.dir, "sp-cert.pem"), certPEM, 0o644, "")
	mustWrite(t, filepath.Join(s.dir, "attribute-map.xml"), shibAttributeMap(opts.Attributes), 0o644, "")
	mustWrite(t, filepath.Join(s.dir, "attribute-policy.xml"), []byte(shibAttributePolicy), 0o644, "")
	mustWrite(t, filepath.Join(s.dir, "shibd.logger"), shibLogger(filepath.Join(s.dir, "shibd.log"), "INFO"), 0o644, "")
	mustWrite(t, filepath.Join(s.dir, "native.logger"), shibLogger(filepath.Join(s.dir, "native.log"), "WARN"), 0o644, "")
	// mod_shib writes native.log from Apache's workers.
	mustWrite(t, filepath.Join(s.dir, "native.log"), nil, 0o664, run.group)
	chownTo(t, filepath.Join(s.dir, "native.log"), run.user, "")

	var last error
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			t.Fatalf("free port for the Shibboleth SP: %v", err)
		}
		s.BaseURL = fmt.Sprintf("http://127.0.0.1:%d/", ports[0])
		s.EntityID = s.BaseURL + "shibboleth"
		s.HandlerURL = s.BaseURL + "Shibboleth.sso"
		s.MetadataURL = s.HandlerURL + "/Metadata"
		allow := append([]string{}, opts.RedirectAllow...)
		if opts.Backend != "" {
			allow = append(allow, opts.Backend+"/")
		}
		mustWrite(t, filepath.Join(s.dir, "shibboleth2.xml"), s.config(idpEntityID, opts.Signing, allow), 0o644, "")
		stopShibd, err := s.startShibd(t, shibd)
		if err != nil {
			t.Fatal(err)
		}
		conf := s.httpdConf(ports[0], modShib, run, opts)
		_, err = startHTTPD(t, "the Shibboleth SP's Apache", bin, s.dir, conf, s.MetadataURL, "native.log", s.env())
		if err == nil {
			return s
		}
		last = err
		stopShibd() // its configuration names the port
		if !errors.Is(err, errPortInUse) {
			break
		}
	}
	t.Fatalf("the Shibboleth SP did not come up: %v", last)
	return nil
}

// env is what shibd and mod_shib read: every default path points into the private
// directory.
func (s *ShibSP) env() []string {
	return []string{
		"SHIBSP_CONFIG=" + filepath.Join(s.dir, "shibboleth2.xml"),
		"SHIBSP_CFGDIR=" + s.dir,
		"SHIBSP_RUNDIR=" + s.dir,
		"SHIBSP_CACHEDIR=" + s.dir,
		"SHIBSP_LOGDIR=" + s.dir,
		"SHIBSP_LOGGING=" + filepath.Join(s.dir, "shibd.logger"),
	}
}

// config is shibboleth2.xml.
func (s *ShibSP) config(idpEntityID, signing string, allow []string) []byte {
	p := func(f string) string { return xmlAttr(filepath.Join(s.dir, f)) }
	return []byte(`<SPConfig xmlns="urn:mace:shibboleth:3.0:native:sp:config"
    xmlns:conf="urn:mace:shibboleth:3.0:native:sp:config"
    clockSkew="180">
    <!-- Written by internal/testenv (StartShibbolethSP): a private SP for one test. -->
    <OutOfProcess logger="` + p("shibd.logger") + `" tranLogFormat="%u|%s|%IDP|%i|%ac|%t|%attr|%n|%b|%E|%S|%SS|%L|%UA|%a"/>
    <InProcess logger="` + p("native.logger") + `"/>
    <UnixListener address="` + p("shibd.sock") + `"/>
    <StorageService type="Memory" id="mem" cleanupInterval="900"/>
    <SessionCache type="StorageService" StorageService="mem" cacheAssertions="false"
                  cacheAllowance="900" inprocTimeout="900" cleanupInterval="900"/>
    <ReplayCache StorageService="mem"/>
    <ArtifactMap artifactTTL="180"/>

    <ApplicationDefaults entityID="` + xmlAttr(s.EntityID) + `"
        REMOTE_USER="eppn subject-id pairwise-id persistent-id"
        signing="` + xmlAttr(signing) + `" encryption="false">
        <Sessions lifetime="28800" timeout="3600" relayState="ss:mem"
                  checkAddress="false" handlerSSL="false" cookieProps="http"
                  redirectLimit="exact+allow" redirectAllow="` + xmlAttr(strings.Join(allow, " ")) + `">
            <SSO entityID="` + xmlAttr(idpEntityID) + `">SAML2</SSO>
            <Logout>SAML2 Local</Logout>
            <LogoutInitiator type="Admin" Location="/Logout/Admin" acl="127.0.0.1 ::1" />
            <Handler type="MetadataGenerator" Location="/Metadata" signing="false"/>
            <Handler type="Status" Location="/Status" acl="127.0.0.1 ::1"/>
            <Handler type="Session" Location="/Session" showAttributeValues="true" contentType="application/json"/>
        </Sessions>
        <Errors supportContact="root@localhost" helpLocation="/about.html" styleSheet="/shibboleth-sp/main.css"
            session="` + p("sessionError.html") + `" metadata="` + p("metadataError.html") + `"
            access="` + p("attrChecker.html") + `" ssl="` + p("sslError.html") + `"
            localLogout="` + p("localLogout.html") + `" globalLogout="` + p("globalLogout.html") + `"
            partialLogout="` + p("partialLogout.html") + `"/>
        <MetadataProvider type="XML" validate="true" path="` + p("idp-metadata.xml") + `"/>
        <AttributeExtractor type="XML" validate="true" reloadChanges="false" path="` + p("attribute-map.xml") + `"/>
        <AttributeFilter type="XML" validate="true" path="` + p("attribute-policy.xml") + `"/>
        <CredentialResolver type="File" key="` + p("sp-key.pem") + `" certificate="` + p("sp-cert.pem") + `"/>
    </ApplicationDefaults>
    <SecurityPolicyProvider type="XML" validate="true" path="` + p("security-policy.xml") + `"/>
    <ProtocolProvider type="XML" validate="true" reloadChanges="false" path="` + p("protocols.xml") + `"/>
</SPConfig>
`)
}

// shibAttributeMap is attribute-map.xml for attrs (SAML name -> id).
func shibAttributeMap(attrs map[string]string) []byte {
	var b strings.Builder
	b.WriteString(`<Attributes xmlns="urn:mace:shibboleth:2.0:attribute-map" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
    <!-- Written by internal/testenv (StartShibbolethSP). -->
    <Attribute name="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" id="persistent-id">
        <AttributeDecoder xsi:type="NameIDAttributeDecoder" formatter="$NameQualifier!$SPNameQualifier!$Name" defaultQualifiers="true"/>
    </Attribute>
    <Attribute name="urn:oasis:names:tc:SAML:2.0:nameid-format:transient" id="transient-id"/>
`)
	names := make([]string, 0, len(attrs))
	for name := range attrs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if name == AttrEduPersonTargetedID {
			fmt.Fprintf(&b, `    <Attribute name="%s" id="%s">
        <AttributeDecoder xsi:type="NameIDAttributeDecoder" formatter="$Name" defaultQualifiers="true"/>
    </Attribute>
`, xmlAttr(name), xmlAttr(attrs[name]))
			continue
		}
		fmt.Fprintf(&b, "    <Attribute name=\"%s\" id=\"%s\"/>\n", xmlAttr(name), xmlAttr(attrs[name]))
	}
	b.WriteString("</Attributes>\n")
	return []byte(b.String())
}

// shibAttributePolicy lets every attribute through.
const shibAttributePolicy = `<AttributeFilterPolicyGroup
    xmlns="urn:mace:shibboleth:2.0:afp"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
    <AttributeFilterPolicy>
        <PolicyRequirementRule xsi:type="ANY"/>
        <AttributeRule attributeID="*" permitAny="true"/>
    </AttributeFilterPolicy>
</AttributeFilterPolicyGroup>
`

// shibLogger is a log4shib configuration that appends what is at least level to
// file (unbuffered, unlike the console appender).
func shibLogger(file, level string) []byte {
	return []byte(strings.NewReplacer("FILE", file, "LEVEL", level).Replace(shibLoggerTemplate))
}

const shibLoggerTemplate = `log4j.rootCategory=LEVEL, file
log4j.category.XMLTooling.XMLObject=WARN
log4j.category.XMLTooling.XMLObjectBuilder=WARN
log4j.category.XMLTooling.KeyInfoResolver=WARN
log4j.category.Shibboleth.IPRange=WARN
log4j.category.Shibboleth.PropertySet=WARN
log4j.category.XMLTooling.libcurl=WARN
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.fileName=FILE
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=%d{%Y-%m-%d %H:%M:%S} %p %c %x: %m%n
`

// startShibd runs shibd in the foreground and waits until its socket is there. stop
// ends it (also called when the test ends).
func (s *ShibSP) startShibd(t testing.TB, bin string) (stop func(), err error) {
	t.Helper()
	sock := filepath.Join(s.dir, "shibd.sock")
	logFile, err := os.OpenFile(filepath.Join(s.dir, "shibd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	_ = os.Remove(sock)
	cmd := exec.Command(bin, "-F", "-f", "-c", filepath.Join(s.dir, "shibboleth2.xml"), "-p", filepath.Join(s.dir, "shibd.pid"))
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.dir, "TMPDIR=" + s.dir}, s.env()...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start shibd: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
		})
	}
	deadline := time.After(60 * time.Second)
	for {
		if st, err := os.Stat(sock); err == nil && st.Mode()&os.ModeSocket != 0 {
			break
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("shibd exited (%v) before its socket %s was there%s", waitErr, sock, s.shibdLogTail())
		case <-deadline:
			stop()
			return nil, fmt.Errorf("shibd made no socket %s in 60 s%s", sock, s.shibdLogTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Apache's workers (www-data) connect to it.
	_ = os.Chmod(sock, 0o777)
	s.shibd = cmd
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("shibd (%s):%s", s.dir, s.shibdLogTail())
		}
	})
	return stop, nil
}

func (s *ShibSP) shibdLogTail() string { return logTails(s.dir, 60, "shibd.out", "shibd.log") }

// LogTail returns the last lines of shibd's and mod_shib's logs and of Apache's error
// log.
func (s *ShibSP) LogTail() string {
	return logTails(s.dir, 60, "shibd.out", "shibd.log", "native.log", "error.log")
}

// logTails is the last lines of each non-empty file of dir, with a title.
func logTails(dir string, lines int, files ...string) string {
	var b strings.Builder
	for _, f := range files {
		path := filepath.Join(dir, f)
		if data, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(data)) > 0 {
			fmt.Fprintf(&b, "\n--- %s, last lines ---\n%s", path, tail(string(data), lines))
		}
	}
	return b.String()
}

// httpdConf is Apache's configuration: mod_shib, proxying, the test's snippet.
func (s *ShibSP) httpdConf(port int, modShib string, run runAs, opts ShibSPOptions) string {
	var b strings.Builder
	b.WriteString(apacheCommon(s.dir, port, run, []string{"mpm_event", "authn_core", "authz_core", "authz_user",
		"mime", "dir", "alias", "env", "headers", "proxy", "proxy_http"}))
	fmt.Fprintf(&b, `LoadModule mod_shib %[1]s
ShibConfig %[2]s/shibboleth2.xml
ShibCompatValidUser On
ProxyRequests Off
ProxyPreserveHost On
<Location /Shibboleth.sso>
  AuthType None
  Require all granted
  SetHandler shib
</Location>
<Location /shibboleth-sp>
  AuthType None
  Require all granted
</Location>
Alias /shibboleth-sp/main.css /usr/share/shibboleth/main.css
# --- the test's snippet
`, modShib, s.dir)
	snippet := strings.NewReplacer("{{BACKEND}}", opts.Backend, "{{BASE_PATH}}", opts.BasePath).Replace(opts.Snippet)
	b.WriteString(snippet)
	if !strings.HasSuffix(snippet, "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

// MetadataXML returns the SP's metadata as Shibboleth generates it (entity ID, the
// ACS and SLO endpoints, the certificate), to give to SAMLIdP.AddSP.
func (s *ShibSP) MetadataXML(t testing.TB) []byte {
	t.Helper()
	b, err := httpGetBody(shibClient, s.MetadataURL)
	if err != nil {
		t.Fatalf("Shibboleth SP metadata: %v%s", err, s.LogTail())
	}
	return b
}

// LoginURL is the SP's session initiator, sending the browser to target afterwards.
func (s *ShibSP) LoginURL(target string) string {
	return s.HandlerURL + "/Login?" + url.Values{"target": {target}}.Encode()
}

// LogoutURL is the SP's logout: SAML 2.0 single logout at the IdP, then the local
// session ends, then the browser goes to returnTo (the SP's or an allowed URL).
func (s *ShibSP) LogoutURL(returnTo string) string {
	return s.HandlerURL + "/Logout?" + url.Values{"return": {returnTo}}.Encode()
}

// ShibSession is what /Shibboleth.sso/Session tells of the browser's session.
type ShibSession struct {
	Expiration   int    `json:"expiration"`
	ClientAddr   string `json:"client_address"`
	Protocol     string `json:"protocol"`
	IdentityProv string `json:"identity_provider"`
	AuthnInstant string `json:"authn_instant"`
	AuthnContext string `json:"authncontext_class"`
	Attributes   []struct {
		Name   string   `json:"name"`
		Values []string `json:"values"`
	} `json:"attributes"`
}

// Session reads /Shibboleth.sso/Session with the browser's cookies: nil when the
// browser has no session.
func (s *ShibSP) Session(t testing.TB, b *SAMLBrowser) *ShibSession {
	t.Helper()
	res, body := b.Get(t, s.HandlerURL+"/Session")
	if res.StatusCode != 200 {
		t.Fatalf("GET %s/Session: %s: %s%s", s.HandlerURL, res.Status, body, s.LogTail())
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("GET %s/Session: %v: %s", s.HandlerURL, err, body)
	}
	if len(raw) == 0 {
		return nil
	}
	var sess ShibSession
	if err := json.Unmarshal(body, &sess); err != nil {
		t.Fatalf("GET %s/Session: %v: %s", s.HandlerURL, err, body)
	}
	return &sess
}

// SessionActive reports, from /Shibboleth.sso/Session with the browser's cookies,
// whether the browser holds a Shibboleth session.
func (s *ShibSP) SessionActive(t testing.TB, b *SAMLBrowser) bool {
	t.Helper()
	return s.Session(t, b) != nil
}

var shibClient = &http.Client{Timeout: 15 * time.Second}
