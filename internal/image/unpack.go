package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// Names with which the OCI image spec (and Docker before it) marks deletions
// in a layer.
const (
	whiteoutPrefix = ".wh."
	opaqueWhiteout = ".wh..wh..opq"
)

// maxID is the highest image uid or gid kept as it is; the sandboxes' user
// namespaces map 65536 ids.
const maxID = 65535

// nobody is the id files of larger owners get.
const nobody = 65534

// Limits on the shape of an entry's path. Real images stay far below them; a
// crafted layer could otherwise make one short header create thousands of
// nested directories, each walked again for every later entry.
const (
	maxPathLen = 4095 // PATH_MAX less the terminating NUL
	maxDepth   = 256
)

// unpack extracts the uncompressed layer tar r into dir (an empty directory)
// as an overlayfs lower layer, and checks that r's SHA-256 is diffID. See the
// package doc for what is kept and what is not.
func unpack(ctx context.Context, dir string, r io.Reader, diffID v1.Hash, shift uint32, b *budget, limit int64) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	h := sha256.New()
	u := &unpacker{root: root, shift: shift, budget: b, limit: limit}
	tr := tar.NewReader(io.TeeReader(r, h))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		// Entries cost something on disk even when empty.
		if err := u.charge(max(hdr.Size, 0) + entryCost); err != nil {
			return err
		}
		if err := u.entry(hdr, tr); err != nil {
			return fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
	}
	// The tar end marker may be followed by padding, which is part of the
	// digest.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("read layer: %w", err)
	}
	return checkDigest(h, diffID)
}

func checkDigest(h hash.Hash, want v1.Hash) error {
	got := fmt.Sprintf("%x", h.Sum(nil))
	if got != want.Hex {
		return fmt.Errorf("layer content has digest sha256:%s, not its diffID %s: %w", got, want, ErrInvalid)
	}
	return nil
}

// entryCost is what each entry of a layer counts against the unpacked size
// limit besides its content: about an inode and a directory entry.
const entryCost = 512

// unpacker extracts the entries of one layer.
type unpacker struct {
	root   *os.Root
	shift  uint32
	budget *budget // of the whole image
	limit  int64   // the budget's size, for messages
}

// charge counts n bytes against the image's unpacked size limit.
func (u *unpacker) charge(n int64) error {
	if !u.budget.take(n) {
		return fmt.Errorf("the image unpacks to more than %s (4 times the compressed size limit, berth server --max-image-size): %w",
			humanBytes(u.limit), ErrTooLarge)
	}
	return nil
}

// owner returns the host id that image id maps to.
func (u *unpacker) owner(id int) int {
	if id < 0 || id > maxID {
		id = nobody
	}
	return int(u.shift) + id
}

// entry extracts one tar entry.
func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	name := path.Clean("/" + hdr.Name)[1:]
	if name == "" {
		return nil // the layer's root: its directory exists
	}
	if len(name) > maxPathLen || strings.Count(name, "/") >= maxDepth {
		return fmt.Errorf("path is longer than %d bytes or deeper than %d directories: %w", maxPathLen, maxDepth, ErrInvalid)
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if err := u.mkdirAll(dir); err != nil {
		return err
	}
	if base == opaqueWhiteout {
		// Hide everything lower layers have in dir.
		f, err := u.root.Open(dir)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fsetxattr(int(f.Fd()), "trusted.overlay.opaque", []byte("y"), 0)
	}
	if hidden, ok := strings.CutPrefix(base, whiteoutPrefix); ok {
		if hidden == "" || hidden == "." || hidden == ".." {
			return fmt.Errorf("bad whiteout name")
		}
		if err := u.root.RemoveAll(path.Join(dir, hidden)); err != nil {
			return err
		}
		return u.mknod(dir, hidden, unix.S_IFCHR, 0)
	}

	// A later entry for the same name replaces an earlier one, except that
	// a directory stays a directory (and keeps what is in it).
	if fi, err := u.root.Lstat(name); err == nil && !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
		if err := u.root.RemoveAll(name); err != nil {
			return err
		}
	}
	mode := fs.FileMode(hdr.Mode).Perm()
	if hdr.Mode&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	uid, gid := u.owner(hdr.Uid), u.owner(hdr.Gid)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := u.root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := u.root.Lchown(name, uid, gid); err != nil {
			return err
		}
		return u.root.Chmod(name, mode)
	case tar.TypeReg:
		f, err := u.root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if err == nil {
			err = f.Chown(uid, gid)
		}
		if err == nil {
			// After chown, which clears setuid bits anyway.
			err = f.Chmod(mode)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		return u.root.Chtimes(name, hdr.ModTime, hdr.ModTime)
	case tar.TypeSymlink:
		// The target is not followed here, and inside a sandbox it
		// resolves within the sandbox's root.
		if err := u.root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		return u.root.Lchown(name, uid, gid)
	case tar.TypeLink:
		target := path.Clean("/" + hdr.Linkname)[1:]
		if target == "" {
			return fmt.Errorf("hard link to the layer's root")
		}
		fi, err := u.root.Lstat(target)
		if err != nil {
			return fmt.Errorf("hard link target %q is not in this layer: %w", hdr.Linkname, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("hard link target %q is not a regular file", hdr.Linkname)
		}
		return u.root.Link(target, name)
	case tar.TypeFifo:
		if err := u.mknod(dir, base, unix.S_IFIFO|uint32(mode.Perm()), 0); err != nil {
			return err
		}
		return u.root.Lchown(name, uid, gid)
	case tar.TypeChar, tar.TypeBlock:
		return nil // sandboxes have their own /dev
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
}

// mkdirAll creates dir and its missing parents, owned by the image's root,
// with mode 0755 (a later entry for one of them sets what the image says).
func (u *unpacker) mkdirAll(dir string) error {
	if dir == "." {
		return nil
	}
	fi, err := u.root.Lstat(dir)
	if err == nil {
		if fi.IsDir() {
			return nil
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			// Entries under a symlink would be written where it points,
			// which os.Root keeps inside the layer; tar files from
			// image builders never do this.
			return fmt.Errorf("parent %q is a symlink", dir)
		}
		return fmt.Errorf("parent %q is not a directory", dir)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := u.mkdirAll(path.Dir(dir)); err != nil {
		return err
	}
	// A directory the layer implies costs as much as one it lists.
	if err := u.charge(entryCost); err != nil {
		return err
	}
	if err := u.root.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := u.root.Chmod(dir, 0o755); err != nil {
		return err
	}
	return u.root.Lchown(dir, u.owner(0), u.owner(0))
}

// mknod creates a special file name in dir (a directory of the layer).
func (u *unpacker) mknod(dir, name string, mode uint32, dev int) error {
	d, err := u.root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Mknodat(int(d.Fd()), name, mode, dev); err != nil {
		return fmt.Errorf("mknod %s: %w", path.Join(dir, name), err)
	}
	if mode&unix.S_IFMT == unix.S_IFCHR {
		return unix.Fchownat(int(d.Fd()), name, u.owner(0), u.owner(0), unix.AT_SYMLINK_NOFOLLOW)
	}
	return nil
}
