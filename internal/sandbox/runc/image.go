package runc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
)

// An image sandbox's root is an overlay the driver mounts on the host, in
// the sandbox's directory, before the runtime starts it: runc takes a root
// directory, not a mount to make. Its lower layers are the image's shared,
// read-only layers; its upper and work directories are the sandbox's own
// and are removed with it.

// imageRoot returns the mount point of the root of the image sandbox whose
// directory is dir.
func imageRoot(dir string) string { return filepath.Join(dir, "rootfs") }

// mountImageRoot creates the writable layer of an image sandbox in dir and
// mounts its root. The upper layer's top directory is the image's root
// directory, owned by the image's root (host id ids.hostBase).
func mountImageRoot(dir string, spec sandbox.Spec, ids identity) (string, error) {
	for _, l := range spec.RootLayers {
		if err := isDir("root layer", l); err != nil {
			return "", err
		}
	}
	upper, work, root := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), imageRoot(dir)
	for _, p := range []string{upper, work, root} {
		if err := os.Mkdir(p, 0o755); err != nil {
			return "", err
		}
	}
	owner := int(ids.hostBase)
	if err := os.Chown(upper, owner, owner); err != nil {
		return "", err
	}
	// overlayfs lists lower directories top first.
	lower := slices.Clone(spec.RootLayers)
	slices.Reverse(lower)
	opts := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", root, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return "", fmt.Errorf("mount the image's root file system: %w", err)
	}
	return root, nil
}

// unmountImageRoot unmounts the root of the image sandbox whose directory
// is dir, if it is mounted.
func unmountImageRoot(dir string) error {
	err := unix.Unmount(imageRoot(dir), unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount the image's root file system: %w", err)
}
