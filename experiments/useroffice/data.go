// Package useroffice is a reference user office: an http.Handler serving the four calls a
// facility implements for Calipso (local login, Umbrella hash, is-authorised, experiments
// of a user) from a JSON data file. It documents by example what a facility must answer,
// runs the demo, and is the real server the experiments client is tested against.
// README.md describes the data file.
package useroffice

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/experiments"
)

// ErrInvalidData: the data file is malformed or inconsistent.
var ErrInvalidData = calipso.NewError(calipso.EINVALID, "invalid user office data")

// Data is the content of a data file: accounts and the experiments they take part in.
type Data struct {
	Accounts    []Account    `json:"accounts"`
	Experiments []Experiment `json:"experiments"`
}

// Account is a user of the facility.
type Account struct {
	Username string `json:"username"`
	// Password is a Django hash: pbkdf2_sha256$<iterations>$<salt>$<base64 hash>.
	Password string `json:"password"`
	// EAAHash is the account's Umbrella (EAA) hash; optional, unique.
	EAAHash string `json:"eaa_hash,omitempty"`
	// Authorized: may use privileged facility resources.
	Authorized bool `json:"authorized"`
	// UID and GID are served with the account's experiments that set none themselves.
	UID *int `json:"uid,omitempty"`
	GID *int `json:"gid,omitempty"`
}

// Experiment is a proposal as the office serves it, plus who takes part in it.
type Experiment struct {
	ProposalID string `json:"proposal_id"`
	Subject    string `json:"subject"`
	Body       string `json:"body"`
	BeamLine   string `json:"beam_line"`
	// UID and GID are served as written (a number, a numeric string, or "." for
	// unknown); when absent, the requesting account's uid/gid are served.
	UID          json.RawMessage `json:"uid,omitempty"`
	GID          json.RawMessage `json:"gid,omitempty"`
	Participants []string        `json:"participants"`
	Sessions     []Session       `json:"sessions"`
}

// Session is one beamtime. Dates are served as written: "2019-01-01T00:00:00Z",
// {"year": 2019, "month": 1, "day": 1}, or left out.
type Session struct {
	SessionNumber string          `json:"session_number"`
	StartDate     json.RawMessage `json:"start_date,omitempty"`
	EndDate       json.RawMessage `json:"end_date,omitempty"`
	Subject       string          `json:"subject"`
	Body          string          `json:"body"`
	// DataSetPath is the volume definition, served as is (Calipso checks it).
	DataSetPath string `json:"data_set_path"`
}

//go:embed demo.json
var demoJSON []byte

// Demo returns the embedded demo data (users alice, bob and carol; passwords
// "<name>-demo"; DemoIterations, so demo-only).
func Demo() (*Data, error) { return Parse(demoJSON) }

// Load reads and checks a data file.
func Load(path string) (*Data, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load user office data: %w", err)
	}
	data, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("load user office data %s: %w", path, err)
	}
	return data, nil
}

// Parse decodes a data file strictly (unknown keys are errors, to catch typos) and
// checks it; errors name the record at fault.
func Parse(raw []byte) (*Data, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var data Data
	if err := dec.Decode(&data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidData, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the document", ErrInvalidData)
	}
	if err := data.Validate(); err != nil {
		return nil, err
	}
	return &data, nil
}

// Validate checks that the data can be served and that Calipso's client accepts it.
func (d *Data) Validate() error {
	usernames := map[string]bool{}
	hashes := map[string]string{}
	for i, a := range d.Accounts {
		where := fmt.Sprintf("accounts[%d] (%q)", i, a.Username)
		if err := checkName(a.Username); err != nil {
			return invalid(where, "username: %v", err)
		}
		if usernames[a.Username] {
			return invalid(where, "username used twice")
		}
		usernames[a.Username] = true
		if _, err := parseHash(a.Password); err != nil {
			return invalid(where, "password: %v", err)
		}
		if a.EAAHash != "" {
			if other, ok := hashes[a.EAAHash]; ok {
				return invalid(where, "eaa_hash already used by %q", other)
			}
			hashes[a.EAAHash] = a.Username
		}
		for field, id := range map[string]*int{"uid": a.UID, "gid": a.GID} {
			if id != nil && *id < 0 {
				return invalid(where, "%s is negative", field)
			}
		}
	}
	proposals := map[string]bool{}
	sessions := map[string]string{}
	for i, e := range d.Experiments {
		where := fmt.Sprintf("experiments[%d] (%q)", i, e.ProposalID)
		if strings.TrimSpace(e.ProposalID) == "" {
			return invalid(where, "proposal_id is empty")
		}
		if proposals[e.ProposalID] {
			return invalid(where, "proposal_id used twice")
		}
		proposals[e.ProposalID] = true
		for _, p := range e.Participants {
			if !usernames[p] {
				return invalid(where, "participant %q has no account", p)
			}
		}
		for j, s := range e.Sessions {
			if strings.TrimSpace(s.SessionNumber) == "" {
				return invalid(fmt.Sprintf("%s sessions[%d]", where, j), "session_number is empty")
			}
			if other, ok := sessions[s.SessionNumber]; ok {
				return invalid(fmt.Sprintf("%s session %q", where, s.SessionNumber), "session_number already used in %q", other)
			}
			sessions[s.SessionNumber] = e.ProposalID
		}
		// What the office serves must be what Calipso's client reads.
		served, err := json.Marshal(e.served(nil))
		if err != nil {
			return invalid(where, "%v", err)
		}
		var check experiments.Experiment
		if err := json.Unmarshal(served, &check); err != nil {
			return invalid(where, "%v", err)
		}
	}
	return nil
}

// servedExperiment is the JSON shape of the experiments call.
type servedExperiment struct {
	ProposalID string          `json:"proposal_id"`
	Subject    string          `json:"subject"`
	Body       string          `json:"body"`
	BeamLine   string          `json:"beam_line"`
	UID        json.RawMessage `json:"uid,omitempty"`
	GID        json.RawMessage `json:"gid,omitempty"`
	Sessions   []Session       `json:"sessions"`
}

func (e *Experiment) served(account *Account) servedExperiment {
	out := servedExperiment{
		ProposalID: e.ProposalID, Subject: e.Subject, Body: e.Body, BeamLine: e.BeamLine,
		UID: e.UID, GID: e.GID, Sessions: e.Sessions,
	}
	if out.Sessions == nil {
		out.Sessions = []Session{}
	}
	if account != nil {
		if len(out.UID) == 0 && account.UID != nil {
			out.UID = json.RawMessage(fmt.Sprint(*account.UID))
		}
		if len(out.GID) == 0 && account.GID != nil {
			out.GID = json.RawMessage(fmt.Sprint(*account.GID))
		}
	}
	return out
}

// checkName keeps usernames usable as one URL path segment.
func checkName(name string) error {
	if strings.TrimSpace(name) == "" || name == "." || name == ".." {
		return errors.New("empty or unusable")
	}
	for _, r := range name {
		if r == '/' || unicode.IsControl(r) {
			return fmt.Errorf("contains %q", r)
		}
	}
	return nil
}

func invalid(where, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidData, where, fmt.Sprintf(format, args...))
}

// MakeDatasetDirs creates the directories d's sessions mount under roots, so that
// the demo's launches find their datasets (a facility's exist already, and a launch
// refuses a dataset directory that does not). It returns what it could not make.
func (d *Data) MakeDatasetDirs(roots experiments.Roots) []error {
	var errs []error
	for _, e := range d.Experiments {
		for _, s := range e.Sessions {
			vols, err := experiments.ParseVolumes(s.DataSetPath, roots)
			if err != nil {
				errs = append(errs, fmt.Errorf("session %s: %w", s.SessionNumber, err))
				continue
			}
			for _, v := range vols {
				if err := os.MkdirAll(v.HostPath, 0o755); err != nil {
					errs = append(errs, fmt.Errorf("session %s: %w", s.SessionNumber, err))
				}
			}
		}
	}
	return errs
}
