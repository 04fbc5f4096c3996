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
	if err := mountOverlay(root, lower, upper, work); err != nil {
		return "", fmt.Errorf("mount the image's root file system: %w", err)
	}
	return root, nil
}

// maxMountOptions is the most mount(2) takes as options: one page, less a
// margin.
const maxMountOptions = 4000

// mountOverlay mounts an overlay at root (nosuid, nodev) of the lower
// directories (top first) under upper. mount(2) takes the options as one
// string of at most a page, about 35 layers of the image store; images with
// more layers are mounted with the new mount API, which takes the lower
// directories one by one ("lowerdir+", Linux 6.8).
func mountOverlay(root string, lower []string, upper, work string) error {
	opts := "lowerdir=" + strings.Join(lower, ":") + ",upperdir=" + upper + ",workdir=" + work
	if len(opts) <= maxMountOptions {
		return unix.Mount("overlay", root, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts)
	}
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("%d layers need the new mount API (fsopen): %w", len(lower), err)
	}
	defer unix.Close(fsfd)
	for _, l := range lower {
		if err := unix.FsconfigSetString(fsfd, "lowerdir+", l); err != nil {
			return fmt.Errorf("%d layers take more than one page of mount options, and this kernel's overlayfs cannot add them one by one (lowerdir+, Linux 6.8): %w",
				len(lower), err)
		}
	}
	for _, kv := range [][2]string{{"upperdir", upper}, {"workdir", work}} {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			return fmt.Errorf("overlay %s: %w", kv[0], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("create overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, root, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move overlay mount to %s: %w", root, err)
	}
	return nil
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
