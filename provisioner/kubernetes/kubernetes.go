package kubernetes

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8slabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/calipsoplus/calipso"
	"github.com/calipsoplus/calipso/provisioner"
)

// ErrConfig: the provisioner's configuration is unusable.
var ErrConfig = calipso.NewError(calipso.EINVALID, "invalid kubernetes provisioner config")

// VolumeMode says where Mount.Source paths live.
type VolumeMode string

const (
	VolumesHostPath VolumeMode = "hostPath" // node paths (default, as CalipsoPlus)
	VolumesNFS      VolumeMode = "nfs"      // paths exported by Config.NFSServer
	VolumesPVC      VolumeMode = "pvc"      // subPaths of Config.Claim under Config.ClaimRoot
)

// Service types a workload can be exposed with.
const (
	ServiceNodePort  = string(corev1.ServiceTypeNodePort)
	ServiceClusterIP = string(corev1.ServiceTypeClusterIP)
)

// annotationProtocol records the spec's protocol, which picks the port Inspect reports.
const annotationProtocol = "calipso.protocol"

// Config configures a Provisioner.
type Config struct {
	Kubeconfig string       // kubeconfig path; empty with no RESTConfig: in-cluster config
	RESTConfig *rest.Config // used as is when set (tests)
	Namespace  string       // where workloads go; empty: the kubeconfig's or in-cluster namespace
	Instance   string       // installation label value; List selects by it

	HostAddress string // node address users reach NodePorts at (required for NodePort)
	ServiceType string // "NodePort" (default) or "ClusterIP"

	Volumes   VolumeMode // "hostPath" (default), "nfs" or "pvc"
	NFSServer string     // nfs: server exporting the mount sources
	Claim     string     // pvc: claim holding the data
	ClaimRoot string     // pvc: the path Mount.Source values are relative to (default "/")

	ReadyTimeout time.Duration // how long Start waits for running (and LogRegex); 0: no wait
	PollInterval time.Duration // status polling while waiting; default 1s

	Logger *slog.Logger // default slog.Default()
}

// Provisioner runs workloads as a Pod and a Service each in one namespace.
type Provisioner struct {
	cfg    Config
	client k8s.Interface
	rest   *rest.Config // what client was made from
	log    *slog.Logger
}

var _ provisioner.Provisioner = (*Provisioner)(nil)

// New checks cfg and builds the client. It does not contact the API server: an
// unreachable one shows up as provisioner.ErrUnavailable on use (see Ping).
func New(ctx context.Context, cfg Config) (*Provisioner, error) {
	_ = ctx // nothing to do on the network yet
	restCfg, namespace, err := loadREST(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Namespace == "" {
		cfg.Namespace = namespace
	}
	if cfg.ServiceType == "" {
		cfg.ServiceType = ServiceNodePort
	}
	if cfg.Volumes == "" {
		cfg.Volumes = VolumesHostPath
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	restCfg = rest.CopyConfig(restCfg)
	if restCfg.UserAgent == "" {
		restCfg.UserAgent = "calipso"
	}
	client, err := k8s.NewForConfig(restCfg)
	if err != nil {
		return nil, fmt.Errorf("%w: kubernetes client: %w", ErrConfig, err)
	}
	return &Provisioner{cfg: cfg, client: client, rest: restCfg, log: cfg.Logger.With("engine", "kubernetes", "namespace", cfg.Namespace)}, nil
}

func loadREST(cfg Config) (*rest.Config, string, error) {
	switch {
	case cfg.RESTConfig != nil:
		return cfg.RESTConfig, "", nil
	case cfg.Kubeconfig != "":
		cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.Kubeconfig}, &clientcmd.ConfigOverrides{})
		rc, err := cc.ClientConfig()
		if err != nil {
			return nil, "", fmt.Errorf("%w: kubeconfig %s: %w", ErrConfig, cfg.Kubeconfig, err)
		}
		ns, _, err := cc.Namespace()
		if err != nil {
			return nil, "", fmt.Errorf("%w: kubeconfig %s namespace: %w", ErrConfig, cfg.Kubeconfig, err)
		}
		return rc, ns, nil
	default:
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, "", fmt.Errorf("%w: no kubeconfig and not in a cluster: %w", ErrConfig, err)
		}
		ns, _ := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
		return rc, strings.TrimSpace(string(ns)), nil
	}
}

func (c Config) validate() error {
	var errs []error
	if c.Namespace == "" {
		errs = append(errs, errors.New("namespace is required"))
	} else if msgs := validation.IsDNS1123Label(c.Namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("namespace %q: %s", c.Namespace, strings.Join(msgs, "; ")))
	}
	if c.Instance == "" || labelValue(c.Instance) != c.Instance {
		errs = append(errs, fmt.Errorf("instance %q must be a non-empty Kubernetes label value", c.Instance))
	}
	switch c.ServiceType {
	case ServiceNodePort:
		if c.HostAddress == "" {
			errs = append(errs, errors.New("host address is required with NodePort services"))
		}
	case ServiceClusterIP:
	default:
		errs = append(errs, fmt.Errorf("service type %q: want NodePort or ClusterIP", c.ServiceType))
	}
	switch c.Volumes {
	case VolumesHostPath:
	case VolumesNFS:
		if c.NFSServer == "" {
			errs = append(errs, errors.New("nfs volumes need an NFS server"))
		}
	case VolumesPVC:
		if msgs := validation.IsDNS1123Subdomain(c.Claim); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("pvc volumes need a claim name: %q: %s", c.Claim, strings.Join(msgs, "; ")))
		}
		if c.ClaimRoot != "" && !cleanAbs(c.ClaimRoot) {
			errs = append(errs, fmt.Errorf("claim root %q must be a clean absolute path", c.ClaimRoot))
		}
	default:
		errs = append(errs, fmt.Errorf("volume mode %q: want hostPath, nfs or pvc", c.Volumes))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// classify wraps an API error with the provisioner error of its kind.
func classify(err error) error {
	var kind error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled):
		return err
	case apierrors.IsNotFound(err):
		kind = provisioner.ErrNotFound
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err),
		apierrors.IsForbidden(err) && strings.Contains(err.Error(), "violates PodSecurity"):
		kind = provisioner.ErrInvalid
	case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err):
		return err
	default: // unreachable, timeouts, 5xx, 429, forbidden (RBAC, quota exceeded)
		kind = provisioner.ErrUnavailable
	}
	return fmt.Errorf("%w: %w", kind, err)
}

// Capabilities: the pod's limits (requests equal) hold CPU, memory and the disk
// share, which is an ephemeral-storage limit: the kubelet evicts a pod whose writable
// layer, logs and scratch space outgrow it (mounted volumes do not count). The pod
// runs as the spec's uid, gid and groups, read-only mounts are read-only, Start after
// Stop makes the pod again, and the kubelet keeps the log. Secrets are a Secret of the
// workload's name, mounted read-only at provisioner.SecretsDir (files of root's, mode
// 0444: see secretMode), not in the pod's environment.
//
// The number of processes is NOT limited by the pod: Kubernetes has no per-pod pids
// limit, only the kubelet's node-wide podPidsLimit (KubeletConfiguration, or
// --pod-max-pids), which holds every pod of the node to one value. Spec.PidsLimit is
// ignored; set podPidsLimit on the nodes workloads run on (see the package comment).
func (p *Provisioner) Capabilities() provisioner.Capabilities {
	return provisioner.Capabilities{
		CPULimit:       true,
		MemoryLimit:    true,
		DiskLimit:      true,
		PidsLimit:      false,
		RunAsUser:      true,
		SecretFiles:    true,
		ReadOnlyMounts: true,
		Restart:        true,
		Logs:           true,
	}
}

// Ping lists at most one workload pod: it proves both that the API server answers
// and that this identity may work in the namespace.
func (p *Provisioner) Ping(ctx context.Context) error {
	_, err := p.client.CoreV1().Pods(p.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: p.listSelector(), Limit: 1})
	if err != nil {
		return fmt.Errorf("ping kubernetes namespace %s: %w", p.cfg.Namespace, classify(err))
	}
	return nil
}

// Start creates (or adopts) the workload's Service and Pod and, with a ReadyTimeout,
// waits for it to run and for its LogRegex.
func (p *Provisioner) Start(ctx context.Context, spec provisioner.Spec) (provisioner.Workload, error) {
	if err := validateSpec(p.cfg, spec); err != nil {
		return provisioner.Workload{}, fmt.Errorf("start %s: %w", spec.Name(), err)
	}
	if spec.Instance != p.cfg.Instance {
		return provisioner.Workload{}, fmt.Errorf("start %s: %w: spec of instance %q given to the provisioner of %q",
			spec.Name(), provisioner.ErrInvalid, spec.Instance, p.cfg.Instance)
	}
	name := spec.Name()
	provisioner.Progress(ctx, provisioner.StageCreating)
	svc, created, err := p.ensureService(ctx, spec)
	if err != nil {
		return provisioner.Workload{}, fmt.Errorf("start %s: %w", name, err)
	}
	if err := p.ensureSecret(ctx, spec); err != nil {
		return provisioner.Workload{}, fmt.Errorf("start %s: %w", name, err)
	}
	pod, err := p.ensurePod(ctx, spec)
	if err != nil {
		if created && errors.Is(err, provisioner.ErrInvalid) {
			// The pod can never be made: do not leave a Service holding a NodePort, nor
			// its secrets.
			if derr := errors.Join(p.deleteOwned(ctx, name, servicesAPI{p}), p.deleteSecret(ctx, name)); derr != nil {
				p.log.WarnContext(ctx, "service or secret of a refused pod not deleted", "name", name, "error", derr)
			}
		}
		return provisioner.Workload{}, fmt.Errorf("start %s: %w", name, err)
	}
	inst := p.instance(pod, svc)
	provisioner.Progress(ctx, provisioner.StageStarting)
	if p.cfg.ReadyTimeout <= 0 {
		return inst, nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ReadyTimeout)
	defer cancel()
	inst, err = p.waitRunning(ctx, inst)
	if err != nil {
		return inst, fmt.Errorf("start %s: %w", name, err)
	}
	if spec.LogRegex != "" {
		provisioner.Progress(ctx, provisioner.StageWaitingToken)
		re := regexp.MustCompile(spec.LogRegex) // compiled by validateSpec
		inst.LogMatch, err = p.followLog(ctx, name, re)
		if err != nil {
			return inst, fmt.Errorf("start %s: %w", name, err)
		}
		inst.URL = provisioner.LinkURL(spec.Protocol, inst.Host, inst.Port, inst.LogMatch)
	}
	return inst, nil
}

// ensureService creates the Service or adopts the existing one; created says which.
func (p *Provisioner) ensureService(ctx context.Context, spec provisioner.Spec) (svc *corev1.Service, created bool, err error) {
	want := buildService(p.cfg, spec)
	want.Annotations[annotationProtocol] = spec.Protocol
	services := p.client.CoreV1().Services(p.cfg.Namespace)
	svc, err = services.Create(ctx, want, metav1.CreateOptions{})
	if err == nil {
		p.log.InfoContext(ctx, "service created", "name", svc.Name, "type", svc.Spec.Type)
		return svc, true, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, false, fmt.Errorf("create service: %w", classify(err))
	}
	svc, err = services.Get(ctx, want.Name, metav1.GetOptions{})
	if err != nil {
		return nil, false, fmt.Errorf("adopt service: %w", classify(err))
	}
	if !p.owns(svc.ObjectMeta) {
		return nil, false, fmt.Errorf("%w: service %s exists and is not this installation's", provisioner.ErrInvalid, svc.Name)
	}
	return svc, false, nil
}

// ensureSecret creates the Secret of the spec's secrets, which the pod mounts at
// provisioner.SecretsDir, or adopts this installation's one of that name; one that
// holds other values (it should not: a resource's secrets do not change) is made
// again. Nothing when the spec has no secrets.
func (p *Provisioner) ensureSecret(ctx context.Context, spec provisioner.Spec) error {
	want := buildSecret(p.cfg, spec)
	if want == nil {
		return nil
	}
	secrets := p.client.CoreV1().Secrets(p.cfg.Namespace)
	for attempt := 0; ; attempt++ {
		_, err := secrets.Create(ctx, want, metav1.CreateOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(err) || attempt > 0 {
			return fmt.Errorf("create secret: %w", classify(err))
		}
		got, err := secrets.Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return fmt.Errorf("adopt secret: %w", classify(err))
		}
		if !p.owns(got.ObjectMeta) {
			return fmt.Errorf("%w: secret %s exists and is not this installation's", provisioner.ErrInvalid, got.Name)
		}
		if maps.EqualFunc(got.Data, want.Data, bytes.Equal) && got.DeletionTimestamp == nil {
			return nil
		}
		err = secrets.Delete(ctx, got.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &got.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("replace secret: %w", classify(err))
		}
	}
}

// ensurePod creates the pod, adopts a live one of the same name, and replaces one
// that has ended (or is being deleted by a Stop): Start of a stopped workload
// restarts it.
func (p *Provisioner) ensurePod(ctx context.Context, spec provisioner.Spec) (*corev1.Pod, error) {
	want := buildPod(p.cfg, spec)
	want.Annotations[annotationProtocol] = spec.Protocol
	pods := p.client.CoreV1().Pods(p.cfg.Namespace)
	for attempt := 0; ; attempt++ {
		pod, err := pods.Create(ctx, want, metav1.CreateOptions{})
		if err == nil {
			p.log.InfoContext(ctx, "pod created", "name", pod.Name, "image", spec.Image, "owner", spec.Owner)
			return pod, nil
		}
		if !apierrors.IsAlreadyExists(err) || attempt > 0 {
			return nil, fmt.Errorf("create pod: %w", classify(err))
		}
		pod, err = pods.Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("adopt pod: %w", classify(err))
		}
		if !p.owns(pod.ObjectMeta) {
			return nil, fmt.Errorf("%w: pod %s exists and is not this installation's", provisioner.ErrInvalid, pod.Name)
		}
		ended := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
		if pod.DeletionTimestamp == nil && !ended {
			return pod, nil
		}
		if err := p.deleteAndWait(ctx, pod); err != nil {
			return nil, err
		}
	}
}

// deleteAndWait deletes an ended pod and waits until its name is free again.
func (p *Provisioner) deleteAndWait(ctx context.Context, pod *corev1.Pod) error {
	pods := p.client.CoreV1().Pods(p.cfg.Namespace)
	if pod.DeletionTimestamp == nil {
		err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64(0)), // its containers have exited
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("replace ended pod: %w", classify(err))
		}
	}
	for {
		_, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("wait for pod deletion: %w", classify(err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: pod %s still terminating: %w", provisioner.ErrNotReady, pod.Name, ctx.Err())
		case <-time.After(p.cfg.PollInterval):
		}
	}
}

// waitRunning polls the workload until it runs, fails, or ctx ends; it returns the
// last state seen, starting from inst.
func (p *Provisioner) waitRunning(ctx context.Context, inst provisioner.Workload) (provisioner.Workload, error) {
	for {
		got, err := p.Inspect(ctx, inst.Name)
		if err != nil && !errors.Is(err, provisioner.ErrUnavailable) {
			return inst, err
		}
		if err == nil {
			inst = got
			switch inst.State {
			case provisioner.StateRunning:
				return inst, nil
			case provisioner.StateError:
				kind := provisioner.ErrNotReady
				if isImageError(inst.Reason) {
					kind = provisioner.ErrInvalid
				}
				return inst, fmt.Errorf("%w: %s", kind, inst.Reason)
			case provisioner.StateStopped:
				return inst, fmt.Errorf("%w: the workload exited", provisioner.ErrNotReady)
			}
		}
		select {
		case <-ctx.Done():
			return inst, fmt.Errorf("%w: still %s: %w", provisioner.ErrNotReady, inst.State, ctx.Err())
		case <-time.After(p.cfg.PollInterval):
		}
	}
}

// followLog reads the container's log from the start until re matches a line.
func (p *Provisioner) followLog(ctx context.Context, name string, re *regexp.Regexp) (string, error) {
	stream, err := p.client.CoreV1().Pods(p.cfg.Namespace).GetLogs(name, &corev1.PodLogOptions{
		Container: containerName,
		Follow:    true,
	}).Stream(ctx)
	if err != nil {
		return "", fmt.Errorf("follow log: %w", classify(err))
	}
	defer stream.Close()
	scanner := bufio.NewScanner(stream)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		if m := re.FindStringSubmatch(scanner.Text()); m != nil {
			if len(m) > 1 {
				return m[1], nil
			}
			return m[0], nil
		}
	}
	if err := scanner.Err(); err != nil && ctx.Err() == nil {
		return "", fmt.Errorf("follow log: %w", classify(err))
	}
	if ctx.Err() != nil {
		return "", fmt.Errorf("%w: log did not match %q in time: %w", provisioner.ErrNotReady, re, ctx.Err())
	}
	return "", fmt.Errorf("%w: log ended without matching %q", provisioner.ErrNotReady, re)
}

// Stop deletes the pod, and the Secret it mounted, and keeps the Service, so that the
// NodePort (and the Guacamole record using it) survives; a missing workload is
// already stopped. Start makes the Secret again.
func (p *Provisioner) Stop(ctx context.Context, name string) error {
	if err := errors.Join(p.deleteOwned(ctx, name, podsAPI{p}), p.deleteSecret(ctx, name)); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	return nil
}

// Remove deletes the pod, the Secret and the Service, and waits (bounded by ctx) for
// the kubelet to have ended the pod: a removed workload is gone, as on Docker, not
// terminating. What is already gone is success.
func (p *Provisioner) Remove(ctx context.Context, name string) error {
	err := errors.Join(p.deleteOwned(ctx, name, podsAPI{p}), p.deleteSecret(ctx, name), p.deleteOwned(ctx, name, servicesAPI{p}))
	if err == nil {
		err = p.waitPodGone(ctx, name)
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// waitPodGone polls until this installation's pod name no longer exists.
func (p *Provisioner) waitPodGone(ctx context.Context, name string) error {
	pods := p.client.CoreV1().Pods(p.cfg.Namespace)
	for {
		pod, err := pods.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && !p.owns(pod.ObjectMeta)) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("get pod: %w", classify(err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: the pod is still terminating: %w", provisioner.ErrUnavailable, ctx.Err())
		case <-time.After(p.cfg.PollInterval):
		}
	}
}

// objectAPI is the little of the pod and service clients that deleteOwned needs.
type objectAPI interface {
	kind() string
	get(ctx context.Context, name string) (metav1.ObjectMeta, error)
	delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

type podsAPI struct{ p *Provisioner }

func (podsAPI) kind() string { return "pod" }
func (a podsAPI) get(ctx context.Context, name string) (metav1.ObjectMeta, error) {
	o, err := a.p.client.CoreV1().Pods(a.p.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return metav1.ObjectMeta{}, err
	}
	return o.ObjectMeta, nil
}
func (a podsAPI) delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return a.p.client.CoreV1().Pods(a.p.cfg.Namespace).Delete(ctx, name, opts)
}

type servicesAPI struct{ p *Provisioner }

func (servicesAPI) kind() string { return "service" }
func (a servicesAPI) get(ctx context.Context, name string) (metav1.ObjectMeta, error) {
	o, err := a.p.client.CoreV1().Services(a.p.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return metav1.ObjectMeta{}, err
	}
	return o.ObjectMeta, nil
}
func (a servicesAPI) delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return a.p.client.CoreV1().Services(a.p.cfg.Namespace).Delete(ctx, name, opts)
}

// deleteSecret deletes the workload's Secret. Where the provisioner may not read
// Secrets (a Role from before they were used), it cannot have made one either: that
// is logged, not an error, so that such an installation still stops and removes its
// workloads (Start of one with secrets fails there until the Role is updated).
func (p *Provisioner) deleteSecret(ctx context.Context, name string) error {
	err := p.deleteOwned(ctx, name, secretsAPI{p})
	if apierrors.IsForbidden(err) {
		p.log.WarnContext(ctx, "secrets not deleted: the provisioner may not read Secrets (update its Role: deploy/kubernetes/calipso-provisioner-role.yaml)", "name", name, "error", err)
		return nil
	}
	return err
}

type secretsAPI struct{ p *Provisioner }

func (secretsAPI) kind() string { return "secret" }
func (a secretsAPI) get(ctx context.Context, name string) (metav1.ObjectMeta, error) {
	o, err := a.p.client.CoreV1().Secrets(a.p.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return metav1.ObjectMeta{}, err
	}
	return o.ObjectMeta, nil
}
func (a secretsAPI) delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return a.p.client.CoreV1().Secrets(a.p.cfg.Namespace).Delete(ctx, name, opts)
}

// deleteOwned deletes the named object if it is this installation's: an object of
// the same name made by someone else is left alone (and counts as absent).
func (p *Provisioner) deleteOwned(ctx context.Context, name string, api objectAPI) error {
	meta, err := api.get(ctx, name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get %s: %w", api.kind(), classify(err))
	}
	if !p.owns(meta) {
		p.log.WarnContext(ctx, "not deleting an object this installation did not make", "kind", api.kind(), "name", name)
		return nil
	}
	if meta.DeletionTimestamp != nil {
		return nil
	}
	err = api.delete(ctx, name, metav1.DeleteOptions{
		PropagationPolicy: new(metav1.DeletePropagationBackground),
		Preconditions:     &metav1.Preconditions{UID: &meta.UID},
	})
	switch {
	case err == nil:
		p.log.InfoContext(ctx, api.kind()+" deleted", "name", name)
		return nil
	case apierrors.IsNotFound(err):
		return nil
	default: // a Conflict means another object took the name meanwhile: say so
		return fmt.Errorf("delete %s: %w", api.kind(), classify(err))
	}
}

// Inspect reports the workload from its pod and Service.
func (p *Provisioner) Inspect(ctx context.Context, name string) (provisioner.Workload, error) {
	pod, err := p.client.CoreV1().Pods(p.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return provisioner.Workload{}, fmt.Errorf("inspect %s: pod: %w", name, classify(err))
	}
	if err != nil || !p.owns(pod.ObjectMeta) {
		pod = nil
	}
	svc, err := p.client.CoreV1().Services(p.cfg.Namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return provisioner.Workload{}, fmt.Errorf("inspect %s: service: %w", name, classify(err))
	}
	if err != nil || !p.owns(svc.ObjectMeta) {
		svc = nil
	}
	if pod == nil && svc == nil {
		return provisioner.Workload{}, fmt.Errorf("inspect %s: %w", name, provisioner.ErrNotFound)
	}
	return p.instance(pod, svc), nil
}

// List reports every workload of this installation, from its pods and Services.
func (p *Provisioner) List(ctx context.Context) ([]provisioner.Workload, error) {
	opts := metav1.ListOptions{LabelSelector: p.listSelector()}
	pods, err := p.client.CoreV1().Pods(p.cfg.Namespace).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", classify(err))
	}
	services, err := p.client.CoreV1().Services(p.cfg.Namespace).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list services: %w", classify(err))
	}
	type pair struct {
		pod *corev1.Pod
		svc *corev1.Service
	}
	byName := map[string]*pair{}
	for i := range pods.Items {
		byName[pods.Items[i].Name] = &pair{pod: &pods.Items[i]}
	}
	for i := range services.Items {
		s := &services.Items[i]
		if pr, ok := byName[s.Name]; ok {
			pr.svc = s
		} else {
			byName[s.Name] = &pair{svc: s}
		}
	}
	out := make([]provisioner.Workload, 0, len(byName))
	for _, pr := range byName {
		out = append(out, p.instance(pr.pod, pr.svc))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (p *Provisioner) listSelector() string {
	return k8slabels.SelectorFromSet(k8slabels.Set{
		provisioner.LabelManagedBy: "calipso",
		provisioner.LabelInstance:  p.cfg.Instance,
	}).String()
}

// owns says whether an object was made by this installation's provisioner.
func (p *Provisioner) owns(meta metav1.ObjectMeta) bool {
	return meta.Labels[provisioner.LabelManagedBy] == "calipso" && meta.Labels[provisioner.LabelInstance] == p.cfg.Instance
}

// instance builds the report of a workload from its pod and Service, either of which
// may be nil (not both).
func (p *Provisioner) instance(pod *corev1.Pod, svc *corev1.Service) provisioner.Workload {
	var inst provisioner.Workload
	var meta metav1.ObjectMeta
	var uid types.UID
	if pod != nil {
		meta, uid = pod.ObjectMeta, pod.UID
		inst.State, inst.Reason = podState(pod)
	} else {
		meta, uid = svc.ObjectMeta, svc.UID
		inst.State = provisioner.StateStopped // Stop deletes the pod only
	}
	inst.Name, inst.ID = meta.Name, string(uid)
	inst.Owner = meta.Annotations[provisioner.LabelOwner]
	inst.ResourceID, _ = strconv.ParseInt(meta.Labels[provisioner.LabelResource], 10, 64)
	if svc != nil {
		port := int32(provisioner.PortFor(svc.Annotations[annotationProtocol]))
		switch svc.Spec.Type {
		case corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
			inst.Host = p.cfg.HostAddress
			for _, sp := range svc.Spec.Ports {
				if sp.Port == port {
					inst.Port = int(sp.NodePort)
				}
			}
		default:
			inst.Host = svc.Name + "." + svc.Namespace + ".svc"
			inst.Port = int(port)
		}
		// Without the token, which only the log had: Start's report carries it.
		inst.URL = provisioner.LinkURL(svc.Annotations[annotationProtocol], inst.Host, inst.Port, "")
	}
	return inst
}
