package kubernetes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/provisioner"
)

// One kube-apiserver and etcd for the whole test binary (about 4 s to start); each
// test works in a namespace of its own, since without a controller-manager deleted
// namespaces never go away.
var (
	kubeConfig  *rest.Config
	kubeClient  k8s.Interface
	kubeMissing string
)

func TestMain(m *testing.M) {
	os.Exit(runWithEnvtest(m))
}

func runWithEnvtest(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		kubeMissing = "KUBEBUILDER_ASSETS is not set (deploy/test.d/kube-assets.sh builds etcd and kube-apiserver)"
		return m.Run()
	}
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{} // RBAC authorization is envtest's default
	cfg, err := env.Start()
	if err != nil {
		kubeMissing = "envtest did not start: " + err.Error()
		return m.Run()
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stop envtest:", err)
		}
	}()
	kubeConfig = cfg
	kubeClient = k8s.NewForConfigOrDie(cfg)
	return m.Run()
}

// newNamespace makes a fresh namespace with these labels.
func newNamespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	if kubeConfig == nil {
		testenv.Missing(t, "kube-apiserver", kubeMissing)
	}
	name := "t-" + strings.ToLower(testenv.RandomHex(5))
	_, err := kubeClient.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = kubeClient.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}

// newProvisioner is a provisioner in a fresh namespace, as the envtest admin.
func newProvisioner(t *testing.T, mutate func(*Config)) (*Provisioner, string) {
	t.Helper()
	ns := newNamespace(t, nil)
	return provisionerIn(t, ns, kubeConfig, mutate), ns
}

func provisionerIn(t testing.TB, ns string, rc *rest.Config, mutate func(*Config)) *Provisioner {
	t.Helper()
	cfg := testConfig()
	cfg.RESTConfig, cfg.Namespace, cfg.PollInterval = rc, ns, 50*time.Millisecond
	if mutate != nil {
		mutate(&cfg)
	}
	p, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func specFor(id int64) provisioner.Spec {
	s := testSpec()
	s.ResourceID = id
	return s
}

func start(t *testing.T, p *Provisioner, spec provisioner.Spec) provisioner.Workload {
	t.Helper()
	inst, err := p.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("Start %s: %v", spec.Name(), err)
	}
	return inst
}

func TestStartCreatesValidObjects(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		cfg      func(*Config)
		protocol string
		wantHost func(ns string) string
		wantPort func(svc *corev1.Service) int
	}{
		{"NodePort vnc", nil, "vnc",
			func(string) string { return "desk.example.org" },
			func(svc *corev1.Service) int { return nodePort(t, svc, 5901) }},
		{"NodePort rdp", nil, "rdp",
			func(string) string { return "desk.example.org" },
			func(svc *corev1.Service) int { return nodePort(t, svc, 3389) }},
		{"ClusterIP http", func(c *Config) { c.ServiceType = ServiceClusterIP }, "http",
			func(ns string) string { return "calipso-esrf-42." + ns + ".svc" },
			func(*corev1.Service) int { return 8888 }},
		{"nfs volumes", func(c *Config) { c.Volumes, c.NFSServer = VolumesNFS, "nfs.example.org" }, "vnc",
			func(string) string { return "desk.example.org" },
			func(svc *corev1.Service) int { return nodePort(t, svc, 5901) }},
		{"pvc volumes", func(c *Config) { c.Volumes, c.Claim = VolumesPVC, "facility-data" }, "vnc",
			func(string) string { return "desk.example.org" },
			func(svc *corev1.Service) int { return nodePort(t, svc, 5901) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ns := newProvisioner(t, tt.cfg)
			spec := specFor(42)
			spec.Protocol = tt.protocol
			inst := start(t, p, spec)

			svc, err := kubeClient.CoreV1().Services(ns).Get(ctx, spec.Name(), metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get service: %v", err)
			}
			pod, err := kubeClient.CoreV1().Pods(ns).Get(ctx, spec.Name(), metav1.GetOptions{})
			if err != nil {
				t.Fatalf("get pod: %v", err)
			}
			want := provisioner.Workload{Name: "calipso-esrf-42", ID: string(pod.UID), Owner: spec.Owner, ResourceID: 42,
				State: provisioner.StatePending, Host: tt.wantHost(ns), Port: tt.wantPort(svc)}
			if tt.protocol == "http" { // the notebook's link; desktops are reached through Guacamole
				want.URL = fmt.Sprintf("http://%s:%d/", want.Host, want.Port)
			}
			if inst != want {
				t.Errorf("Start = %+v\nwant    %+v", inst, want)
			}
			if pod.Spec.Containers[0].SecurityContext.Capabilities.Drop[0] != "ALL" || *pod.Spec.SecurityContext.RunAsUser != 1000 {
				t.Errorf("stored pod lost its security context: %+v", pod.Spec.SecurityContext)
			}

			again := start(t, p, spec) // adopts
			if again != inst {
				t.Errorf("second Start = %+v, want the same workload %+v", again, inst)
			}
			got, err := p.Inspect(ctx, spec.Name())
			if err != nil || got != inst {
				t.Errorf("Inspect = %+v, %v; want %+v", got, err, inst)
			}
		})
	}
}

func nodePort(t *testing.T, svc *corev1.Service, port int32) int {
	t.Helper()
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			if p.NodePort < 30000 || p.NodePort > 32767 {
				t.Errorf("port %d has node port %d", port, p.NodePort)
			}
			return int(p.NodePort)
		}
	}
	t.Fatalf("service has no port %d", port)
	return 0
}

func TestStopRemoveList(t *testing.T) {
	ctx := context.Background()
	p, ns := newProvisioner(t, nil)
	other := provisionerIn(t, ns, kubeConfig, func(c *Config) { c.Instance = "other" })
	first, second := start(t, p, specFor(1)), start(t, p, specFor(2))
	foreignSpec := specFor(1)
	foreignSpec.Instance = "other"
	foreign := start(t, other, foreignSpec)

	list, err := p.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(list) != 2 || list[0] != first || list[1] != second {
		t.Fatalf("List = %+v, want %+v and %+v", list, first, second)
	}

	// Stop keeps the Service: the NodePort survives and a new Start reuses it.
	if err := p.Stop(ctx, first.Name); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := kubeClient.CoreV1().Pods(ns).Get(ctx, first.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod after Stop: %v, want not found", err)
	}
	stopped, err := p.Inspect(ctx, first.Name)
	if err != nil || stopped.State != provisioner.StateStopped || stopped.Port != first.Port || stopped.Owner != first.Owner {
		t.Errorf("Inspect after Stop = %+v, %v; want stopped on port %d", stopped, err, first.Port)
	}
	restarted := start(t, p, specFor(1))
	if restarted.State != provisioner.StatePending || restarted.Port != first.Port || restarted.ID == first.ID {
		t.Errorf("Start after Stop = %+v, want a new pending pod on port %d", restarted, first.Port)
	}

	if err := p.Remove(ctx, first.Name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := p.Inspect(ctx, first.Name); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("Inspect after Remove: %v, want ErrNotFound", err)
	}
	if list, err := p.List(ctx); err != nil || len(list) != 1 || list[0].Name != second.Name {
		t.Errorf("List after Remove = %+v, %v; want only %s", list, err, second.Name)
	}

	for _, op := range []struct {
		name string
		do   func(context.Context, string) error
	}{{"Stop", p.Stop}, {"Remove", p.Remove}} {
		for _, name := range []string{first.Name, "calipso-esrf-999"} {
			if err := op.do(ctx, name); err != nil {
				t.Errorf("%s of missing %s: %v, want success", op.name, name, err)
			}
		}
	}

	// Another installation's workload is neither listed, inspected nor removed.
	if err := p.Remove(ctx, foreign.Name); err != nil {
		t.Errorf("Remove of another installation's name: %v", err)
	}
	if got, err := other.Inspect(ctx, foreign.Name); err != nil || got.ID != foreign.ID {
		t.Errorf("other installation's workload after our Remove = %+v, %v", got, err)
	}
}

// TestSecretLifecycle: a workload's secrets are a Secret that lives as long as its
// pod: made by Start (and again by Start after Stop), deleted by Stop and Remove;
// another installation's Secret of the name is refused, not adopted nor deleted.
func TestSecretLifecycle(t *testing.T) {
	ctx := context.Background()
	p, ns := newProvisioner(t, nil)
	secrets := kubeClient.CoreV1().Secrets(ns)
	spec := specFor(1)
	hasSecret := func(when string, want bool) {
		t.Helper()
		got, err := secrets.Get(ctx, spec.Name(), metav1.GetOptions{})
		switch {
		case want && err != nil:
			t.Errorf("%s: secret: %v", when, err)
		case want && string(got.Data["vnc_password"]) != "s3cret":
			t.Errorf("%s: secret data %v", when, got.Data)
		case !want && !apierrors.IsNotFound(err):
			t.Errorf("%s: secret %v, %v; want none", when, got.Name, err)
		}
	}
	start(t, p, spec)
	hasSecret("after Start", true)
	pod, err := kubeClient.CoreV1().Pods(ns).Get(ctx, spec.Name(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if shown, _ := json.Marshal(pod); strings.Contains(string(shown), "s3cret") {
		t.Errorf("the stored pod holds the secret: %s", shown)
	}
	start(t, p, spec) // adopts it
	hasSecret("after a second Start", true)
	if err := p.Stop(ctx, spec.Name()); err != nil {
		t.Fatal(err)
	}
	hasSecret("after Stop", false)
	start(t, p, spec)
	hasSecret("after Start after Stop", true)
	if err := p.Remove(ctx, spec.Name()); err != nil {
		t.Fatal(err)
	}
	hasSecret("after Remove", false)

	// Someone else's Secret of the workload's name.
	other := specFor(2)
	if _, err := secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: other.Name()}, StringData: map[string]string{"x": "theirs"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Start(ctx, other); !errors.Is(err, provisioner.ErrInvalid) {
		t.Errorf("Start over another's secret: %v, want ErrInvalid", err)
	}
	if err := p.Remove(ctx, other.Name()); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if got, err := secrets.Get(ctx, other.Name(), metav1.GetOptions{}); err != nil || string(got.Data["x"]) != "theirs" {
		t.Errorf("another's secret after our Start and Remove: %v, %v; want it untouched", got.Data, err)
	}
}

// setStatus writes a pod status through the API, as a kubelet would.
func setStatus(t *testing.T, ns, name string, status corev1.PodStatus) {
	t.Helper()
	ctx := context.Background()
	pod, err := kubeClient.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod: %v", err)
	}
	pod.Status = status
	if _, err := kubeClient.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("update status: %v", err)
	}
}

func containerWaiting(reason, message string) []corev1.ContainerStatus {
	s := waiting(reason, message)
	s[0].Image = "calipso/desktop:1"
	return s
}

func TestStatusFromPod(t *testing.T) {
	ctx := context.Background()
	p, ns := newProvisioner(t, nil)
	waiter := provisionerIn(t, ns, kubeConfig, func(c *Config) { c.ReadyTimeout = 30 * time.Second })
	spec := specFor(7)
	start(t, p, spec)

	readyStatus := corev1.PodStatus{Phase: corev1.PodRunning,
		Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: containerName, Image: "calipso/desktop:1", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
	}
	steps := []struct {
		name       string
		status     corev1.PodStatus
		want       provisioner.State
		wantReason string
		startErr   error // of a Start that waits for running
	}{
		{"image pull back-off", corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: containerWaiting("ImagePullBackOff", "Back-off pulling image")},
			provisioner.StateError, "ImagePullBackOff: Back-off pulling image", provisioner.ErrInvalid},
		{"crash loop", corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: containerWaiting("CrashLoopBackOff", "back-off 10s")},
			provisioner.StateError, "CrashLoopBackOff: back-off 10s", provisioner.ErrNotReady},
		{"running and ready", readyStatus, provisioner.StateRunning, "", nil},
		{"succeeded", corev1.PodStatus{Phase: corev1.PodSucceeded}, provisioner.StateStopped, "", nil},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			setStatus(t, ns, spec.Name(), st.status)
			inst, err := p.Inspect(ctx, spec.Name())
			if err != nil || inst.State != st.want || inst.Reason != st.wantReason {
				t.Fatalf("Inspect = %+v, %v; want %s %q", inst, err, st.want, st.wantReason)
			}
			if st.want == provisioner.StateStopped {
				return
			}
			got, err := waiter.Start(ctx, spec)
			if !errors.Is(err, st.startErr) || (st.startErr == nil && err != nil) || got.State != st.want {
				t.Errorf("waiting Start = %+v, %v; want %s and %v", got, err, st.want, st.startErr)
			}
		})
	}

	// Start of a workload that ended replaces its pod and waits for the new one.
	// Without a kubelet the new pod stays pending: the short wait ends in ErrNotReady.
	before, _ := p.Inspect(ctx, spec.Name())
	short := provisionerIn(t, ns, kubeConfig, func(c *Config) { c.ReadyTimeout = 200 * time.Millisecond })
	inst, err := short.Start(ctx, spec)
	if !errors.Is(err, provisioner.ErrNotReady) || inst.State != provisioner.StatePending || inst.ID == before.ID {
		t.Errorf("Start of an ended workload = %+v, %v; want a new pending pod and ErrNotReady", inst, err)
	}

	evicted := specFor(8)
	start(t, p, evicted)
	setStatus(t, ns, evicted.Name(), corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: memory."})
	if inst, err := p.Inspect(ctx, evicted.Name()); err != nil || inst.State != provisioner.StateError || !strings.HasPrefix(inst.Reason, "Evicted") {
		t.Errorf("Inspect of an evicted pod = %+v, %v", inst, err)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	p, ns := newProvisioner(t, nil)

	foreign := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "calipso-esrf-9", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}}}
	if _, err := kubeClient.CoreV1().Pods(ns).Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create foreign pod: %v", err)
	}
	unreachable := provisionerIn(t, ns, &rest.Config{Host: "https://127.0.0.1:1"}, nil)

	tests := []struct {
		name string
		p    *Provisioner
		spec func(*provisioner.Spec)
		want error
	}{
		{"root refused before any call", unreachable, func(s *provisioner.Spec) { s.UID = 0 }, provisioner.ErrInvalid},
		{"rejected by the API server (422)", p, func(s *provisioner.Spec) { s.Mounts[1].Target = s.Mounts[0].Target }, provisioner.ErrInvalid},
		{"name taken by someone else", p, func(s *provisioner.Spec) { s.ResourceID = 9 }, provisioner.ErrInvalid},
		{"spec of another installation", p, func(s *provisioner.Spec) { s.Instance = "other" }, provisioner.ErrInvalid},
		{"API unreachable", unreachable, func(*provisioner.Spec) {}, provisioner.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := specFor(3)
			tt.spec(&spec)
			if _, err := tt.p.Start(ctx, spec); !errors.Is(err, tt.want) {
				t.Errorf("Start = %v, want %v", err, tt.want)
			}
		})
	}
	for _, name := range []string{"calipso-esrf-3", "calipso-esrf-9"} {
		if _, err := kubeClient.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("service %s of a refused pod: %v, want deleted", name, err)
		}
	}
	if err := unreachable.Ping(ctx); !errors.Is(err, provisioner.ErrUnavailable) {
		t.Errorf("Ping of an unreachable server = %v, want ErrUnavailable", err)
	}
	if _, err := unreachable.List(ctx); !errors.Is(err, provisioner.ErrUnavailable) {
		t.Errorf("List of an unreachable server = %v, want ErrUnavailable", err)
	}
	if err := p.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if _, err := p.Inspect(ctx, "calipso-esrf-9"); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("Inspect of a pod we did not make = %v, want ErrNotFound", err)
	}
	if _, err := kubeClient.CoreV1().Pods(ns).Get(ctx, "calipso-esrf-9", metav1.GetOptions{}); err != nil {
		t.Errorf("the foreign pod is gone: %v", err)
	}
}

// TestPodSecurityRestricted: in a namespace enforcing the "restricted" Pod Security
// Standard, a non-root workload on a claim is admitted; hostPath is refused as invalid.
func TestPodSecurityRestricted(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	onClaim := provisionerIn(t, ns, kubeConfig, func(c *Config) { c.Volumes, c.Claim = VolumesPVC, "facility-data" })
	if _, err := onClaim.Start(ctx, specFor(1)); err != nil {
		t.Errorf("restricted namespace refused the workload: %v", err)
	}
	onHost := provisionerIn(t, ns, kubeConfig, nil)
	if _, err := onHost.Start(ctx, specFor(2)); !errors.Is(err, provisioner.ErrInvalid) || !strings.Contains(err.Error(), "hostPath") {
		t.Errorf("hostPath in a restricted namespace: %v, want ErrInvalid", err)
	}
}

// TestRoleIsSufficient runs every operation as a ServiceAccount bound to
// deploy/kubernetes/calipso-provisioner-role.yaml, and checks it can do no more.
func TestRoleIsSufficient(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t, nil)
	role := loadRole(t)
	if _, err := kubeClient.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role: %v", err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "calipso"}}
	if _, err := kubeClient.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service account: %v", err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "calipso-provisioner"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: ns}},
	}
	if _, err := kubeClient.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role binding: %v", err)
	}
	asSA := rest.CopyConfig(kubeConfig)
	asSA.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":calipso"}
	p := provisionerIn(t, ns, asSA, func(c *Config) { c.ReadyTimeout = 30 * time.Second })
	saClient := k8s.NewForConfigOrDie(asSA)

	// Denied before the binding takes effect? RBAC is read from a cache: wait for it.
	var err error
	for range 100 {
		if err = p.Ping(ctx); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Ping as the service account: %v", err)
	}
	spec := specFor(5)
	quick := provisionerIn(t, ns, asSA, nil)
	inst, err := quick.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	setStatus(t, ns, spec.Name(), corev1.PodStatus{Phase: corev1.PodRunning,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}})
	if got, err := p.Start(ctx, spec); err != nil || got.State != provisioner.StateRunning || got.Port != inst.Port {
		t.Errorf("waiting Start = %+v, %v", got, err)
	}
	if got, err := p.Inspect(ctx, spec.Name()); err != nil || got.State != provisioner.StateRunning {
		t.Errorf("Inspect = %+v, %v", got, err)
	}
	if list, err := p.List(ctx); err != nil || len(list) != 1 {
		t.Errorf("List = %+v, %v", list, err)
	}
	if err := p.Stop(ctx, spec.Name()); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := p.Remove(ctx, spec.Name()); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if _, err := p.Inspect(ctx, spec.Name()); !errors.Is(err, provisioner.ErrNotFound) {
		t.Errorf("Inspect after Remove: %v, want ErrNotFound", err)
	}

	// The leader election's Lease (kubernetes.leader_lease).
	elector, err := p.Elector("calipso-leader", "sa-replica", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	leadCtx, stopCampaign := context.WithTimeout(ctx, 10*time.Second)
	led := false
	elector.Campaign(leadCtx, func(context.Context) { led = true; stopCampaign() })
	stopCampaign()
	if !led {
		t.Error("the service account could not take the leader Lease within 10 s")
	}

	denied := []struct {
		name string
		do   func() error
	}{
		{"list secrets", func() error { _, err := saClient.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); return err }},
		{"update secrets", func() error {
			_, err := saClient.CoreV1().Secrets(ns).Update(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.UpdateOptions{})
			return err
		}},
		{"update pods", func() error {
			_, err := saClient.CoreV1().Pods(ns).Update(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.UpdateOptions{})
			return err
		}},
		{"pods in another namespace", func() error { _, err := saClient.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); return err }},
		{"exec into pods", func() error {
			return saClient.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name("x").SubResource("exec").Do(ctx).Error()
		}},
	}
	for _, d := range denied {
		if err := d.do(); !apierrors.IsForbidden(err) {
			t.Errorf("%s as the service account: %v, want forbidden", d.name, err)
		}
	}
}

func loadRole(t *testing.T) *rbacv1.Role {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "kubernetes", "calipso-provisioner-role.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read role: %v", err)
	}
	var role rbacv1.Role
	if err := yaml.UnmarshalStrict(data, &role); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	if role.Kind != "Role" || role.Name == "" || len(role.Rules) == 0 {
		t.Fatalf("%s is not a Role: %+v", path, role)
	}
	return &role
}
