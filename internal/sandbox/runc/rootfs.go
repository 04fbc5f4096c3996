package runc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// systemDirs are the top-level directories of the host that make up "the
// system" a sandbox sees read-only. On merged-/usr systems (Debian 12) all but
// usr are symlinks into it and are mirrored as symlinks.
var systemDirs = []string{"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"}

// reservedDirs are the top-level directories of the skeleton that a sandbox's
// working directory may not be placed in: they hold the system view and the
// kernel file systems.
var reservedDirs = append([]string{"proc", "dev", "sys", "tmp", "etc"}, systemDirs...)

// DefaultEtcFiles returns the entries of the host's /etc that sandboxes see by
// default: what the C library, Python, Node.js and TLS clients need to run.
// It never includes secrets such as /etc/shadow.
func DefaultEtcFiles() []string {
	return []string{
		"passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "host.conf", "gai.conf",
		"services", "protocols", "localtime", "timezone", "ld.so.cache", "ld.so.conf",
		"ld.so.conf.d", "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ca-certificates.conf",
		"alternatives", "mime.types", "os-release",
	}
}

// secretEtcFiles may never be shown to a sandbox, whatever Options.EtcFiles
// says: neither they, nor what is inside them, nor a directory that holds
// them. (Agents run unprivileged, so the files' modes protect them too; not
// showing them at all holds even if a kernel bug lets an agent past modes.)
var secretEtcFiles = []string{"shadow", "shadow-", "gshadow", "gshadow-", "sudoers", "sudoers.d", "ssh", "ssl/private"}

// entryKind is the kind of one entry of the rootfs skeleton.
type entryKind int

const (
	kindDir entryKind = iota
	kindFile
	kindSymlink
)

// entry is one directory, empty file (a mount point) or symlink of the
// skeleton.
type entry struct {
	path   string // absolute, inside the sandbox
	kind   entryKind
	target string // of a symlink
	// sticky makes a directory 1777 rather than 755. runc gives a tmpfs
	// the mode of its mount point, so /tmp's must be that of a /tmp.
	sticky bool
}

// perm is the permission bits of e on disk.
func (e entry) perm() fs.FileMode {
	switch {
	case e.kind == kindDir && e.sticky:
		return fs.ModeSticky | 0o777
	case e.kind == kindDir:
		return 0o755
	default:
		return 0o644
	}
}

// systemView is the read-only view of the host system that every sandbox of
// a driver shares: a skeleton of mount points and symlinks, and the bind
// mounts that fill it.
type systemView struct {
	entries []entry
	mounts  []specs.Mount
}

// inspectHost works out the system view of the host whose root directory is
// hostRoot ("/" outside tests): which system directories are real (bind
// mounted) or symlinks (recreated), and which of the etc entries exist.
func inspectHost(hostRoot string, etc []string) (systemView, error) {
	var v systemView
	for _, name := range []string{"proc", "dev", "sys", "tmp", "etc"} {
		v.entries = append(v.entries, entry{path: "/" + name, kind: kindDir, sticky: name == "tmp"})
	}
	for _, name := range systemDirs {
		host := filepath.Join(hostRoot, name)
		fi, err := os.Lstat(host)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return systemView{}, fmt.Errorf("inspect host /%s: %w", name, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(host)
			if err != nil {
				return systemView{}, fmt.Errorf("inspect host /%s: %w", name, err)
			}
			v.entries = append(v.entries, entry{path: "/" + name, kind: kindSymlink, target: target})
		case fi.IsDir():
			v.entries = append(v.entries, entry{path: "/" + name, kind: kindDir})
			v.mounts = append(v.mounts, roBind(host, "/"+name))
		}
	}
	if len(v.mounts) == 0 {
		return systemView{}, fmt.Errorf("inspect host: no system directory (/usr, /bin, /lib) under %s", hostRoot)
	}

	for _, name := range etc {
		if err := checkEtcName(name); err != nil {
			return systemView{}, err
		}
		inside := path.Join("/etc", name)
		host := filepath.Join(hostRoot, "etc", name)
		fi, err := os.Lstat(host)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return systemView{}, fmt.Errorf("inspect host %s: %w", inside, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(host)
			if err != nil {
				return systemView{}, fmt.Errorf("inspect host %s: %w", inside, err)
			}
			// A link into the system view (/etc/localtime ->
			// /usr/share/zoneinfo/...) works as it is inside the sandbox;
			// any other (/etc/resolv.conf -> /run/...) is followed here and
			// its target bound in its place.
			if inSystemView(path.Dir(inside), target) {
				v.entries = append(v.entries, entry{path: inside, kind: kindSymlink, target: target})
				continue
			}
			resolved, err := filepath.EvalSymlinks(host)
			if errors.Is(err, fs.ErrNotExist) {
				continue // dangling
			}
			if err != nil {
				return systemView{}, fmt.Errorf("inspect host %s: %w", inside, err)
			}
			if fi, err = os.Stat(resolved); err != nil {
				return systemView{}, fmt.Errorf("inspect host %s: %w", inside, err)
			}
			host = resolved
		}
		kind := kindFile
		if fi.IsDir() {
			kind = kindDir
		} else if !fi.Mode().IsRegular() {
			continue // no sockets, devices or pipes
		}
		v.entries = append(v.entries, entry{path: inside, kind: kind})
		v.mounts = append(v.mounts, roBind(host, inside))
	}
	return v, nil
}

// checkEtcName rejects /etc entries that are not plain relative names or
// that hold secrets.
func checkEtcName(name string) error {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
		return fmt.Errorf("etc entry %q: want a clean relative name such as \"resolv.conf\"", name)
	}
	for _, secret := range secretEtcFiles {
		if name == secret || strings.HasPrefix(name, secret+"/") || strings.HasPrefix(secret, name+"/") {
			return fmt.Errorf("etc entry %q: /etc/%s holds secrets and is never shown to sandboxes", name, secret)
		}
	}
	return nil
}

// inSystemView reports whether a symlink target, read from a link in dir
// (both as seen inside the sandbox), points into the system directories.
func inSystemView(dir, target string) bool {
	if !path.IsAbs(target) {
		target = path.Join(dir, target)
	}
	for _, name := range systemDirs {
		if target == "/"+name || strings.HasPrefix(target, "/"+name+"/") {
			return true
		}
	}
	return false
}

// roBind is a read-only bind mount of a host path into the sandbox.
func roBind(source, destination string) specs.Mount {
	return specs.Mount{
		Destination: destination,
		Type:        "bind",
		Source:      source,
		Options:     []string{"bind", "ro", "nosuid", "nodev"},
	}
}

// build creates the skeleton under rootfs. It is idempotent, so a driver
// restarted over the same state directory reuses (and repairs) the skeleton
// that sandboxes of the earlier run may still have as their root.
//
// Every directory of the skeleton is world-readable: a sandbox's root may
// be a user the host knows nothing about, and the skeleton holds nothing but
// mount points.
func (v systemView) build(rootfs string) error {
	if err := mkdirMode(rootfs, 0o755); err != nil {
		return fmt.Errorf("build rootfs: %w", err)
	}
	for _, e := range v.entries {
		p := filepath.Join(rootfs, e.path)
		if err := mkdirAll(filepath.Dir(p)); err != nil {
			return fmt.Errorf("build rootfs %s: %w", e.path, err)
		}
		fi, err := os.Lstat(p)
		exists := err == nil
		switch e.kind {
		case kindDir:
			if exists && fi.IsDir() {
				if err := chmodIfNeeded(p, fi, e.perm()); err != nil {
					return fmt.Errorf("build rootfs %s: %w", e.path, err)
				}
				continue
			}
		case kindFile:
			if exists && fi.Mode().IsRegular() {
				continue
			}
		case kindSymlink:
			if exists && fi.Mode()&fs.ModeSymlink != 0 {
				if target, err := os.Readlink(p); err == nil && target == e.target {
					continue
				}
			}
		}
		if exists {
			// The host changed kind (a directory became a symlink, ...).
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("build rootfs %s: %w", e.path, err)
			}
		}
		switch e.kind {
		case kindDir:
			if err = os.Mkdir(p, 0); err == nil {
				// Mkdir's mode goes through the umask and drops
				// the sticky bit.
				err = os.Chmod(p, e.perm())
			}
		case kindFile:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0); err == nil {
				err = errors.Join(f.Chmod(e.perm()), f.Close())
			}
		case kindSymlink:
			err = os.Symlink(e.target, p)
		}
		if err != nil {
			return fmt.Errorf("build rootfs %s: %w", e.path, err)
		}
	}
	return nil
}

// mkdirMode creates directory p, and its parents, if missing, and gives p
// the mode perm either way.
func mkdirMode(p string, perm fs.FileMode) error {
	if err := mkdirAll(p); err != nil {
		return err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	return chmodIfNeeded(p, fi, perm)
}

// mkdirAll is os.MkdirAll with mode 0755 whatever the umask: a user
// namespace's root must be able to look up the paths of the skeleton.
func mkdirAll(p string) error {
	fi, err := os.Stat(p)
	if err == nil {
		if !fi.IsDir() {
			return &fs.PathError{Op: "mkdir", Path: p, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if parent := filepath.Dir(p); parent != p {
		if err := mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(p, 0); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.Chmod(p, 0o755)
}

// chmodIfNeeded gives p, which fi describes, the permission bits perm
// (with the sticky bit) unless it has them.
func chmodIfNeeded(p string, fi fs.FileInfo, perm fs.FileMode) error {
	const mask = fs.ModePerm | fs.ModeSticky
	if fi.Mode()&mask == perm&mask {
		return nil
	}
	return os.Chmod(p, perm)
}
