package quotas

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"3G", 3 << 30, true}, {"512M", 512 << 20, true}, {"0.5Gi", 1 << 29, true}, {"80GB", 80e9, true},
		{"1024", 1024, true}, {"1.5Ti", 3 << 39, true}, {" 2 g ", 2 << 30, true}, {"0", 0, true}, {"10k", 10 << 10, true},
		{"", 0, false}, {"G", 0, false}, {"3X", 0, false}, {"-1G", 0, false}, {"1e9", 0, false}, {"1..2G", 0, false},
		{"99999999999T", 0, false}, {"NaN", 0, false},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseSize(c.in)
			if c.ok != (err == nil) || got != c.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d ok=%v", c.in, got, err, c.want, c.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
		})
	}
}

func TestFormatSizeRoundTrips(t *testing.T) {
	for _, b := range []int64{0, 1, 1023, 1 << 10, 3 << 30, 30 << 30, 512 << 20, 1 << 40, 1536 << 20} {
		s := FormatSize(b)
		back, err := ParseSize(s)
		if err != nil || back != b {
			t.Errorf("FormatSize(%d) = %q parses back to %d, %v", b, s, back, err)
		}
	}
}

func TestParseCPUs(t *testing.T) {
	for in, want := range map[string]float64{"2": 2, "0.5": 0.5, "500m": 0.5, "10": 10} {
		if got, err := ParseCPUs(in); err != nil || got != want {
			t.Errorf("ParseCPUs(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1", "two", "NaN", "Inf", "1e9"} {
		if _, err := ParseCPUs(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseCPUs(%q) accepted", in)
		}
	}
}

func TestExceeded(t *testing.T) {
	limit := Quota{MaxSimultaneous: 2, CPUs: 2, MemoryBytes: 4 << 30, DiskBytes: 10 << 30}
	one := Quota{MaxSimultaneous: 1, CPUs: 1, MemoryBytes: 2 << 30, DiskBytes: 5 << 30}
	cases := []struct {
		name       string
		used, add  Quota
		wantReason string
	}{
		{"fits", Quota{}, one, ""},
		{"fits exactly", one, one, ""},
		{"machines", one.Add(one), one, "Max machines exceeded"},
		{"cpu", Quota{CPUs: 1.5}, one, "Max CPU exceeded"},
		{"memory", Quota{MemoryBytes: 3 << 30}, one, "Max memory exceeded"},
		{"disk", Quota{DiskBytes: 6 << 30}, one, "Max hdd exceeded"},
		{"fractional cpus add up exactly", Quota{CPUs: 0.1 + 0.2}, Quota{MaxSimultaneous: 1, CPUs: 1.7}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := limit.Exceeded(c.used, c.add); got != c.wantReason {
				t.Fatalf("Exceeded = %q, want %q", got, c.wantReason)
			}
		})
	}
}
