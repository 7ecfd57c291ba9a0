package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	logins   *prometheus.CounterVec
	// throttled counts logins answered 429, by method and the limit that refused them.
	throttled *prometheus.CounterVec
	handler   http.Handler
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calipso_http_requests_total", Help: "HTTP requests by route template, method and status.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "calipso_http_request_duration_seconds", Help: "HTTP request durations by route template.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "calipso_logins_total", Help: "Logins by method (local, umbrella) and result (ok, refused, error).",
		}, []string{"method", "result"}),
	}
	m.throttled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "calipso_login_throttled_total", Help: "Login attempts refused (429) by method (local, umbrella) and limit (address, account).",
	}, []string{"method", "limit"})
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.logins, m.throttled} {
		_ = reg.Register(c)
	}
	_ = reg.Register(collectors.NewGoCollector())
	_ = reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	return m
}

func (m *metrics) observe(route, method string, status int, took time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(route, method).Observe(took.Seconds())
}

func (m *metrics) login(method, result string) {
	m.logins.WithLabelValues(method, result).Inc()
}

func (m *metrics) throttledLogin(method, limit string) {
	m.throttled.WithLabelValues(method, limit).Inc()
}

// watchThrottle exports how many addresses and accounts the login throttle tracks
// (its memory; each table holds at most throttleEntries).
func (m *metrics) watchThrottle(reg *prometheus.Registry, t *throttle) {
	for table, c := range map[string]interface{ Len() int }{"address": t.addresses, "account": t.accounts} {
		_ = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "calipso_login_throttle_entries", Help: "Keys the login throttle tracks, by table (address, account).",
			ConstLabels: prometheus.Labels{"table": table},
		}, func() float64 { return float64(c.Len()) }))
	}
}
