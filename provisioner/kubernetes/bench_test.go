package kubernetes

import (
	"context"
	"testing"
)

func BenchmarkBuildPod(b *testing.B) {
	cfg, spec := testConfig(), testSpec()
	for b.Loop() {
		if err := validateSpec(cfg, spec); err != nil {
			b.Fatal(err)
		}
		_ = buildPod(cfg, spec)
		_ = buildService(cfg, spec)
	}
}

// BenchmarkStartInspectRemove measures one workload's API round trips against the
// envtest kube-apiserver (no kubelet: Start does not wait).
func BenchmarkStartInspectRemove(b *testing.B) {
	ctx := context.Background()
	p := provisionerIn(b, newNamespace(b, nil), kubeConfig, nil)
	spec := testSpec()
	for b.Loop() {
		inst, err := p.Start(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Inspect(ctx, inst.Name); err != nil {
			b.Fatal(err)
		}
		if err := p.Remove(ctx, inst.Name); err != nil {
			b.Fatal(err)
		}
	}
}
