package experiments

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDateUnmarshal(t *testing.T) {
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	tests := []struct {
		name    string
		in      string
		want    time.Time
		wantErr string
	}{
		{"rfc3339 utc", `"2019-01-01T00:00:00Z"`, day(2019, 1, 1), ""},
		{"rfc3339 offset", `"2020-02-02T09:30:00+01:00"`, time.Date(2020, 2, 2, 8, 30, 0, 0, time.UTC), ""},
		{"fractional", `"2019-01-01T10:00:00.123456Z"`, time.Date(2019, 1, 1, 10, 0, 0, 123456000, time.UTC), ""},
		{"no zone", `"2019-01-01T10:00:00"`, time.Date(2019, 1, 1, 10, 0, 0, 0, time.UTC), ""},
		{"django str", `"2019-01-01 10:00:00"`, time.Date(2019, 1, 1, 10, 0, 0, 0, time.UTC), ""},
		{"date only", `"2019-01-01"`, day(2019, 1, 1), ""},
		{"object", `{"year": 2019, "month": 1, "day": 1}`, day(2019, 1, 1), ""},
		{"object extra fields", `{"year": 2024, "month": 2, "day": 29, "hour": 3}`, day(2024, 2, 29), ""},
		{"null", `null`, time.Time{}, ""},
		{"empty string", `""`, time.Time{}, ""},
		{"garbage string", `"yesterday"`, time.Time{}, "yesterday"},
		{"number", `20190101`, time.Time{}, "got number"},
		{"bool", `true`, time.Time{}, "got boolean"},
		{"list", `[2019, 1, 1]`, time.Time{}, "got list"},
		{"object lacks day", `{"year": 2019, "month": 1}`, time.Time{}, `"day"`},
		{"object string month", `{"year": 2019, "month": "1", "day": 1}`, time.Time{}, "month"},
		{"object impossible day", `{"year": 2019, "month": 2, "day": 30}`, time.Time{}, "no such date"},
		{"object month 13", `{"year": 2019, "month": 13, "day": 1}`, time.Time{}, "no such date"},
		{"object fractional", `{"year": 2019.5, "month": 1, "day": 1}`, time.Time{}, "integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Date
			err := json.Unmarshal([]byte(tt.in), &d)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !d.Equal(tt.want) {
				t.Errorf("got %v, want %v", d.Time, tt.want)
			}
		})
	}
}

func TestDateMarshal(t *testing.T) {
	tests := []struct {
		in   Date
		want string
	}{
		{Date{}, `null`},
		{Date{time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)}, `"2019-01-01T00:00:00Z"`},
		{Date{time.Date(2020, 2, 2, 9, 30, 0, 0, time.FixedZone("CET", 3600))}, `"2020-02-02T08:30:00Z"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestExperimentUnmarshal(t *testing.T) {
	intp := func(n int) *int { return &n }
	tests := []struct {
		name      string
		in        string
		check     func(t *testing.T, e Experiment)
		wantField string // non-empty: decoding must fail naming this field
	}{
		{name: "full", in: `{"proposal_id": "2019001", "subject": "S", "body": "B", "beam_line": "BL13",
			"uid": 1001, "gid": "1002", "sessions": [{"session_number": "s1", "subject": "ss", "body": "sb",
			"start_date": "2019-01-01T00:00:00Z", "end_date": {"year": 2019, "month": 1, "day": 3},
			"data_set_path": "{'/a': {'bind': '/data', 'mode': 'ro'}}"}]}`,
			check: func(t *testing.T, e Experiment) {
				if e.ProposalID != "2019001" || e.Subject != "S" || e.Body != "B" || e.BeamLine != "BL13" {
					t.Errorf("strings: %+v", e)
				}
				if e.UID == nil || *e.UID != 1001 || e.GID == nil || *e.GID != 1002 {
					t.Errorf("uid/gid: %v %v", e.UID, e.GID)
				}
				s := e.Sessions[0]
				if s.SessionNumber != "s1" || s.StartDate.Day() != 1 || s.EndDate.Day() != 3 ||
					s.DataSetPath != "{'/a': {'bind': '/data', 'mode': 'ro'}}" {
					t.Errorf("session: %+v", s)
				}
			}},
		{name: "missing fields", in: `{"proposal_id": "p"}`, check: func(t *testing.T, e Experiment) {
			if e.UID != nil || e.GID != nil || e.Sessions != nil || e.Subject != "" {
				t.Errorf("got %+v", e)
			}
		}},
		{name: "dot ids", in: `{"uid": ".", "gid": ""}`, check: func(t *testing.T, e Experiment) {
			if e.UID != nil || e.GID != nil {
				t.Errorf("got %v %v", e.UID, e.GID)
			}
		}},
		{name: "numeric proposal id", in: `{"proposal_id": 2019001, "uid": 5.0}`, check: func(t *testing.T, e Experiment) {
			if e.ProposalID != "2019001" || e.UID == nil || *e.UID != *intp(5) {
				t.Errorf("got %q %v", e.ProposalID, e.UID)
			}
		}},
		{name: "data_set_path as structure", in: `{"sessions": [{"data_set_path": {"/a": {"bind": "/d"}}}]}`,
			check: func(t *testing.T, e Experiment) {
				if e.Sessions[0].DataSetPath != `{"/a": {"bind": "/d"}}` {
					t.Errorf("got %q", e.Sessions[0].DataSetPath)
				}
			}},
		{name: "subject number", in: `{"subject": 12}`, wantField: "subject"},
		{name: "beam_line object", in: `{"beam_line": {}}`, wantField: "beam_line"},
		{name: "uid word", in: `{"uid": "root"}`, wantField: "uid"},
		{name: "gid negative", in: `{"gid": -1}`, wantField: "gid"},
		{name: "uid fraction", in: `{"uid": 1.5}`, wantField: "uid"},
		{name: "uid bool", in: `{"uid": true}`, wantField: "uid"},
		{name: "sessions object", in: `{"sessions": {}}`, wantField: "sessions"},
		{name: "session not object", in: `{"sessions": [1]}`, wantField: "sessions[0]"},
		{name: "session start_date number", in: `{"sessions": [{}, {"start_date": 3}]}`, wantField: "sessions[1].start_date"},
		{name: "session end_date bad object", in: `{"sessions": [{"end_date": {"year": "x", "month": 1, "day": 1}}]}`, wantField: "sessions[0].end_date.year"},
		{name: "session number bool", in: `{"sessions": [{"session_number": false}]}`, wantField: "sessions[0].session_number"},
		{name: "data_set_path number", in: `{"sessions": [{"data_set_path": 7}]}`, wantField: "sessions[0].data_set_path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Experiment
			err := json.Unmarshal([]byte(tt.in), &e)
			if tt.wantField != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField || !errors.Is(err, ErrInvalidField) {
					t.Fatalf("err = %v, want a FieldError on %q", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, e)
		})
	}
}

func TestExperimentNotObject(t *testing.T) {
	for _, in := range []string{`[]`, `"x"`, `3`} {
		var e Experiment
		if err := json.Unmarshal([]byte(in), &e); err == nil || !strings.Contains(err.Error(), "want an object") {
			t.Errorf("%s: err = %v", in, err)
		}
	}
}
