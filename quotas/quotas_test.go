package quotas

import (
	"errors"
	"strconv"
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

func TestFormatGiB(t *testing.T) {
	cases := []struct {
		in   int64
		want string
	}{
		{0, "0G"}, {-1, "0G"}, {1, "1G"}, {GiB, "1G"}, {GiB + 1, "2G"}, {30 * GiB, "30G"}, {512 << 20, "1G"}, {1 << 40, "1024G"},
	}
	for _, c := range cases {
		if got := FormatGiB(c.in); got != c.want {
			t.Errorf("FormatGiB(%d) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestGiBAsTheFrontendReadsIt: what FormatGiB writes, the frontend's
// parseInt(s.slice(0, -1)) reads back as the same number of gigabytes.
func TestGiBAsTheFrontendReadsIt(t *testing.T) {
	for _, g := range []int64{0, 1, 3, 30, 80, 1000} {
		s := FormatGiB(g * GiB)
		frontend, err := strconv.Atoi(s[:len(s)-1])
		if err != nil || int64(frontend) != g {
			t.Errorf("FormatGiB(%dG) = %q, which the frontend reads as %d (%v)", g, s, frontend, err)
		}
	}
}

func TestParseGiB(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"30G", 30 * GiB, true}, {"30", 30 * GiB, true}, {"0G", 0, true}, {" 4 g", 4 * GiB, true}, {"8GB", 8 * GiB, true}, {"2GiB", 2 * GiB, true},
		{"512M", 0, false}, {"1.5G", 0, false}, {"1T", 0, false}, {"", 0, false}, {"G", 0, false}, {"-1G", 0, false}, {"abc", 0, false},
		{"99999999999G", 0, false},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParseGiB(c.in)
			if c.ok != (err == nil) || got != c.want {
				t.Fatalf("ParseGiB(%q) = %d, %v; want %d ok=%v", c.in, got, err, c.want, c.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
		})
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
