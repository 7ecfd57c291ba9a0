package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fixed names of the node: one runs on a machine at a time (kube-proxy's nftables
// tables have fixed names), serialized across test binaries by a file lock.
const (
	kubeNodeName   = "calipso-node"
	kubeNodeBridge = "calipso-kn0"
	kubeNodeCgroup = "calipso-kubenode" // the kubelet's cgroupRoot, in every v1 hierarchy
	kubeNodeSubnet = "10.213.77.0/24"   // pods, on the private bridge
	kubeNodeIP     = "10.213.77.1"      // the bridge's own address: the node IP
	kubeServiceNet = "10.213.78.0/24"   // ClusterIPs (virtual, kube-proxy's nftables only)
	kubeServiceIP  = "10.213.78.1"      // the kubernetes Service
	// kubeNodeDir holds everything of the node (state, sockets, logs); a fixed short
	// path, so that a later start finds what a killed test binary left, and the unix
	// sockets under it stay within their length limit.
	kubeNodeDir  = "/tmp/calipso-kubenode"
	kubeNodeLock = "/tmp/calipso-kubenode.lock"
	// kubePauseRepository is the sandbox image of the node's containerd (a static
	// program that sleeps until SIGTERM), imported at start.
	kubePauseRepository = "calipso.local/pause"
	// KubeWorkloadRepository is the repository of the test workload image in the node's
	// containerd (the same program as WorkloadRepository on Docker).
	KubeWorkloadRepository = "calipso.local/calipso-test-workload"
)

// KubeNode is a private single-node cluster: etcd, kube-apiserver, controller-manager,
// scheduler, a private containerd, kubelet, kube-proxy; stopped and cleaned at t.Cleanup.
//
// What a test sees:
//   - Network: pods get an address on a private bridge (kubeNodeSubnet, 10.213.77.0/24;
//     the node IP 10.213.77.1 is the bridge's) with no default route and no masquerade:
//     they reach the node IP (the API server, the kubelet, NodePorts), each other and
//     the ClusterIPs (10.213.78.0/24; the kubernetes Service is 10.213.78.1), nothing
//     else: not the host's other addresses, not beyond the machine. There is no DNS
//     (no CoreDNS, an empty resolv.conf). From the host, NodePorts answer on NodeIP
//     only (not on 127.0.0.1), pod IPs and ClusterIPs directly.
//   - Images are never pulled (no registry): import them (WorkloadImage, ImportTarball)
//     and use pull policy IfNotPresent or Never.
//   - Users: the kubelet passes only the user of an image's USER (uid:gid) to the
//     runtime: without runAsGroup the container's group is 0.
//   - Volumes: hostPath works (the kubelet runs in a mount namespace of its own, but
//     the containers are made by containerd in the host's, and the kubelet's root is
//     a shared mount, so emptyDir, secrets and service account tokens reach them).
//   - Cgroups: cgroupfs driver on cgroup v1, pods under /calipso-kubenode/kubepods in
//     every hierarchy (outside the test's own cgroup); limits are enforced there.
//   - One node at a time per machine (fixed names, a lock in /tmp); everything of it
//     lives under /tmp/calipso-kubenode, removed by the teardown.
type KubeNode struct {
	Kubeconfig string // path of an admin kubeconfig
	NodeIP     string // the bridge address: NodePorts and pod IPs are reached from the host here
	Namespace  string // a fresh namespace for the test

	dir      string // everything of this node: state, sockets, logs
	bins     string // kubelet, kube-controller-manager, kube-scheduler, kube-proxy
	assets   string // etcd, kube-apiserver
	sock     string // the private containerd's socket
	apiURL   string
	http     *http.Client
	procs    []*kubeProc
	lock     *os.File
	tablesAt map[string]bool // nft tables before the start
	stopOnce sync.Once
}

type kubeProc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error
}

// StartKubeNode starts the cluster (Missing(t, ...) when the parts are absent: skip on a
// laptop, fail under CI) with a fresh namespace, and stops it and removes every trace
// of it when the test ends. Each call starts its own cluster (about 10 s); calls from
// parallel tests or other test binaries wait for each other (at most 10 minutes).
func StartKubeNode(t testing.TB) *KubeNode {
	t.Helper()
	bins, assets := os.Getenv("CALIPSO_TEST_KUBE_NODE"), os.Getenv("KUBEBUILDER_ASSETS")
	if bins == "" {
		Missing(t, "kubelet, kube-controller-manager, kube-scheduler and kube-proxy", "CALIPSO_TEST_KUBE_NODE is not set (deploy/test.d/kube-node.sh builds them)")
	}
	if assets == "" {
		Missing(t, "kube-apiserver and etcd", "KUBEBUILDER_ASSETS is not set (deploy/test.d/kube-assets.sh builds them)")
	}
	for _, p := range []string{filepath.Join(bins, "kubelet"), filepath.Join(bins, "kube-controller-manager"),
		filepath.Join(bins, "kube-scheduler"), filepath.Join(bins, "kube-proxy"),
		filepath.Join(assets, "etcd"), filepath.Join(assets, "kube-apiserver")} {
		if _, err := os.Stat(p); err != nil {
			Missing(t, filepath.Base(p), err.Error())
		}
	}
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nft", "ip", "unshare", "mount", "findmnt"} {
		if _, err := exec.LookPath(tool); err != nil {
			Missing(t, tool, err.Error())
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, plugin)); err != nil {
			Missing(t, "CNI plugin "+plugin, err.Error()+" (containernetworking-plugins)")
		}
	}
	if os.Geteuid() != 0 {
		Missing(t, "a Kubernetes node", "it needs root (mounts, cgroups, a bridge)")
	}

	lock, err := lockKubeNode(10 * time.Minute)
	if err != nil {
		t.Fatalf("kube node: %v", err)
	}
	var n *KubeNode
	var last error
	for attempt := 1; attempt <= 3; attempt++ {
		n = &KubeNode{
			dir:    kubeNodeDir,
			bins:   bins,
			assets: assets,
			NodeIP: kubeNodeIP,
			lock:   lock,
		}
		n.sock = filepath.Join(n.dir, "containerd", "containerd.sock")
		if last = n.start(t); last == nil {
			break
		}
		t.Logf("kube node: start %d failed: %v\n%s", attempt, last, n.Logs())
		n.teardown()
	}
	if last != nil {
		_ = lock.Close()
		t.Fatalf("kube node: %v", last)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube node logs:\n%s", n.Logs())
		}
		n.stop()
	})
	n.Namespace = n.NewNamespace(t)
	return n
}

// NewNamespace makes another fresh namespace (with its default service account), for
// subtests that share one node, and deletes it when t ends.
func (n *KubeNode) NewNamespace(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := "t-" + RandomHex(4)
	if err := n.createNamespace(ctx, ns); err != nil {
		t.Fatalf("kube node: %v\n%s", err, n.Logs())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.api(ctx, http.MethodDelete, "/api/v1/namespaces/"+ns, nil, nil) // a stopped node is gone anyway
	})
	return ns
}

const cniBinDir = "/usr/lib/cni"

// lockKubeNode takes the machine-wide lock of the node (released when the process
// ends, however it ends).
func lockKubeNode(timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(kubeNodeLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another Kubernetes node runs on this machine (lock %s): %v", f.Name(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// start brings the node up; on an error the caller tears down what was started.
func (n *KubeNode) start(t testing.TB) error {
	t.Helper()
	n.teardown() // what a killed test binary left behind
	n.tablesAt = nftTables()
	for _, d := range []string{"pki", "logs", "etcd", "kubelet", "pod-logs", "shadow", "sysctl", "cni/net.d", "cni/ipam", "containerd/root", "containerd/state", "containerd/opt", "containerd/runc"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o700); err != nil {
			return err
		}
	}
	if err := n.checkSubnet(); err != nil {
		return err
	}
	if err := n.writePKI(); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	ports, err := freePorts(6)
	if err != nil {
		return err
	}
	etcdPort, peerPort, apiPort, kubeletPort, proxyHealth, proxyMetrics := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	n.apiURL = fmt.Sprintf("https://%s:%d", n.NodeIP, apiPort)
	if err := n.writeKubeconfigs(); err != nil {
		return err
	}

	// The bridge first: its address is the node IP, where the API server listens.
	if err := run("ip", "link", "add", kubeNodeBridge, "type", "bridge"); err != nil {
		return err
	}
	if err := run("ip", "addr", "add", kubeNodeIP+"/24", "dev", kubeNodeBridge); err != nil {
		return err
	}
	if err := run("ip", "link", "set", kubeNodeBridge, "up"); err != nil {
		return err
	}
	// ClusterIPs that kube-proxy does not translate go to the bridge, never to the
	// host's default route.
	if err := run("ip", "route", "add", kubeServiceNet, "dev", kubeNodeBridge); err != nil {
		return err
	}
	// Docker sets the FORWARD policy to DROP, and with br_netfilter even the frames
	// between two pods of the bridge go through it: accept those (only those).
	if forwardDrops() {
		if err := run("iptables", append([]string{"-w", "5", "-I", "FORWARD", "1"}, forwardRule...)...); err != nil {
			return err
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	etcd, err := n.spawn("etcd", filepath.Join(n.assets, "etcd"),
		"--name=default", "--data-dir="+filepath.Join(n.dir, "etcd"),
		fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", etcdPort),
		fmt.Sprintf("--advertise-client-urls=http://127.0.0.1:%d", etcdPort),
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", peerPort),
		fmt.Sprintf("--initial-cluster=default=http://127.0.0.1:%d", peerPort),
		"--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	if err := n.waitHTTP(ctx, etcd, fmt.Sprintf("http://127.0.0.1:%d/health", etcdPort), http.DefaultClient); err != nil {
		return err
	}

	pki := func(f string) string { return filepath.Join(n.dir, "pki", f) }
	api, err := n.spawn("kube-apiserver", filepath.Join(n.assets, "kube-apiserver"),
		fmt.Sprintf("--etcd-servers=http://127.0.0.1:%d", etcdPort),
		"--bind-address="+n.NodeIP, "--advertise-address="+n.NodeIP, fmt.Sprintf("--secure-port=%d", apiPort),
		"--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki("sa.pub"), "--service-account-signing-key-file="+pki("sa.key"),
		"--service-cluster-ip-range="+kubeServiceNet,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true",
		"--kubelet-client-certificate="+pki("apiserver-kubelet.crt"), "--kubelet-client-key="+pki("apiserver-kubelet.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--cert-dir="+filepath.Join(n.dir, "pki", "apiserver"), "--profiling=false")
	if err != nil {
		return err
	}
	if err := n.waitHTTP(ctx, api, n.apiURL+"/readyz", n.http); err != nil {
		return err
	}

	// The private containerd, then the pause image it makes sandboxes of.
	pause, err := pauseTarball()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.dir, "containerd", "config.toml"), []byte(n.containerdConfig(pause.ref)), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.dir, "cni", "net.d", "10-calipso.conflist"), []byte(n.cniConfig()), 0o600); err != nil {
		return err
	}
	ctrd, err := n.spawn("containerd", "containerd", "--config", filepath.Join(n.dir, "containerd", "config.toml"))
	if err != nil {
		return err
	}
	if err := n.waitFor(ctx, ctrd, "containerd's socket", func() error {
		return exec.CommandContext(ctx, "ctr", "--address", n.sock, "version").Run()
	}); err != nil {
		return err
	}
	if err := n.importTarball(ctx, pause.path); err != nil {
		return err
	}

	for name, args := range map[string][]string{
		"kube-controller-manager": {"--kubeconfig=" + n.Kubeconfig, "--secure-port=0", "--leader-elect=false",
			"--service-account-private-key-file=" + pki("sa.key"), "--root-ca-file=" + pki("ca.crt"),
			"--service-cluster-ip-range=" + kubeServiceNet, "--allocate-node-cidrs=false", "--controllers=*",
			"--flex-volume-plugin-dir=" + filepath.Join(n.dir, "kcm-flexvolume")},
		"kube-scheduler": {"--kubeconfig=" + n.Kubeconfig, "--secure-port=0", "--leader-elect=false"},
	} {
		if _, err := n.spawn(name, filepath.Join(n.bins, name), args...); err != nil {
			return err
		}
	}

	// The kubelet, in a mount namespace of its own where the host sysctls it would
	// check (and, without protectKernelDefaults, rewrite) read as it wants them, and
	// /var/log/containers is a private folder. Its root folder is a shared mount, so
	// the volumes it mounts there reach containerd in the host's namespace.
	kubeletDir := filepath.Join(n.dir, "kubelet")
	if err := run("mount", "--bind", kubeletDir, kubeletDir); err != nil {
		return err
	}
	if err := run("mount", "--make-rshared", kubeletDir); err != nil {
		return err
	}
	if err := makeCgroupRoot(); err != nil {
		return err
	}
	if err := makeShadowPoints(); err != nil {
		return err
	}
	script, err := n.kubeletMounts()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(n.dir, "kubelet.yaml"), []byte(n.kubeletConfig(kubeletPort)), 0o600); err != nil {
		return err
	}
	kubelet, err := n.spawn("kubelet", "unshare", "-m", "--propagation", "unchanged", "--", "/bin/sh", "-ec", script, "kubelet",
		filepath.Join(n.bins, "kubelet"), "--config="+filepath.Join(n.dir, "kubelet.yaml"),
		"--kubeconfig="+filepath.Join(n.dir, "kubelet.kubeconfig"), "--root-dir="+kubeletDir,
		"--cert-dir="+filepath.Join(n.dir, "pki", "kubelet"),
		"--hostname-override="+kubeNodeName, "--node-ip="+n.NodeIP, "--v=2")
	if err != nil {
		return err
	}

	if err := os.WriteFile(filepath.Join(n.dir, "kube-proxy.yaml"), []byte(n.proxyConfig(proxyHealth, proxyMetrics)), 0o600); err != nil {
		return err
	}
	proxy, err := n.spawn("kube-proxy", filepath.Join(n.bins, "kube-proxy"), "--config="+filepath.Join(n.dir, "kube-proxy.yaml"))
	if err != nil {
		return err
	}

	if err := n.waitFor(ctx, kubelet, "the node to be Ready", func() error { return n.nodeReady(ctx) }); err != nil {
		return err
	}
	if err := n.waitHTTP(ctx, proxy, fmt.Sprintf("http://127.0.0.1:%d/healthz", proxyHealth), http.DefaultClient); err != nil {
		return err
	}
	return nil
}

// checkSubnet refuses to start when an interface of the machine other than ours
// already has an address in the node's networks.
func (n *KubeNode) checkSubnet() error {
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	_, pods, _ := net.ParseCIDR(kubeNodeSubnet)
	_, services, _ := net.ParseCIDR(kubeServiceNet)
	for _, iface := range ifaces {
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (pods.Contains(ipn.IP) || services.Contains(ipn.IP)) {
				return fmt.Errorf("interface %s already has %s, in the node's networks %s and %s", iface.Name, ipn, kubeNodeSubnet, kubeServiceNet)
			}
		}
	}
	return nil
}

// kubeletMounts returns the script run in the kubelet's own mount namespace before
// it execs the kubelet ("$@").
func (n *KubeNode) kubeletMounts() (string, error) {
	var b strings.Builder
	b.WriteString("mount --make-rprivate /proc\n")
	// The tunables the kubelet checks (protectKernelDefaults: it fails on a different
	// value instead of writing it): private copies with the values it expects.
	for _, s := range []struct {
		path string
		want int
	}{
		{"vm/overcommit_memory", 1}, {"vm/panic_on_oom", 0}, {"kernel/panic", 10}, {"kernel/panic_on_oops", 1},
		{"kernel/keys/root_maxkeys", 1000000}, {"kernel/keys/root_maxbytes", 25000000},
	} {
		target := "/proc/sys/" + s.path
		cur, err := os.ReadFile(target)
		if err != nil {
			continue // the kubelet does not find it either, and says so
		}
		if strings.TrimSpace(string(cur)) == strconv.Itoa(s.want) {
			continue
		}
		copyPath := filepath.Join(n.dir, "sysctl", strings.ReplaceAll(s.path, "/", "."))
		if err := os.WriteFile(copyPath, []byte(strconv.Itoa(s.want)+"\n"), 0o644); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "mount --bind %s %s\n", copyPath, target)
	}
	// The host folders the kubelet writes to whatever its configuration says.
	for i, dir := range kubeletShadows {
		private := filepath.Join(n.dir, "shadow", strconv.Itoa(i))
		if err := os.MkdirAll(private, 0o755); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "mount --make-private \"$(findmnt -n -o TARGET -T %s)\"\n", dir)
		fmt.Fprintf(&b, "mount --bind %s %s\n", private, dir)
	}
	b.WriteString("exec \"$@\"\n")
	return b.String(), nil
}

func (n *KubeNode) containerdConfig(pause string) string {
	d := filepath.Join(n.dir, "containerd")
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[ttrpc]
  address = ""

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_cdi = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = %[8]q
        SystemdCgroup = false
`, filepath.Join(d, "root"), filepath.Join(d, "state"), n.sock, filepath.Join(d, "opt"), pause,
		cniBinDir, filepath.Join(n.dir, "cni", "net.d"), filepath.Join(d, "runc"))
}

// cniConfig: a bridge with no default route and no masquerade; host-local addresses.
func (n *KubeNode) cniConfig() string {
	cfg := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "calipso-kubenode",
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": kubeNodeBridge, "isGateway": false, "ipMasq": false, "hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": []any{[]any{map[string]any{"subnet": kubeNodeSubnet, "gateway": kubeNodeIP}}},
					// No default route: the pod's subnet (with the node IP) and the ClusterIPs only.
					"routes":  []any{map[string]any{"dst": kubeServiceNet, "gw": kubeNodeIP}},
					"dataDir": filepath.Join(n.dir, "cni", "ipam"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

func (n *KubeNode) kubeletConfig(port int) string {
	pki := func(f string) string { return filepath.Join(n.dir, "pki", f) }
	cfg := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"failCgroupV1":             false,
		"cgroupDriver":             "cgroupfs",
		"cgroupRoot":               "/" + kubeNodeCgroup,
		"containerRuntimeEndpoint": "unix://" + n.sock,
		"address":                  n.NodeIP,
		"port":                     port,
		"readOnlyPort":             0,
		"healthzPort":              0,
		"tlsCertFile":              pki("kubelet-serving.crt"),
		"tlsPrivateKeyFile":        pki("kubelet-serving.key"),
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": false},
			"x509":      map[string]any{"clientCAFile": pki("ca.crt")},
		},
		"authorization":               map[string]any{"mode": "AlwaysAllow"},
		"makeIPTablesUtilChains":      false,
		"protectKernelDefaults":       true,
		"failSwapOn":                  false,
		"oomScoreAdj":                 0,
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard": map[string]string{
			"memory.available": "1Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%", "imagefs.available": "1%",
		},
		"podLogsDir":                filepath.Join(n.dir, "pod-logs"),
		"volumePluginDir":           filepath.Join(n.dir, "kubelet", "volume-plugins"),
		"resolvConf":                "",
		"clusterDomain":             "cluster.local",
		"serializeImagePulls":       false,
		"nodeStatusUpdateFrequency": "2s",
		"syncFrequency":             "10s",
		"shutdownGracePeriod":       "0s",
		"enableSystemLogHandler":    false,
		"enableDebuggingHandlers":   true, // logs and exec go through the kubelet's server
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

func (n *KubeNode) proxyConfig(health, metrics int) string {
	cfg := map[string]any{
		"apiVersion":         "kubeproxy.config.k8s.io/v1alpha1",
		"kind":               "KubeProxyConfiguration",
		"mode":               "nftables",
		"clientConnection":   map[string]any{"kubeconfig": n.Kubeconfig},
		"hostnameOverride":   kubeNodeName,
		"bindAddress":        n.NodeIP,
		"healthzBindAddress": fmt.Sprintf("127.0.0.1:%d", health),
		"metricsBindAddress": fmt.Sprintf("127.0.0.1:%d", metrics),
		"clusterCIDR":        kubeNodeSubnet,
		"detectLocalMode":    "ClusterCIDR",
		"nodePortAddresses":  []string{kubeNodeIP + "/32"},
		"oomScoreAdj":        0,
		// No conntrack tuning: the host's sysctls stay as they are.
		"conntrack": map[string]any{"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s",
			"udpTimeout": "0s", "udpStreamTimeout": "0s"},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

// spawn starts a component with its output in logs/<name>.log; it dies with the test
// process (SIGKILL), whatever ends that.
func (n *KubeNode) spawn(name string, bin string, args ...string) (*kubeProc, error) {
	logPath := filepath.Join(n.dir, "logs", name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + n.dir, "TMPDIR=" + n.dir}
	cmd.Dir = n.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := startOnSpawnerThread(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &kubeProc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	n.procs = append(n.procs, p)
	return p, nil
}

// The components are forked from one thread that lives as long as the process: the
// kernel sends Pdeathsig when the forking thread ends, and Go ends a thread whose
// goroutine exits locked to it (runtime.LockOSThread anywhere in a test).
var spawner struct {
	once sync.Once
	work chan func()
}

func startOnSpawnerThread(cmd *exec.Cmd) error {
	spawner.once.Do(func() {
		spawner.work = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked, never returns
			for f := range spawner.work {
				f()
			}
		}()
	})
	done := make(chan error, 1)
	spawner.work <- func() { done <- cmd.Start() }
	return <-done
}

// waitFor polls check every 100 ms until it succeeds, ctx ends or p exits.
func (n *KubeNode) waitFor(ctx context.Context, p *kubeProc, what string, check func() error) error {
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited (%v) before %s", p.name, p.err, what)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %v", what, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *KubeNode) waitHTTP(ctx context.Context, p *kubeProc, u string, c *http.Client) error {
	return n.waitFor(ctx, p, u+" to answer", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		res, err := c.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s: %s", u, res.Status, body)
		}
		return nil
	})
}

// api does one call of the Kubernetes API as the admin; a status other than 2xx is an
// error of type *kubeAPIError.
func (n *KubeNode) api(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.apiURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	res, err := n.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	if err != nil {
		return err
	}
	if res.StatusCode/100 != 2 {
		return &kubeAPIError{code: res.StatusCode, msg: fmt.Sprintf("%s %s: %s: %s", method, path, res.Status, bytes.TrimSpace(b))}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type kubeAPIError struct {
	code int
	msg  string
}

func (e *kubeAPIError) Error() string { return e.msg }

func (n *KubeNode) nodeReady(ctx context.Context) error {
	var node struct {
		Spec struct {
			Taints []struct{ Key string } `json:"taints"`
		} `json:"spec"`
		Status struct {
			Conditions []struct{ Type, Status, Reason, Message string } `json:"conditions"`
		} `json:"status"`
	}
	if err := n.api(ctx, http.MethodGet, "/api/v1/nodes/"+kubeNodeName, nil, &node); err != nil {
		return err
	}
	for _, c := range node.Status.Conditions {
		if c.Type == "Ready" {
			if c.Status != "True" {
				return fmt.Errorf("node not Ready: %s: %s", c.Reason, c.Message)
			}
			// The node lifecycle controller removes its not-ready taint a moment later:
			// until then the scheduler would not place a pod.
			for _, taint := range node.Spec.Taints {
				return fmt.Errorf("node Ready, still tainted %s", taint.Key)
			}
			return nil
		}
	}
	return errors.New("node has no Ready condition yet")
}

// createNamespace makes ns and waits for its default service account (the admission
// of a pod needs it).
func (n *KubeNode) createNamespace(ctx context.Context, ns string) error {
	if err := n.api(ctx, http.MethodPost, "/api/v1/namespaces", map[string]any{
		"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns},
	}, nil); err != nil {
		return err
	}
	var last error
	for {
		if last = n.api(ctx, http.MethodGet, "/api/v1/namespaces/"+ns+"/serviceaccounts/default", nil, nil); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("namespace %s has no default service account: %v", ns, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Logs returns the tail of every component's log, for failure messages.
func (n *KubeNode) Logs() string {
	var b strings.Builder
	names := []string{"etcd", "kube-apiserver", "containerd", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(n.dir, "logs", name+".log"))
		if err != nil {
			continue
		}
		state := ""
		for _, p := range n.procs {
			if p.name == name {
				select {
				case <-p.exited:
					state = fmt.Sprintf(", EXITED: %v", p.err)
				default:
				}
			}
		}
		fmt.Fprintf(&b, "--- %s (last lines%s)\n%s\n", name, state, tail(string(data), 25))
	}
	return b.String()
}

// ImportTarball imports an image tarball (docker-save or OCI layout) into the node's
// containerd.
func (n *KubeNode) ImportTarball(t testing.TB, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := n.importTarball(ctx, path); err != nil {
		t.Fatalf("kube node: %v", err)
	}
}

func (n *KubeNode) importTarball(ctx context.Context, path string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.sock, "-n", "k8s.io", "images", "import", "--snapshotter", "overlayfs", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", path, err, out)
	}
	return nil
}

// WorkloadImage builds (if needed) and imports into the node's containerd the image of
// the project's test workload, returning its reference (pull policy IfNotPresent). The
// image is the one WorkloadImage makes for Docker (/workload, user 65534:65534, ports
// 5901, 3389 and 8888), written as a docker-save tarball without Docker.
func (n *KubeNode) WorkloadImage(t testing.TB) string {
	t.Helper()
	img, err := workloadTarball()
	if err != nil {
		t.Fatalf("test workload image: %v", err)
	}
	n.ImportTarball(t, img.path)
	return img.ref
}

type imageTarball struct{ ref, path string }

var kubeImages struct {
	mu    sync.Mutex
	built map[string]imageTarball
}

func workloadTarball() (imageTarball, error) {
	src, err := workloadSource()
	if err != nil {
		return imageTarball{}, err
	}
	source, err := os.ReadFile(filepath.Join(src, "main.go"))
	if err != nil {
		return imageTarball{}, fmt.Errorf("read workload source: %w", err)
	}
	return cachedImage(KubeWorkloadRepository, workloadDockerfile+string(source), func(ctx context.Context) ([]byte, error) {
		return buildWorkload(ctx, src)
	}, imageConfig{entrypoint: "/workload", binary: "workload", user: "65534:65534", ports: []string{"5901/tcp", "3389/tcp", "8888/tcp"}})
}

// pauseSource is the sandbox's program: it sleeps until SIGTERM (or SIGINT).
const pauseSource = `package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
`

func pauseTarball() (imageTarball, error) {
	return cachedImage(kubePauseRepository, pauseSource, func(ctx context.Context) ([]byte, error) {
		dir, err := os.MkdirTemp("", "calipso-pause-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module calipso.local/pause\n\ngo 1.21\n"), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(pauseSource), 0o644); err != nil {
			return nil, err
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", "pause", ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOWORK=off", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build pause: %w: %s", err, out)
		}
		return os.ReadFile(filepath.Join(dir, "pause"))
	}, imageConfig{entrypoint: "/pause", binary: "pause", user: "65535:65535"})
}

type imageConfig struct {
	entrypoint, binary, user string
	ports                    []string
}

// cachedImage returns the docker-save tarball of a FROM scratch image of one static
// binary, tagged with a hash of what it is made from, built once and kept under the
// cache folder (${CALIPSO_CACHE:-~/.cache/calipso}/kube/images).
func cachedImage(repo, recipe string, build func(context.Context) ([]byte, error), cfg imageConfig) (imageTarball, error) {
	kubeImages.mu.Lock()
	defer kubeImages.mu.Unlock()
	h := sha256Hex(fmt.Sprintf("%s\n%s\n%+v\n%s", goVersion(), repo, cfg, recipe))[:16]
	ref := repo + ":" + h
	if img, ok := kubeImages.built[ref]; ok {
		return img, nil
	}
	cache := os.Getenv("CALIPSO_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return imageTarball{}, err
		}
		cache = filepath.Join(home, ".cache", "calipso")
	}
	dir := filepath.Join(cache, "kube", "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return imageTarball{}, err
	}
	img := imageTarball{ref: ref, path: filepath.Join(dir, strings.ReplaceAll(strings.TrimPrefix(repo, "calipso.local/"), "/", "_")+"-"+h+".tar")}
	if _, err := os.Stat(img.path); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		binary, err := build(ctx)
		if err != nil {
			return imageTarball{}, err
		}
		tarball, err := dockerArchive(ref, binary, cfg)
		if err != nil {
			return imageTarball{}, err
		}
		tmp := img.path + ".tmp" + RandomHex(4)
		if err := os.WriteFile(tmp, tarball, 0o644); err != nil {
			return imageTarball{}, err
		}
		if err := os.Rename(tmp, img.path); err != nil {
			os.Remove(tmp)
			return imageTarball{}, err
		}
	}
	if kubeImages.built == nil {
		kubeImages.built = map[string]imageTarball{}
	}
	kubeImages.built[ref] = img
	return img, nil
}

func goVersion() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func sha256Hex(s string) string {
	return sha256Sum([]byte(s))
}

// run runs a command and returns its output in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// stop tears the node down (once): pods first, so that their sandboxes are undone by
// the runtime itself, then every component, then whatever is left.
func (n *KubeNode) stop() {
	n.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if n.http != nil && n.running("kubelet") && n.running("kube-apiserver") {
			n.deleteAllPods(ctx)
		}
		for _, name := range []string{"kube-proxy", "kube-scheduler", "kube-controller-manager", "kubelet"} {
			n.stopProc(name)
		}
		n.killCgroups()
		for _, name := range []string{"containerd", "kube-apiserver", "etcd"} {
			n.stopProc(name)
		}
		n.teardown()
		if n.lock != nil {
			n.lock.Close()
		}
	})
}

func (n *KubeNode) running(name string) bool {
	for _, p := range n.procs {
		if p.name == name {
			select {
			case <-p.exited:
				return false
			default:
				return true
			}
		}
	}
	return false
}

// deleteAllPods deletes every pod (a short grace period: test images end on SIGTERM)
// and waits until they are gone.
func (n *KubeNode) deleteAllPods(ctx context.Context) {
	var list struct {
		Items []struct {
			Metadata struct{ Name, Namespace string } `json:"metadata"`
		} `json:"items"`
	}
	for {
		if err := n.api(ctx, http.MethodGet, "/api/v1/pods", nil, &list); err != nil || len(list.Items) == 0 {
			return
		}
		for _, p := range list.Items {
			_ = n.api(ctx, http.MethodDelete, "/api/v1/namespaces/"+p.Metadata.Namespace+"/pods/"+p.Metadata.Name,
				map[string]any{"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 2}, nil)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (n *KubeNode) stopProc(name string) {
	for _, p := range n.procs {
		if p.name != name {
			continue
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		// Whatever it started in its process group (none of them should).
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// teardown removes everything of a node by its fixed names, whether this process
// started it or a killed one did: it runs before a start and after a stop.
func (n *KubeNode) teardown() {
	for _, p := range n.procs {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	n.killCgroups()
	// Processes of an earlier node (a killed test binary's), and the shims of our
	// containerd, found by their command lines.
	shimSockets := n.shimSockets()
	for _, pid := range pidsMatching(func(args []string) bool {
		for i, a := range args {
			if strings.HasPrefix(a, n.dir+"/") || (a == "-address" && i+1 < len(args) && args[i+1] == n.sock) {
				return true
			}
		}
		return false
	}) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, s := range shimSockets {
		_ = os.Remove(s)
	}
	n.killCgroups()
	unmountUnder(n.dir)
	_ = exec.Command("ip", "link", "del", kubeNodeBridge).Run() // and the route through it
	for range 10 {
		if _, err := exec.LookPath("iptables"); err != nil || exec.Command("iptables", append([]string{"-w", "5", "-D", "FORWARD"}, forwardRule...)...).Run() != nil {
			break
		}
	}
	n.deleteTables()
	removeCgroups()
	_ = os.RemoveAll(n.dir)
	removeShadowPoints()
}

// forwardRule accepts what goes from the node's bridge to the node's bridge.
var forwardRule = []string{"-i", kubeNodeBridge, "-o", kubeNodeBridge, "-m", "comment", "--comment", "calipso-kubenode", "-j", "ACCEPT"}

// forwardDrops says whether iptables' FORWARD chain drops by default (Docker's doing).
func forwardDrops() bool {
	if _, err := exec.LookPath("iptables"); err != nil {
		return false
	}
	out, err := exec.Command("iptables", "-w", "5", "-S", "FORWARD").Output()
	return err == nil && bytes.Contains(out, []byte("-P FORWARD DROP"))
}

// kubeletShadows are the host folders that the kubelet writes to whatever its
// configuration says (the legacy log symlinks, the device plugins' socket, the flex
// volume plugins): in its mount namespace each is a private folder of the node.
var kubeletShadows = []string{"/var/log/containers", "/var/lib/kubelet", "/usr/libexec/kubernetes"}

// shadowsMade lists the folders that makeShadowPoints made on the host (it outlives a
// killed test binary, so that the next teardown removes them).
var shadowsMade = kubeNodeDir + ".made"

// makeShadowPoints makes the kubeletShadows folders that the host lacks, as mount
// points, and notes them for removeShadowPoints.
func makeShadowPoints() error {
	var made []string
	for _, dir := range kubeletShadows {
		var missing []string
		for d := dir; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Stat(d); err == nil {
				break
			}
			missing = append(missing, d)
		}
		for i := len(missing) - 1; i >= 0; i-- {
			if err := os.Mkdir(missing[i], 0o755); err != nil {
				return err
			}
			made = append(made, missing[i])
		}
	}
	f, err := os.OpenFile(shadowsMade, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, d := range made {
		fmt.Fprintln(f, d)
	}
	return nil
}

// removeShadowPoints removes the folders makeShadowPoints made, when they are empty.
func removeShadowPoints() {
	b, err := os.ReadFile(shadowsMade)
	if err != nil {
		return
	}
	lines := strings.Fields(string(b))
	for i := len(lines) - 1; i >= 0; i-- {
		_ = os.Remove(lines[i]) // deepest first; a folder with something in it stays
	}
	_ = os.Remove(shadowsMade)
}

// shimSockets lists the sockets of the shims of our containerd (under /run/containerd/s,
// named by a hash): they stay when a shim is killed.
func (n *KubeNode) shimSockets() []string {
	var socks []string
	files, _ := filepath.Glob(filepath.Join(n.dir, "containerd", "state", "io.containerd.runtime.v2.task", "*", "*", "address"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		addr := strings.TrimPrefix(strings.TrimSpace(string(b)), "unix://")
		if strings.HasPrefix(addr, "/") {
			socks = append(socks, addr)
		}
	}
	return socks
}

// pidsMatching returns the processes whose argument list match says yes to.
func pidsMatching(match func(args []string) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		if match(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cgroupDirs returns the node's cgroup folders in every hierarchy, deepest first.
func cgroupDirs() []string {
	var dirs []string
	roots, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", kubeNodeCgroup))
	if st, err := os.Stat(filepath.Join("/sys/fs/cgroup", kubeNodeCgroup)); err == nil && st.IsDir() {
		roots = append(roots, filepath.Join("/sys/fs/cgroup", kubeNodeCgroup)) // a cgroup v2 machine
	}
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	return dirs
}

// makeCgroupRoot makes the kubelet's cgroupRoot in every cgroup v1 hierarchy (the
// kubelet wants it there already); a new cpuset gets its parent's CPUs and memory nodes.
func makeCgroupRoot() error {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return os.MkdirAll(filepath.Join("/sys/fs/cgroup", kubeNodeCgroup), 0o755) // cgroup v2
	}
	hierarchies, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hierarchies {
		parent := filepath.Join("/sys/fs/cgroup", h.Name())
		if _, err := os.Stat(filepath.Join(parent, "cgroup.procs")); err != nil || h.Name() == "unified" {
			continue // not a hierarchy (or the hybrid one's v2 part, which the kubelet does not use)
		}
		dir := filepath.Join(parent, kubeNodeCgroup)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", filepath.Join(dir, f), err)
				}
			}
		}
	}
	return nil
}

// killCgroups kills every process in the node's cgroups (the pods' processes, which a
// killed shim would leave running).
func (n *KubeNode) killCgroups() {
	for range 50 {
		found := false
		for _, dir := range cgroupDirs() {
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					found = true
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if !found {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func removeCgroups() {
	deadline := time.Now().Add(10 * time.Second)
	for {
		dirs := cgroupDirs()
		if len(dirs) == 0 {
			return
		}
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	for range 20 {
		mounts := mountsUnder(dir)
		if len(mounts) == 0 {
			return
		}
		for _, m := range mounts {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
}

func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		m := unescapeMount(fields[4])
		if m == dir || strings.HasPrefix(m, dir+"/") {
			mounts = append(mounts, m)
		}
	}
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	return mounts
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// nftTables returns the machine's nft tables as "family name".
func nftTables() map[string]bool {
	out, err := exec.Command("nft", "list", "tables").Output()
	tables := map[string]bool{}
	if err != nil {
		return tables
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "table" {
			tables[f[1]+" "+f[2]] = true
		}
	}
	return tables
}

// deleteTables removes kube-proxy's tables, and the tables with no rule that appeared
// while the node ran (kube-proxy's look for iptables leftovers makes an empty ip6 nat).
func (n *KubeNode) deleteTables() {
	for _, t := range []string{"ip kube-proxy", "ip6 kube-proxy"} {
		_ = exec.Command("nft", append([]string{"delete", "table"}, strings.Fields(t)...)...).Run()
	}
	if n.tablesAt == nil {
		return
	}
	for t := range nftTables() {
		if n.tablesAt[t] {
			continue
		}
		f := strings.Fields(t)
		out, err := exec.Command("nft", "-j", "list", "table", f[0], f[1]).Output()
		if err != nil || bytes.Contains(out, []byte(`"rule"`)) {
			continue
		}
		_ = exec.Command("nft", "delete", "table", f[0], f[1]).Run()
	}
}

// kubeNodeLeftovers lists what of a node is still on the machine (for the test that
// checks that a teardown leaves nothing).
func kubeNodeLeftovers(n *KubeNode) []string {
	var left []string
	if _, err := net.InterfaceByName(kubeNodeBridge); err == nil {
		left = append(left, "bridge "+kubeNodeBridge)
	}
	for t := range nftTables() {
		if strings.HasSuffix(t, " kube-proxy") || (n.tablesAt != nil && !n.tablesAt[t]) {
			left = append(left, "nft table "+t)
		}
	}
	for _, d := range cgroupDirs() {
		left = append(left, "cgroup "+d)
	}
	for _, m := range mountsUnder(n.dir) {
		left = append(left, "mount "+m)
	}
	for _, pid := range pidsMatching(func(args []string) bool {
		for _, a := range args {
			if strings.Contains(a, n.dir) {
				return true
			}
		}
		return false
	}) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		left = append(left, fmt.Sprintf("process %d: %s", pid, strings.ReplaceAll(string(cmdline), "\x00", " ")))
	}
	if _, err := os.Stat(n.dir); err == nil {
		left = append(left, "folder "+n.dir)
	}
	if _, err := os.Stat(shadowsMade); err == nil {
		left = append(left, "file "+shadowsMade)
	}
	if out, err := exec.Command("iptables", "-w", "5", "-S", "FORWARD").Output(); err == nil && bytes.Contains(out, []byte(kubeNodeBridge)) {
		left = append(left, "iptables FORWARD rule for "+kubeNodeBridge)
	}
	if out, err := exec.Command("ip", "route", "show", kubeServiceNet).Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		left = append(left, "route "+string(bytes.TrimSpace(out)))
	}
	return left
}

// --- certificates and kubeconfigs

type kubeCert struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

func (n *KubeNode) writePKI() error {
	pki := filepath.Join(n.dir, "pki")
	ca, err := newKubeCert(nil, &x509.Certificate{
		Subject: pkix.Name{CommonName: "calipso-kubenode-ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	})
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(pki, "ca.crt"), "CERTIFICATE", ca.der); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	serving := func(name string, ips []string, dns []string) error {
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, DNSNames: dns,
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		for _, ip := range ips {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
		}
		c, err := newKubeCert(ca, tmpl)
		if err != nil {
			return err
		}
		return c.write(pki, name)
	}
	client := func(file, cn string, orgs ...string) (*kubeCert, error) {
		c, err := newKubeCert(ca, &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: orgs},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return nil, err
		}
		return c, c.write(pki, file)
	}
	if err := serving("apiserver", []string{n.NodeIP, kubeServiceIP, "127.0.0.1"},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}); err != nil {
		return err
	}
	if err := serving("kubelet-serving", []string{n.NodeIP}, []string{kubeNodeName}); err != nil {
		return err
	}
	admin, err := client("admin", "calipso-admin", "system:masters")
	if err != nil {
		return err
	}
	if _, err := client("kubelet", "system:node:"+kubeNodeName, "system:nodes"); err != nil {
		return err
	}
	if _, err := client("apiserver-kubelet", "kube-apiserver-kubelet-client", "system:masters"); err != nil {
		return err
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saKey, err := x509.MarshalECPrivateKey(sa)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(pki, "sa.key"), "EC PRIVATE KEY", saKey); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(pki, "sa.pub"), "PUBLIC KEY", saPub); err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(admin.key)
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: admin.der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return err
	}
	n.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
	}}
	return nil
}

func newKubeCert(ca *kubeCert, tmpl *x509.Certificate) (*kubeCert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(7 * 24 * time.Hour)
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &kubeCert{cert: cert, der: der, key: key}, nil
}

func (c *kubeCert) write(dir, name string) error {
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", c.der); err != nil {
		return err
	}
	key, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, name+".key"), "EC PRIVATE KEY", key)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func (n *KubeNode) writeKubeconfigs() error {
	n.Kubeconfig = filepath.Join(n.dir, "admin.kubeconfig")
	for file, cert := range map[string]string{"admin.kubeconfig": "admin", "kubelet.kubeconfig": "kubelet"} {
		read := func(f string) (string, error) {
			b, err := os.ReadFile(filepath.Join(n.dir, "pki", f))
			return base64.StdEncoding.EncodeToString(b), err
		}
		ca, err := read("ca.crt")
		if err != nil {
			return err
		}
		crt, err := read(cert + ".crt")
		if err != nil {
			return err
		}
		key, err := read(cert + ".key")
		if err != nil {
			return err
		}
		cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: calipso-kubenode
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: calipso-kubenode
  context:
    cluster: calipso-kubenode
    user: %s
current-context: calipso-kubenode
`, n.apiURL, ca, cert, crt, key, cert)
		if err := os.WriteFile(filepath.Join(n.dir, file), []byte(cfg), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// --- images

// dockerArchive writes a docker-save tarball of a FROM scratch image holding binary at
// /<cfg.binary>, tagged ref.
func dockerArchive(ref string, binary []byte, cfg imageConfig) ([]byte, error) {
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	epoch := time.Unix(0, 0)
	if err := lw.WriteHeader(&tar.Header{Name: cfg.binary, Mode: 0o755, Size: int64(len(binary)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := lw.Write(binary); err != nil {
		return nil, err
	}
	if err := lw.Close(); err != nil {
		return nil, err
	}
	layerSum := sha256Sum(layer.Bytes())
	ports := map[string]struct{}{}
	for _, p := range cfg.ports {
		ports[p] = struct{}{}
	}
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch.UTC().Format(time.RFC3339),
		"config": map[string]any{
			"User": cfg.user, "Entrypoint": []string{cfg.entrypoint}, "ExposedPorts": ports,
			"Env": []string{"PATH=/"}, "Labels": map[string]string{"calipso.test": cfg.binary},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + layerSum}},
		"history": []map[string]string{{"created": epoch.UTC().Format(time.RFC3339), "created_by": "calipso testenv"}},
	})
	if err != nil {
		return nil, err
	}
	configSum := sha256Sum(config)
	manifest, err := json.Marshal([]map[string]any{{
		"Config": configSum + ".json", "RepoTags": []string{ref}, "Layers": []string{layerSum + "/layer.tar"},
	}})
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		data []byte
	}{{layerSum + "/layer.tar", layer.Bytes()}, {configSum + ".json", config}, {"manifest.json", manifest}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func sha256Sum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
