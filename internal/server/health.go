package server

import (
	"context"
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
// answers 503 naming what fails, so an operator sees which part is down.
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
					status = err.Error()
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
