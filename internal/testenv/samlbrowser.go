package testenv

import (
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// SAMLBrowser is a browser for SAML flows: a cookie jar, no JavaScript, redirects
// followed by Browse (not by the client). Not safe for concurrent use.
type SAMLBrowser struct {
	// Client has the browser's cookie jar and does not follow redirects; use it (or
	// Get/Do) to call an API with the browser's cookies.
	Client *http.Client

	// LastStatus, LastURL and LastBody are the last answer Browse (or Get/Do) read.
	LastStatus int
	LastURL    string
	LastBody   []byte
	// StoppedForm is, when Browse stopped at a form's action, the fields it would
	// have posted there (nil when it stopped at a redirect).
	StoppedForm url.Values
	// Trace lists the requests of the last Browse ("GET url -> 302"), for messages.
	Trace []string
}

// NewSAMLBrowser returns a browser with an empty cookie jar; each request has a 20 s
// timeout.
func NewSAMLBrowser(t testing.TB) *SAMLBrowser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &SAMLBrowser{Client: &http.Client{
		Jar:           jar,
		Timeout:       20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// browseHops bounds a Browse.
const browseHops = 30

// Browse starts at start and goes on the way a browser would: it follows 3xx
// redirects, posts the auto-submitting forms of the SAML POST binding (a form with a
// SAMLRequest or SAMLResponse field: SimpleSAMLphp's and Shibboleth's pages) to their
// action, and fills and submits SimpleSAMLphp's login form (a form with a password
// field) with user and password. It stops before a URL that starts with stop (not
// fetched; returned; the fields a form would have posted there are in StoppedForm),
// or at a page that is neither a redirect nor such a form (its URL returned; status
// and body in LastStatus and LastBody). askedPassword says whether the IdP showed its
// login form. A login form that comes back after being submitted (the credentials
// refused), a request error or more than 30 steps fail the test. An empty stop never
// matches.
func (b *SAMLBrowser) Browse(t testing.TB, start, stop, user, password string) (landed string, askedPassword bool) {
	t.Helper()
	b.Trace = nil
	b.StoppedForm = nil
	next, method, form := start, http.MethodGet, url.Values(nil)
	submittedLogin := false
	for range browseHops {
		res, body, err := b.do(method, next, form)
		if err != nil {
			t.Fatalf("browse: %v\ntrace:\n%s", err, strings.Join(b.Trace, "\n"))
		}
		base := res.Request.URL
		if res.StatusCode >= 300 && res.StatusCode < 400 && res.Header.Get("Location") != "" {
			loc, err := base.Parse(res.Header.Get("Location"))
			if err != nil {
				t.Fatalf("browse: %s %s: bad Location %q: %v", method, next, res.Header.Get("Location"), err)
			}
			if stop != "" && strings.HasPrefix(loc.String(), stop) {
				return loc.String(), askedPassword
			}
			next, method, form = loc.String(), http.MethodGet, nil
			continue
		}
		forms := parseForms(string(body))
		if f := loginForm(forms); f != nil {
			if submittedLogin && method == http.MethodPost {
				t.Fatalf("browse: the IdP refused %q's credentials (its login form came back at %s)\ntrace:\n%s", user, next, strings.Join(b.Trace, "\n"))
			}
			askedPassword, submittedLogin = true, true
			action, err := base.Parse(f.action)
			if err != nil {
				t.Fatalf("browse: login form action %q: %v", f.action, err)
			}
			fields := f.fields
			fields.Set(f.userField, user)
			fields.Set(f.passwordField, password)
			next, form = action.String(), fields
			method = f.method
			if stop != "" && strings.HasPrefix(next, stop) {
				b.StoppedForm = fields
				return next, askedPassword
			}
			if method == http.MethodGet {
				next, form = withQuery(action, fields), nil
			}
			continue
		}
		if f := samlForm(forms); f != nil {
			action, err := base.Parse(f.action)
			if err != nil {
				t.Fatalf("browse: SAML form action %q: %v", f.action, err)
			}
			if stop != "" && strings.HasPrefix(action.String(), stop) {
				b.StoppedForm = f.fields
				return action.String(), askedPassword
			}
			next, method, form = action.String(), f.method, f.fields
			if method == http.MethodGet {
				next, form = withQuery(action, f.fields), nil
			}
			continue
		}
		return res.Request.URL.String(), askedPassword
	}
	t.Fatalf("browse: no end after %d steps from %s\ntrace:\n%s", browseHops, start, strings.Join(b.Trace, "\n"))
	return "", askedPassword
}

// Get fetches u with the browser's cookies (no redirect followed) and returns the
// answer and its body.
func (b *SAMLBrowser) Get(t testing.TB, u string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b.Do(t, req)
}

// Do sends req with the browser's cookies (no redirect followed) and returns the
// answer and its body (at most 4 MiB).
func (b *SAMLBrowser) Do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	res, err := b.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	b.LastStatus, b.LastURL, b.LastBody = res.StatusCode, req.URL.String(), body
	return res, body
}

func (b *SAMLBrowser) do(method, u string, form url.Values) (*http.Response, []byte, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, nil, err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
	res, err := b.Client.Do(req)
	if err != nil {
		b.Trace = append(b.Trace, fmt.Sprintf("%s %s -> %v", method, u, err))
		return nil, nil, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %v", method, u, err)
	}
	line := fmt.Sprintf("%s %s -> %d", method, u, res.StatusCode)
	if loc := res.Header.Get("Location"); loc != "" {
		line += " " + loc
	}
	b.Trace = append(b.Trace, line)
	b.LastStatus, b.LastURL, b.LastBody = res.StatusCode, u, data
	return res, data, nil
}

func withQuery(u *url.URL, fields url.Values) string {
	c := *u
	c.RawQuery = fields.Encode()
	return c.String()
}

// htmlForm is one <form> of a page: its action (unescaped, unresolved), method and the
// fields a browser would submit without a click (text, hidden and password inputs,
// checked boxes, textareas).
type htmlForm struct {
	action, method string
	fields         url.Values
	passwordField  string // the first password input's name
	userField      string // the first text/email input's name before it
}

var (
	formRE     = regexp.MustCompile(`(?is)<form\b([^>]*)>(.*?)(?:</form\s*>|$)`)
	inputRE    = regexp.MustCompile(`(?is)<(input|textarea)\b((?:[^>"']|"[^"]*"|'[^']*')*)>`)
	attrRE     = regexp.MustCompile(`(?s)([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>` + "`" + `]+)))?`)
	textareaRE = regexp.MustCompile(`(?is)^(.*?)</textarea\s*>`)
	commentRE  = regexp.MustCompile(`(?s)<!--.*?-->`)
	scriptRE   = regexp.MustCompile(`(?is)<script\b.*?</script\s*>`)
)

// parseForms finds the forms of an HTML page: a small parser for the plain pages of
// SimpleSAMLphp and Shibboleth (no golang.org/x/net/html in go.mod).
func parseForms(page string) []htmlForm {
	page = commentRE.ReplaceAllString(page, "")
	page = scriptRE.ReplaceAllString(page, "")
	var forms []htmlForm
	for _, m := range formRE.FindAllStringSubmatch(page, -1) {
		attrs := parseAttrs(m[1])
		f := htmlForm{action: attrs["action"], method: strings.ToUpper(attrs["method"]), fields: url.Values{}}
		if f.method != http.MethodPost {
			f.method = http.MethodGet
		}
		inner := m[2]
		for _, idx := range inputRE.FindAllStringSubmatchIndex(inner, -1) {
			tag := strings.ToLower(inner[idx[2]:idx[3]])
			a := parseAttrs(inner[idx[4]:idx[5]])
			name := a["name"]
			if _, disabled := a["disabled"]; disabled {
				continue
			}
			if tag == "textarea" {
				if name != "" {
					v := ""
					if tm := textareaRE.FindStringSubmatch(inner[idx[1]:]); tm != nil {
						v = html.UnescapeString(tm[1])
					}
					f.fields.Add(name, v)
				}
				continue
			}
			typ := strings.ToLower(a["type"])
			switch typ {
			case "password":
				if f.passwordField == "" && name != "" {
					f.passwordField = name
					f.fields.Set(name, "")
				}
			case "", "text", "email":
				if name != "" {
					if f.passwordField == "" && f.userField == "" {
						f.userField = name
					}
					f.fields.Add(name, a["value"])
				}
			case "hidden":
				if name != "" {
					f.fields.Add(name, a["value"])
				}
			case "checkbox", "radio":
				if _, checked := a["checked"]; checked && name != "" {
					v, ok := a["value"]
					if !ok {
						v = "on"
					}
					f.fields.Add(name, v)
				}
			}
		}
		forms = append(forms, f)
	}
	return forms
}

// parseAttrs reads a tag's attributes (names lower-cased, values unescaped).
func parseAttrs(s string) map[string]string {
	attrs := map[string]string{}
	for _, m := range attrRE.FindAllStringSubmatch(s, -1) {
		name := strings.ToLower(m[1])
		if _, dup := attrs[name]; dup {
			continue
		}
		attrs[name] = html.UnescapeString(m[2] + m[3] + m[4])
	}
	return attrs
}

// loginForm is the page's username/password form, if any.
func loginForm(forms []htmlForm) *htmlForm {
	for i := range forms {
		if forms[i].passwordField != "" && forms[i].userField != "" {
			return &forms[i]
		}
	}
	return nil
}

// samlForm is the page's SAML POST binding form, if any.
func samlForm(forms []htmlForm) *htmlForm {
	for i := range forms {
		f := forms[i].fields
		if f.Has("SAMLRequest") || f.Has("SAMLResponse") {
			return &forms[i]
		}
	}
	return nil
}
