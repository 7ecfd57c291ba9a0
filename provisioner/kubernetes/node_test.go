package kubernetes

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
	"github.com/calipsoplus/calipso/provisioner/provisionertest"
)

// The tests on a real node: a single-node cluster whose kubelet runs the pods
// (internal/testenv.StartKubeNode), started by TestOnNode for its subtests, a
// namespace each.
var (
	node       *testenv.KubeNode
	nodeREST   *rest.Config
	nodeClient k8s.Interface
	nodeImage  string
)

// TestOnNode runs the tests that need pods that run, on one node.
func TestOnNode(t *testing.T) {
	node = testenv.StartKubeNode(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", node.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	nodeREST, nodeClient = cfg, k8s.NewForConfigOrDie(cfg)
	nodeImage = node.WorkloadImage(t)
	t.Run("contract", testContractOnNode)
	t.Run("from inside the pod", testFromInsideThePod)
	t.Run("ClusterIP from the host", testClusterIP)
	if t.Failed() {
		t.Logf("the node's logs:\n%s", node.Logs())
	}
}

// realNode returns a provisioner in a fresh namespace of the node, reaching NodePorts
// at the node's address.
func realNode(t *testing.T, mutate func(*Config)) (*Provisioner, string) {
	t.Helper()
	ns := "n-" + strings.ToLower(testenv.RandomHex(5))
	if _, err := nodeClient.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("namespace: %v", err)
	}
	t.Cleanup(func() { _ = nodeClient.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	p := provisionerIn(t, ns, nodeREST, func(c *Config) {
		c.HostAddress, c.ReadyTimeout, c.Logger = node.NodeIP, 60*time.Second, slog.New(slog.DiscardHandler)
		if mutate != nil {
			mutate(c)
		}
	})
	return p, ns
}

// testContractOnNode: the provisioner contract on a node that runs the pods: every
// behaviour the suite checks, with none excused for pods that never run.
func testContractOnNode(t *testing.T) {
	provisionertest.Run(t, func(t *testing.T) provisionertest.Harness {
		mine, ns := realNode(t, nil)
		theirs := provisionerIn(t, ns, nodeREST, func(c *Config) {
			c.Instance, c.HostAddress, c.Logger = "other", node.NodeIP, slog.New(slog.DiscardHandler)
		})
		return provisionertest.Harness{
			Engine: mine, Instance: mine.cfg.Instance, Neighbour: theirs, NeighbourInstance: theirs.cfg.Instance,
			Image: nodeImage, Protocol: "vnc", LogRegex: `token=([0-9a-f]+)`, Applied: appliedIn(nodeClient, ns),
			FailingStarts: []provisionertest.FailingStart{
				{Name: "an image the node does not have", Edit: func(s *provisioner.Spec) { s.Image = "calipso.local/no-such-image:1" }},
			},
			Exceptions: provisionertest.Exceptions{
				NewIDOnRestart: "Stop deletes the pod and keeps the Service: Start makes a new pod, of a new uid",
			},
		}
	})
}

// podLog is the log of the workload's pod.
func podLog(t *testing.T, ns, name string) string {
	t.Helper()
	pods, err := nodeClient.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: provisioner.LabelResource})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if !strings.HasPrefix(p.Name, name) {
			continue
		}
		rc, err := nodeClient.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{}).Stream(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		return string(b)
	}
	t.Fatalf("no pod of %s", name)
	return ""
}

// testFromInsideThePod: what the running pod itself says: its uid, gid and groups;
// that the read-only dataset refuses a write and the results mount takes one; its
// memory and CPU limits in its cgroup; its port answering on the node's address.
func testFromInsideThePod(t *testing.T) {
	p, ns := realNode(t, nil)
	data, results := t.TempDir(), t.TempDir()
	for _, d := range []string{data, results} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	spec := specFor(7)
	spec.Instance = p.cfg.Instance
	spec.Image, spec.Protocol, spec.LogRegex = nodeImage, "http", `token=([0-9a-f]+)`
	spec.UID, spec.GID, spec.ExtraGroups = 2001, 2002, []int{100, 3003}
	spec.CPUs, spec.MemoryBytes = 0.5, 256<<20
	spec.Mounts = []provisioner.Mount{{Source: data, Target: "/data/raw", ReadOnly: true}, {Source: results, Target: "/data/results"}}
	spec.Env = map[string]string{
		"WRITE_TEST": "/data/raw/probe,/data/results/probe",
		// cgroup v1, as this machine has it: the pod's own limits.
		"READ_TEST": "/sys/fs/cgroup/memory/memory.limit_in_bytes,/sys/fs/cgroup/cpu/cpu.cfs_quota_us,/sys/fs/cgroup/cpu/cpu.cfs_period_us,/proc/self/status",
	}
	w := start(t, p, spec)
	log := podLog(t, ns, spec.Name())
	for _, want := range []string{"uid=2001 gid=2002", "write /data/raw/probe: error", "write /data/results/probe: ok"} {
		if !strings.Contains(log, want) {
			t.Errorf("the pod's log lacks %q:\n%s", want, log)
		}
	}
	if !strings.Contains(log, "100") || !strings.Contains(log, "3003") {
		t.Errorf("supplementary groups missing:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(results, "probe")); err != nil {
		t.Errorf("the write to the results mount is not on the host: %v", err)
	}
	for file, want := range map[string]string{"memory.limit_in_bytes": strconv.Itoa(256 << 20), "cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"} {
		if !strings.Contains(log, file) || !strings.Contains(log, want) {
			t.Errorf("cgroup %s: want %s in\n%s", file, want, log)
		}
	}
	// The security context, as the kernel applies it: no capability, no privilege to gain.
	// The workload prints the file %q-quoted: a tab is \t there.
	for _, want := range []string{`CapEff:\t0000000000000000`, `NoNewPrivs:\t1`} {
		if !strings.Contains(log, want) {
			t.Errorf("/proc/self/status lacks %q:\n%s", want, log)
		}
	}
	// The notebook link points at the node's address, and answers there.
	if w.Host != node.NodeIP || !strings.HasPrefix(w.URL, "http://"+net.JoinHostPort(node.NodeIP, strconv.Itoa(w.Port))) {
		t.Errorf("workload %+v: want the node's address %s", w, node.NodeIP)
	}
	// kube-proxy programs the NodePort within moments of the Service.
	target := fmt.Sprintf("http://%s/", net.JoinHostPort(node.NodeIP, strconv.Itoa(w.Port)))
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var resp *http.Response
		if resp, err = (&http.Client{Timeout: 5 * time.Second}).Get(target); err == nil {
			resp.Body.Close()
			break
		}
	}
	if err != nil {
		t.Fatalf("NodePort %d on %s: %v", w.Port, node.NodeIP, err)
	}
}

// testClusterIP: with service_type ClusterIP the workload is reached at its Service's
// cluster address (from the host here: the node routes the service range), and the
// provisioner answers the Service's in-cluster name as its host.
func testClusterIP(t *testing.T) {
	p, ns := realNode(t, func(c *Config) { c.ServiceType = ServiceClusterIP })
	spec := specFor(8)
	spec.Instance, spec.Mounts = p.cfg.Instance, nil
	spec.Image, spec.Protocol, spec.LogRegex = nodeImage, "http", `token=([0-9a-f]+)`
	w := start(t, p, spec)
	if w.Host != spec.Name()+"."+ns+".svc" {
		t.Errorf("host %q, want the Service's name", w.Host)
	}
	svc, err := nodeClient.CoreV1().Services(ns).Get(context.Background(), spec.Name(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	target := fmt.Sprintf("http://%s/", net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(w.Port)))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(target)
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ClusterIP %s: %v", target, err)
		}
	}
}

// BenchmarkStartOnNode compares the provisioner's Start (Service, Secret, pod, then
// running and its log line) with a bare pod of the same image created with the
// client and waited for until Running: the provisioner's overhead on a real node.
func BenchmarkStartOnNode(b *testing.B) {
	node = testenv.StartKubeNode(b)
	cfg, err := clientcmd.BuildConfigFromFlags("", node.Kubeconfig)
	if err != nil {
		b.Fatal(err)
	}
	nodeREST, nodeClient = cfg, k8s.NewForConfigOrDie(cfg)
	nodeImage = node.WorkloadImage(b)
	ctx := context.Background()
	b.Run("provisioner", func(b *testing.B) {
		ns := node.NewNamespace(b)
		p := provisionerIn(b, ns, nodeREST, func(c *Config) {
			c.HostAddress, c.ReadyTimeout, c.Logger = node.NodeIP, 60*time.Second, slog.New(slog.DiscardHandler)
		})
		for i := range b.N {
			spec := specFor(int64(i + 1))
			spec.Instance, spec.Mounts = p.cfg.Instance, nil
			spec.Image, spec.Protocol, spec.LogRegex = nodeImage, "http", `token=([0-9a-f]+)`
			if _, err := p.Start(ctx, spec); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := p.Remove(ctx, spec.Name()); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("direct pod", func(b *testing.B) {
		ns := node.NewNamespace(b)
		pods := nodeClient.CoreV1().Pods(ns)
		for i := range b.N {
			name := fmt.Sprintf("direct-%d", i)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "w", Image: nodeImage, ImagePullPolicy: corev1.PullIfNotPresent}},
			}}
			if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			for {
				got, err := pods.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if got.Status.Phase == corev1.PodRunning {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			b.StopTimer()
			if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				b.Fatal(err)
			}
			for {
				if _, err := pods.Get(ctx, name, metav1.GetOptions{}); err != nil {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			b.StartTimer()
		}
	})
}
