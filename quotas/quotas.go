// Package quotas holds what a user may use at once (simultaneous resources, CPU,
// memory, disk) and the arithmetic on it. Sizes are parsed once, at the edge, into
// bytes; the store reserves a launch's share inside one transaction (see
// internal/store), so that concurrent launches can never exceed a quota.
package quotas

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/calipsoplus/calipso"
)

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = calipso.NewError(calipso.EINVALID, "invalid quantity")

var units = map[string]float64{
	"": 1, "b": 1,
	"k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
	"ki": 1 << 10, "kib": 1 << 10, "mi": 1 << 20, "mib": 1 << 20, "gi": 1 << 30, "gib": 1 << 30, "ti": 1 << 40, "tib": 1 << 40,
}

// ParseSize parses a size such as "3G", "512M", "0.5Gi", "80GB" or "1024" (bytes).
// Following Docker and CalipsoPlus, single-letter units are powers of 1024 ("3G" is
// 3 GiB); "GB" style units are powers of 1000 and "Gi"/"GiB" powers of 1024.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("%w: empty size", ErrInvalid)
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("%w: size %q: want a number with an optional unit, such as 3G, 512M or 0.5Gi", ErrInvalid, s)
	}
	mult, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("%w: size %q: unknown unit %q (use K, M, G, T, Ki, Mi, Gi, Ti, KB, MB, GB, TB)", ErrInvalid, s, t[i:])
	}
	if len(unit) == 1 && unit != "b" { // Docker's convention: "3G" is 3 GiB.
		mult = units[unit+"i"]
	}
	bytes := v * mult
	if bytes > math.MaxInt64/2 || math.IsInf(bytes, 0) || math.IsNaN(bytes) {
		return 0, fmt.Errorf("%w: size %q is too large", ErrInvalid, s)
	}
	return int64(math.Round(bytes)), nil
}

// GiB is the unit of every size the CalipsoPlus frontend reads.
const GiB = 1 << 30

// FormatGiB writes a size the way the frontend reads it: a whole number of gigabytes
// followed by "G", "0G" included (it drops the last character and reads an integer).
// A size that is not a whole number of GiB, possible only when set outside the API,
// is rounded up, so that the frontend never thinks more is free than is.
func FormatGiB(b int64) string {
	if b <= 0 {
		return "0G"
	}
	return strconv.FormatInt((b+GiB-1)/GiB, 10) + "G"
}

// ParseGiB parses a size given through the compat API: a whole number of gigabytes,
// "30G", "30GB", "30GiB" or a bare "30", all read as GiB as the frontend reads them.
// Anything else ("512M", "1.5G") is refused: the frontend would compute with
// another value than the server.
func ParseGiB(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRight(t, "GgBbIi ")
	unit := strings.ToLower(strings.TrimSpace(t[len(num):]))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > 1<<20 || (unit != "" && unit != "g" && unit != "gb" && unit != "gib") {
		return 0, fmt.Errorf("%w: size %q: want a whole number of gigabytes such as 30G", ErrInvalid, s)
	}
	return n * GiB, nil
}

// ParseCPUs parses a CPU count: "2", "0.5" or Kubernetes' "500m".
func ParseCPUs(s string) (float64, error) {
	t := strings.TrimSpace(s)
	milli := strings.HasSuffix(t, "m")
	v, err := strconv.ParseFloat(strings.TrimSuffix(t, "m"), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) || v > 1e6 {
		return 0, fmt.Errorf("%w: cpu %q: want a number of cores such as 2, 0.5 or 500m", ErrInvalid, s)
	}
	if milli {
		v /= 1000
	}
	return v, nil
}

// ImageShare is what one launch of im takes from a quota. Its sizes were checked
// when the image was stored (store.ValidateImage).
func ImageShare(im calipso.Image) calipso.Quota {
	mem, _ := ParseSize(im.Memory)
	hdd, _ := ParseSize(im.HDD)
	return calipso.Quota{MaxSimultaneous: 1, CPUs: im.CPU, MemoryBytes: mem, DiskBytes: hdd}
}
