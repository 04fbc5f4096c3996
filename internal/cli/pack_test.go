package cli

import (
	"archive/zip"
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// writeTree creates files under dir: names ending in / are directories, a
// value starting with -> a symbolic link.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case name[len(name)-1] == '/':
			err := os.MkdirAll(p, 0o755)
			if err != nil {
				t.Fatal(err)
			}
		case len(content) > 2 && content[:2] == "->":
			if err := os.Symlink(content[2:], p); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func readZip(t *testing.T, data []byte) map[string]*zip.File {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*zip.File{}
	for _, f := range zr.File {
		out[f.Name] = f
	}
	return out
}

func TestPackDeterministic(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"main.py": "print('hi')\n", "run.sh": "#!/bin/sh\n", "lib/util.py": "x = 1\n", "empty/": "", "link": "->main.py",
	})
	if err := os.Chmod(filepath.Join(dir, "run.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	first, err := PackDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if first.Files != 3 {
		t.Errorf("Files = %d, want 3", first.Files)
	}
	if want := []string{"empty/", "lib/", "lib/util.py", "link", "main.py", "run.sh"}; !slices.Equal(first.Names, want) {
		t.Errorf("Names = %q, want %q", first.Names, want)
	}

	// Same files with other timestamps, packed again: same bytes.
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if d.Type()&fs.ModeSymlink == 0 {
			os.Chtimes(p, old, old)
		}
		return nil
	})
	second, err := PackDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if second.Digest != first.Digest || !bytes.Equal(second.Zip, first.Zip) {
		t.Errorf("same files packed twice give %s and %s", first.Digest, second.Digest)
	}

	// Modes are kept, and timestamps fixed.
	entries := readZip(t, first.Zip)
	for name, want := range map[string]fs.FileMode{
		"main.py": 0o644, "run.sh": 0o755, "lib/": fs.ModeDir | 0o755, "link": fs.ModeSymlink | 0o777,
	} {
		f := entries[name]
		if f == nil {
			t.Errorf("%s missing from the bundle", name)
			continue
		}
		if got := f.Mode(); got != want {
			t.Errorf("%s mode = %v, want %v", name, got, want)
		}
		if !f.Modified.Equal(bundleTime) {
			t.Errorf("%s modified = %v, want %v", name, f.Modified, bundleTime)
		}
	}
	rc, _ := entries["link"].Open()
	target, _ := io.ReadAll(rc)
	if string(target) != "main.py" {
		t.Errorf("link target = %q, want main.py", target)
	}

	// A change of content or mode changes the digest.
	os.Chmod(filepath.Join(dir, "main.py"), 0o755)
	third, _ := PackDir(dir)
	if third.Digest == first.Digest {
		t.Error("a mode change left the digest unchanged")
	}
	os.WriteFile(filepath.Join(dir, "main.py"), []byte("print('bye')\n"), 0o755)
	fourth, _ := PackDir(dir)
	if fourth.Digest == third.Digest {
		t.Error("a content change left the digest unchanged")
	}
}

func TestPackIgnore(t *testing.T) {
	tree := map[string]string{
		"main.py": "", "README.md": "", "app.log": "", "docs/a.md": "", "docs/deep/b.md": "", "docs/c.txt": "",
		".venv/bin/python": "", "__pycache__/main.cpython-311.pyc": "", "lib/x.pyc": "", "lib/x.py": "",
		".git/HEAD": "", "node_modules/m/index.js": "", "sub/node_modules/n.js": "", "build/out": "", "src/build": "",
		"root.txt": "", "sub/root.txt": "", "secret.env": "", "keep.env": "",
	}
	for _, c := range []struct {
		name   string
		ignore string
		want   []string
	}{
		{"defaults", "", []string{"README.md", "app.log", "build/out", "docs/a.md", "docs/c.txt", "docs/deep/b.md", "keep.env",
			"lib/x.py", "main.py", "root.txt", "secret.env", "src/build", "sub/root.txt"}},
		{"patterns", "# comment\n\n*.log\nbuild/\n/root.txt\ndocs/**/*.md\n*.env\n!keep.env\n", []string{"README.md", "docs/c.txt",
			"keep.env", "lib/x.py", "main.py", "src/build", "sub/root.txt"}},
		{"bring node_modules back", "!node_modules/\n", []string{"README.md", "app.log", "build/out", "docs/a.md", "docs/c.txt",
			"docs/deep/b.md", "keep.env", "lib/x.py", "main.py", "node_modules/m/index.js", "root.txt", "secret.env", "src/build",
			"sub/node_modules/n.js", "sub/root.txt"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tree)
			if c.ignore != "" {
				os.WriteFile(filepath.Join(dir, IgnoreFile), []byte(c.ignore), 0o644)
			}
			b, err := PackDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			var files []string
			for name, f := range readZip(t, b.Zip) {
				if !f.Mode().IsDir() {
					files = append(files, name)
				}
			}
			slices.Sort(files)
			if !slices.Equal(files, c.want) {
				t.Errorf("bundle holds\n  %q\nwant\n  %q", files, c.want)
			}
		})
	}
}

func TestPackRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"main.py": ""})
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Skip("cannot make a FIFO here:", err)
	}
	if _, err := PackDir(dir); err == nil {
		t.Fatal("a FIFO was packed")
	}
	os.WriteFile(filepath.Join(dir, IgnoreFile), []byte("pipe\n"), 0o644)
	if _, err := PackDir(dir); err != nil {
		t.Fatalf("an ignored FIFO still fails the pack: %v", err)
	}
}
