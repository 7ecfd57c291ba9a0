package server

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/calipsoplus/calipso"
)

// Errors of the HTTP layer itself.
var (
	errBadRequest   = calipso.NewError(calipso.EINVALID, "bad request")
	errUnauthorized = calipso.NewError(calipso.EUNAUTHORIZED, "not logged in")
	errForbidden    = calipso.NewError(calipso.EFORBIDDEN, "forbidden")
	errNotFound     = calipso.NewError(calipso.ENOTFOUND, "not found")
	errCrossSite    = calipso.NewError(calipso.EFORBIDDEN, "cross-site request refused")
	errTooLarge     = calipso.NewError(calipso.ETOOLARGE, "request body too large")
	errThrottled    = calipso.NewError(calipso.ETHROTTLED, "too many failed logins")
)

// statusOf is the one table from error codes to HTTP statuses (TestEveryCodeHasAStatus
// walks calipso.Codes). Every package's errors carry one of the codes.
var statusOf = map[string]int{
	calipso.EINVALID:      http.StatusBadRequest,
	calipso.EUNAUTHORIZED: http.StatusUnauthorized,
	calipso.EFORBIDDEN:    http.StatusForbidden,
	calipso.ENOTFOUND:     http.StatusNotFound,
	calipso.ECONFLICT:     http.StatusConflict,
	calipso.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	calipso.ETHROTTLED:    http.StatusTooManyRequests,
	calipso.EUNLAUNCHABLE: http.StatusUnprocessableEntity,
	calipso.EUPSTREAM:     http.StatusBadGateway,
	calipso.EUNAVAILABLE:  http.StatusServiceUnavailable,
	calipso.ETIMEOUT:      http.StatusGatewayTimeout,
	calipso.EINTERNAL:     http.StatusInternalServerError,
}

// classify returns the status of err and the message a user may read: the whole
// text for 4xx (made by us for the user), only the kind for 5xx, whose details may
// be internal (they are logged).
func classify(err error) (int, string) {
	status, ok := statusOf[calipso.ErrorCode(err)]
	if !ok {
		status = http.StatusInternalServerError
	}
	if status < 500 {
		return status, err.Error()
	}
	return status, calipso.ErrorMessage(err)
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
