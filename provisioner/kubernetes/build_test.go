package kubernetes

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/calipsoplus/calipso/provisioner"
)

func testConfig() Config {
	return Config{Namespace: "calipso", Instance: "esrf", HostAddress: "desk.example.org",
		ServiceType: ServiceNodePort, Volumes: VolumesHostPath}
}

func testSpec() provisioner.Spec {
	return provisioner.Spec{
		Instance: "esrf", ResourceID: 42, Owner: "jane.doe@esrf.fr", Experiment: "ih-ls3000~2026-01",
		Image: "calipso/desktop:1", Protocol: "vnc",
		CPUs: 1.5, MemoryBytes: 4 << 30, DiskBytes: 10 << 30,
		UID: 1000, GID: 1000, ExtraGroups: []int{2000, 2001},
		WorkDir: "/home/jane",
		Mounts: []provisioner.Mount{
			{Source: "/data/visitor/ih-ls3000", Target: "/data", ReadOnly: true},
			{Source: "/results/jane", Target: "/results"},
		},
		Env:     map[string]string{"VNC_PASSWORD_FILE": provisioner.SecretPath("vnc_password"), "A_FIRST": "1"},
		Secrets: map[string]string{"vnc_password": "s3cret"},
	}
}

func TestBuildPodSecurity(t *testing.T) {
	tests := []struct {
		name        string
		uid         int
		allowRoot   bool
		wantNonRoot bool
		wantAdd     []corev1.Capability
	}{
		{"user", 1000, false, true, nil},
		{"user with root allowed", 1000, true, true, nil},
		{"root allowed", 0, true, false, rootCapabilities},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec()
			spec.UID, spec.AllowRoot = tt.uid, tt.allowRoot
			if err := validateSpec(testConfig(), spec); err != nil {
				t.Fatalf("validateSpec: %v", err)
			}
			pod := buildPod(testConfig(), spec)
			psc := pod.Spec.SecurityContext
			if *psc.RunAsUser != int64(tt.uid) || *psc.RunAsGroup != 1000 {
				t.Errorf("runAs = %d:%d, want %d:1000", *psc.RunAsUser, *psc.RunAsGroup, tt.uid)
			}
			if *psc.RunAsNonRoot != tt.wantNonRoot {
				t.Errorf("runAsNonRoot = %v, want %v", *psc.RunAsNonRoot, tt.wantNonRoot)
			}
			if !reflect.DeepEqual(psc.SupplementalGroups, []int64{2000, 2001}) {
				t.Errorf("supplementalGroups = %v", psc.SupplementalGroups)
			}
			if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("seccomp = %v, want RuntimeDefault", psc.SeccompProfile)
			}
			csc := pod.Spec.Containers[0].SecurityContext
			if *csc.AllowPrivilegeEscalation || *csc.Privileged {
				t.Error("privilege escalation or privileged allowed")
			}
			if !reflect.DeepEqual(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !reflect.DeepEqual(csc.Capabilities.Add, tt.wantAdd) {
				t.Errorf("capabilities = %+v", csc.Capabilities)
			}
			if *pod.Spec.AutomountServiceAccountToken || *pod.Spec.EnableServiceLinks {
				t.Error("service account token or service links enabled")
			}
		})
	}
}

func TestValidateSpecRefuses(t *testing.T) {
	tests := []struct {
		name   string
		cfg    func(*Config)
		mutate func(*provisioner.Spec)
		want   string
	}{
		{"root", nil, func(s *provisioner.Spec) { s.UID = 0 }, "root"},
		{"root's group", nil, func(s *provisioner.Spec) { s.GID = 0 }, "gid 0"},
		{"root's group as a supplementary group", nil, func(s *provisioner.Spec) { s.ExtraGroups = []int{0} }, "group 0"},
		{"relative source", nil, func(s *provisioner.Spec) { s.Mounts[0].Source = "data" }, "clean absolute"},
		{"dotdot source", nil, func(s *provisioner.Spec) { s.Mounts[0].Source = "/data/../etc" }, "clean absolute"},
		{"relative target", nil, func(s *provisioner.Spec) { s.Mounts[1].Target = "results" }, "clean absolute"},
		{"name not a DNS label", nil, func(s *provisioner.Spec) { s.Instance = "ESRF_Grenoble" }, "DNS label"},
		{"bad env name", nil, func(s *provisioner.Spec) { s.Env["1BAD"] = "x" }, "environment variable"},
		{"bad regex", nil, func(s *provisioner.Spec) { s.LogRegex = "token=(" }, "log regex"},
		{"relative workdir", nil, func(s *provisioner.Spec) { s.WorkDir = "home" }, "working directory"},
		{"bad secret name", nil, func(s *provisioner.Spec) { s.Secrets["VNC/password"] = "x" }, "secret name"},
		{"mount over the secrets", nil, func(s *provisioner.Spec) { s.Mounts[1].Target = "/run" }, "secrets"},
		{"source outside claim", func(c *Config) { c.Volumes, c.Claim, c.ClaimRoot = VolumesPVC, "data", "/data" },
			func(s *provisioner.Spec) { s.Mounts[1].Source = "/database/x" }, "not under the claim root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, spec := testConfig(), testSpec()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			tt.mutate(&spec)
			err := validateSpec(cfg, spec)
			if !errors.Is(err, provisioner.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validateSpec = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestBuildVolumes(t *testing.T) {
	dir, dirOrCreate := corev1.HostPathDirectory, corev1.HostPathDirectoryOrCreate
	tests := []struct {
		name        string
		cfg         func(*Config)
		wantVolumes []corev1.Volume
		wantMounts  []corev1.VolumeMount
	}{
		{"hostPath", nil,
			[]corev1.Volume{
				{Name: "data-0", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/data/visitor/ih-ls3000", Type: &dir}}},
				{Name: "data-1", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/results/jane", Type: &dirOrCreate}}},
			},
			[]corev1.VolumeMount{{Name: "data-0", MountPath: "/data", ReadOnly: true}, {Name: "data-1", MountPath: "/results"}},
		},
		{"nfs", func(c *Config) { c.Volumes, c.NFSServer = VolumesNFS, "nfs.example.org" },
			[]corev1.Volume{
				{Name: "data-0", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example.org", Path: "/data/visitor/ih-ls3000", ReadOnly: true}}},
				{Name: "data-1", VolumeSource: corev1.VolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example.org", Path: "/results/jane"}}},
			},
			[]corev1.VolumeMount{{Name: "data-0", MountPath: "/data", ReadOnly: true}, {Name: "data-1", MountPath: "/results"}},
		},
		{"pvc", func(c *Config) { c.Volumes, c.Claim = VolumesPVC, "facility-data" },
			[]corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "facility-data"}}}},
			[]corev1.VolumeMount{
				{Name: "data", MountPath: "/data", ReadOnly: true, SubPath: "data/visitor/ih-ls3000"},
				{Name: "data", MountPath: "/results", SubPath: "results/jane"},
			},
		},
		{"pvc with root", func(c *Config) { c.Volumes, c.Claim, c.ClaimRoot = VolumesPVC, "facility-data", "/data" },
			nil, // only the mounts are checked
			[]corev1.VolumeMount{
				{Name: "data", MountPath: "/data", ReadOnly: true, SubPath: "visitor/ih-ls3000"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, spec := testConfig(), testSpec()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			spec.Secrets = nil // their volume: TestBuildSecret
			if tt.wantVolumes == nil {
				spec.Mounts = spec.Mounts[:1]
			}
			if err := validateSpec(cfg, spec); err != nil {
				t.Fatalf("validateSpec: %v", err)
			}
			pod := buildPod(cfg, spec)
			if tt.wantVolumes != nil && !reflect.DeepEqual(pod.Spec.Volumes, tt.wantVolumes) {
				t.Errorf("volumes = %+v\nwant %+v", pod.Spec.Volumes, tt.wantVolumes)
			}
			if got := pod.Spec.Containers[0].VolumeMounts; !reflect.DeepEqual(got, tt.wantMounts) {
				t.Errorf("mounts = %+v\nwant %+v", got, tt.wantMounts)
			}
		})
	}
}

func TestBuildResources(t *testing.T) {
	tests := []struct {
		name string
		cpus float64
		mem  int64
		disk int64
		want corev1.ResourceList
	}{
		{"none", 0, 0, 0, nil},
		{"all", 1.5, 4 << 30, 10 << 30, corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("4Gi"),
			corev1.ResourceEphemeralStorage: resource.MustParse("10Gi")}},
		{"tiny cpu rounds up to 1m", 0.0001, 0, 0, corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m")}},
		{"memory only", 0, 512 << 20, 0, corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec()
			spec.CPUs, spec.MemoryBytes, spec.DiskBytes = tt.cpus, tt.mem, tt.disk
			got := buildPod(testConfig(), spec).Spec.Containers[0].Resources
			if len(got.Limits) != len(tt.want) || len(got.Requests) != len(tt.want) {
				t.Fatalf("resources = %+v, want limits=requests=%v", got, tt.want)
			}
			for k, want := range tt.want {
				if l, r := got.Limits[k], got.Requests[k]; l.Cmp(want) != 0 || r.Cmp(want) != 0 {
					t.Errorf("%s: limit %s request %s, want %s", k, l.String(), r.String(), want.String())
				}
			}
		})
	}
}

func TestBuildLabelsNamesEnv(t *testing.T) {
	cfg, spec := testConfig(), testSpec()
	pod, svc := buildPod(cfg, spec), buildService(cfg, spec)
	for _, meta := range []struct {
		kind        string
		name        string
		labels      map[string]string
		annotations map[string]string
	}{{"pod", pod.Name, pod.Labels, pod.Annotations}, {"service", svc.Name, svc.Labels, svc.Annotations}} {
		if meta.name != "calipso-esrf-42" {
			t.Errorf("%s name = %q", meta.kind, meta.name)
		}
		want := map[string]string{
			provisioner.LabelManagedBy: "calipso", provisioner.LabelInstance: "esrf", provisioner.LabelResource: "42",
			provisioner.LabelOwner: "jane.doe_esrf.fr", provisioner.LabelExperiment: "ih-ls3000_2026-01",
		}
		if !reflect.DeepEqual(meta.labels, want) {
			t.Errorf("%s labels = %v, want %v", meta.kind, meta.labels, want)
		}
		if meta.annotations[provisioner.LabelOwner] != spec.Owner || meta.annotations[provisioner.LabelExperiment] != spec.Experiment {
			t.Errorf("%s annotations = %v, want the exact owner and experiment", meta.kind, meta.annotations)
		}
	}
	if !reflect.DeepEqual(svc.Spec.Selector, map[string]string{
		provisioner.LabelManagedBy: "calipso", provisioner.LabelInstance: "esrf", provisioner.LabelResource: "42"}) {
		t.Errorf("selector = %v", svc.Spec.Selector)
	}
	for k, v := range svc.Spec.Selector {
		if pod.Labels[k] != v {
			t.Errorf("service selector %s=%s does not match the pod", k, v)
		}
	}
	var ports []int32
	for _, p := range svc.Spec.Ports {
		ports = append(ports, p.Port)
	}
	if !reflect.DeepEqual(ports, []int32{3389, 5901, 8888}) || svc.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("service %s ports %v", svc.Spec.Type, ports)
	}
	c := pod.Spec.Containers[0]
	if !reflect.DeepEqual(c.Env, []corev1.EnvVar{{Name: "A_FIRST", Value: "1"}, {Name: "VNC_PASSWORD_FILE", Value: "/run/calipso/vnc_password"}}) {
		t.Errorf("env = %v, want sorted", c.Env)
	}
	if c.WorkingDir != "/home/jane" || c.Image != "calipso/desktop:1" || pod.Spec.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("container = %+v", c)
	}
	if !reflect.DeepEqual(buildPod(cfg, spec), pod) {
		t.Error("the same spec built a different pod")
	}
}

// TestBuildSecret: the spec's secrets are a Secret of the workload's name, labelled as
// its other objects, mounted read-only at provisioner.SecretsDir; the pod itself holds
// no secret (whoever may read pods would read it).
func TestBuildSecret(t *testing.T) {
	cfg, spec := testConfig(), testSpec()
	secret, pod := buildSecret(cfg, spec), buildPod(cfg, spec)
	if secret == nil || secret.Name != "calipso-esrf-42" || !reflect.DeepEqual(secret.Labels, pod.Labels) ||
		secret.Type != corev1.SecretTypeOpaque || !reflect.DeepEqual(secret.Data, map[string][]byte{"vnc_password": []byte("s3cret")}) {
		t.Fatalf("secret = %+v", secret)
	}
	var mounted bool
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		if m.Name == secretsVolume {
			mounted = m.MountPath == "/run/calipso" && m.ReadOnly
		}
	}
	var volume *corev1.SecretVolumeSource
	for _, v := range pod.Spec.Volumes {
		if v.Name == secretsVolume {
			volume = v.Secret
		}
	}
	if !mounted || volume == nil || volume.SecretName != secret.Name || volume.DefaultMode == nil || *volume.DefaultMode != 0o444 {
		t.Errorf("pod volumes %+v, mounts %+v; want the secret read-only at /run/calipso", pod.Spec.Volumes, pod.Spec.Containers[0].VolumeMounts)
	}
	if shown, _ := json.Marshal(pod); strings.Contains(string(shown), "s3cret") {
		t.Errorf("the pod holds the secret: %s", shown)
	}
	spec.Secrets = nil
	if secret, pod := buildSecret(cfg, spec), buildPod(cfg, spec); secret != nil || len(pod.Spec.Volumes) != 2 {
		t.Errorf("without secrets: secret %+v, volumes %+v; want none of them", secret, pod.Spec.Volumes)
	}
}

func TestLabelValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"jane", "jane"},
		{"jane.doe@esrf.fr", "jane.doe_esrf.fr"},
		{"ih-ls3000~2026-01", "ih-ls3000_2026-01"},
		{"~x~", "x"},
		{"", ""},
		{"@@@", ""},
		{strings.Repeat("a", 70), strings.Repeat("a", 63)},
		{"élise", "lise"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := labelValue(tt.in)
			if got != tt.want {
				t.Errorf("labelValue(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if msgs := validation.IsValidLabelValue(got); len(msgs) > 0 {
				t.Errorf("labelValue(%q) = %q is not valid: %v", tt.in, got, msgs)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"ok", func(*Config) {}, ""},
		{"clusterIP needs no host", func(c *Config) { c.ServiceType, c.HostAddress = ServiceClusterIP, "" }, ""},
		{"no namespace", func(c *Config) { c.Namespace = "" }, "namespace is required"},
		{"bad instance", func(c *Config) { c.Instance = "a b" }, "instance"},
		{"nodePort without host", func(c *Config) { c.HostAddress = "" }, "host address"},
		{"bad service type", func(c *Config) { c.ServiceType = "LoadBalancer" }, "service type"},
		{"nfs without server", func(c *Config) { c.Volumes = VolumesNFS }, "NFS server"},
		{"pvc without claim", func(c *Config) { c.Volumes = VolumesPVC }, "claim"},
		{"bad volume mode", func(c *Config) { c.Volumes = "ceph" }, "volume mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			tt.mutate(&cfg)
			err := cfg.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate = %v, want ErrConfig mentioning %q", err, tt.want)
			}
		})
	}
}
