// Package kubernetes_test checks the manifests of deploy/kubernetes: that
// they decode strictly, that the API server accepts every object (a
// server-side dry run), that the Deployment's flags are flags of `berth
// server`, and that the RBAC they grant is enough for the kubernetes sandbox
// driver and no more.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	yamlutil "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// The manifests' namespaces: Berth's, and its sandboxes'.
const (
	berthNamespace   = "berth"
	sandboxNamespace = "berth-sandboxes"
)

// manifest is one object of the manifests, decoded into its Go type.
type manifest struct {
	file string
	gvk  schema.GroupVersionKind
	obj  runtime.Object
}

func (m manifest) String() string {
	acc, _ := metaOf(m.obj)
	return fmt.Sprintf("%s: %s %s/%s", m.file, m.gvk.Kind, acc.GetNamespace(), acc.GetName())
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	acc, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return acc, nil
}

// strictSerializer decodes YAML into the client-go scheme's types and
// fails on unknown or duplicate fields.
func strictSerializer() *json.Serializer {
	return json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
}

// decodeStrict decodes every document of a multi-document YAML file.
func decodeStrict(file string, data []byte) ([]manifest, error) {
	ser := strictSerializer()
	r := yamlutil.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []manifest
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		if j, err := yaml.YAMLToJSON(doc); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		} else if string(bytes.TrimSpace(j)) == "null" {
			continue // comments only
		}
		obj, gvk, err := ser.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		obj.GetObjectKind().SetGroupVersionKind(*gvk)
		out = append(out, manifest{file: file, gvk: *gvk, obj: obj})
	}
}

// kustomization is the part of kustomization.yaml the tests read.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// loadManifests decodes the files kustomization.yaml lists, in its order,
// after checking that it lists every other YAML file of the directory.
func loadManifests(t testing.TB) []manifest {
	t.Helper()
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	listed := slices.Clone(k.Resources)
	sort.Strings(listed)
	if !slices.Equal(files, listed) {
		t.Fatalf("kustomization.yaml lists %v; the directory has %v", k.Resources, files)
	}
	var all []manifest
	for _, f := range k.Resources {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ms, err := decodeStrict(f, data)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ms...)
	}
	return all
}

// find returns the one object of type T named name.
func find[T runtime.Object](t testing.TB, ms []manifest, name string) T {
	t.Helper()
	var found []T
	for _, m := range ms {
		if o, ok := m.obj.(T); ok {
			if acc, _ := metaOf(m.obj); acc.GetName() == name {
				found = append(found, o)
			}
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want one %T named %q in the manifests, found %d", zero, name, len(found))
	}
	return found[0]
}

func TestDecodeStrict(t *testing.T) {
	ms := loadManifests(t)
	kinds := map[string]int{}
	for _, m := range ms {
		kinds[m.gvk.Kind]++
		acc, err := metaOf(m.obj)
		if err != nil {
			t.Errorf("%s: %v", m, err)
			continue
		}
		if _, cluster := m.obj.(*corev1.Namespace); !cluster && acc.GetNamespace() == "" {
			t.Errorf("%s: no namespace; every object but a Namespace names its own", m)
		}
	}
	// Nothing cluster-wide but the two namespaces.
	for _, kind := range []string{"ClusterRole", "ClusterRoleBinding"} {
		if kinds[kind] > 0 {
			t.Errorf("the manifests grant cluster-wide rights (%s)", kind)
		}
	}
	for kind, want := range map[string]int{"Namespace": 2, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "Deployment": 1, "StatefulSet": 1, "Service": 2} {
		if kinds[kind] != want {
			t.Errorf("%d %s objects, want %d", kinds[kind], kind, want)
		}
	}
	if d := find[*appsv1.Deployment](t, ms, "berth"); d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("the Deployment has %v replicas, want 2", d.Spec.Replicas)
	}

	// The decoder itself must refuse what the API server would drop.
	for _, tt := range []struct{ name, doc string }{
		{"unknown field", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replica: 2}\n"},
		{"duplicate field", "apiVersion: v1\nkind: Service\nmetadata: {name: x, name: y}\n"},
		{"unknown kind", "apiVersion: v1\nkind: Deploymnt\nmetadata: {name: x}\n"},
	} {
		if _, err := decodeStrict(tt.name, []byte(tt.doc)); err == nil {
			t.Errorf("%s: decoded without an error", tt.name)
		}
	}
}

// TestSecretReferences checks that the pods' Secret references name a
// Secret of the manifests and a key it has, but for berth-keys, which the
// operator creates (berth.yaml says how).
func TestSecretReferences(t *testing.T) {
	ms := loadManifests(t)
	secrets := map[string]map[string]bool{}
	for _, m := range ms {
		if s, ok := m.obj.(*corev1.Secret); ok {
			keys := map[string]bool{}
			for k := range s.StringData {
				keys[k] = true
			}
			for k := range s.Data {
				keys[k] = true
			}
			secrets[s.Namespace+"/"+s.Name] = keys
		}
	}
	operatorMade := map[string]bool{berthNamespace + "/berth-keys": true}
	check := func(where, ns, name, key string) {
		keys, ok := secrets[ns+"/"+name]
		switch {
		case !ok && !operatorMade[ns+"/"+name]:
			t.Errorf("%s refers to Secret %s/%s, which the manifests do not have", where, ns, name)
		case ok && key != "" && !keys[key]:
			t.Errorf("%s refers to key %q of Secret %s/%s, which has %v", where, key, ns, name, keys)
		}
	}
	for _, m := range ms {
		var spec *corev1.PodSpec
		var ns string
		switch o := m.obj.(type) {
		case *appsv1.Deployment:
			spec, ns = &o.Spec.Template.Spec, o.Namespace
		case *appsv1.StatefulSet:
			spec, ns = &o.Spec.Template.Spec, o.Namespace
		default:
			continue
		}
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					check(fmt.Sprintf("%s container %s env %s", m, c.Name, e.Name), ns, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
				}
			}
			for _, e := range c.EnvFrom {
				if e.SecretRef != nil {
					check(fmt.Sprintf("%s container %s envFrom", m, c.Name), ns, e.SecretRef.Name, "")
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.Secret != nil {
				check(fmt.Sprintf("%s volume %s", m, v.Name), ns, v.Secret.SecretName, "")
			}
		}
	}
}

// varRef is a Kubernetes dependent-variable reference in a container's
// command or args.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandArgs expands $(NAME) as the kubelet does, with example values for
// the container's environment variables; a reference to a variable the
// container does not define (which the kubelet would leave as it is) is an
// error.
func expandArgs(c corev1.Container, example map[string]string) ([]string, error) {
	defined := map[string]string{}
	for _, e := range c.Env {
		v, ok := example[e.Name]
		if !ok {
			v = e.Value
		}
		defined[e.Name] = v
	}
	var out []string
	var errs []error
	for _, a := range c.Args {
		out = append(out, varRef.ReplaceAllStringFunc(a, func(ref string) string {
			name := varRef.FindStringSubmatch(ref)[1]
			v, ok := defined[name]
			if !ok {
				errs = append(errs, fmt.Errorf("argument %q refers to $(%s), which container %s does not define", a, name, c.Name))
			}
			return v
		}))
	}
	return out, errors.Join(errs...)
}

func TestExpandArgs(t *testing.T) {
	c := corev1.Container{
		Name: "x",
		Args: []string{"--a=$(POD_IP):1", "--b=$(MISSING)", "plain"},
		Env:  []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{}}, {Name: "FIXED", Value: "v"}},
	}
	got, err := expandArgs(c, map[string]string{"POD_IP": "10.0.0.1"})
	if err == nil || !strings.Contains(err.Error(), "$(MISSING)") {
		t.Errorf("expandArgs = %v, want an error naming $(MISSING)", err)
	}
	if want := []string{"--a=10.0.0.1:1", "--b=", "plain"}; !slices.Equal(got, want) {
		t.Errorf("expandArgs = %q, want %q", got, want)
	}
}
