package kubernetes

import (
	"log/slog"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/provisionertest"
)

func TestContract(t *testing.T) {
	provisionertest.Run(t, func(t *testing.T) provisionertest.Harness {
		quiet := slog.New(slog.DiscardHandler)
		mine, ns := newProvisioner(t, func(c *Config) { c.Logger = quiet })
		theirs := provisionerIn(t, ns, kubeConfig, func(c *Config) { c.Instance, c.Logger = "other", quiet })
		return provisionertest.Harness{
			Engine:            mine,
			Instance:          mine.cfg.Instance,
			Neighbour:         theirs,
			NeighbourInstance: theirs.cfg.Instance,
			Image:             "calipso/desktop:1",
			Protocol:          "vnc",
			FailingStarts: []provisionertest.FailingStart{
				// Passes validateSpec, refused by the API server (422) once the Service exists.
				{Name: "rejected by the API server", Want: provisioner.ErrInvalid, Edit: func(s *provisioner.Spec) {
					s.Mounts = []provisioner.Mount{{Source: "/data/a", Target: "/data", ReadOnly: true}, {Source: "/data/b", Target: "/data"}}
				}},
			},
			Applied: func(t *testing.T, name string) provisionertest.Applied {
				t.Helper()
				pod, err := kubeClient.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
				if err != nil {
					t.Fatalf("get pod %s: %v", name, err)
				}
				c := pod.Spec.Containers[0]
				applied := provisionertest.Applied{
					CPUs:        float64(c.Resources.Limits.Cpu().MilliValue()) / 1000,
					MemoryBytes: c.Resources.Limits.Memory().Value(),
					DiskBytes:   c.Resources.Limits.StorageEphemeral().Value(),
					ReadOnly:    map[string]bool{},
				}
				if sc := pod.Spec.SecurityContext; sc != nil && sc.RunAsUser != nil && sc.RunAsGroup != nil {
					applied.UID, applied.GID = int(*sc.RunAsUser), int(*sc.RunAsGroup)
				}
				for _, m := range c.VolumeMounts {
					applied.ReadOnly[m.MountPath] = m.ReadOnly
				}
				return applied
			},
			Exceptions: provisionertest.Exceptions{
				NeverRuns:      "envtest runs kube-apiserver and etcd only: no scheduler nor kubelet, so pods stay Pending and no log is written",
				NewIDOnRestart: "Stop deletes the pod and keeps the Service: Start makes a new pod, of a new uid",
			},
		}
	})
}
