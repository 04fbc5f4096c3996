package artifact

import (
	"archive/zip"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"slices"
	"strings"
)

// BundleError reports why a code bundle was refused, in words a user can act
// on. Err is ErrInvalid, ErrTooLarge or ErrUnsafe.
type BundleError struct {
	Bundle string // the bundle's key at upload, its digest once stored
	Entry  string // the offending zip entry, or "" if the bundle as a whole is at fault
	Reason string // e.g. "escapes the bundle"
	Err    error
}

func (e *BundleError) Error() string {
	if e.Entry != "" {
		return fmt.Sprintf("code bundle %q: entry %q %s", e.Bundle, e.Entry, e.Reason)
	}
	return fmt.Sprintf("code bundle %q %s", e.Bundle, e.Reason)
}

func (e *BundleError) Unwrap() error { return e.Err }

// ratioFloor is the entry size below which the compression ratio is not
// checked: small files of repeated bytes compress well and harm no one.
const ratioFloor = 1 * mib

// maxSymlinkTarget is PATH_MAX less the terminating NUL.
const maxSymlinkTarget = 4095

type kind uint8

const (
	kindDir kind = iota + 1
	kindFile
	kindSymlink
)

// entry is one file or symlink of a bundle that passed inspection.
type entry struct {
	name   string // slash-separated, relative, clean, no trailing slash
	f      *zip.File
	exec   bool   // files: unpack with mode 0755
	target string // symlinks: the checked target
}

// manifest is what inspect found a bundle to hold. Every name in it is safe
// to create under the bundle's directory.
type manifest struct {
	bundle string
	dirs   []string // every directory, whether it has an entry or not, parents first
	files  []entry  // regular files
	links  []entry  // symlinks
}

func (m *manifest) refuse(entry string, err error, format string, args ...any) error {
	return &BundleError{Bundle: m.bundle, Entry: entry, Reason: fmt.Sprintf(format, args...), Err: err}
}

// newZipReader reads the zip's central directory.
func newZipReader(r io.ReaderAt, size int64, bundle string) (*zip.Reader, error) {
	zr, err := zip.NewReader(r, size)
	// ErrInsecurePath comes with a usable reader; inspect applies stricter rules.
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, &BundleError{Bundle: bundle, Err: ErrInvalid,
			Reason: fmt.Sprintf("is not a valid zip archive (%v)", err)}
	}
	return zr, nil
}

// checkBundle refuses what Unpack would refuse, without writing anything: it
// inspects the central directory and decompresses every entry to verify its
// size and checksum.
func checkBundle(ctx context.Context, r io.ReaderAt, size int64, bundle string, opts Options) error {
	zr, err := newZipReader(r, size, bundle)
	if err != nil {
		return err
	}
	m, err := inspect(zr, bundle, opts)
	if err != nil {
		return err
	}
	return extract(ctx, m, nil, opts)
}

// inspect checks a zip's central directory, reading nothing but symlink
// targets and local headers. It refuses entries that are unsafe to create,
// more entries or declared bytes than opts allow, entries whose declared
// sizes look like a zip bomb, and entries that share compressed data.
func inspect(zr *zip.Reader, bundle string, opts Options) (*manifest, error) {
	m := &manifest{bundle: bundle}
	if len(zr.File) > opts.MaxFiles {
		return nil, m.refuse("", ErrTooLarge, "has %d entries; the limit is %d", len(zr.File), opts.MaxFiles)
	}
	type node struct {
		kind     kind
		explicit bool // has an entry of its own, not only entries beneath it
	}
	seen := make(map[string]node, len(zr.File))
	var declared uint64
	for _, f := range zr.File {
		name, isDir, err := m.checkName(f.Name)
		if err != nil {
			return nil, err
		}
		mode := f.Mode()
		switch {
		case f.Flags&0x1 != 0:
			return nil, m.refuse(f.Name, ErrInvalid, "is encrypted; upload a zip without a password")
		case f.Method != zip.Store && f.Method != zip.Deflate:
			return nil, m.refuse(f.Name, ErrInvalid, "uses compression method %d; only store and deflate are supported", f.Method)
		case mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeIrregular) != 0:
			return nil, m.refuse(f.Name, ErrUnsafe, "is a device, FIFO or socket; only files, directories and symlinks are allowed")
		}
		k := kindFile
		if isDir || mode.IsDir() {
			k = kindDir
		}
		if mode&fs.ModeSymlink != 0 {
			if k == kindDir {
				return nil, m.refuse(f.Name, ErrInvalid, "is marked both directory and symlink")
			}
			k = kindSymlink
		}

		// Every parent must be a directory, so nothing is ever created
		// through a symlink or beneath a file.
		for i := range len(name) {
			if name[i] != '/' {
				continue
			}
			parent := name[:i]
			switch seen[parent].kind {
			case kindFile, kindSymlink:
				return nil, m.refuse(f.Name, ErrUnsafe, "is inside %q, which is not a directory", parent)
			case 0:
				seen[parent] = node{kind: kindDir}
				m.dirs = append(m.dirs, parent)
			}
		}
		if n, ok := seen[name]; ok {
			switch {
			case n.kind == kindDir && !n.explicit && k == kindDir:
				seen[name] = node{kind: kindDir, explicit: true}
				continue
			case n.kind == kindDir && !n.explicit:
				return nil, m.refuse(f.Name, ErrUnsafe, "collides with a directory of the same name")
			default:
				return nil, m.refuse(f.Name, ErrUnsafe, "appears more than once")
			}
		}
		seen[name] = node{kind: k, explicit: true}
		// Directories that only appear in names count too: one deep name
		// may imply many of them.
		if len(seen) > opts.MaxFiles {
			return nil, m.refuse("", ErrTooLarge, "has more than %d files and directories; the limit is %d", opts.MaxFiles, opts.MaxFiles)
		}

		switch k {
		case kindDir:
			m.dirs = append(m.dirs, name)
		case kindFile:
			if f.UncompressedSize64 > ratioFloor && f.UncompressedSize64/max(f.CompressedSize64, 1) > uint64(opts.MaxRatio) {
				return nil, m.refuse(f.Name, ErrUnsafe, "would expand %d-fold (%s to %s); the limit is %d-fold",
					f.UncompressedSize64/max(f.CompressedSize64, 1), formatSize(clampInt64(f.CompressedSize64)),
					formatSize(clampInt64(f.UncompressedSize64)), opts.MaxRatio)
			}
			if declared += f.UncompressedSize64; declared < f.UncompressedSize64 {
				declared = math.MaxUint64 // wrapped: saturate
			}
			m.files = append(m.files, entry{name: name, f: f, exec: mode&0o111 != 0})
		case kindSymlink:
			target, err := m.readTarget(f)
			if err != nil {
				return nil, err
			}
			if err := m.checkTarget(f.Name, name, target); err != nil {
				return nil, err
			}
			m.links = append(m.links, entry{name: name, f: f, target: target})
		}
	}
	if declared > uint64(opts.MaxUnpacked) {
		return nil, m.refuse("", ErrTooLarge, "is %s unpacked; the limit is %s",
			formatSize(clampInt64(declared)), formatSize(opts.MaxUnpacked))
	}
	if err := m.checkOverlap(); err != nil {
		return nil, err
	}
	// A parent sorts before the names it prefixes, so creating in this order
	// never needs MkdirAll.
	slices.Sort(m.dirs)
	return m, nil
}

func clampInt64(n uint64) int64 { return int64(min(n, math.MaxInt64)) }

// checkName turns a zip entry name into a relative slash-separated path and
// reports whether it names a directory. It refuses names that are absolute,
// climb with "..", use backslashes (which Windows tools treat as
// separators), or are not clean.
func (m *manifest) checkName(raw string) (name string, isDir bool, err error) {
	switch {
	case raw == "":
		return "", false, m.refuse(raw, ErrInvalid, "has an empty name")
	case strings.ContainsRune(raw, 0):
		return "", false, m.refuse(raw, ErrInvalid, "contains a NUL byte")
	case strings.ContainsRune(raw, '\\'):
		return "", false, m.refuse(raw, ErrUnsafe, "contains a backslash; make the zip with / as the path separator")
	case strings.HasPrefix(raw, "/"):
		return "", false, m.refuse(raw, ErrUnsafe, "escapes the bundle: it is an absolute path")
	}
	name, isDir = strings.CutSuffix(raw, "/")
	segs := strings.Split(name, "/")
	if slices.Contains(segs, "..") {
		depth := 0
		for _, seg := range segs {
			if seg != ".." {
				depth++
			} else if depth--; depth < 0 {
				return "", false, m.refuse(raw, ErrUnsafe, "escapes the bundle")
			}
		}
		return "", false, m.refuse(raw, ErrUnsafe, "has a \"..\" path segment")
	}
	for _, seg := range segs {
		switch {
		case seg == "" || seg == ".":
			return "", false, m.refuse(raw, ErrInvalid, "is not a clean relative path (empty or \".\" segment)")
		case len(seg) > 255:
			return "", false, m.refuse(raw, ErrInvalid, "has a path segment longer than 255 bytes")
		}
	}
	return name, isDir, nil
}

func (m *manifest) readTarget(f *zip.File) (string, error) {
	if f.UncompressedSize64 > maxSymlinkTarget {
		return "", m.refuse(f.Name, ErrInvalid, "is a symlink with a target longer than %d bytes", maxSymlinkTarget)
	}
	rc, err := f.Open()
	if err != nil {
		return "", m.refuse(f.Name, ErrInvalid, "is corrupt (%v)", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSymlinkTarget+1))
	if err != nil {
		return "", m.refuse(f.Name, ErrInvalid, "is corrupt (%v)", err)
	}
	return string(b), nil
}

// checkTarget allows a symlink only if its target stays inside the bundle.
// The target must be relative and clean, so any ".." segments come first;
// they climb from the link's directory, which is a real directory since no
// entry lies beneath a symlink, and may climb no higher than the bundle's
// root. The rest of the target only descends, into directories or into
// symlinks that obey the same rule, so no chain of links leaves the bundle.
func (m *manifest) checkTarget(raw, name, target string) error {
	switch {
	case target == "":
		return m.refuse(raw, ErrInvalid, "is a symlink with an empty target")
	case strings.ContainsRune(target, 0):
		return m.refuse(raw, ErrInvalid, "is a symlink whose target contains a NUL byte")
	case strings.ContainsRune(target, '\\'):
		return m.refuse(raw, ErrUnsafe, "is a symlink whose target %q contains a backslash", target)
	case strings.HasPrefix(target, "/"):
		return m.refuse(raw, ErrUnsafe, "is a symlink to %q, an absolute path outside the bundle", target)
	case path.Clean(target) != target:
		return m.refuse(raw, ErrUnsafe, "is a symlink to %q; targets must be clean relative paths, with \"..\" only at the start", target)
	}
	ups := 0
	for rest := target; rest == ".." || strings.HasPrefix(rest, "../"); rest = strings.TrimPrefix(rest[2:], "/") {
		ups++
	}
	if ups > strings.Count(name, "/") {
		return m.refuse(raw, ErrUnsafe, "is a symlink to %q, which escapes the bundle", target)
	}
	return nil
}

// checkOverlap refuses entries whose compressed data overlap: many entries
// sharing one stream is how the most effective zip bombs multiply their
// output.
func (m *manifest) checkOverlap() error {
	type span struct {
		name       string
		start, end uint64
	}
	var spans []span
	for _, e := range slices.Concat(m.files, m.links) {
		if e.f.CompressedSize64 == 0 {
			continue
		}
		off, err := e.f.DataOffset()
		if err != nil {
			return m.refuse(e.f.Name, ErrInvalid, "is corrupt (%v)", err)
		}
		spans = append(spans, span{e.f.Name, uint64(off), uint64(off) + e.f.CompressedSize64})
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			return m.refuse(spans[i].name, ErrUnsafe, "shares compressed data with entry %q, as zip bombs do", spans[i-1].name)
		}
	}
	return nil
}

// extract creates the manifest's directories, files and symlinks under
// root, which should be empty. It counts the bytes it writes against
// opts.MaxUnpacked and each entry's against opts.MaxRatio, whatever the
// headers declare. Symlinks come last, so no file is written through one.
// With a nil root, extract only decompresses and checks every file.
func extract(ctx context.Context, m *manifest, root *os.Root, opts Options) error {
	if root != nil {
		for _, d := range m.dirs {
			if err := root.Mkdir(d, 0o755); err != nil {
				return err
			}
			if err := root.Chmod(d, 0o755); err != nil { // undo the umask
				return err
			}
		}
	}
	budget := opts.MaxUnpacked
	buf := make([]byte, 256*kib)
	for _, e := range m.files {
		if err := ctx.Err(); err != nil {
			return err
		}
		var n int64
		var err error
		if root == nil {
			n, err = m.copyEntry(ctx, io.Discard, e, budget, opts, buf)
		} else {
			n, err = m.writeFile(ctx, root, e, budget, opts, buf)
		}
		if err != nil {
			return err
		}
		budget -= n
	}
	if root != nil {
		for _, e := range m.links {
			if err := root.Symlink(e.target, e.name); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeFile creates e under root with mode 0644 or 0755 and copies its
// contents as copyEntry does.
func (m *manifest) writeFile(ctx context.Context, root *os.Root, e entry, budget int64, opts Options, buf []byte) (int64, error) {
	perm := fs.FileMode(0o644)
	if e.exec {
		perm = 0o755
	}
	f, err := root.OpenFile(e.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if err := f.Chmod(perm); err != nil { // undo the umask
		return 0, err
	}
	n, err := m.copyEntry(ctx, f, e, budget, opts, buf)
	if err != nil {
		return n, err
	}
	return n, f.Close()
}

// copyEntry decompresses e into w, writing at most budget bytes and at most
// opts.MaxRatio times the entry's compressed size (above ratioFloor), and
// returns the number of bytes written.
func (m *manifest) copyEntry(ctx context.Context, w io.Writer, e entry, budget int64, opts Options, buf []byte) (int64, error) {
	rc, err := e.f.Open()
	if err != nil {
		return 0, m.refuse(e.f.Name, ErrInvalid, "is corrupt (%v)", err)
	}
	defer rc.Close()

	limit, byRatio := budget, false
	ratioCap := int64(math.MaxInt64)
	if c := clampInt64(e.f.CompressedSize64); c <= math.MaxInt64/opts.MaxRatio {
		ratioCap = max(ratioFloor, c*opts.MaxRatio)
	}
	if ratioCap < limit {
		limit, byRatio = ratioCap, true
	}

	src := &errReader{r: ctxReader{ctx, rc}}
	n, err := io.CopyBuffer(w, io.LimitReader(src, limit), buf)
	if err == nil && n == limit {
		// Exactly at the limit: one more byte means the entry is over it.
		var one [1]byte
		var k int
		k, err = src.Read(one[:])
		if k > 0 {
			if byRatio {
				return n, m.refuse(e.f.Name, ErrUnsafe, "expands more than %d-fold; the limit is %d-fold", opts.MaxRatio, opts.MaxRatio)
			}
			return n, m.refuse("", ErrTooLarge, "exceeds the %s limit for an unpacked bundle", formatSize(opts.MaxUnpacked))
		}
		if err == io.EOF {
			err = nil
		}
	}
	switch {
	case err == nil:
		return n, nil
	case ctx.Err() != nil:
		return n, ctx.Err()
	case src.err != nil:
		return n, m.refuse(e.f.Name, ErrInvalid, "is corrupt (%v)", src.err)
	default:
		return n, err // writing failed: the store's problem, not the bundle's
	}
}

// errReader remembers the error its reader returned, so a failed copy can
// blame the bundle or the disk.
type errReader struct {
	r   io.Reader
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// formatSize writes n bytes for people, rounding up so that a size over a
// limit never prints as equal to it.
func formatSize(n int64) string {
	if n < kib {
		return fmt.Sprintf("%d bytes", n)
	}
	unit, name := int64(kib), "KiB"
	if n >= mib {
		unit, name = mib, "MiB"
	}
	if n > math.MaxInt64/10 {
		return fmt.Sprintf("%d %s", n/unit, name)
	}
	tenths := (n*10 + unit - 1) / unit
	if tenths%10 == 0 {
		return fmt.Sprintf("%d %s", tenths/10, name)
	}
	return fmt.Sprintf("%d.%d %s", tenths/10, tenths%10, name)
}
