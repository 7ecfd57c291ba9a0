// Package experiments holds what Calipso knows of a facility's experiments (proposals and
// their sessions), the client of the facility's user office that supplies them, and the
// parsing of the volume definitions that sessions carry.
//
// Everything the user office sends is treated as untrusted input: decoding is tolerant
// of missing fields, strict on wrongly typed ones (errors name the field), and volume
// definitions are checked before anything is mounted.
//
// # What a mounted volume is guaranteed to be
//
// ParseVolumes keeps a definition's host paths, as text, strictly under the datasets
// root (read-only volumes) or the output root (read-write). ResolveHostPaths then
// checks them where this host sees the roots, and hands the engine the real path it
// checked. On a Docker engine that sees the same filesystems at the same paths (a local
// engine), what the engine mounts is then:
//
//   - inside the proposal directory the definition names, the first component under the
//     root (`/P/raw` stays inside root/P): a symbolic link may move within it, not into
//     another proposal's directory, the rest of the root, or out of the root;
//   - what was checked, however workloads race the engine: every directory from the root
//     down to the source's parent belongs to root (or to the user Calipso runs as) and is
//     not writable by group or others, so no workload can rename another entry into the
//     source's place between the check and the engine's lookup. A mount below a directory
//     that users can write (a proposal directory owned by the proposal's uid, as in
//     `results/P/sub` while another session mounts `results/P` read-write) is refused:
//     mount that directory itself, or give it to root with mode 0755 and the session
//     directories below it to the proposal's uid.
//
// The guarantee rests on file modes, so it holds only against users other than root and
// Calipso's own: a workload running as root (workloads.allow_root) overrides modes in
// its read-write mounts, and so does one running as Calipso's uid; it also needs a
// filesystem that enforces its modes (not one mounted with a fixed owner, or squashed
// NFS uids that differ between hosts). The roots, and the directories above them, are
// the operator's: they must not be writable by workloads either, and the configured
// root paths themselves may be links. Where the roots are not on this host (a remote
// Docker engine, Kubernetes nodes, or Calipso in a container that does not see them at
// the same paths) only the textual checks are made: the engine's host must keep its
// directories sealed the same way, and nothing checks that it does.
package experiments

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/calipsoplus/calipso"
)

// ErrInvalidField: a field of a user-office answer has the wrong type or an impossible value.
var ErrInvalidField = calipso.NewError(calipso.EUPSTREAM, "invalid field")

// Experiment is an experiment in the user-office interface's JSON (decoded leniently,
// field by field); Domain gives the calipso.Experiment the rest of Calipso uses.
type Experiment struct {
	ProposalID string `json:"proposal_id"`
	Subject    string `json:"subject"`
	Body       string `json:"body"`
	BeamLine   string `json:"beam_line"`
	// UID and GID are the numeric identity the workloads run as; nil when unknown.
	UID      *int      `json:"uid"`
	GID      *int      `json:"gid"`
	Sessions []Session `json:"sessions"`
}

// Session is an experiment session in the user-office interface's JSON.
type Session struct {
	SessionNumber string `json:"session_number"`
	Subject       string `json:"subject"`
	Body          string `json:"body"`
	StartDate     Date   `json:"start_date"`
	EndDate       Date   `json:"end_date"`
	// DataSetPath is the volume definition as the office sent it (see ParseVolumes).
	DataSetPath string `json:"data_set_path"`
}

// Domain is e as Calipso's domain type.
func (e Experiment) Domain() calipso.Experiment {
	out := calipso.Experiment{ProposalID: e.ProposalID, Subject: e.Subject, Body: e.Body, BeamLine: e.BeamLine, UID: e.UID, GID: e.GID,
		Sessions: make([]calipso.Session, len(e.Sessions))}
	for i, ss := range e.Sessions {
		out.Sessions[i] = ss.Domain()
	}
	return out
}

// Domain is s as Calipso's domain type.
func (s Session) Domain() calipso.Session {
	return calipso.Session{SessionNumber: s.SessionNumber, Subject: s.Subject, Body: s.Body,
		StartDate: s.StartDate.Time, EndDate: s.EndDate.Time, DataSetPath: s.DataSetPath}
}

// FieldError names the field of a user-office answer that could not be decoded.
type FieldError struct {
	Field string // dotted path, e.g. "sessions[1].start_date"
	Err   error
}

func (e *FieldError) Error() string { return fmt.Sprintf("field %s: %v", e.Field, e.Err) }

// Unwrap lets errors.Is find ErrInvalidField and the underlying cause.
func (e *FieldError) Unwrap() []error { return []error{ErrInvalidField, e.Err} }

func fieldErr(field string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Field: field + "." + fe.Field, Err: fe.Err}
	}
	return &FieldError{Field: field, Err: err}
}

// UnmarshalJSON decodes an experiment field by field so that a wrongly typed field is
// reported by name and missing fields are left empty.
func (e *Experiment) UnmarshalJSON(data []byte) error {
	fields, err := decodeObject(data)
	if err != nil {
		return err
	}
	var out Experiment
	for _, f := range []struct {
		name string
		dst  *string
		id   bool
	}{
		{"proposal_id", &out.ProposalID, true},
		{"subject", &out.Subject, false},
		{"body", &out.Body, false},
		{"beam_line", &out.BeamLine, false},
	} {
		if *f.dst, err = decodeString(fields[f.name], f.id); err != nil {
			return fieldErr(f.name, err)
		}
	}
	if out.UID, err = decodeID(fields["uid"]); err != nil {
		return fieldErr("uid", err)
	}
	if out.GID, err = decodeID(fields["gid"]); err != nil {
		return fieldErr("gid", err)
	}
	if raw := fields["sessions"]; !isNull(raw) {
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return fieldErr("sessions", fmt.Errorf("want a list, got %s", kindOf(raw)))
		}
		out.Sessions = make([]Session, len(items))
		for i, item := range items {
			if err := out.Sessions[i].UnmarshalJSON(item); err != nil {
				return fieldErr(fmt.Sprintf("sessions[%d]", i), err)
			}
		}
	}
	*e = out
	return nil
}

// UnmarshalJSON decodes a session field by field (see Experiment.UnmarshalJSON).
func (s *Session) UnmarshalJSON(data []byte) error {
	fields, err := decodeObject(data)
	if err != nil {
		return err
	}
	var out Session
	for _, f := range []struct {
		name string
		dst  *string
		id   bool
	}{
		{"session_number", &out.SessionNumber, true},
		{"subject", &out.Subject, false},
		{"body", &out.Body, false},
	} {
		if *f.dst, err = decodeString(fields[f.name], f.id); err != nil {
			return fieldErr(f.name, err)
		}
	}
	if err := out.StartDate.UnmarshalJSON(orNull(fields["start_date"])); err != nil {
		return fieldErr("start_date", err)
	}
	if err := out.EndDate.UnmarshalJSON(orNull(fields["end_date"])); err != nil {
		return fieldErr("end_date", err)
	}
	if out.DataSetPath, err = decodeDataSetPath(fields["data_set_path"]); err != nil {
		return fieldErr("data_set_path", err)
	}
	*s = out
	return nil
}

// Date is a calendar instant sent by the user office. The zero Date means "not given".
type Date struct{ time.Time }

// Layouts the office may use for dates given as strings; zone-less ones are read as UTC.
var dateLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
}

// ParseDate reads a date string in any of the forms the user office uses.
func ParseDate(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range dateLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("cannot read %q as a date (want RFC 3339 or YYYY-MM-DD)", s)
}

// UnmarshalJSON accepts null, a date string, or {"year":2019,"month":1,"day":1}.
func (d *Date) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch {
	case isNull(data):
		*d = Date{}
		return nil
	case data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return fmt.Errorf("bad date string: %w", err)
		}
		parsed, err := ParseDate(s)
		if err != nil {
			return err
		}
		*d = Date{parsed}
		return nil
	case data[0] == '{':
		parts, err := decodeObject(data)
		if err != nil {
			return err
		}
		var ymd [3]int
		for i, name := range []string{"year", "month", "day"} {
			n, err := decodeInt(parts[name])
			if err != nil {
				return fieldErr(name, err)
			}
			if n == nil {
				return fmt.Errorf("date object lacks %q", name)
			}
			ymd[i] = *n
		}
		t := time.Date(ymd[0], time.Month(ymd[1]), ymd[2], 0, 0, 0, 0, time.UTC)
		if ymd[0] < 1 || ymd[0] > 9999 || t.Year() != ymd[0] || int(t.Month()) != ymd[1] || t.Day() != ymd[2] {
			return fmt.Errorf("no such date: year %d month %d day %d", ymd[0], ymd[1], ymd[2])
		}
		*d = Date{t}
		return nil
	default:
		return fmt.Errorf("want a date string or {year, month, day}, got %s", kindOf(data))
	}
}

// MarshalJSON writes RFC 3339 (UTC), or null for the zero Date.
func (d Date) MarshalJSON() ([]byte, error) {
	if d.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(d.UTC().Format(time.RFC3339))
}

// decodeObject splits a JSON object into its raw fields; it reports a non-object clearly.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, fmt.Errorf("want an object, got %s", kindOf(data))
	}
	return fields, nil
}

// decodeString reads a string field; a missing or null field is "". Identifiers (proposal
// and session numbers) may also come as integers, which are kept as their decimal text.
func decodeString(raw json.RawMessage, acceptNumber bool) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	if acceptNumber && kindOf(raw) == "number" {
		if n, err := strconv.ParseInt(string(bytes.TrimSpace(raw)), 10, 64); err == nil {
			return strconv.FormatInt(n, 10), nil
		}
	}
	return "", fmt.Errorf("want a string, got %s", kindOf(raw))
}

// decodeID reads a uid/gid: a number, a numeric string, or "." / "" / null for unknown.
func decodeID(raw json.RawMessage) (*int, error) {
	if isNull(raw) {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		s = strings.TrimSpace(s)
		if s == "" || s == "." {
			return nil, nil
		}
		raw = json.RawMessage(s)
		if kindOf(raw) != "number" {
			return nil, fmt.Errorf("want a numeric id or \".\", got %q", s)
		}
	}
	n, err := decodeInt(raw)
	if err != nil {
		return nil, err
	}
	if *n < 0 || *n > math.MaxUint32-1 {
		return nil, fmt.Errorf("id %d out of range", *n)
	}
	return n, nil
}

// decodeInt reads an integral JSON number (1, 1.0 and 1e3 are fine; 1.5 is not).
func decodeInt(raw json.RawMessage) (*int, error) {
	if isNull(raw) {
		return nil, nil
	}
	if kindOf(raw) != "number" {
		return nil, fmt.Errorf("want an integer, got %s", kindOf(raw))
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("want an integer: %w", err)
	}
	if f != math.Trunc(f) || math.Abs(f) > 1<<40 {
		return nil, fmt.Errorf("want an integer, got %s", bytes.TrimSpace(raw))
	}
	n := int(f)
	return &n, nil
}

// decodeDataSetPath keeps the volume definition as text: a JSON string is unquoted, a
// JSON object or list (some offices send the structure itself) is kept verbatim.
func decodeDataSetPath(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	switch kindOf(raw) {
	case "string":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case "object", "list":
		return string(bytes.TrimSpace(raw)), nil
	default:
		return "", fmt.Errorf("want a string, object or list, got %s", kindOf(raw))
	}
}

func isNull(raw []byte) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

func orNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}

// kindOf names the JSON type of raw for error messages.
func kindOf(raw []byte) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch c := raw[0]; {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "list"
	case c == 't' || c == 'f':
		return "boolean"
	case c == 'n':
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "number"
	default:
		return "invalid JSON"
	}
}
