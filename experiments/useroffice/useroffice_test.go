package useroffice

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/calipsoplus/calipso/experiments"
)

func TestVerifyPassword(t *testing.T) {
	// Vectors made with Python's hashlib.pbkdf2_hmac, which Django's PBKDF2PasswordHasher uses.
	const (
		djangoAlice   = "pbkdf2_sha256$1000$seasaltNaCl$GqaP1wfDZRFR/6K5kIa6dvQihaXw+3Cu6NvMTOchlhI="
		djangoUnicode = "pbkdf2_sha256$260000$Zk3yQ9aB$iEwxfuKmW9VzlR3TpS72IFz01Slw+z2i80rwSJjucfM="
	)
	tests := []struct {
		name     string
		password string
		hash     string
		want     bool
		wantErr  bool
	}{
		{"django vector", "alice-demo", djangoAlice, true, false},
		{"django vector unicode", "pässwörd", djangoUnicode, true, false},
		{"wrong password", "alice-dem0", djangoAlice, false, false},
		{"empty password", "", djangoAlice, false, false},
		{"fresh hash", "s3cret", HashPassword("s3cret", 10), true, false},
		{"fresh hash wrong", "s3cre", HashPassword("s3cret", 10), false, false},
		{"other algorithm", "x", "pbkdf2_sha1$1000$salt$GqaP1wfDZRFR/6K5kIa6dvQihaXw+3Cu6NvMTOchlhI=", false, true},
		{"too few parts", "x", "pbkdf2_sha256$1000$salt", false, true},
		{"iterations word", "x", "pbkdf2_sha256$many$salt$GqaP1wfDZRFR/6K5kIa6dvQihaXw+3Cu6NvMTOchlhI=", false, true},
		{"iterations zero", "x", "pbkdf2_sha256$0$salt$GqaP1wfDZRFR/6K5kIa6dvQihaXw+3Cu6NvMTOchlhI=", false, true},
		{"iterations huge", "x", "pbkdf2_sha256$999999999$salt$GqaP1wfDZRFR/6K5kIa6dvQihaXw+3Cu6NvMTOchlhI=", false, true},
		{"empty salt", "x", "pbkdf2_sha256$1000$$GqaP1wfDZRFR/6K5kIa6dvQihaXw+3Cu6NvMTOchlhI=", false, true},
		{"not base64", "x", "pbkdf2_sha256$1000$salt$***", false, true},
		{"short key", "x", "pbkdf2_sha256$1000$salt$AAAA", false, true},
		{"plain text", "x", "x", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VerifyPassword(tt.password, tt.hash)
			if tt.wantErr {
				if !errors.Is(err, ErrBadHash) {
					t.Fatalf("err = %v, want ErrBadHash", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestHashPasswordFormat(t *testing.T) {
	a, b := HashPassword("pw", 1000), HashPassword("pw", 1000)
	if a == b {
		t.Error("two hashes of one password share a salt")
	}
	if parts := strings.Split(a, "$"); len(parts) != 4 || parts[0] != "pbkdf2_sha256" || parts[1] != "1000" || len(parts[2]) != 22 {
		t.Errorf("hash %q is not in Django's format", a)
	}
	if !strings.HasPrefix(HashPassword("pw", 0), "pbkdf2_sha256$1$") {
		t.Error("iterations below 1 are not clamped")
	}
}

func TestDemo(t *testing.T) {
	data, err := Demo()
	if err != nil {
		t.Fatal(err)
	}
	roots := experiments.Roots{Datasets: "/srv/datasets", Output: "/srv/output"}
	for _, a := range data.Accounts {
		ok, err := VerifyPassword(a.Username+"-demo", a.Password)
		if err != nil || !ok {
			t.Errorf("%s: demo password does not verify (%v)", a.Username, err)
		}
		var n int
		for _, e := range data.Experiments {
			for _, p := range e.Participants {
				if p == a.Username {
					n++
				}
			}
		}
		if n < 3 {
			t.Errorf("%s takes part in %d experiments, want several", a.Username, n)
		}
	}
	for _, e := range data.Experiments {
		for _, s := range e.Sessions {
			if _, err := experiments.ParseVolumes(s.DataSetPath, roots); err != nil {
				t.Errorf("session %s: %v", s.SessionNumber, err)
			}
		}
	}
}

func TestParseRejects(t *testing.T) {
	hash := HashPassword("pw", 1)
	account := func(name string) string {
		return `{"username": "` + name + `", "password": "` + hash + `"}`
	}
	tests := []struct {
		name     string
		doc      string
		mentions string
	}{
		{"not json", `{`, "unexpected EOF"},
		{"unknown key", `{"acounts": []}`, "acounts"},
		{"trailing", `{} {}`, "trailing"},
		{"empty username", `{"accounts": [` + account("") + `]}`, "accounts[0]"},
		{"slash username", `{"accounts": [` + account("a/b") + `]}`, `"a/b"`},
		{"duplicate username", `{"accounts": [` + account("a") + `,` + account("a") + `]}`, `accounts[1] ("a"): username used twice`},
		{"bad hash", `{"accounts": [{"username": "a", "password": "plain"}]}`, `accounts[0] ("a"): password`},
		{"duplicate eaa", `{"accounts": [{"username": "a", "password": "` + hash + `", "eaa_hash": "h"},
			{"username": "b", "password": "` + hash + `", "eaa_hash": "h"}]}`, `accounts[1] ("b"): eaa_hash already used by "a"`},
		{"negative uid", `{"accounts": [{"username": "a", "password": "` + hash + `", "uid": -3}]}`, "uid is negative"},
		{"empty proposal", `{"experiments": [{"proposal_id": " "}]}`, "experiments[0]"},
		{"duplicate proposal", `{"experiments": [{"proposal_id": "p"}, {"proposal_id": "p"}]}`, `experiments[1] ("p")`},
		{"unknown participant", `{"experiments": [{"proposal_id": "p", "participants": ["zed"]}]}`, `participant "zed"`},
		{"empty session number", `{"experiments": [{"proposal_id": "p", "sessions": [{}]}]}`, `("p") sessions[0]`},
		{"duplicate session", `{"experiments": [{"proposal_id": "p", "sessions": [{"session_number": "s"}]},
			{"proposal_id": "q", "sessions": [{"session_number": "s"}]}]}`, `session "s": session_number already used in "p"`},
		{"bad date", `{"experiments": [{"proposal_id": "p", "sessions": [{"session_number": "s", "start_date": "soon"}]}]}`, "start_date"},
		{"bad uid", `{"experiments": [{"proposal_id": "p", "uid": "root"}]}`, "uid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if !errors.Is(err, ErrInvalidData) || !strings.Contains(err.Error(), tt.mentions) {
				t.Fatalf("err = %v, want ErrInvalidData mentioning %q", err, tt.mentions)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "office.json")
	if err := os.WriteFile(path, demoJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := Load(path)
	if err != nil || len(data.Accounts) != 3 {
		t.Fatalf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: err = %v", err)
	}
}

// TestServerAnswers checks the status codes of user-office-api.md over real HTTP.
func TestServerAnswers(t *testing.T) {
	data, err := Demo()
	if err != nil {
		t.Fatal(err)
	}
	creds := BasicCredentials{Username: "calipso", Password: "office-secret"}
	srv := httptest.NewServer(NewServer(data, creds))
	t.Cleanup(srv.Close)

	tests := []struct {
		name, method, path, body string
		auth                     *BasicCredentials
		status                   int
		bodyHas                  string
	}{
		{"login ok", "POST", LoginPath, `{"username": "alice", "password": "alice-demo"}`, nil, 200, `"alice"`},
		{"login no slash", "POST", "/api/login", `{"username": "alice", "password": "alice-demo"}`, nil, 200, `"alice"`},
		{"login wrong password", "POST", LoginPath, `{"username": "alice", "password": "bob-demo"}`, nil, 401, "invalid"},
		{"login unknown", "POST", LoginPath, `{"username": "zed", "password": "x"}`, nil, 401, "invalid"},
		{"login missing password", "POST", LoginPath, `{"username": "alice"}`, nil, 400, "password"},
		{"login wrong type", "POST", LoginPath, `{"username": 1, "password": "x"}`, nil, 400, ""},
		{"login not json", "POST", LoginPath, `username=alice`, nil, 400, ""},
		{"login GET", "GET", LoginPath, ``, nil, 405, ""},
		{"umbrella ok", "POST", UmbrellaPath, `{"eaa_hash": "eaa-bob-4e5f6a7b"}`, nil, 200, `{"username":"bob"}`},
		{"umbrella unknown", "POST", UmbrellaPath, `{"eaa_hash": "nope"}`, nil, 404, ""},
		{"umbrella missing", "POST", UmbrellaPath, `{}`, nil, 400, ""},
		{"authorised true", "POST", IsAuthorizedPath, `{"login": "carol"}`, &creds, 200, `{"result":true}`},
		{"authorised false", "POST", IsAuthorizedPath, `{"login": "alice"}`, &creds, 200, `{"result":false}`},
		{"authorised no credentials", "POST", IsAuthorizedPath, `{"login": "alice"}`, nil, 403, ""},
		{"authorised wrong credentials", "POST", IsAuthorizedPath, `{"login": "alice"}`, &BasicCredentials{"calipso", "guess"}, 403, ""},
		{"authorised unknown", "POST", IsAuthorizedPath, `{"login": "zed"}`, &creds, 404, ""},
		{"authorised missing", "POST", IsAuthorizedPath, `{"user": "alice"}`, &creds, 400, ""},
		{"experiments ok", "GET", "/api/users/alice/experiments/", ``, &creds, 200, `"count":5`},
		{"experiments no credentials", "GET", "/api/users/alice/experiments/", ``, nil, 403, ""},
		{"experiments unknown", "GET", "/api/users/zed/experiments/", ``, &creds, 404, ""},
		{"experiments bad page", "GET", "/api/users/alice/experiments/?page=x", ``, &creds, 400, "page"},
		{"experiments page zero", "GET", "/api/users/alice/experiments/?page=0", ``, &creds, 400, "page"},
		{"experiments bad page size", "GET", "/api/users/alice/experiments/?page_size=-1", ``, &creds, 400, "page_size"},
		{"experiments bad ordering", "GET", "/api/users/alice/experiments/?ordering=password", ``, &creds, 400, "password"},
		{"experiments uid from account", "GET", "/api/users/alice/experiments/?search=2019003", ``, &creds, 200, `"uid":2001`},
		{"experiments uid as written", "GET", "/api/users/alice/experiments/?search=2019002", ``, &creds, 200, `"uid":"."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != nil {
				req.SetBasicAuth(tt.auth.Username, tt.auth.Password)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), tt.bodyHas) {
				t.Fatalf("got %d %s; want %d containing %q", resp.StatusCode, body, tt.status, tt.bodyHas)
			}
			if resp.StatusCode != 405 && !json.Valid(body) {
				t.Errorf("answer is not JSON: %s", body)
			}
		})
	}
}

func TestServerNoCredentialsConfigured(t *testing.T) {
	data, err := Demo()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(data, BasicCredentials{}))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequestWithContext(t.Context(), "POST", srv.URL+IsAuthorizedPath, strings.NewReader(`{"login": "alice"}`))
	req.SetBasicAuth("", "")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403 when the office has no credentials configured", resp.StatusCode)
	}
}
