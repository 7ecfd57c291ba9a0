package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/guacamole"
	"github.com/calipsoplus/calipso/internal/launch"
	"github.com/calipsoplus/calipso/internal/store"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/quotas"
)

// Errors of the HTTP layer itself.
var (
	errBadRequest   = errors.New("bad request")
	errUnauthorized = errors.New("not logged in")
	errForbidden    = errors.New("forbidden")
	errNotFound     = errors.New("not found")
	errCrossSite    = errors.New("cross-site request refused")
	errTooLarge     = errors.New("request body too large")
)

// statusOf is the one table from error kinds to HTTP statuses. public says whether
// the error's own text may be shown: 4xx texts are made by us for the user; 5xx
// texts may carry internal detail, so the user reads the kind and the log the rest.
var statusOf = []struct {
	kind   error
	status int
	public bool
}{
	{errBadRequest, http.StatusBadRequest, true},
	{errUnauthorized, http.StatusUnauthorized, true},
	{errForbidden, http.StatusForbidden, true},
	{errNotFound, http.StatusNotFound, true},
	{errCrossSite, http.StatusForbidden, true},
	{errTooLarge, http.StatusRequestEntityTooLarge, true},
	{launch.ErrNoEngine, http.StatusServiceUnavailable, true},
	{store.ErrInvalid, http.StatusBadRequest, true},
	{quotas.ErrInvalid, http.StatusBadRequest, true},
	{store.ErrNotFound, http.StatusNotFound, true},
	{store.ErrForbidden, http.StatusForbidden, true},
	{store.ErrConflict, http.StatusConflict, true},
	{store.ErrUnavailable, http.StatusServiceUnavailable, false},
	{experiments.ErrInvalidVolume, http.StatusUnprocessableEntity, true},
	{experiments.ErrRootNotConfigured, http.StatusServiceUnavailable, true},
	{experiments.ErrBadCredentials, http.StatusUnauthorized, true},
	{experiments.ErrNotFound, http.StatusNotFound, true},
	{experiments.ErrUnavailable, http.StatusServiceUnavailable, false},
	{experiments.ErrForbidden, http.StatusBadGateway, false},
	{experiments.ErrBadAnswer, http.StatusBadGateway, false},
	{experiments.ErrBadRequest, http.StatusBadGateway, false},
	{provisioner.ErrInvalid, http.StatusUnprocessableEntity, true},
	{provisioner.ErrUnavailable, http.StatusServiceUnavailable, false},
	{provisioner.ErrNotReady, http.StatusGatewayTimeout, false},
	{provisioner.ErrNotFound, http.StatusNotFound, true},
	{guacamole.ErrUnavailable, http.StatusServiceUnavailable, false},
	{context.DeadlineExceeded, http.StatusGatewayTimeout, false},
}

// classify returns the status of err and the message a user may read.
func classify(err error) (int, string) {
	for _, e := range statusOf {
		if errors.Is(err, e.kind) {
			if e.public {
				return e.status, err.Error()
			}
			return e.status, e.kind.Error()
		}
	}
	return http.StatusInternalServerError, "internal error"
}

// writeJSON answers v as JSON with the status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	buf := jsonBuffers.Get().(*bytes.Buffer)
	defer jsonBuffers.Put(buf)
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		status, buf = http.StatusInternalServerError, bytes.NewBufferString(`{"error":"internal error"}`+"\n")
	}
	writeRawJSON(w, status, buf.Bytes())
}

// writeRawJSON answers JSON already encoded, in one write with its length: no
// chunked encoding, one packet for most answers.
func writeRawJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

var jsonBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// writeError answers {"error": message} with the status the table gives, and logs
// what went wrong (5xx in full).
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	status, msg := classify(err)
	if status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	} else {
		log.DebugContext(r.Context(), "request refused", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	writeJSON(w, status, map[string]string{"error": msg})
}
