// Package artifact stores agents' code bundles: zip archives that a runtime's
// codeConfiguration names by an S3 location (bucket, key and optional version
// ID).
//
// Berth has no S3. Users upload a bundle into Berth, which keeps it in a Store
// under the same bucket and key; the S3 location in a codeConfiguration then
// resolves against the Store. Bundle bytes live in content-addressed blobs
// named by their SHA-256 digest, which is also the object's version ID, and a
// bundle is unpacked once per digest into a directory that never changes
// afterwards, ready to be mounted read-only into sandboxes.
//
// A Store lays out its directory as
//
//	blobs/sha256/<hex>       the zip files, read-only
//	refs/<bucket>/<hash>     one JSON file per key: its current object and history
//	unpacked/sha256/<hex>/   the unpacked bundles
//	tmp/                     work in progress, emptied by Open
//	lock                     held while a Store has the directory open
//
// Every change is made in tmp/ and renamed into place after an fsync, so a
// crash leaves the old state or the new one, never a torn file or a half
// unpacked directory.
//
// Bundles are refused unless they are safe to unpack; see Options for the
// limits and Unpack for the rules.
//
// Several Berth replicas behind one load balancer share their bundles
// through a Shared backend (Options.Shared): blobs and refs live there, and
// each replica's directory holds a cache of the blobs it has used and its
// unpacked bundles. refs/ then stays empty.
package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Errors returned by a Store. Callers test them with errors.Is; refused
// bundles come as a *BundleError that matches ErrInvalid, ErrTooLarge or
// ErrUnsafe.
var (
	// ErrNotFound reports that no object, version or blob has that name.
	ErrNotFound = errors.New("not found")
	// ErrInvalid reports malformed input: a bad bucket, key or version ID,
	// or a body that is not a well-formed zip archive.
	ErrInvalid = errors.New("invalid")
	// ErrTooLarge reports a bundle over one of the limits in Options.
	ErrTooLarge = errors.New("too large")
	// ErrUnsafe reports a bundle that could write outside its directory,
	// expand out of proportion, or create something other than files,
	// directories and in-bundle symlinks.
	ErrUnsafe = errors.New("unsafe")
	// ErrInUse reports an attempt to Remove a blob that is still the
	// current object of some bucket and key.
	ErrInUse = errors.New("in use")
)

// Sizes are in binary units: AWS documents the code bundle limits as 250 MB
// and 750 MB, and measures them in MiB, so every bundle AWS accepts fits here.
const (
	kib = 1 << 10
	mib = 1 << 20

	// DefaultMaxZipped is the default limit on a bundle's zip file.
	DefaultMaxZipped = 250 * mib
	// DefaultMaxUnpacked is the default limit on the bytes a bundle unpacks to.
	DefaultMaxUnpacked = 750 * mib
	// DefaultMaxFiles is the default limit on the entries of a bundle. It is
	// generous because Python dependencies alone can ship tens of thousands
	// of files.
	DefaultMaxFiles = 100_000
	// DefaultMaxRatio is the default limit on how many times larger than its
	// compressed data an entry may unpack to. Source code and binaries
	// compress a few times; only crafted or degenerate data reaches 200:1.
	DefaultMaxRatio = 200
)

// maxHistory bounds how many past versions a key remembers for Resolve. Agent
// runtime versions record the digest they resolved to, so only recent
// uploads need to be resolvable by version ID.
const maxHistory = 100

// Options are a Store's limits, and where it shares its bundles. Zero fields
// take the defaults.
type Options struct {
	MaxZipped   int64 // bytes of the zip file; DefaultMaxZipped
	MaxUnpacked int64 // bytes of file contents once unpacked; DefaultMaxUnpacked
	MaxFiles    int   // entries, directories included; DefaultMaxFiles
	MaxRatio    int64 // unpacked to compressed size of one entry over 1 MiB; DefaultMaxRatio

	// Shared, if set, holds the blobs and refs, shared with the other
	// Stores using it: Put uploads there, Stat, Resolve and Delete use its
	// refs, Unpack downloads a blob it lacks from there, and Remove and
	// Digests cover its blobs. The directory's blobs are then a cache.
	Shared Shared
}

func (o Options) withDefaults() Options {
	if o.MaxZipped <= 0 {
		o.MaxZipped = DefaultMaxZipped
	}
	if o.MaxUnpacked <= 0 {
		o.MaxUnpacked = DefaultMaxUnpacked
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.MaxRatio <= 0 {
		o.MaxRatio = DefaultMaxRatio
	}
	return o
}

// Object describes the object stored under a bucket and key.
type Object struct {
	Bucket string
	Key    string
	// Digest is "sha256:<hex>" of the zip file. It doubles as the object's
	// version ID.
	Digest   string
	Size     int64     // bytes of the zip file
	Modified time.Time // when this version was put
}

// Store keeps code bundles in a directory. One Store at a time may have a
// directory open; its methods are safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	lock io.Closer // the directory's lock file

	mu      sync.Mutex // serializes changes to refs and blobs
	digests keyedMutex // serializes Unpack and Remove of one digest
}

// Open opens the store in dir, creating dir and its layout if needed, and
// removes what an earlier process left unfinished in it. It fails if another
// Store has dir open.
func Open(dir string, opts Options) (*Store, error) {
	for _, d := range []string{"", "blobs/sha256", "refs", "unpacked/sha256", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("open artifact store: %w", err)
		}
	}
	lock, err := lockDir(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, fmt.Errorf("open artifact store %s: %w", dir, err)
	}
	s := &Store{dir: dir, opts: opts.withDefaults(), lock: lock}
	// Everything in tmp/ is a write, unpack or removal that never finished.
	if err := os.RemoveAll(s.path("tmp")); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open artifact store: remove leftovers: %w", err)
	}
	if err := os.Mkdir(s.path("tmp"), 0o755); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open artifact store: %w", err)
	}
	return s, nil
}

// Close releases the directory for another Store. Calls made after Close
// fail or leave temporary files for the next Open to remove.
func (s *Store) Close() error { return s.lock.Close() }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

func (s *Store) blobPath(digest string) string {
	return s.path("blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

func (s *Store) unpackedPath(digest string) string {
	return s.path("unpacked", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

// refPath names a key's ref file by the hash of the key: keys may be 1024
// bytes of anything but NUL, which no file system takes as a file name.
func (s *Store) refPath(bucket, key string) string {
	h := sha256.Sum256([]byte(key))
	return s.path("refs", bucket, hex.EncodeToString(h[:]))
}

// Put stores r's bytes as the current object of bucket and key, as S3
// PutObject would, and returns it. The bytes must form a bundle that Unpack
// would accept: Put reads the zip's central directory and decompresses every
// entry before it accepts the bundle, so a bad bundle is refused at upload.
// Putting the same bytes twice stores them once.
func (s *Store) Put(ctx context.Context, bucket, key string, r io.Reader) (Object, error) {
	if err := validateLocation(bucket, key); err != nil {
		return Object{}, fmt.Errorf("put: %w", err)
	}
	tmp, err := s.spool(ctx, key, "put-*", r)
	if err != nil {
		if _, ok := errors.AsType[*BundleError](err); ok {
			return Object{}, err
		}
		return Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	defer tmp.Close()
	size := tmp.size
	if err := checkBundle(ctx, tmp.File, size, key, s.opts); err != nil {
		return Object{}, err
	}
	obj := Object{Bucket: bucket, Key: key, Digest: tmp.digest, Size: size, Modified: time.Now().UTC()}
	if s.opts.Shared != nil {
		// Outside s.mu: uploading a large bundle takes a while, and
		// other Puts need not wait for it.
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
		}
		if err := s.opts.Shared.PutBlob(ctx, obj.Digest, size, tmp); err != nil {
			return Object{}, fmt.Errorf("put %s/%s: upload blob: %w", bucket, key, err)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(s.blobPath(obj.Digest)); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(tmp.Name(), s.blobPath(obj.Digest)); err != nil {
			return Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
		}
		tmp.kept = true
		if err := syncDir(s.path("blobs", "sha256")); err != nil {
			return Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
		}
	} else if err != nil {
		return Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}

	if s.opts.Shared != nil {
		// tmp is open still, renamed or not, and holds the blob's bytes.
		if err := s.putShared(ctx, obj, tmp.File); err != nil {
			return Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
		}
		return obj, nil
	}
	rf, err := s.readRef(bucket, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	rf.addVersion(obj)
	if err := s.writeRef(rf); err != nil {
		return Object{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	return obj, nil
}

// spooled is a bundle's bytes in a file of tmp/, on their way into blobs/.
type spooled struct {
	*os.File
	digest string // "sha256:<hex>" of the bytes
	size   int64
	kept   bool // renamed into blobs/, so not to be removed
}

// spool copies r, the bundle called name in errors, into a new read-only
// file of tmp/ named after pattern, and syncs it. It refuses more than
// MaxZipped bytes. Closing the result removes its file unless kept is set.
func (s *Store) spool(ctx context.Context, name, pattern string, r io.Reader) (*spooled, error) {
	f, err := os.CreateTemp(s.path("tmp"), pattern)
	if err != nil {
		return nil, err
	}
	sp := &spooled{File: f}
	ok := false
	defer func() {
		if !ok {
			sp.Close()
		}
	}()
	h := sha256.New()
	if sp.size, err = io.Copy(io.MultiWriter(f, h), io.LimitReader(ctxReader{ctx, r}, s.opts.MaxZipped+1)); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if sp.size > s.opts.MaxZipped {
		return nil, &BundleError{Bundle: name, Err: ErrTooLarge,
			Reason: fmt.Sprintf("exceeds the %s limit for a zipped bundle", formatSize(s.opts.MaxZipped))}
	}
	if err := f.Chmod(0o444); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	sp.digest, ok = "sha256:"+hex.EncodeToString(h.Sum(nil)), true
	return sp, nil
}

// Close closes the file and removes it unless it was kept.
func (sp *spooled) Close() error {
	err := sp.File.Close()
	if !sp.kept {
		os.Remove(sp.Name())
	}
	return err
}

// Stat returns the current object of bucket and key.
func (s *Store) Stat(ctx context.Context, bucket, key string) (Object, error) {
	if err := ctx.Err(); err != nil {
		return Object{}, err
	}
	if err := validateLocation(bucket, key); err != nil {
		return Object{}, fmt.Errorf("stat: %w", err)
	}
	rf, err := s.getRef(ctx, bucket, key)
	if err != nil {
		return Object{}, fmt.Errorf("stat %s/%s: %w", bucket, key, err)
	}
	return rf.object(0), nil
}

// Resolve returns the digest of the bundle that an S3 location names. With
// an empty versionID that is the current object of bucket and key; otherwise
// versionID must be a digest once put under bucket and key (among the last
// 100) whose blob the store still holds. Resolve is the one place an S3
// location is interpreted, so a real S3 backend would plug in here.
func (s *Store) Resolve(ctx context.Context, bucket, key, versionID string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := validateLocation(bucket, key); err != nil {
		return "", fmt.Errorf("resolve: %w", err)
	}
	if versionID != "" {
		if err := validateDigest(versionID); err != nil {
			return "", fmt.Errorf("resolve: versionId %q: %w", versionID, err)
		}
	}
	rf, err := s.getRef(ctx, bucket, key)
	if err != nil {
		return "", fmt.Errorf("resolve %s/%s: %w", bucket, key, err)
	}
	digest := rf.Versions[0].Digest
	if versionID != "" {
		i := slices.IndexFunc(rf.Versions, func(v version) bool { return v.Digest == versionID })
		if i < 0 {
			return "", fmt.Errorf("resolve %s/%s: version %s: %w", bucket, key, versionID, ErrNotFound)
		}
		digest = rf.Versions[i].Digest
	}
	if err := s.checkBlob(ctx, digest); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("bundle was removed: %w", ErrNotFound)
		}
		return "", fmt.Errorf("resolve %s/%s: version %s: %w", bucket, key, digest, err)
	}
	return digest, nil
}

// Delete forgets bucket and key and their history, as S3 DeleteObject would.
// The blobs stay until Remove deletes them.
func (s *Store) Delete(ctx context.Context, bucket, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := validateLocation(bucket, key); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if s.opts.Shared != nil {
		if err := s.opts.Shared.DeleteRef(ctx, bucket, key); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				err = ErrNotFound
			}
			return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.refPath(bucket, key)
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = ErrNotFound
		}
		return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
	}
	if err := syncDir(filepath.Dir(p)); err != nil {
		return fmt.Errorf("delete %s/%s: %w", bucket, key, err)
	}
	return nil
}

// Unpack unpacks the bundle with that digest into a directory of its own and
// returns the directory's path. The first call unpacks; later calls, also
// after a restart, return the same directory at once. Concurrent calls for
// one digest wait for a single unpacking. Nothing modifies the directory
// afterwards until Remove deletes it.
//
// The directory holds only regular files (mode 0644, or 0755 where the zip
// entry had an execute bit), directories (0755) and symlinks whose targets
// resolve inside it. Unpack counts the bytes it writes instead of trusting
// the sizes in the zip's headers.
func (s *Store) Unpack(ctx context.Context, digest string) (string, error) {
	if err := validateDigest(digest); err != nil {
		return "", fmt.Errorf("unpack %q: %w", digest, err)
	}
	dst := s.unpackedPath(digest)
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	unlock, err := s.digests.lock(ctx, digest)
	if err != nil {
		return "", fmt.Errorf("unpack %s: %w", digest, err)
	}
	defer unlock()
	if _, err := os.Stat(dst); err == nil {
		return dst, nil // a concurrent call unpacked it while we waited
	}
	if err := s.unpack(ctx, digest, dst); err != nil {
		return "", fmt.Errorf("unpack %s: %w", digest, err)
	}
	return dst, nil
}

func (s *Store) unpack(ctx context.Context, digest, dst string) error {
	blob, err := os.Open(s.blobPath(digest))
	if errors.Is(err, fs.ErrNotExist) && s.opts.Shared != nil {
		if err := s.download(ctx, digest); err != nil {
			return err
		}
		blob, err = os.Open(s.blobPath(digest))
	}
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	} else if err != nil {
		return err
	}
	defer blob.Close()
	fi, err := blob.Stat()
	if err != nil {
		return err
	}
	zr, err := newZipReader(blob, fi.Size(), digest)
	if err != nil {
		return err
	}
	// The bundle was checked by Put, but the limits may have changed since and
	// the check costs little next to unpacking.
	m, err := inspect(zr, digest, s.opts)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(s.path("tmp"), "unpack-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed into place
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := extract(ctx, m, root, s.opts); err != nil {
		return err
	}
	if err := syncTree(root, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dst))
}

// Remove deletes the blob with that digest and its unpacked directory, for
// garbage collection once no runtime version refers to it. Remove refuses
// with ErrInUse while the digest is the current object of a bucket and key:
// a bundle just uploaded must survive until a runtime version refers to it.
// Sandboxes still using the unpacked directory must be gone first.
//
// With a shared backend Remove deletes the shared blob and this store's
// copies; other stores keep theirs until their own Remove, which Digests
// leads them to.
func (s *Store) Remove(ctx context.Context, digest string) error {
	if err := validateDigest(digest); err != nil {
		return fmt.Errorf("remove %q: %w", digest, err)
	}
	unlock, err := s.digests.lock(ctx, digest)
	if err != nil {
		return fmt.Errorf("remove %s: %w", digest, err)
	}
	defer unlock()
	s.mu.Lock()
	defer s.mu.Unlock()

	if err := s.checkUnused(ctx, digest); err != nil {
		return fmt.Errorf("remove %s: %w", digest, err)
	}
	found := false // whether the shared backend had the blob
	if sh := s.opts.Shared; sh != nil {
		switch err := sh.DeleteBlob(ctx, digest); {
		case err == nil:
			found = true
			// A Put through another replica may have made the blob
			// current between the check and the deletion.
			if err := s.checkUnused(ctx, digest); err != nil {
				if rerr := s.restoreShared(ctx, digest); rerr != nil {
					return fmt.Errorf("remove %s: %w; restore the shared blob: %w", digest, err, rerr)
				}
				return fmt.Errorf("remove %s: %w", digest, err)
			}
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("remove %s: delete shared blob: %w", digest, err)
		}
	}

	// Move the directory out of sight first: a crash halfway through
	// deleting it must not leave a partial bundle that Unpack would return.
	dir := s.unpackedPath(digest)
	trash, err := os.MkdirTemp(s.path("tmp"), "remove-*")
	if err != nil {
		return fmt.Errorf("remove %s: %w", digest, err)
	}
	defer os.RemoveAll(trash)
	if err := os.Rename(dir, filepath.Join(trash, "dir")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", digest, err)
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return fmt.Errorf("remove %s: %w", digest, err)
	}
	if err := os.Remove(s.blobPath(digest)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if found {
				return nil // this replica never fetched it
			}
			err = ErrNotFound
		}
		return fmt.Errorf("remove %s: %w", digest, err)
	}
	if err := syncDir(s.path("blobs", "sha256")); err != nil {
		return fmt.Errorf("remove %s: %w", digest, err)
	}
	return nil
}

// Digests returns the digests of all blobs the store holds, sorted, for
// garbage collection to compare with the digests runtime versions use. With
// a shared backend those are the shared blobs and the ones this store still
// has in its directory.
func (s *Store) Digests(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(s.path("blobs", "sha256"))
	if err != nil {
		return nil, fmt.Errorf("list digests: %w", err)
	}
	var out []string
	for _, e := range entries {
		if d := "sha256:" + e.Name(); validateDigest(d) == nil {
			out = append(out, d)
		}
	}
	if s.opts.Shared != nil {
		return s.sharedDigests(ctx, out)
	}
	return out, nil // ReadDir sorts by name
}

// ref is the content of a key's ref file.
type ref struct {
	Bucket   string    `json:"bucket"`
	Key      string    `json:"key"`
	Versions []version `json:"versions"` // newest first; never empty once written
}

type version struct {
	Digest   string    `json:"digest"`
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
}

func (rf ref) object(i int) Object {
	v := rf.Versions[i]
	return Object{Bucket: rf.Bucket, Key: rf.Key, Digest: v.Digest, Size: v.Size, Modified: v.Modified}
}

// addVersion makes obj the current version of rf, which it names.
func (rf *ref) addVersion(obj Object) {
	rf.Bucket, rf.Key = obj.Bucket, obj.Key
	rf.Versions = slices.DeleteFunc(rf.Versions, func(v version) bool { return v.Digest == obj.Digest })
	rf.Versions = slices.Insert(rf.Versions, 0, version{Digest: obj.Digest, Size: obj.Size, Modified: obj.Modified})
	rf.Versions = rf.Versions[:min(len(rf.Versions), maxHistory)]
}

// getRef returns the ref of bucket and key, from the shared backend if
// there is one.
func (s *Store) getRef(ctx context.Context, bucket, key string) (ref, error) {
	if s.opts.Shared != nil {
		return s.getSharedRef(ctx, bucket, key)
	}
	return s.readRef(bucket, key)
}

func (s *Store) readRef(bucket, key string) (ref, error) {
	return readRefFile(s.refPath(bucket, key))
}

// checkBlob reports whether the store holds the blob of digest, in the
// shared backend if there is one. The error wraps fs.ErrNotExist if not.
func (s *Store) checkBlob(ctx context.Context, digest string) error {
	if s.opts.Shared == nil {
		_, err := os.Stat(s.blobPath(digest))
		return err
	}
	rc, err := s.opts.Shared.OpenBlob(ctx, digest)
	if err != nil {
		return err
	}
	return rc.Close()
}

// checkUnused returns an error wrapping ErrInUse if digest is the current
// object of some bucket and key.
func (s *Store) checkUnused(ctx context.Context, digest string) error {
	return s.walkRefs(ctx, func(rf ref) error {
		if rf.Versions[0].Digest == digest {
			return fmt.Errorf("current object of %s/%s: %w", rf.Bucket, rf.Key, ErrInUse)
		}
		return nil
	})
}

func readRefFile(p string) (ref, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return ref{}, ErrNotFound
	} else if err != nil {
		return ref{}, err
	}
	var rf ref
	if err := json.Unmarshal(b, &rf); err != nil {
		return ref{}, fmt.Errorf("read %s: %w", p, err)
	}
	if len(rf.Versions) == 0 {
		return ref{}, fmt.Errorf("read %s: no versions", p)
	}
	return rf, nil
}

// writeRef replaces the ref file atomically. The caller holds s.mu.
func (s *Store) writeRef(rf ref) error {
	b, err := json.Marshal(rf)
	if err != nil {
		return err
	}
	p := s.refPath(rf.Bucket, rf.Key)
	bucketDir := filepath.Dir(p)
	if _, err := os.Stat(bucketDir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(bucketDir, 0o755); err != nil {
			return err
		}
		if err := syncDir(filepath.Dir(bucketDir)); err != nil {
			return err
		}
	}
	tmp, err := os.CreateTemp(s.path("tmp"), "ref-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return err
	}
	return syncDir(bucketDir)
}

// walkRefs calls fn with every ref in the store and stops at its first error.
func (s *Store) walkRefs(ctx context.Context, fn func(ref) error) error {
	if s.opts.Shared != nil {
		docs, err := s.opts.Shared.Refs(ctx)
		if err != nil {
			return fmt.Errorf("list shared refs: %w", err)
		}
		for _, b := range docs {
			rf, err := parseRef(b)
			if err != nil {
				return err
			}
			if err := fn(rf); err != nil {
				return err
			}
		}
		return nil
	}
	buckets, err := os.ReadDir(s.path("refs"))
	if err != nil {
		return err
	}
	for _, b := range buckets {
		files, err := os.ReadDir(s.path("refs", b.Name()))
		if err != nil {
			return err
		}
		for _, f := range files {
			if err := ctx.Err(); err != nil {
				return err
			}
			rf, err := readRefFile(s.path("refs", b.Name(), f.Name()))
			if err != nil {
				return err
			}
			if err := fn(rf); err != nil {
				return err
			}
		}
	}
	return nil
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// validateLocation checks bucket and key against S3's naming rules, so a
// location that works here also works against S3.
func validateLocation(bucket, key string) error {
	if err := validateBucket(bucket); err != nil {
		return fmt.Errorf("bucket %q: %w", bucket, err)
	}
	if err := validateKey(key); err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	return nil
}

func validateBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("%w: must be 3 to 63 characters long", ErrInvalid)
	}
	for _, c := range []byte(b) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return fmt.Errorf("%w: only lowercase letters, digits, dots and hyphens are allowed", ErrInvalid)
		}
	}
	if !isAlnum(b[0]) || !isAlnum(b[len(b)-1]) {
		return fmt.Errorf("%w: must begin and end with a letter or digit", ErrInvalid)
	}
	if strings.Contains(b, "..") {
		return fmt.Errorf("%w: must not contain two adjacent dots", ErrInvalid)
	}
	if net.ParseIP(b) != nil {
		return fmt.Errorf("%w: must not be an IP address", ErrInvalid)
	}
	return nil
}

func isAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func validateKey(k string) error {
	switch {
	case len(k) == 0 || len(k) > 1024:
		return fmt.Errorf("%w: must be 1 to 1024 bytes long", ErrInvalid)
	case !utf8.ValidString(k):
		return fmt.Errorf("%w: must be valid UTF-8", ErrInvalid)
	case strings.ContainsRune(k, 0):
		return fmt.Errorf("%w: must not contain NUL", ErrInvalid)
	case strings.HasPrefix(k, "/"):
		return fmt.Errorf("%w: must not begin with /", ErrInvalid)
	case slices.Contains(strings.Split(k, "/"), ".."):
		return fmt.Errorf("%w: must not contain a .. path segment", ErrInvalid)
	}
	return nil
}

// validateDigest checks the form "sha256:" followed by 64 lowercase hex digits.
func validateDigest(d string) error {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return fmt.Errorf("%w: want sha256: and 64 lowercase hex digits", ErrInvalid)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return fmt.Errorf("%w: want sha256: and 64 lowercase hex digits", ErrInvalid)
	}
	return nil
}

// ctxReader stops reading once ctx is done, so an abandoned upload or unpack
// does not run to the end.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// keyedMutex is a set of mutexes by key whose lock waits can be cancelled.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	ch      chan struct{} // holds a token while the key is locked
	waiters int           // holders and waiters; the entry is dropped at zero
}

func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*keyedEntry)
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{ch: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.waiters++
	k.mu.Unlock()

	release := func() {
		k.mu.Lock()
		if e.waiters--; e.waiters == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
