package kubernetes_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/berthrun/berth/internal/sandbox/kubernetes"
)

// TestPodName checks that every valid sandbox id gets a valid pod name,
// and that ids differing only in case or in characters a name cannot hold
// get different ones.
func TestPodName(t *testing.T) {
	tests := []struct {
		id, prefix string
	}{
		{"a", "berth-a-"},
		{"A", "berth-a-"},
		{"berth-0123456789abcdefghij", "berth-berth-0123456789abcdefghij-"},
		{"st_x.y", "berth-st-x-y-"},
		{"___", "berth-"},
		{".-_", "berth-"},
		{strings.Repeat("Z", 64), "berth-" + strings.Repeat("z", 40) + "-"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		name := kubernetes.PodName(tt.id)
		if !strings.HasPrefix(name, tt.prefix) {
			t.Errorf("PodName(%q) = %q, want the prefix %q", tt.id, name, tt.prefix)
		}
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("PodName(%q) = %q: %v", tt.id, name, errs)
		}
		if errs := validation.IsValidLabelValue(strings.TrimPrefix(name, "berth-")); len(errs) > 0 {
			t.Errorf("PodName(%q) = %q: its label form is not a label value: %v", tt.id, name, errs)
		}
		if other, ok := seen[name]; ok {
			t.Errorf("ids %q and %q share the pod name %q", other, tt.id, name)
		}
		seen[name] = tt.id
	}
}
