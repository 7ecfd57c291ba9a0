package server

import (
	"bytes"
	_ "embed"
	"net/http"
	"strings"
)

// openAPIDoc describes the v2 API (TestOpenAPIDocument holds it to the routes and to
// real answers). Its server URL is the base path, filled in when served.
//
//go:embed openapi.yaml
var openAPIDoc []byte

func (s *server) handleOpenAPI() http.HandlerFunc {
	doc := bytes.ReplaceAll(openAPIDoc, []byte("{{base}}"), []byte(strings.TrimSuffix(s.Config.BasePath, "/")))
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(doc)
	}
}
