package cli

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
)

// IgnoreFile is the file in a code location that lists, in gitignore
// syntax, what `berth deploy` leaves out of the bundle.
const IgnoreFile = ".berthignore"

// defaultIgnores are left out of every bundle: local environments, caches
// and version control. A pattern in .berthignore such as !node_modules/
// brings one back.
var defaultIgnores = []string{
	".git/", ".venv/", "__pycache__/", "*.pyc", "node_modules/",
	".pytest_cache/", ".mypy_cache/", ".DS_Store", IgnoreFile,
}

// maxBundle is the largest zipped bundle AgentCore (and Berth) accept.
const maxBundle = 250 << 20

// bundleTime is the modification time of every zip entry, so that the same
// files always make the same zip.
var bundleTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// Bundle is a code location packed into a zip.
type Bundle struct {
	Zip []byte
	// Digest is "sha256:<hex>" of Zip: the versionId Berth's code store
	// gives it.
	Digest string
	// Files counts the regular files in the bundle.
	Files int
	// Names lists the bundle's entries in order (directories end in /).
	Names []string
}

// ignoreMatcher returns the matcher for dir: the defaults, then the
// patterns of dir/.berthignore, which win over the defaults.
func ignoreMatcher(dir string) (gitignore.Matcher, error) {
	var ps []gitignore.Pattern
	for _, p := range defaultIgnores {
		ps = append(ps, gitignore.ParsePattern(p, nil))
	}
	f, err := os.Open(filepath.Join(dir, IgnoreFile))
	if errors.Is(err, fs.ErrNotExist) {
		return gitignore.NewMatcher(ps), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", IgnoreFile, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ps = append(ps, gitignore.ParsePattern(line, nil))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", IgnoreFile, err)
	}
	return gitignore.NewMatcher(ps), nil
}

// PackDir zips the files under dir, except those the ignore patterns
// exclude, deterministically: entries in lexical order, every timestamp
// fixed, file modes kept. The same files always give the same digest, so an
// unchanged agent deploys no new version.
func PackDir(dir string) (*Bundle, error) {
	m, err := ignoreMatcher(dir)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	files := 0
	var names []string
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if m.Match(strings.Split(name, "/"), d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if err := addEntry(zw, path, name, info); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			files++
		}
		if info.IsDir() {
			name += "/"
		}
		names = append(names, name)
		return nil
	})
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", dir, err)
	}
	if buf.Len() > maxBundle {
		return nil, fmt.Errorf("pack %s: the bundle is %s; at most %s is allowed: list large files in %s",
			dir, humanSize(int64(buf.Len())), humanSize(maxBundle), filepath.Join(dir, IgnoreFile))
	}
	return newBundle(buf.Bytes(), names, files), nil
}

func newBundle(data []byte, names []string, files int) *Bundle {
	sum := sha256.Sum256(data)
	return &Bundle{Zip: data, Digest: "sha256:" + hex.EncodeToString(sum[:]), Files: files, Names: names}
}

// addEntry writes one file, directory or symbolic link to zw.
func addEntry(zw *zip.Writer, path, name string, info fs.FileInfo) error {
	mode := info.Mode()
	hdr := &zip.FileHeader{Name: name, Modified: bundleTime}
	// Only the permission bits and the type are kept: setuid and the like
	// mean nothing in a sandbox.
	hdr.SetMode(mode.Type() | mode.Perm())
	switch {
	case mode.IsDir():
		hdr.Name += "/"
		_, err := zw.CreateHeader(hdr)
		return err
	case mode&fs.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return err
		}
		hdr.Method = zip.Store
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return err
		}
		_, err = io.WriteString(w, target)
		return err
	case mode.IsRegular():
		hdr.Method = zip.Deflate
		w, err := zw.CreateHeader(hdr)
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(w, f)
		return err
	}
	return fmt.Errorf("%s is a special file (%s), which a bundle cannot hold: list it in %s", name, mode.Type(), IgnoreFile)
}

// packFile zips one executable file under name, for compiled agents.
func packFile(path, name string) (*Bundle, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	if err := addEntry(zw, path, name, info); err != nil {
		return nil, fmt.Errorf("pack %s: %w", path, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("pack %s: %w", path, err)
	}
	return newBundle(buf.Bytes(), []string{name}, 1), nil
}
