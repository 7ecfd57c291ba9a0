package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/calipsoplus/calipso/internal/testenv"
	"github.com/calipsoplus/calipso/settings"
)

type kustomization struct {
	Namespace string   `json:"namespace"`
	Resources []string `json:"resources"`
}

// manifests reads deploy/kubernetes/kustomization.yaml and every object of the files
// it lists, with the kustomization's namespace set (what `kubectl apply -k` sends,
// short of the common label and image name, which the dry run does not depend on).
func manifests(t *testing.T) (kustomization, []*unstructured.Unstructured) {
	t.Helper()
	dir := deployFile("kubernetes")
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	var objs []*unstructured.Unstructured
	for _, name := range k.Resources {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", name, err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var obj unstructured.Unstructured
			if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(obj.Object) == 0 {
				continue
			}
			obj.SetNamespace(k.Namespace)
			objs = append(objs, &obj)
		}
	}
	return k, objs
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	k, objs := manifests(t)
	files, err := filepath.Glob(deployFile("kubernetes", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			names = append(names, base)
		}
	}
	listed := slices.Clone(k.Resources)
	slices.Sort(listed)
	if !slices.Equal(listed, names) {
		t.Errorf("kustomization.yaml resources %v, directory has %v", listed, names)
	}
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.GetKind()] = true
	}
	for _, want := range []string{"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding"} {
		if !kinds[want] {
			t.Errorf("no %s among the manifests", want)
		}
	}
}

// TestConfigMapSettingsAreValid: the settings shipped in the ConfigMap, with the
// Secret's variables, pass Calipso's own validation.
func TestConfigMapSettingsAreValid(t *testing.T) {
	_, objs := manifests(t)
	var text string
	env := map[string]string{}
	for _, o := range objs {
		switch o.GetKind() {
		case "ConfigMap":
			text, _, _ = unstructured.NestedString(o.Object, "data", "settings.toml")
		case "Secret":
			m, _, _ := unstructured.NestedStringMap(o.Object, "stringData")
			for k, v := range m {
				env[k] = v
			}
		}
	}
	if text == "" {
		t.Fatal("no settings.toml in the ConfigMap")
	}
	if _, err := settings.Parse([]byte(text), "configmap.yaml", func(k string) string { return env[k] }); err != nil {
		t.Errorf("settings in configmap.yaml: %v", err)
	}
}

// TestManifestsDryRun applies every manifest to a real kube-apiserver with a
// server-side dry run: schemas, defaults and admission all check them.
func TestManifestsDryRun(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		testenv.Missing(t, "kube-apiserver and etcd", "KUBEBUILDER_ASSETS is not set (deploy/test.d/kube-assets.sh builds them)")
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	k, objs := manifests(t)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Namespaced dry runs need the namespace to exist: the README has operators create it.
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k.Namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range objs {
		name := obj.GetKind() + "/" + obj.GetName()
		t.Run(name, func(t *testing.T) {
			gvk := obj.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			got, err := dyn.Resource(m.Resource).Namespace(obj.GetNamespace()).Create(ctx, obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
			if err != nil {
				t.Fatalf("dry-run create %s: %v", name, err)
			}
			if got.GetName() != obj.GetName() {
				t.Errorf("dry run answered %q", got.GetName())
			}
		})
	}
	// A dry run stores nothing.
	if list, err := cs.AppsV1().Deployments(k.Namespace).List(ctx, metav1.ListOptions{}); err != nil || len(list.Items) != 0 {
		t.Errorf("deployments after the dry run: %v, %v; want none", list, err)
	}
}
