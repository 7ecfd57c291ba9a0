package lifecycle

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/internal/store"
)

// Usage is what resources used over a period: core-hours (CPU share × hours run),
// memory-hours (GiB × hours), session-hours (hours run), for one proposal or user.
type Usage struct {
	Key            string // the proposal id, or the username
	CoreHours      float64
	MemoryGiBHours float64
	SessionHours   float64
	Resources      int
}

// ByProposal and ByUser name how Account groups.
const (
	ByProposal = "proposal"
	ByUser     = "user"
)

// OwnResources is the proposal of the resources launched without one.
const OwnResources = "(own resources)"

// Account sums what rs used between from and to, grouped by, sorted by key. A
// resource counts from when it became running to when it left the live states (or
// to, when it is still live), clipped to the period.
func Account(rs []calipso.Resource, from, to time.Time, by string) []Usage {
	sums := map[string]*Usage{}
	for _, r := range rs {
		if r.Started == nil {
			continue
		}
		start, end := *r.Started, to
		if r.Ended != nil && r.Ended.Before(end) {
			end = *r.Ended
		}
		if start.Before(from) {
			start = from
		}
		if !end.After(start) {
			continue
		}
		key := r.Username
		if by == ByProposal {
			if _, proposal := calipso.SplitExperiment(r.Experiment); proposal != "" && proposal != r.Experiment {
				key = proposal
			} else {
				key = OwnResources
			}
		}
		u := sums[key]
		if u == nil {
			u = &Usage{Key: key}
			sums[key] = u
		}
		hours := end.Sub(start).Hours()
		u.CoreHours += r.CPU * hours
		u.MemoryGiBHours += float64(r.MemoryBytes) / (1 << 30) * hours
		u.SessionHours += hours
		u.Resources++
	}
	out := make([]Usage, 0, len(sums))
	for _, u := range sums {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b Usage) int {
		if a.Key < b.Key {
			return -1
		}
		if a.Key > b.Key {
			return 1
		}
		return 0
	})
	return out
}

// WriteCSV writes usage as CSV, for the user office's reports: a header naming by,
// then one row each, hours with three decimals.
func WriteCSV(w io.Writer, by string, usage []Usage) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{by, "core_hours", "memory_gib_hours", "session_hours", "resources"}); err != nil {
		return err
	}
	for _, u := range usage {
		if err := cw.Write([]string{u.Key, hours(u.CoreHours), hours(u.MemoryGiBHours), hours(u.SessionHours), strconv.Itoa(u.Resources)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

func hours(h float64) string { return strconv.FormatFloat(h, 'f', 3, 64) }

// UsageCollector exports, at each scrape, what every proposal's resources have used
// so far (calipso_usage_*_hours{proposal}). The sums are read off the records, so
// every replica reports the same; a scrape reads all records that ever ran, bounded
// by a timeout.
type UsageCollector struct {
	DB      *store.Store
	Timeout time.Duration
	Now     func() time.Time
}

var (
	coreHoursDesc    = prometheus.NewDesc("calipso_usage_core_hours", "Core-hours used by the resources of a proposal (CPU share × hours running).", []string{"proposal"}, nil)
	memoryHoursDesc  = prometheus.NewDesc("calipso_usage_memory_gib_hours", "Memory GiB-hours used by the resources of a proposal.", []string{"proposal"}, nil)
	sessionHoursDesc = prometheus.NewDesc("calipso_usage_session_hours", "Hours the resources of a proposal ran.", []string{"proposal"}, nil)
)

func (c UsageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- coreHoursDesc
	ch <- memoryHoursDesc
	ch <- sessionHoursDesc
}

func (c UsageCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	to := now()
	rs, err := c.DB.RanBetween(ctx, time.Time{}, to)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(coreHoursDesc, fmt.Errorf("usage: %w", err))
		return
	}
	for _, u := range Account(rs, time.Time{}, to, ByProposal) {
		ch <- prometheus.MustNewConstMetric(coreHoursDesc, prometheus.GaugeValue, u.CoreHours, u.Key)
		ch <- prometheus.MustNewConstMetric(memoryHoursDesc, prometheus.GaugeValue, u.MemoryGiBHours, u.Key)
		ch <- prometheus.MustNewConstMetric(sessionHoursDesc, prometheus.GaugeValue, u.SessionHours, u.Key)
	}
}
