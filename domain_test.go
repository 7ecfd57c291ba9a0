package calipso_test

import (
	"testing"

	"github.com/calipsoplus/calipso"
)

func TestExceeded(t *testing.T) {
	limit := calipso.Quota{MaxSimultaneous: 2, CPUs: 2, MemoryBytes: 4 << 30, DiskBytes: 10 << 30}
	one := calipso.Quota{MaxSimultaneous: 1, CPUs: 1, MemoryBytes: 2 << 30, DiskBytes: 5 << 30}
	cases := []struct {
		name       string
		used, add  calipso.Quota
		wantReason string
	}{
		{"fits", calipso.Quota{}, one, ""},
		{"fits exactly", one, one, ""},
		{"machines", calipso.Quota{MaxSimultaneous: 2}, one, "Max machines exceeded"},
		{"cpu", calipso.Quota{CPUs: 1.5}, one, "Max CPU exceeded"},
		{"memory", calipso.Quota{MemoryBytes: 3 << 30}, one, "Max memory exceeded"},
		{"disk", calipso.Quota{DiskBytes: 6 << 30}, one, "Max hdd exceeded"},
		{"fractional cpus add up exactly", calipso.Quota{CPUs: 0.1 + 0.2}, calipso.Quota{MaxSimultaneous: 1, CPUs: 1.7}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := limit.Exceeded(c.used, c.add); got != c.wantReason {
				t.Fatalf("Exceeded = %q, want %q", got, c.wantReason)
			}
		})
	}
}

func TestSplitExperiment(t *testing.T) {
	cases := []struct{ ref, session, proposal string }{
		{"2019001~2019001-01", "2019001-01", "2019001"},
		{"k3x9q", "k3x9q", "k3x9q"},
		{"a~b~c", "b~c", "a"},
		{"~", "", ""},
	}
	for _, c := range cases {
		if s, p := calipso.SplitExperiment(c.ref); s != c.session || p != c.proposal {
			t.Errorf("SplitExperiment(%q) = %q, %q; want %q, %q", c.ref, s, p, c.session, c.proposal)
		}
	}
}

func TestTransitions(t *testing.T) {
	for _, c := range []struct {
		from, to calipso.State
		ok       bool
	}{
		{calipso.Pending, calipso.Running, true}, {calipso.Running, calipso.Pending, false},
		{calipso.Failed, calipso.Removed, true}, {calipso.Removed, calipso.Running, false},
		{calipso.Stopped, calipso.Failed, false}, {calipso.Running, calipso.Stopping, true},
	} {
		if got := calipso.CanMove(c.from, c.to); got != c.ok {
			t.Errorf("CanMove(%s, %s) = %v", c.from, c.to, got)
		}
	}
	if !calipso.Running.Live() || calipso.Stopped.Live() {
		t.Error("Live: running holds quota, stopped does not")
	}
}
