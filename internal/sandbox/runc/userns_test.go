package runc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berthrun/berth/internal/sandbox/sandboxtest"
)

func TestCheckReachable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving directories to other users needs root")
	}
	const id = 1 << 20
	tests := []struct {
		name       string
		parentMode os.FileMode
		parentUID  int // -1: root's
		parentGID  int
		dirMode    os.FileMode
		read       bool
		want       string // "" when reachable, else a part of the error
	}{
		{"all open", 0o755, -1, -1, 0o755, true, ""},
		{"searchable by others", 0o711, -1, -1, 0o711, false, ""},
		{"private parent", 0o700, -1, -1, 0o755, false, "parent (mode -rwx------, owner 0:0) does not let others search it: make it so with chmod o+x"},
		{"parent of the id's group", 0o710, -1, id, 0o755, false, ""},
		{"parent of another group", 0o710, -1, id + 1, 0o755, false, "chmod o+x"},
		{"parent owned by the id", 0o700, id, -1, 0o755, false, ""},
		{"owner without search", 0o070, id, id, 0o755, false, "does not let others search"},
		{"unlistable", 0o755, -1, -1, 0o711, true, "list and search it: make it so with chmod o+rx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := filepath.Join(sandboxtest.TempDir(t), "parent")
			dir := filepath.Join(parent, "dir")
			for _, d := range []struct {
				path string
				mode os.FileMode
			}{{parent, tt.parentMode}, {dir, tt.dirMode}} {
				if err := os.Mkdir(d.path, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chown(parent, tt.parentUID, tt.parentGID); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.dirMode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(parent, tt.parentMode); err != nil {
				t.Fatal(err)
			}
			err := checkReachable(dir, id, tt.read)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("checkReachable = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("checkReachable = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if err := checkReachable(filepath.Join(t.TempDir(), "missing"), id, false); err == nil {
		t.Errorf("checkReachable of a missing directory succeeded")
	}
}
