package server

import (
	"context"
	"crypto/subtle"
	"net/http"
	"net/url"
	"sync"
	"time"
)

func urlQueryEscape(s string) string { return url.QueryEscape(s) }

// handleHealthz: the process is alive and serving.
func handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// handleReadyz runs every check (database, user office, engines) in parallel and
// answers 503 when one fails. The answer names each part with its state only, "ok" or
// "unavailable": the checks' errors name hosts, users and paths, so they go to the
// log (where the operator looks next), not to whoever asks.
func (s *server) handleReadyz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		results := make(map[string]string, len(s.Checks))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, c := range s.Checks {
			wg.Go(func() {
				status := "ok"
				if err := c.Fn(ctx); err != nil {
					status = "unavailable"
					s.Log.WarnContext(ctx, "readiness check failed", "check", c.Name, "err", err)
				}
				mu.Lock()
				results[c.Name] = status
				mu.Unlock()
			})
		}
		wg.Wait()
		code := http.StatusOK
		for _, v := range results {
			if v != "ok" {
				code = http.StatusServiceUnavailable
			}
		}
		writeJSON(w, code, results)
	}
}

// metricsHandler serves /metrics, behind server.metrics_token when one is set: the
// metrics name every route and count logins and their refusals.
func (s *server) metricsHandler() http.Handler {
	token := s.Config.Server.MetricsToken
	if token == "" {
		return s.metrics.handler
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "metrics need the bearer token (server.metrics_token)"})
			return
		}
		s.metrics.handler.ServeHTTP(w, r)
	})
}
