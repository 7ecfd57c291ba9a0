package lifecycle_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/lifecycle"
)

func TestAccount(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	at := func(h float64) *time.Time { v := t0.Add(time.Duration(h * float64(time.Hour))); return &v }
	rs := []calipso.Resource{
		// 10 h inside the period, 2 cores, 4 GiB.
		{Username: "ana", Experiment: "2026001~s1", CPU: 2, MemoryBytes: 4 << 30, Started: at(5), Ended: at(15)},
		// started before the period: counted from its start; still live: to its end.
		{Username: "ben", Experiment: "2026001~s2", CPU: 1, MemoryBytes: 2 << 30, Started: at(-10), Ended: nil},
		// an own resource of ana's, 1 h.
		{Username: "ana", Experiment: "own1", CPU: 0.5, MemoryBytes: 1 << 30, Started: at(1), Ended: at(2)},
		// never ran; and one that ended before the period.
		{Username: "ana", Experiment: "2026002~s1", CPU: 8},
		{Username: "ana", Experiment: "2026002~s1", CPU: 8, Started: at(-20), Ended: at(-1)},
	}
	from, to := t0, t0.Add(24*time.Hour)
	byProposal := lifecycle.Account(rs, from, to, lifecycle.ByProposal)
	want := []lifecycle.Usage{
		{Key: lifecycle.OwnResources, CoreHours: 0.5, MemoryGiBHours: 1, SessionHours: 1, Resources: 1},
		{Key: "2026001", CoreHours: 2*10 + 1*24, MemoryGiBHours: 4*10 + 2*24, SessionHours: 34, Resources: 2},
	}
	if len(byProposal) != len(want) {
		t.Fatalf("by proposal: %+v", byProposal)
	}
	for i := range want {
		if byProposal[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, byProposal[i], want[i])
		}
	}
	byUser := lifecycle.Account(rs, from, to, lifecycle.ByUser)
	if len(byUser) != 2 || byUser[0].Key != "ana" || byUser[0].SessionHours != 11 || byUser[1].Key != "ben" || byUser[1].SessionHours != 24 {
		t.Errorf("by user: %+v", byUser)
	}
	var buf bytes.Buffer
	if err := lifecycle.WriteCSV(&buf, lifecycle.ByProposal, byProposal); err != nil {
		t.Fatal(err)
	}
	const csv = "proposal,core_hours,memory_gib_hours,session_hours,resources\n(own resources),0.500,1.000,1.000,1\n2026001,44.000,88.000,34.000,2\n"
	if buf.String() != csv {
		t.Errorf("CSV:\n%s\nwant:\n%s", buf.String(), csv)
	}
}
