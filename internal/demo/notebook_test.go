package demo

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef"

func TestNotebookAuthentication(t *testing.T) {
	nb := newNotebook(testToken, time.Now)
	cookie := &http.Cookie{Name: NotebookCookie, Value: nb.cookie}
	cases := []struct {
		name       string
		method     string
		target     string
		header     map[string]string
		cookie     *http.Cookie
		status     int
		setsCookie bool
		body       string
	}{
		{"page with the token", "GET", "/?token=" + testToken, nil, nil, 200, true, "Calipso demo notebook"},
		{"lab with the token", "GET", "/lab?token=" + testToken, nil, nil, 200, true, "<html"},
		{"head with the token", "HEAD", "/tree?token=" + testToken, nil, nil, 200, true, ""},
		{"page without a token", "GET", "/", nil, nil, 403, false, "token"},
		{"page with a wrong token", "GET", "/?token=" + strings.Repeat("0", 48), nil, nil, 403, false, ""},
		{"page with a prefix of the token", "GET", "/?token=" + testToken[:47], nil, nil, 403, false, ""},
		{"page with the cookie", "GET", "/lab", nil, cookie, 200, false, "Calipso demo notebook"},
		{"page with a forged cookie", "GET", "/lab", nil, &http.Cookie{Name: NotebookCookie, Value: testToken}, 403, false, ""},
		{"header token", "GET", "/", map[string]string{"Authorization": "token " + testToken}, nil, 200, false, ""},
		{"header bearer", "GET", "/", map[string]string{"Authorization": "Bearer " + testToken}, nil, 200, false, ""},
		{"header wrong scheme", "GET", "/", map[string]string{"Authorization": "Basic " + testToken}, nil, 403, false, ""},
		{"status with the token", "GET", "/api/status?token=" + testToken, nil, nil, 200, true, `"kernels":0`},
		{"status with the header", "GET", "/api/status", map[string]string{"Authorization": "token " + testToken}, nil, 200, false, `"connections":0`},
		{"status without a token", "GET", "/api/status", nil, nil, 403, false, `"message":"Forbidden"`},
		{"post", "POST", "/?token=" + testToken, nil, nil, 405, false, ""},
		{"unknown path", "GET", "/api/kernels?token=" + testToken, nil, nil, 404, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, c.target, nil)
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			if c.cookie != nil {
				req.AddCookie(c.cookie)
			}
			rec := httptest.NewRecorder()
			nb.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.status, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), c.body) {
				t.Errorf("body lacks %q: %s", c.body, rec.Body)
			}
			set := rec.Result().Cookies()
			if c.setsCookie != (len(set) == 1 && set[0].Name == NotebookCookie && set[0].Value == nb.cookie && set[0].HttpOnly) {
				t.Errorf("cookies set %v, want the login cookie: %v", set, c.setsCookie)
			}
			if strings.Contains(rec.Header().Get("Set-Cookie"), testToken) {
				t.Error("the cookie holds the token itself")
			}
		})
	}
}

func TestNotebookStatus(t *testing.T) {
	clock := time.Date(2026, 3, 1, 10, 0, 0, 0, time.FixedZone("CET", 3600))
	nb := newNotebook(testToken, func() time.Time { return clock })
	status := func() NotebookStatus {
		t.Helper()
		req := httptest.NewRequest("GET", "/api/status", nil)
		req.Header.Set("Authorization", "token "+testToken)
		rec := httptest.NewRecorder()
		nb.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("status %d %q: %s", rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
		var s NotebookStatus
		dec := json.NewDecoder(rec.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{s.Started, s.LastActivity} {
			if _, err := time.Parse(time.RFC3339, v); err != nil {
				t.Errorf("%q is not RFC 3339: %v", v, err)
			}
		}
		return s
	}
	first := status()
	if first.Started != "2026-03-01T09:00:00.000000Z" || first.LastActivity != first.Started || first.Kernels != 0 || first.Connections != 0 {
		t.Fatalf("fresh status %+v", first)
	}
	clock = clock.Add(time.Minute)
	if s := status(); s.LastActivity != first.Started {
		t.Fatalf("a status poll counted as activity: %+v", s)
	}
	nb.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/lab?token="+testToken, nil))
	if s := status(); s.LastActivity != "2026-03-01T09:01:00.000000Z" || s.Started != first.Started {
		t.Fatalf("after a page: %+v", s)
	}
	clock = clock.Add(time.Minute)
	nb.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/lab", nil)) // refused: not activity
	if s := status(); s.LastActivity != "2026-03-01T09:01:00.000000Z" {
		t.Fatalf("a refused request counted as activity: %+v", s)
	}
}

// The notebook as the image runs it: the token line its image record's log_regex
// reads, the link that regex gives, and a prompt stop.
func TestNotebookServes(t *testing.T) {
	cases := []struct {
		name  string
		token string // "" : Run's random token
	}{
		{"given token", testToken},
		{"random token", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			token := c.token
			if token == "" {
				token = randomToken()
			}
			pr, pw := io.Pipe()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Notebook(ctx, ln, token, pw); pw.Close() }()

			re := regexp.MustCompile(NotebookLogRegex)
			lines := bufio.NewScanner(pr)
			var got string
			for got == "" && lines.Scan() {
				if m := re.FindStringSubmatch(lines.Text()); m != nil {
					got = m[1]
				}
			}
			go io.Copy(io.Discard, pr)
			if got != token || !regexp.MustCompile(`^[0-9a-f]{48}$`).MatchString(got) {
				t.Fatalf("log_regex found %q, want the token %q", got, token)
			}

			base := "http://" + ln.Addr().String()
			for path, want := range map[string]int{"/?token=" + got: 200, "/": 403, "/api/status?token=" + got: 200} {
				resp, err := http.Get(base + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
				}
			}

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Notebook did not stop within 3s of its context")
			}
		})
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"jupyter"}, {"notebook", "extra"}} {
		if err := Run(context.Background(), args, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("Run(%q) = %v, want a usage error", args, err)
		}
	}
}
