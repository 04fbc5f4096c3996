package artifact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
)

// Shared is where several Stores, each with a directory of its own (one per
// Berth replica), keep the blobs and refs they share, so that a bundle put
// through one is seen by all. The PostgreSQL store implements it. It uses
// only basic types so that its implementations need not import this package;
// refs are JSON documents that the backend stores without reading them.
//
// Implementations must be safe for concurrent use, also by several
// processes.
type Shared interface {
	// PutBlob stores size bytes read from r as the blob named digest
	// ("sha256:<hex>"), all or nothing. It does nothing, without reading
	// r, if the blob is stored already.
	PutBlob(ctx context.Context, digest string, size int64, r io.Reader) error
	// OpenBlob returns a reader of the blob's bytes. The error wraps
	// fs.ErrNotExist if there is no such blob.
	OpenBlob(ctx context.Context, digest string) (io.ReadCloser, error)
	// DeleteBlob deletes the blob. The error wraps fs.ErrNotExist if there
	// is no such blob.
	DeleteBlob(ctx context.Context, digest string) error
	// BlobDigests lists the digests of every blob, sorted.
	BlobDigests(ctx context.Context) ([]string, error)
	// GetRef returns the ref document of bucket and key. The error wraps
	// fs.ErrNotExist if there is none.
	GetRef(ctx context.Context, bucket, key string) ([]byte, error)
	// UpdateRef replaces the ref document of bucket and key with fn(old),
	// atomically: concurrent updates of one ref run one after the other.
	// old is nil if there is no ref yet. An error from fn leaves the ref as
	// it was and is returned.
	UpdateRef(ctx context.Context, bucket, key string, fn func(old []byte) ([]byte, error)) error
	// DeleteRef deletes the ref of bucket and key. The error wraps
	// fs.ErrNotExist if there is none.
	DeleteRef(ctx context.Context, bucket, key string) error
	// Refs returns every ref document.
	Refs(ctx context.Context) ([][]byte, error)
}

// ErrCorrupt reports stored bytes that do not match their digest.
var ErrCorrupt = errors.New("corrupt")

// parseRef decodes a ref document from the shared backend.
func parseRef(b []byte) (ref, error) {
	var rf ref
	if err := json.Unmarshal(b, &rf); err != nil {
		return ref{}, fmt.Errorf("read shared ref: %w", err)
	}
	if len(rf.Versions) == 0 {
		return ref{}, errors.New("read shared ref: no versions")
	}
	return rf, nil
}

// getSharedRef reads the shared ref of bucket and key.
func (s *Store) getSharedRef(ctx context.Context, bucket, key string) (ref, error) {
	b, err := s.opts.Shared.GetRef(ctx, bucket, key)
	if errors.Is(err, fs.ErrNotExist) {
		return ref{}, ErrNotFound
	} else if err != nil {
		return ref{}, fmt.Errorf("read shared ref: %w", err)
	}
	return parseRef(b)
}

// putShared makes obj the current object of its bucket and key in the shared
// backend. blob holds obj's bytes; the caller holds s.mu and has uploaded
// them already.
func (s *Store) putShared(ctx context.Context, obj Object, blob io.ReadSeeker) error {
	sh := s.opts.Shared
	err := sh.UpdateRef(ctx, obj.Bucket, obj.Key, func(old []byte) ([]byte, error) {
		var rf ref
		if old != nil {
			var err error
			if rf, err = parseRef(old); err != nil {
				return nil, err
			}
		}
		rf.addVersion(obj)
		return json.Marshal(rf)
	})
	if err != nil {
		return fmt.Errorf("update shared ref: %w", err)
	}
	// Garbage collection through another replica may have removed the blob
	// between its upload and the ref naming it, when it was nobody's
	// current object. Now that it is, Remove refuses it; put it back.
	rc, err := sh.OpenBlob(ctx, obj.Digest)
	if err == nil {
		return rc.Close()
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("check shared blob: %w", err)
	}
	if _, err := blob.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := sh.PutBlob(ctx, obj.Digest, obj.Size, blob); err != nil {
		return fmt.Errorf("upload blob again: %w", err)
	}
	return nil
}

// restoreShared uploads the local blob of digest again, after Remove deleted
// the shared one and found that a Put through another replica had made it
// current meanwhile. Without a local blob it does nothing: then that Put
// finds the blob gone and uploads it itself.
func (s *Store) restoreShared(ctx context.Context, digest string) error {
	f, err := os.Open(s.blobPath(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return s.opts.Shared.PutBlob(ctx, digest, fi.Size(), f)
}

// download copies the shared blob of digest into blobs/, checking that its
// bytes have that digest: the backend is not trusted with the bundle's
// integrity. The caller holds digest's lock.
func (s *Store) download(ctx context.Context, digest string) error {
	rc, err := s.opts.Shared.OpenBlob(ctx, digest)
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	} else if err != nil {
		return fmt.Errorf("open shared blob: %w", err)
	}
	defer rc.Close()
	tmp, err := s.spool(ctx, digest, "get-*", rc)
	if err != nil {
		if _, ok := errors.AsType[*BundleError](err); ok {
			return err
		}
		return fmt.Errorf("shared blob: %w", err)
	}
	defer tmp.Close()
	if tmp.digest != digest {
		return fmt.Errorf("shared blob's %d bytes have digest %s: %w", tmp.size, tmp.digest, ErrCorrupt)
	}
	if err := os.Rename(tmp.Name(), s.blobPath(digest)); err != nil {
		return err
	}
	tmp.kept = true
	return syncDir(s.path("blobs", "sha256"))
}

// sharedDigests lists the shared blobs and the local ones, which another
// replica's Remove of a shared blob leaves behind: garbage collection then
// finds them here and removes them too.
func (s *Store) sharedDigests(ctx context.Context, local []string) ([]string, error) {
	shared, err := s.opts.Shared.BlobDigests(ctx)
	if err != nil {
		return nil, fmt.Errorf("list shared blobs: %w", err)
	}
	for _, d := range shared {
		if err := validateDigest(d); err != nil {
			return nil, fmt.Errorf("list shared blobs: digest %q: %w", d, err)
		}
	}
	out := append(slices.Clone(shared), local...)
	slices.Sort(out)
	return slices.Compact(out), nil
}
