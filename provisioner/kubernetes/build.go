package kubernetes

import (
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/calipsoplus/calipso/provisioner"
)

// containerName is the single container of every workload pod.
const containerName = "workload"

// servicePorts are exposed by every workload's Service, whatever its protocol, as
// CalipsoPlus did: the image decides which one answers.
var servicePorts = []struct {
	name string
	port int32
}{
	{"rdp", provisioner.PortRDP},
	{"vnc", provisioner.PortVNC},
	{"http", provisioner.PortHTTP},
}

// rootCapabilities are kept for a workload explicitly allowed to run as root: the
// least a desktop's init needs to hand the session to the user. Non-root workloads
// keep none.
var rootCapabilities = []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID"}

// validateSpec checks what provisioner.Spec.Validate does plus what Kubernetes
// requires of names and paths, so that bad input fails before any API call.
func validateSpec(cfg Config, spec provisioner.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	var errs []error
	if msgs := validation.IsDNS1123Label(spec.Name()); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("name %q is not a Kubernetes DNS label: %s", spec.Name(), strings.Join(msgs, "; ")))
	}
	for _, m := range spec.Mounts {
		if _, err := mountSource(cfg, m); err != nil {
			errs = append(errs, err)
		}
		if !cleanAbs(m.Target) {
			errs = append(errs, fmt.Errorf("mount target %q must be a clean absolute path", m.Target))
		}
	}
	for k := range spec.Env {
		if msgs := validation.IsEnvVarName(k); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("environment variable %q: %s", k, strings.Join(msgs, "; ")))
		}
	}
	if spec.WorkDir != "" && !path.IsAbs(spec.WorkDir) {
		errs = append(errs, fmt.Errorf("working directory %q must be absolute", spec.WorkDir))
	}
	if spec.LogRegex != "" {
		if _, err := regexp.Compile(spec.LogRegex); err != nil {
			errs = append(errs, fmt.Errorf("log regex: %w", err))
		}
	}
	if spec.CPUs > 1e6 || math.IsNaN(spec.CPUs) {
		errs = append(errs, fmt.Errorf("cpus %v out of range", spec.CPUs))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", provisioner.ErrInvalid, err)
	}
	return nil
}

func cleanAbs(p string) bool { return path.IsAbs(p) && path.Clean(p) == p }

// mountSource returns where a mount's data comes from in the configured volume mode:
// the node or NFS path, or the subPath inside the claim.
func mountSource(cfg Config, m provisioner.Mount) (string, error) {
	if !cleanAbs(m.Source) {
		return "", fmt.Errorf("mount source %q must be a clean absolute path", m.Source)
	}
	if cfg.Volumes != VolumesPVC {
		return m.Source, nil
	}
	root := path.Clean("/" + cfg.ClaimRoot)
	rel := strings.TrimPrefix(strings.TrimPrefix(m.Source, root), "/")
	if m.Source != root && !strings.HasPrefix(m.Source, strings.TrimSuffix(root, "/")+"/") {
		return "", fmt.Errorf("mount source %q is not under the claim root %q", m.Source, root)
	}
	return rel, nil
}

// objectMeta is the name, labels and annotations every object of the workload carries.
func objectMeta(cfg Config, spec provisioner.Spec) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:        spec.Name(),
		Namespace:   cfg.Namespace,
		Labels:      labels(spec),
		Annotations: annotations(spec),
	}
}

// labels is spec.Labels() with every value made a valid Kubernetes label value.
func labels(spec provisioner.Spec) map[string]string {
	out := spec.Labels()
	for k, v := range out {
		out[k] = labelValue(v)
	}
	return out
}

// annotations keep the exact owner and experiment that labels may have to mangle.
func annotations(spec provisioner.Spec) map[string]string {
	return map[string]string{
		provisioner.LabelOwner:      spec.Owner,
		provisioner.LabelExperiment: spec.Experiment,
	}
}

// selector picks the one pod of a workload: the other labels are informative.
func selector(spec provisioner.Spec) map[string]string {
	l := labels(spec)
	return map[string]string{
		provisioner.LabelManagedBy: l[provisioner.LabelManagedBy],
		provisioner.LabelInstance:  l[provisioner.LabelInstance],
		provisioner.LabelResource:  l[provisioner.LabelResource],
	}
}

// labelValue maps v to a valid label value: characters outside [A-Za-z0-9-_.]
// become "_", the ends are alphanumeric and the length is at most 63.
func labelValue(v string) string {
	b := []byte(v)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	s := string(b)
	if len(s) > validation.LabelValueMaxLength {
		s = s[:validation.LabelValueMaxLength]
	}
	isAlnum := func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
	}
	return strings.TrimFunc(s, func(r rune) bool { return !isAlnum(r) })
}

// buildService is the Service exposing the workload's ports.
func buildService(cfg Config, spec provisioner.Spec) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: objectMeta(cfg, spec),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceType(cfg.ServiceType),
			Selector: selector(spec),
		},
	}
	for _, p := range servicePorts {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name:       p.name,
			Protocol:   corev1.ProtocolTCP,
			Port:       p.port,
			TargetPort: intstr.FromInt32(p.port),
		})
	}
	return svc
}

// secretsVolume is the pod's volume of its Secret, mounted at provisioner.SecretsDir.
const secretsVolume = "calipso-secrets"

// secretMode is the mode of the secret files: the kubelet writes a Secret volume's
// files as root's, and could give them to a group only through the pod's fsGroup,
// which would also re-own every volume that supports it (the pvc mode's claim, with
// every dataset on it) at each start. Readable by all, then: the pod's processes are
// all the workload's own uid, and the directory is the volume's, read-only.
const secretMode int32 = 0o444

// buildSecret is the Secret holding the spec's secrets, or nil when it has none. spec
// must have passed validateSpec.
func buildSecret(cfg Config, spec provisioner.Spec) *corev1.Secret {
	if len(spec.Secrets) == 0 {
		return nil
	}
	data := make(map[string][]byte, len(spec.Secrets))
	for k, v := range spec.Secrets {
		data[k] = []byte(v)
	}
	return &corev1.Secret{ObjectMeta: objectMeta(cfg, spec), Type: corev1.SecretTypeOpaque, Data: data}
}

// buildPod is the workload's pod. spec must have passed validateSpec.
func buildPod(cfg Config, spec provisioner.Spec) *corev1.Pod {
	uid, gid := int64(spec.UID), int64(spec.GID)
	nonRoot := spec.UID != 0
	groups := make([]int64, 0, len(spec.ExtraGroups))
	for _, g := range spec.ExtraGroups {
		groups = append(groups, int64(g))
	}
	caps := &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}
	if !nonRoot {
		caps.Add = rootCapabilities
	}
	volumes, mounts := buildVolumes(cfg, spec)
	if len(spec.Secrets) > 0 {
		volumes = append(volumes, corev1.Volume{
			Name: secretsVolume,
			VolumeSource: corev1.VolumeSource{
				Secret: &corev1.SecretVolumeSource{SecretName: spec.Name(), DefaultMode: new(secretMode)},
			},
		})
		mounts = append(mounts, corev1.VolumeMount{Name: secretsVolume, MountPath: provisioner.SecretsDir, ReadOnly: true})
	}

	container := corev1.Container{
		Name:            containerName,
		Image:           spec.Image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		WorkingDir:      spec.WorkDir,
		Env:             buildEnv(spec.Env),
		Resources:       buildResources(spec),
		VolumeMounts:    mounts,
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: new(false),
			Privileged:               new(false),
			Capabilities:             caps,
		},
	}
	for _, p := range servicePorts {
		container.Ports = append(container.Ports, corev1.ContainerPort{Name: p.name, ContainerPort: p.port, Protocol: corev1.ProtocolTCP})
	}
	return &corev1.Pod{
		ObjectMeta: objectMeta(cfg, spec),
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyOnFailure,
			AutomountServiceAccountToken: new(false),
			EnableServiceLinks:           new(false), // no env of every Service in the namespace
			Hostname:                     spec.Name(),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser:          &uid,
				RunAsGroup:         &gid,
				RunAsNonRoot:       &nonRoot,
				SupplementalGroups: groups,
				SeccompProfile:     &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{container},
			Volumes:    volumes,
		},
	}
}

// buildEnv sorts the variables so that the same spec always builds the same pod.
func buildEnv(env map[string]string) []corev1.EnvVar {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]corev1.EnvVar, 0, len(keys))
	for _, k := range keys {
		out = append(out, corev1.EnvVar{Name: k, Value: env[k]})
	}
	return out
}

// buildResources sets requests equal to limits for every limit the spec has.
func buildResources(spec provisioner.Spec) corev1.ResourceRequirements {
	limits := corev1.ResourceList{}
	if spec.CPUs > 0 {
		milli := max(int64(math.Round(spec.CPUs*1000)), 1)
		limits[corev1.ResourceCPU] = *resource.NewMilliQuantity(milli, resource.DecimalSI)
	}
	if spec.MemoryBytes > 0 {
		limits[corev1.ResourceMemory] = *resource.NewQuantity(spec.MemoryBytes, resource.BinarySI)
	}
	if spec.DiskBytes > 0 {
		limits[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(spec.DiskBytes, resource.BinarySI)
	}
	if len(limits) == 0 {
		return corev1.ResourceRequirements{}
	}
	return corev1.ResourceRequirements{Limits: limits, Requests: limits.DeepCopy()}
}

// buildVolumes maps the spec's mounts onto volumes of the configured mode.
func buildVolumes(cfg Config, spec provisioner.Spec) ([]corev1.Volume, []corev1.VolumeMount) {
	if len(spec.Mounts) == 0 {
		return nil, nil
	}
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	if cfg.Volumes == VolumesPVC {
		volumes = append(volumes, corev1.Volume{
			Name: "data",
			VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: cfg.Claim},
			},
		})
	}
	for i, m := range spec.Mounts {
		src, _ := mountSource(cfg, m) // checked by validateSpec
		vm := corev1.VolumeMount{Name: "data", MountPath: m.Target, ReadOnly: m.ReadOnly}
		switch cfg.Volumes {
		case VolumesPVC:
			vm.SubPath = src
		case VolumesNFS:
			vm.Name = "data-" + strconv.Itoa(i)
			volumes = append(volumes, corev1.Volume{
				Name: vm.Name,
				VolumeSource: corev1.VolumeSource{
					NFS: &corev1.NFSVolumeSource{Server: cfg.NFSServer, Path: src, ReadOnly: m.ReadOnly},
				},
			})
		default:
			vm.Name = "data-" + strconv.Itoa(i)
			kind := corev1.HostPathDirectoryOrCreate
			if m.ReadOnly {
				kind = corev1.HostPathDirectory
			}
			volumes = append(volumes, corev1.Volume{
				Name: vm.Name,
				VolumeSource: corev1.VolumeSource{
					HostPath: &corev1.HostPathVolumeSource{Path: src, Type: &kind},
				},
			})
		}
		mounts = append(mounts, vm)
	}
	return volumes, mounts
}
