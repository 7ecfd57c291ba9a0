package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// loadOpenAPI fetches the served document and checks it is valid OpenAPI 3.
func loadOpenAPI(t *testing.T, b *browser) (*openapi3.T, routers.Router) {
	t.Helper()
	a := b.do(http.MethodGet, "api/v2/openapi.yaml", nil)
	wantStatus(t, a, http.StatusOK)
	doc, err := openapi3.NewLoader().LoadFromData(a.body)
	if err != nil {
		t.Fatalf("load the served document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the served document is not valid OpenAPI 3: %v", err)
	}
	if got := doc.Servers[0].URL; got+"/" != basePath {
		t.Fatalf("server URL %q, want the base path %q", got, basePath)
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return doc, router
}

func init() {
	// An event stream is text, read as a whole here (its format is in the description).
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
}

// TestOpenAPIAnswers: real requests to the v2 API, and their answers, are what the
// served OpenAPI document says, for successes and refusals alike.
func TestOpenAPIAnswers(t *testing.T) {
	h := newHarness(t, withDocker())
	b := h.loggedIn("alice")
	wantStatus(t, b.do(http.MethodGet, "users/alice/experiments/", nil), http.StatusOK)
	_, router := loadOpenAPI(t, b)

	launched := b.do(http.MethodPost, "api/v2/resources", map[string]string{"experiment": "2019002~2019002-01", "image": desktopImage})
	wantStatus(t, launched, http.StatusAccepted)
	id := strconv.Itoa(int(launched.object(t)["id"].(float64)))
	b.readEvents(t, "api/v2/resources/"+id+"/events", "") // to its end: the launch is over

	anonymous := h.browser()
	created := b.do(http.MethodPost, "api/v2/tokens", map[string]any{"name": "openapi", "scope": []string{"launch"}})
	wantStatus(t, created, http.StatusCreated)
	tokenID := strconv.Itoa(int(created.object(t)["id"].(float64)))
	for _, tt := range []struct {
		name   string
		who    *browser
		method string
		path   string
		body   any
		status int
	}{
		{"launch", b, http.MethodPost, "api/v2/resources", map[string]string{"experiment": "2019001~2019001-01", "image": desktopImage}, http.StatusAccepted},
		{"record", b, http.MethodGet, "api/v2/resources/" + id, nil, http.StatusOK},
		{"events", b, http.MethodGet, "api/v2/resources/" + id + "/events", nil, http.StatusOK},
		{"document", anonymous, http.MethodGet, "api/v2/openapi.yaml", nil, http.StatusOK},
		{"resources", b, http.MethodGet, "api/v2/resources", nil, http.StatusOK},
		{"all resources", b, http.MethodGet, "api/v2/resources?all=true", nil, http.StatusForbidden},
		{"connection", b, http.MethodGet, "api/v2/resources/" + id + "/connection", nil, http.StatusOK},
		{"me", b, http.MethodGet, "api/v2/me", nil, http.StatusOK},
		{"tokens", b, http.MethodGet, "api/v2/tokens", nil, http.StatusOK},
		{"create token", b, http.MethodPost, "api/v2/tokens", map[string]any{"name": "doc", "scope": []string{"launch"}, "expires_in": 3600}, http.StatusCreated},
		{"create token beyond the roles", b, http.MethodPost, "api/v2/tokens", map[string]any{"name": "doc", "scope": []string{"admin"}}, http.StatusForbidden},
		{"revoke token", b, http.MethodDelete, "api/v2/tokens/" + tokenID, nil, http.StatusNoContent},
		{"roles, not an admin", b, http.MethodGet, "api/v2/users/alice/roles", nil, http.StatusForbidden},
		{"roles", h.loggedIn("carol"), http.MethodGet, "api/v2/users/alice/roles", nil, http.StatusOK},
		{"grant roles", h.loggedIn("carol"), http.MethodPut, "api/v2/users/alice/roles", map[string]any{"roles": []string{"staff"}}, http.StatusOK},
		{"grant an unknown role", h.loggedIn("carol"), http.MethodPut, "api/v2/users/alice/roles", map[string]any{"roles": []string{"wizard"}}, http.StatusBadRequest},
		{"extensions", b, http.MethodGet, "api/v2/resources/" + id + "/extensions", nil, http.StatusOK},
		{"extension of a record without a lifetime", b, http.MethodPost, "api/v2/resources/" + id + "/extensions", map[string]any{"hours": 2, "reason": "late scan"}, http.StatusConflict},
		{"extension requests, not an admin", b, http.MethodGet, "api/v2/extensions?state=pending", nil, http.StatusForbidden},
		{"extension requests", h.loggedIn("carol"), http.MethodGet, "api/v2/extensions?state=pending", nil, http.StatusOK},
		{"decide an unknown extension", h.loggedIn("carol"), http.MethodPost, "api/v2/extensions/999", map[string]any{"grant": true}, http.StatusNotFound},
		{"not JSON", b, http.MethodPost, "api/v2/resources", "{", http.StatusBadRequest},
		{"unknown image", b, http.MethodPost, "api/v2/resources", map[string]string{"experiment": "2019002~2019002-01", "image": "nope"}, http.StatusNotFound},
		{"bad id", b, http.MethodGet, "api/v2/resources/0", nil, http.StatusBadRequest},
		{"unknown record", b, http.MethodGet, "api/v2/resources/999999", nil, http.StatusNotFound},
		{"not logged in", anonymous, http.MethodGet, "api/v2/resources/" + id, nil, http.StatusUnauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.who.do(tt.method, tt.path, tt.body)
			if a.status != tt.status {
				t.Fatalf("%s %s = %d %s, want %d", tt.method, tt.path, a.status, a.body, tt.status)
			}
			var reqBody []byte
			switch v := tt.body.(type) {
			case string:
				reqBody = []byte(v)
			case nil:
			default:
				reqBody = mustJSON(t, v)
			}
			req, err := http.NewRequest(tt.method, h.api(tt.path), bytes.NewReader(reqBody))
			if err != nil {
				t.Fatal(err)
			}
			if reqBody != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatalf("the document has no operation for %s %s: %v", tt.method, tt.path, err)
			}
			in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
			if tt.status < 400 {
				if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
					t.Errorf("the request is not what the document says: %v", err)
				}
			}
			out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: a.status, Header: a.header,
				Body: io.NopCloser(bytes.NewReader(a.body)), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
			if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
				t.Errorf("the answer is not what the document says: %v\n%s", err, a.body)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
