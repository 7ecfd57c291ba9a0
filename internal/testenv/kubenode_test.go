package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestKubeNode runs a pod of the test workload on a real node: Running, its log, its
// HTTP port through a NodePort on the node IP, a prompt deletion, and a teardown that
// leaves nothing behind.
func TestKubeNode(t *testing.T) {
	started := time.Now()
	n := StartKubeNode(t)
	t.Logf("node Ready in %s (NodeIP %s, namespace %s)", time.Since(started).Round(time.Millisecond), n.NodeIP, n.Namespace)

	cfg, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	image := n.WorkloadImage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A hostPath volume (how the provisioner mounts datasets), written by the workload.
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "probe"), []byte("dataset"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(data, 0o777); err != nil {
		t.Fatal(err)
	}
	hostDir := corev1.HostPathDirectory
	token := "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

	labels := map[string]string{"app": "workload"}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "workload", Labels: labels},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "workload", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
				Ports: []corev1.ContainerPort{{ContainerPort: 8888}},
				Env: []corev1.EnvVar{
					{Name: "READ_TEST", Value: "/data/probe," + token},
					{Name: "WRITE_TEST", Value: "/data/written"},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
			}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: data, Type: &hostDir},
			}}},
		},
	}
	created := time.Now()
	if _, err := cs.CoreV1().Pods(n.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := cs.CoreV1().Services(n.Namespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "workload"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, Selector: labels,
			Ports: []corev1.ServicePort{{Port: 8888, TargetPort: intstr.FromInt32(8888)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	var running *corev1.Pod
	for running == nil {
		p, err := cs.CoreV1().Pods(n.Namespace).Get(ctx, "workload", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get pod: %v\n%s", err, n.Logs())
		}
		if p.Status.Phase == corev1.PodRunning {
			running = p
			break
		}
		if p.Status.Phase == corev1.PodFailed || ctx.Err() != nil {
			t.Fatalf("pod %s: %+v\n%s", p.Status.Phase, p.Status, n.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("pod Running in %s, IP %s", time.Since(created).Round(time.Millisecond), running.Status.PodIP)

	// Its log: the identity line and the token line.
	var log string
	for !strings.Contains(log, "token=") {
		b, err := cs.CoreV1().Pods(n.Namespace).GetLogs("workload", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err == nil {
			log = string(b)
		}
		if ctx.Err() != nil {
			t.Fatalf("log has no token line: %q (%v)\n%s", log, err, n.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The image says USER 65534:65534; the kubelet passes only the user on (the group
	// of an image's USER is not used: a pod that wants one sets runAsGroup).
	if !strings.Contains(log, "uid=65534 gid=0") {
		t.Errorf("log: %q, want the identity uid=65534 gid=0", log)
	}

	for _, want := range []string{
		`read /data/probe: mode=-rw-r--r-- uid=0 gid=0 content="dataset"`,
		"write /data/written: ok",
		// The service account token's volume, a tmpfs that the kubelet mounts in its own
		// mount namespace, reaches the container.
		fmt.Sprintf("read %s: mode=-rw-r--r-- uid=0 gid=0 content=%q", token, n.Namespace),
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log: %q, want %q", log, want)
		}
	}
	if st, err := os.Stat(filepath.Join(data, "written")); err != nil {
		t.Errorf("the workload's file on the host: %v", err)
	} else if uid := st.Sys().(*syscall.Stat_t).Uid; uid != 65534 {
		t.Errorf("the workload's file belongs to %d, want 65534", uid)
	}

	// The pod has no default route: it reaches its subnet (the node IP) and nothing else.
	var workloadPIDs []int
	for _, pid := range pidsMatching(func(args []string) bool { return args[0] == "/workload" }) {
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if !strings.Contains(string(cg), kubeNodeCgroup) {
			continue // a Docker test's workload
		}
		workloadPIDs = append(workloadPIDs, pid)
		routes, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/route", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(routes), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 2 && f[1] == "00000000" {
				t.Errorf("the pod has a default route: %s", routes)
			}
		}
		t.Logf("the pod's routes:\n%s", routes)
	}

	// Its HTTP port through the NodePort, from the host, on the node IP.
	u := fmt.Sprintf("http://%s:%d/", n.NodeIP, svc.Spec.Ports[0].NodePort)
	client := &http.Client{Timeout: 2 * time.Second}
	var body string
	for {
		res, err := client.Get(u)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			body = string(b)
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("GET %s: %v %q\n%s", u, err, body, n.Logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(body, "calipso test workload") {
		t.Errorf("GET %s: %q", u, body)
	}
	// The pod's own address answers too.
	if res, err := client.Get(fmt.Sprintf("http://%s:8888/", running.Status.PodIP)); err != nil {
		t.Errorf("GET the pod IP: %v", err)
	} else {
		res.Body.Close()
	}

	// A second pod (which stays for the teardown to clean): the first reaches it, and
	// the kubernetes Service, from its own network namespace; not the host's other
	// addresses.
	peer := pod.DeepCopy()
	peer.Name, peer.Labels = "peer", nil
	if _, err := cs.CoreV1().Pods(n.Namespace).Create(ctx, peer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var peerIP string
	for peerIP == "" {
		p, err := cs.CoreV1().Pods(n.Namespace).Get(ctx, peer.Name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			peerIP = p.Status.PodIP
		}
		if ctx.Err() != nil {
			t.Fatalf("second pod not Running\n%s", n.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(workloadPIDs) == 0 {
		t.Fatal("no process of the workload in the node's cgroups")
	}
	if reply, err := fromNetns(workloadPIDs[0], net.JoinHostPort(peerIP, "8888"), "GET / HTTP/1.0\r\n\r\n"); err != nil || !strings.Contains(reply, "calipso test workload") {
		t.Errorf("pod to pod %s: %q, %v", peerIP, reply, err)
	}
	if _, err := fromNetns(workloadPIDs[0], net.JoinHostPort(kubeServiceIP, "443"), ""); err != nil {
		t.Errorf("pod to the kubernetes Service %s: %v", kubeServiceIP, err)
	}
	for _, ip := range hostAddresses(t) {
		if _, err := fromNetns(workloadPIDs[0], net.JoinHostPort(ip, "22"), ""); err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("pod to the host's %s: %v, want the network unreachable", ip, err)
		}
	}

	// Deletion: the workload ends on SIGTERM, well before the 30 s grace period.
	deleted := time.Now()
	if err := cs.CoreV1().Pods(n.Namespace).Delete(ctx, "workload", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := cs.CoreV1().Pods(n.Namespace).Get(ctx, "workload", metav1.GetOptions{})
		if err != nil && strings.Contains(err.Error(), "not found") {
			break
		}
		if time.Since(deleted) > 20*time.Second {
			t.Fatalf("pod still there %s after its deletion\n%s", time.Since(deleted), n.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("pod gone %s after its deletion", time.Since(deleted).Round(time.Millisecond))

	stopped := time.Now()
	n.stop()
	t.Logf("teardown in %s", time.Since(stopped).Round(time.Millisecond))
	if left := kubeNodeLeftovers(n); len(left) > 0 {
		t.Errorf("the teardown left:\n%s", strings.Join(left, "\n"))
	}
}

// fromNetns connects to addr from the network namespace of process pid, sends req
// (when not empty) and returns what comes back.
func fromNetns(pid int, addr, req string) (string, error) {
	type result struct {
		reply string
		err   error
	}
	done := make(chan result, 1)
	go func() {
		// The thread goes back to the host's namespace; if it cannot, it stays locked
		// and ends with the goroutine.
		runtime.LockOSThread()
		host, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer host.Close()
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		defer func() {
			if unix.Setns(int(host.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			}
		}()
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		if req == "" {
			done <- result{}
			return
		}
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(c)
		done <- result{string(b), err}
	}()
	r := <-done
	return r.reply, r.err
}

// hostAddresses returns the host's IPv4 addresses outside the node's bridge and loopback.
func hostAddresses(t *testing.T) []string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	_, pods, _ := net.ParseCIDR(kubeNodeSubnet)
	var ips []string
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() && !pods.Contains(ipn.IP) {
			ips = append(ips, ipn.IP.String())
		}
	}
	return ips
}
