package server_test

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// sseEvent is one Server-Sent Event as a client parses it.
type sseEvent struct {
	id    int
	event string
	data  string
}

// readEvents follows an event stream to its end.
func (b *browser) readEvents(t *testing.T, path, lastID string) []sseEvent {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.h.api(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var (
		out []sseEvent
		cur sseEvent
	)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			out = append(out, cur)
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id, _ = strconv.Atoi(strings.TrimPrefix(line, "id: "))
		case strings.HasPrefix(line, "event: "):
			cur.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	return out
}

func stages(evs []sseEvent) string {
	var s []string
	for _, e := range evs {
		s = append(s, strconv.Itoa(e.id)+":"+e.event)
	}
	return strings.Join(s, " ")
}

// TestV2LaunchWithProgress: POST api/v2/resources answers 202 with the pending record
// and its Location; the event stream shows every stage in order and ends at ready;
// a client reconnecting with Last-Event-ID gets only what followed. Another user
// cannot read the record or its events, and bad requests are 400s.
func TestV2LaunchWithProgress(t *testing.T) {
	h := newHarness(t, withDocker())
	b := h.loggedIn("alice")
	wantStatus(t, b.do(http.MethodGet, "users/alice/experiments/", nil), http.StatusOK) // fetches alice's sessions

	a := b.do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": "2019002~2019002-01", "image": desktopImage})
	wantStatus(t, a, http.StatusAccepted)
	rec := a.object(t)
	id := strconv.Itoa(int(rec["id"].(float64)))
	if rec["state"] != "pending" || a.header.Get("Location") != basePath+"api/v2/resources/"+id || rec["events"] != basePath+"api/v2/resources/"+id+"/events" {
		t.Fatalf("answer %s, Location %q", a.body, a.header.Get("Location"))
	}

	all := b.readEvents(t, "api/v2/resources/"+id+"/events", "")
	if got := stages(all); got != "1:reserved 2:creating 3:starting 4:ready" {
		t.Fatalf("events = %s, want every stage in order", got)
	}
	if got := stages(b.readEvents(t, "api/v2/resources/"+id+"/events", "2")); got != "3:starting 4:ready" {
		t.Fatalf("events after Last-Event-ID 2 = %s", got)
	}
	got := b.do(http.MethodGet, "api/v2/resources/"+id, nil)
	wantStatus(t, got, http.StatusOK)
	if st := got.object(t)["state"]; st != "running" {
		t.Fatalf("record after ready = %v", st)
	}

	other := h.loggedIn("bob")
	wantError(t, other.do(http.MethodGet, "api/v2/resources/"+id, nil), http.StatusNotFound)
	wantError(t, other.do(http.MethodGet, "api/v2/resources/"+id+"/events", nil), http.StatusNotFound)
	for _, tt := range []struct {
		name string
		body any
	}{
		{"not JSON", "{"},
		{"no image", map[string]string{"experiment": "2019002~2019002-01"}},
		{"unknown image", map[string]string{"experiment": "2019002~2019002-01", "image": "nope"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := b.do(http.MethodPost, "api/v2/resources", tt.body)
			if a.status < 400 || a.status >= 500 {
				t.Fatalf("%s: %d %s, want a 4xx", tt.name, a.status, a.body)
			}
		})
	}
	wantError(t, b.do(http.MethodGet, "api/v2/resources/x/events", nil), http.StatusBadRequest)
	// The record is removed through the compat API like any other.
	wantStatus(t, b.do(http.MethodGet, "resource/rm/alice/"+got.object(t)["name"].(string)+"/"+desktopImage+"/", nil), http.StatusOK)
}
