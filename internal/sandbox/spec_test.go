package sandbox

import (
	"strings"
	"testing"
)

func TestSpecValidate(t *testing.T) {
	ok := Spec{ID: "s-1.a_b", Args: []string{"/agent"}, Env: []string{"A=1", "B="}}
	for _, tt := range []struct {
		name string
		edit func(*Spec)
		want string // in the error; "" for none
	}{
		{"valid", func(*Spec) {}, ""},
		{"empty id", func(s *Spec) { s.ID = "" }, "invalid id"},
		{"dot id", func(s *Spec) { s.ID = ".." }, "invalid id"},
		{"slash in id", func(s *Spec) { s.ID = "a/b" }, "invalid id"},
		{"long id", func(s *Spec) { s.ID = strings.Repeat("a", 65) }, "invalid id"},
		{"no args", func(s *Spec) { s.Args = nil }, "no command"},
		{"empty program", func(s *Spec) { s.Args = []string{""} }, "no command"},
		{"env without =", func(s *Spec) { s.Env = []string{"A"} }, `env entry "A"`},
		{"env without key", func(s *Spec) { s.Env = []string{"=1"} }, `env entry "=1"`},
		{"image", func(s *Spec) { s.Image = "registry.example/agent@sha256:00" }, ""},
		{"image with a code dir", func(s *Spec) { s.Image, s.CodeDir = "registry.example/agent", "/code" }, "no code dir or root layers"},
		{"image with root layers", func(s *Spec) { s.Image, s.RootLayers = "registry.example/agent", []string{"/l"} }, "no code dir or root layers"},
	} {
		s := ok
		tt.edit(&s)
		err := s.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: Validate = %v, want %q", tt.name, err, tt.want)
		}
	}
}
