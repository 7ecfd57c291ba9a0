package icat

import (
	"crypto/rand"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The reference ICAT+ server: exactly the calls Client makes, over demo data, for
// the demo (icat.embedded) and the tests, as experiments/useroffice is for the user
// office. It is not a catalogue: no datasets, no writes.

// Data is a reference server's content.
type Data struct {
	// Reader is the service account that sees every investigation.
	Reader struct {
		Plugin   string `json:"plugin"`
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"reader"`
	// Tokens are OpenID access tokens the server accepts (plugin + token), each the
	// user it stands for.
	Tokens         map[string]string   `json:"tokens"`
	Investigations []DataInvestigation `json:"investigations"`
}

// DataInvestigation is an investigation with its release date and participants.
type DataInvestigation struct {
	Investigation
	ReleaseDate time.Time           `json:"releaseDate"`
	Users       []InvestigationUser `json:"users"`
}

//go:embed demo.json
var demoJSON []byte

// Demo is the embedded demo data: investigations of alice and bob, one released one.
func Demo() (Data, error) {
	var d Data
	if err := json.Unmarshal(demoJSON, &d); err != nil {
		return Data{}, fmt.Errorf("icat demo data: %w", err)
	}
	return d, nil
}

// Server serves d as ICAT+ does the subset Client uses.
type Server struct {
	d        Data
	now      func() time.Time
	mu       sync.Mutex
	sessions map[string]string // session id → user ("" for the reader)
}

// NewServer returns the reference server of d.
func NewServer(d Data) *Server {
	return &Server{d: d, now: time.Now, sessions: map[string]string{}}
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/session" {
		s.login(w, r)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/catalogue/")
	if !ok || r.Method != http.MethodGet {
		http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
		return
	}
	sid, path, _ := strings.Cut(rest, "/")
	s.mu.Lock()
	user, known := s.sessions[sid]
	s.mu.Unlock()
	if !known {
		writeJSON(w, http.StatusForbidden, map[string]string{"message": "Session not found"})
		return
	}
	visible := func(inv DataInvestigation) bool {
		return user == "" || slices.ContainsFunc(inv.Users, func(u InvestigationUser) bool { return u.Name == user })
	}
	now := s.now()
	switch {
	case path == "investigation":
		writeJSON(w, http.StatusOK, s.investigations(func(inv DataInvestigation) bool { return visible(inv) }))
	case path == "investigation/status/released/investigation":
		writeJSON(w, http.StatusOK, s.investigations(func(inv DataInvestigation) bool { return !inv.ReleaseDate.After(now) }))
	case path == "investigation/status/embargoed/investigation":
		writeJSON(w, http.StatusOK, s.investigations(func(inv DataInvestigation) bool { return inv.ReleaseDate.After(now) && visible(inv) }))
	case strings.HasPrefix(path, "investigation/id/") && strings.HasSuffix(path, "/investigationusers"):
		id, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(path, "investigation/id/"), "/investigationusers"), 10, 64)
		i := slices.IndexFunc(s.d.Investigations, func(inv DataInvestigation) bool { return inv.ID == id })
		if err != nil || i < 0 || !visible(s.d.Investigations[i]) {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "Investigation not found"})
			return
		}
		inv := s.d.Investigations[i]
		users := make([]InvestigationUser, 0, len(inv.Users))
		for _, u := range inv.Users {
			u.InvestigationName, u.InvestigationID = inv.Name, inv.ID
			users = append(users, u)
		}
		writeJSON(w, http.StatusOK, users)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "not found"})
	}
}

// investigations are those keep allows, as ICAT+ lists them: each under
// "Investigation", as the CalipsoPlus plugin read them.
func (s *Server) investigations(keep func(DataInvestigation) bool) []map[string]Investigation {
	out := []map[string]Investigation{}
	for _, inv := range s.d.Investigations {
		if keep(inv) {
			out = append(out, map[string]Investigation{"Investigation": inv.Investigation})
		}
	}
	return out
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "bad form"})
		return
	}
	f := r.PostForm
	user, ok := "", false
	switch {
	case f.Get("plugin") != s.d.Reader.Plugin:
	case f.Get("username") == "":
		user, ok = s.d.Tokens[f.Get("password")]
	default:
		ok = f.Get("username") == s.d.Reader.Username && f.Get("password") == s.d.Reader.Password
	}
	if !ok {
		writeJSON(w, http.StatusForbidden, map[string]string{"message": "The username and password do not match"})
		return
	}
	sid := strings.ToLower(rand.Text())
	s.mu.Lock()
	s.sessions[sid] = user
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"sessionId": sid})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
