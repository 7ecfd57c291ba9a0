package testenv_test

import (
	"context"
	"strings"
	"testing"

	"github.com/calipsoplus/calipso/internal/testenv"
)

func TestWorkloadImage(t *testing.T) {
	cli := testenv.DockerClient(t)
	ref := testenv.WorkloadImage(t)
	if !strings.HasPrefix(ref, testenv.WorkloadRepository+":") {
		t.Errorf("WorkloadImage = %q, want a %s tag", ref, testenv.WorkloadRepository)
	}
	if again := testenv.WorkloadImage(t); again != ref {
		t.Errorf("second WorkloadImage = %q, want %q", again, ref)
	}
	img, err := cli.ImageInspect(context.Background(), ref)
	if err != nil {
		t.Fatalf("inspect %s: %v", ref, err)
	}
	if len(img.Config.Entrypoint) != 1 || img.Config.Entrypoint[0] != "/workload" {
		t.Errorf("entrypoint = %v, want /workload", img.Config.Entrypoint)
	}
}

func TestInstanceIsUnique(t *testing.T) {
	a, b := testenv.Instance(t), testenv.Instance(t)
	if a == b || a == "" {
		t.Errorf("Instance gave %q and %q, want two different labels", a, b)
	}
}
