package experiments_test

import (
	"errors"
	"net"
	"net/http/httptest"
	"testing"

	"github.com/calipsoplus/calipso/experiments"
)

func TestPing(t *testing.T) {
	up := httptest.NewServer(nil)
	defer up.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, c := range []struct {
		name, base string
		ok         bool
	}{{"listening", up.URL, true}, {"nothing listens", down, false}} {
		t.Run(c.name, func(t *testing.T) {
			client, err := experiments.NewClient(experiments.ClientConfig{LoginURL: c.base + "/login/", UmbrellaHashURL: c.base + "/h/",
				IsAuthorizedURL: c.base + "/a/", ExperimentsURL: c.base + "/e/$USERNAME/"})
			if err != nil {
				t.Fatal(err)
			}
			err = client.Ping(t.Context())
			if c.ok != (err == nil) || (err != nil && !errors.Is(err, experiments.ErrUnavailable)) {
				t.Fatalf("Ping = %v, want ok=%v (or ErrUnavailable)", err, c.ok)
			}
		})
	}
}
