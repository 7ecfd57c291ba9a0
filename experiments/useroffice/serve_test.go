package useroffice_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/calipsoplus/calipso/experiments"
	"github.com/calipsoplus/calipso/experiments/useroffice"
)

// TestServeAndDatasetDirs: the embedded office as serve starts it, answering the
// real client, and the demo's dataset directories made under the roots.
func TestServeAndDatasetDirs(t *testing.T) {
	data, err := useroffice.Open("")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	creds := useroffice.BasicCredentials{Username: "calipso", Password: "pw"}
	go func() { done <- useroffice.Serve(ctx, ln, data, creds, nil) }()
	client, err := experiments.NewClient(useroffice.ClientConfig("http://"+ln.Addr().String(), creds))
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Login(t.Context(), "alice", "alice-demo"); err != nil {
		t.Fatalf("login through the served office: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}

	roots := experiments.Roots{Datasets: filepath.Join(t.TempDir(), "d"), Output: filepath.Join(t.TempDir(), "o")}
	if errs := data.MakeDatasetDirs(roots); len(errs) != 0 {
		t.Fatalf("MakeDatasetDirs: %v", errs)
	}
	if st, err := os.Stat(filepath.Join(roots.Datasets, "2019001", "raw")); err != nil || !st.IsDir() {
		t.Errorf("demo dataset directory: %v", err)
	}
}
