package apiclient

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNewRefusesWhatIsNotABaseURL(t *testing.T) {
	tests := []struct {
		base string
		ok   bool
	}{
		{"http://127.0.0.1:8000/calipsoplus-services/", true},
		{"https://calipso.example.org/api", true},
		{"ftp://127.0.0.1/x/", false},
		{"/calipsoplus-services/", false},
		{"http://", false},
	}
	for _, tt := range tests {
		t.Run(tt.base, func(t *testing.T) {
			if _, err := New(tt.base, time.Second); (err == nil) != tt.ok {
				t.Errorf("New(%q) = %v, want ok %v", tt.base, err, tt.ok)
			}
		})
	}
}

// fakeAPI answers as the compat API does for a login, the experiments page and a
// removal, and records the calls it got.
type fakeAPI struct {
	mu    sync.Mutex
	calls []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	switch p := strings.TrimPrefix(r.URL.Path, "/base/"); {
	case p == "settings/":
		http.SetCookie(w, &http.Cookie{Name: "csrftoken", Value: "tok", Path: "/"})
	case p == "login/":
		var body struct{ Username, Password string }
		switch {
		case r.Header.Get("X-CSRFToken") != "tok":
			http.Error(w, "CSRF cookie not echoed", http.StatusForbidden)
		case json.NewDecoder(r.Body).Decode(&body) != nil || body.Password != "secret":
			http.Error(w, "bad credentials", http.StatusUnauthorized)
		}
	case p == "users/ana/experiments/":
		w.Write([]byte(`{"results":[{"proposal_id":"p1","sessions":[{"session_number":"s1"},{"session_number":"s2"}]},{"proposal_id":"p2","sessions":[]}]}`))
	case strings.HasPrefix(p, "resource/stop/gone/"):
		http.NotFound(w, r)
	}
}

func TestSession(t *testing.T) {
	api := &fakeAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()
	ctx := context.Background()
	c, err := New(srv.URL+"/base", time.Second) // the missing "/" is added
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(ctx, "ana", "wrong"); err == nil || !strings.Contains(err.Error(), "status 401") {
		t.Errorf("login with a wrong password: %v, want status 401", err)
	}
	if err := c.Login(ctx, "ana", "secret"); err != nil {
		t.Fatalf("login: %v", err)
	}
	refs, err := c.SessionRefs(ctx, "ana")
	if want := []string{"p1~s1", "p1~s2"}; err != nil || !slices.Equal(refs, want) {
		t.Errorf("SessionRefs = %q, %v; want %q", refs, err, want)
	}

	tests := []struct {
		name       string
		rec        Container
		wantStatus int
		wantCalls  []string
	}{
		{"stop then rm", Container{Name: "ana_1", PublicName: "desk"}, http.StatusOK,
			[]string{"GET /base/resource/stop/ana/ana_1/desk/", "GET /base/resource/rm/ana/ana_1/desk/"}},
		{"a failed stop is not followed by rm", Container{Name: "gone", PublicName: "desk"}, http.StatusNotFound,
			[]string{"GET /base/resource/stop/gone/gone/desk/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := "ana"
			if tt.rec.Name == "gone" {
				user = "gone"
			}
			api.mu.Lock()
			api.calls = nil
			api.mu.Unlock()
			status, err := c.Remove(ctx, user, tt.rec)
			api.mu.Lock()
			defer api.mu.Unlock()
			if err != nil || status != tt.wantStatus || !slices.Equal(api.calls, tt.wantCalls) {
				t.Errorf("Remove = %d, %v after %q; want %d after %q", status, err, api.calls, tt.wantStatus, tt.wantCalls)
			}
		})
	}
}

func TestHealthy(t *testing.T) {
	var status atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	tests := []struct {
		name, listen string
		status       int
		want         string // in the error; "" for healthy
	}{
		{"unspecified host is asked on loopback", "0.0.0.0:" + port, http.StatusOK, ""},
		{"no host", ":" + port, http.StatusOK, ""},
		{"unhealthy", "127.0.0.1:" + port, http.StatusServiceUnavailable, "503"},
		{"not host:port", "localhost", http.StatusOK, `listen "localhost"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status.Store(int64(tt.status))
			err := Healthy(t.Context(), tt.listen)
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Healthy(%q) = %v, want %q", tt.listen, err, tt.want)
			}
		})
	}
}
