package server

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gorilla/mux"
)

// TestOpenAPIDocumentsEveryV2Route: the v2 routes of routes.go and the operations of
// openapi.yaml are the same, method by method, both ways.
func TestOpenAPIDocumentsEveryV2Route(t *testing.T) {
	const base = "/calipsoplus-services"
	doc, err := openapi3.NewLoader().LoadFromData(bytes.ReplaceAll(openAPIDoc, []byte("{{base}}"), []byte(base)))
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not valid OpenAPI 3: %v", err)
	}
	s := &server{Deps: Deps{Config: Config{BasePath: base + "/"}, OpenID: nil}}
	root := mux.NewRouter()
	s.routes(root)
	var routed []string
	_ = root.Walk(func(rt *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := rt.GetPathTemplate()
		if err != nil || !strings.HasPrefix(tpl, base+"/api/v2/") || rt.GetHandler() == nil {
			return nil
		}
		methods, _ := rt.GetMethods()
		for _, m := range methods {
			if m != "HEAD" { // served with GET
				routed = append(routed, m+" "+strings.TrimPrefix(tpl, base))
			}
		}
		return nil
	})
	var documented []string
	for path, item := range doc.Paths.Map() {
		for m := range item.Operations() {
			documented = append(documented, m+" "+path)
		}
	}
	slices.Sort(routed)
	slices.Sort(documented)
	if !slices.Equal(routed, documented) {
		t.Errorf("routes.go and openapi.yaml differ:\nrouted:     %v\ndocumented: %v", routed, documented)
	}
	if len(routed) < 4 {
		t.Errorf("found only %v: the walk missed the v2 routes", routed)
	}
}
