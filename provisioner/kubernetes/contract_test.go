package kubernetes

import (
	"encoding/json"
	"io/fs"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

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
			Applied: appliedIn(kubeClient, ns),
			Exceptions: provisionertest.Exceptions{
				NeverRuns:      "envtest runs kube-apiserver and etcd only: no scheduler nor kubelet, so pods stay Pending and no log is written",
				NewIDOnRestart: "Stop deletes the pod and keeps the Service: Start makes a new pod, of a new uid",
			},
		}
	})
}

// appliedIn reads back from the pod object, in namespace ns of client, what the
// provisioner set on a workload.
func appliedIn(client k8s.Interface, ns string) func(t *testing.T, name string) provisionertest.Applied {
	return func(t *testing.T, name string) provisionertest.Applied {
		t.Helper()
		pod, err := client.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
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
			if m.MountPath == provisioner.SecretsDir {
				applied.Secrets = secretFiles(t, client, ns, pod, m)
				continue
			}
			applied.ReadOnly[m.MountPath] = m.ReadOnly
		}
		shown, err := json.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		applied.Shown = string(shown)
		return applied
	}
}

// secretFiles is what the kubelet would write at provisioner.SecretsDir from the
// pod's volume m: its Secret's keys, files of root's with the volume's mode.
func secretFiles(t *testing.T, client k8s.Interface, ns string, pod *corev1.Pod, m corev1.VolumeMount) map[string]provisionertest.SecretFile {
	t.Helper()
	if !m.ReadOnly {
		t.Errorf("%s is mounted read-write", m.MountPath)
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name != m.Name || v.Secret == nil {
			continue
		}
		secret, err := client.CoreV1().Secrets(ns).Get(t.Context(), v.Secret.SecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get secret %s: %v", v.Secret.SecretName, err)
		}
		mode := fs.FileMode(0o644) // the kubelet's default
		if v.Secret.DefaultMode != nil {
			mode = fs.FileMode(*v.Secret.DefaultMode).Perm()
		}
		files := map[string]provisionertest.SecretFile{}
		for k, data := range secret.Data {
			files[k] = provisionertest.SecretFile{Content: string(data), Mode: mode}
		}
		return files
	}
	t.Errorf("%s is not a Secret volume", m.MountPath)
	return nil
}
