package kubernetes

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/calipsoplus/calipso/internal/testenv"
)

// TestNotebookLinkFromLog: a notebook's link carries the token its log printed. There
// is no kubelet here, so a node is registered whose kubelet endpoint is a small HTTPS
// server of the test: the real API server proxies the log request to it as it would
// to a kubelet, and the provisioner follows the log through the API as in production.
func TestNotebookLinkFromLog(t *testing.T) {
	ctx := context.Background()
	const token = "3f8a9c0d1e2b"
	var (
		mu      sync.Mutex
		logPath string
	)
	kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		logPath = r.URL.Path
		mu.Unlock()
		if !strings.HasPrefix(r.URL.Path, "/containerLogs/") {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "[I 10:00:00.000 NotebookApp] Serving notebooks from local directory: /results")
		fmt.Fprintf(w, "[I 10:00:00.001 NotebookApp] http://calipso-esrf-51:8888/?token=%s\n", token)
	}))
	defer kubelet.Close()
	_, port, err := net.SplitHostPort(kubelet.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	kubeletPort, _ := strconv.Atoi(port)

	ns := newNamespace(t, nil)
	nodeName := "node-" + strings.ToLower(testenv.RandomHex(4))
	node, err := kubeClient.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node: %v", err)
	}
	t.Cleanup(func() { _ = kubeClient.CoreV1().Nodes().Delete(context.Background(), nodeName, metav1.DeleteOptions{}) })
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(kubeletPort)
	if _, err := kubeClient.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("node status: %v", err)
	}

	p := provisionerIn(t, ns, kubeConfig, func(c *Config) { c.ReadyTimeout = 30 * time.Second })
	spec := specFor(51)
	spec.Protocol, spec.LogRegex = "http", `token=([0-9a-f]+)`

	// Play the scheduler and the kubelet: bind the pod to the node, report it running.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := kubeClient.CoreV1().Pods(ns).Get(ctx, spec.Name(), metav1.GetOptions{}); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		err := kubeClient.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: spec.Name()},
			Target:     corev1.ObjectReference{Kind: "Node", Name: nodeName},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Errorf("bind: %v", err)
			return
		}
		pod, err := kubeClient.CoreV1().Pods(ns).Get(ctx, spec.Name(), metav1.GetOptions{})
		if err != nil {
			t.Errorf("get pod: %v", err)
			return
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning,
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: containerName, Image: spec.Image, Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
		}
		if _, err := kubeClient.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			t.Errorf("pod status: %v", err)
		}
	}()

	inst, err := p.Start(ctx, spec)
	mu.Lock()
	asked := logPath
	mu.Unlock()
	if err != nil {
		t.Fatalf("Start: %v (the kubelet was asked for %q)", err, asked)
	}
	svc, err := kubeClient.CoreV1().Services(ns).Get(ctx, spec.Name(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("http://desk.example.org:%d/?token=%s", nodePort(t, svc, 8888), token)
	if inst.LogMatch != token || inst.URL != want {
		t.Fatalf("Start = token %q, URL %q; want %q, %q", inst.LogMatch, inst.URL, token, want)
	}
	if wantPath := "/containerLogs/" + ns + "/" + spec.Name() + "/" + containerName; asked != wantPath {
		t.Errorf("the log was asked at %q, want %q", asked, wantPath)
	}
}
