package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The methods in this file make a Store the shared backend of
// internal/artifact (artifact.Shared), so that every Berth replica on one
// database sees the code bundles uploaded through any of them. They use the
// pool directly: they touch only the artifact tables, so the writer lock of
// Update would only make uploads wait for the control plane and the other
// way round.

// chunkSize is the most bytes of a blob in one row of artifact_chunks: small
// enough that a statement never carries much, large enough that a bundle of
// 250 MiB takes few of them.
const chunkSize = 1 << 20

// PutBlob stores size bytes read from r as the blob named digest, in one
// transaction, reading and sending a chunk at a time. It refuses bytes whose
// size or SHA-256 differ from what was claimed, so the table never holds a
// blob under a wrong name. It does nothing, without reading r, if the blob
// is stored already; if another transaction is storing it, it waits for
// that one to end.
func (s *Store) PutBlob(ctx context.Context, digest string, size int64, r io.Reader) error {
	want, err := digestHex(digest)
	if err != nil {
		return fmt.Errorf("put blob %q: %w", digest, err)
	}
	if size < 0 {
		return fmt.Errorf("put blob %s: negative size %d", digest, size)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO artifact_blobs (digest, size) VALUES ($1, $2)
			ON CONFLICT (digest) DO NOTHING`, digest, size)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return nil // stored already
		}
		h := sha256.New()
		buf := make([]byte, chunkSize)
		lr := io.LimitReader(r, size+1) // one byte more tells a longer body
		var total int64
		for n := 0; ; n++ {
			k, rerr := io.ReadFull(lr, buf)
			if k > 0 {
				h.Write(buf[:k])
				total += int64(k)
				if total > size {
					return fmt.Errorf("body is longer than %d bytes", size)
				}
				if _, err := tx.Exec(ctx, `INSERT INTO artifact_chunks (digest, n, data) VALUES ($1, $2, $3)`,
					digest, n, buf[:k]); err != nil {
					return err
				}
			}
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				break
			} else if rerr != nil {
				return fmt.Errorf("read body: %w", rerr)
			}
		}
		if total != size {
			return fmt.Errorf("body has %d bytes, want %d", total, size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			return fmt.Errorf("body has digest sha256:%s", got)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put blob %s: %w", digest, err)
	}
	return nil
}

// OpenBlob returns a reader of the blob's bytes, which fetches one chunk at a
// time as it is read. Its error wraps fs.ErrNotExist if there is no such
// blob, and reading fails if the blob is deleted meanwhile.
func (s *Store) OpenBlob(ctx context.Context, digest string) (io.ReadCloser, error) {
	var size int64
	err := s.pool.QueryRow(ctx, `SELECT size FROM artifact_blobs WHERE digest = $1`, digest).Scan(&size)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("open blob %s: %w", digest, fs.ErrNotExist)
	} else if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", digest, err)
	}
	return &blobReader{ctx: ctx, s: s, digest: digest, size: size}, nil
}

// blobReader reads a blob chunk by chunk.
type blobReader struct {
	ctx    context.Context
	s      *Store
	digest string
	size   int64 // of the whole blob
	read   int64 // bytes fetched so far
	n      int   // the next chunk to fetch
	buf    []byte
}

func (b *blobReader) Read(p []byte) (int, error) {
	if len(b.buf) == 0 {
		if b.read >= b.size {
			return 0, io.EOF
		}
		err := b.s.pool.QueryRow(b.ctx, `SELECT data FROM artifact_chunks WHERE digest = $1 AND n = $2`,
			b.digest, b.n).Scan(&b.buf)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("read blob %s: chunk %d is missing (deleted while read?)", b.digest, b.n)
		} else if err != nil {
			return 0, fmt.Errorf("read blob %s: chunk %d: %w", b.digest, b.n, err)
		}
		if len(b.buf) == 0 || b.read+int64(len(b.buf)) > b.size {
			return 0, fmt.Errorf("read blob %s: chunk %d has %d bytes, more than the blob's %d", b.digest, b.n, len(b.buf), b.size)
		}
		b.n++
		b.read += int64(len(b.buf))
	}
	k := copy(p, b.buf)
	b.buf = b.buf[k:]
	return k, nil
}

// Close implements io.Closer; a blobReader holds no connection between
// reads.
func (b *blobReader) Close() error { return nil }

// DeleteBlob deletes the blob and its chunks. The error wraps fs.ErrNotExist
// if there is no such blob.
func (s *Store) DeleteBlob(ctx context.Context, digest string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM artifact_blobs WHERE digest = $1`, digest)
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", digest, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete blob %s: %w", digest, fs.ErrNotExist)
	}
	return nil
}

// BlobDigests returns the digests of every blob, sorted.
func (s *Store) BlobDigests(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT digest FROM artifact_blobs ORDER BY digest`)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	return out, nil
}

// GetRef returns the ref document of bucket and key. The error wraps
// fs.ErrNotExist if there is none.
func (s *Store) GetRef(ctx context.Context, bucket, key string) ([]byte, error) {
	var doc []byte
	err := s.pool.QueryRow(ctx, `SELECT doc FROM artifact_refs WHERE bucket = $1 AND key = $2 AND doc IS NOT NULL`,
		bucket, key).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("get ref %s/%s: %w", bucket, key, fs.ErrNotExist)
	} else if err != nil {
		return nil, fmt.Errorf("get ref %s/%s: %w", bucket, key, err)
	}
	return doc, nil
}

// UpdateRef replaces the ref document of bucket and key with fn(old), where
// old is nil if there is none. The row is locked from the read to the
// write, so concurrent updates of one ref, from any process, run one after
// the other; fn's error rolls back, leaving the ref as it was.
func (s *Store) UpdateRef(ctx context.Context, bucket, key string, fn func(old []byte) ([]byte, error)) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		// Creating the row if it is missing and locking it if not, in
		// one statement: a SELECT ... FOR UPDATE has nothing to lock
		// while the row does not exist, and two creators would collide.
		var old []byte
		err := tx.QueryRow(ctx, `INSERT INTO artifact_refs AS r (bucket, key, doc) VALUES ($1, $2, NULL)
			ON CONFLICT (bucket, key) DO UPDATE SET doc = r.doc RETURNING r.doc`, bucket, key).Scan(&old)
		if err != nil {
			return err
		}
		doc, err := fn(old)
		if err != nil {
			return err
		}
		if len(doc) == 0 {
			return errors.New("empty ref document")
		}
		_, err = tx.Exec(ctx, `UPDATE artifact_refs SET doc = $3 WHERE bucket = $1 AND key = $2`, bucket, key, doc)
		return err
	})
	if err != nil {
		return fmt.Errorf("update ref %s/%s: %w", bucket, key, err)
	}
	return nil
}

// DeleteRef deletes the ref of bucket and key. The error wraps
// fs.ErrNotExist if there is none.
func (s *Store) DeleteRef(ctx context.Context, bucket, key string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM artifact_refs WHERE bucket = $1 AND key = $2 AND doc IS NOT NULL`, bucket, key)
	if err != nil {
		return fmt.Errorf("delete ref %s/%s: %w", bucket, key, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete ref %s/%s: %w", bucket, key, fs.ErrNotExist)
	}
	return nil
}

// Refs returns every ref document, ordered by bucket and key.
func (s *Store) Refs(ctx context.Context) ([][]byte, error) {
	rows, err := s.pool.Query(ctx, `SELECT doc FROM artifact_refs WHERE doc IS NOT NULL ORDER BY bucket, key`)
	if err != nil {
		return nil, fmt.Errorf("list refs: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("list refs: %w", err)
	}
	return out, nil
}

// inTx runs fn in a READ COMMITTED transaction of its own and commits it if
// fn succeeds.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		_ = tx.Rollback(rctx) // no-op after commit
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit transaction: %w", err)
	}
	return nil
}

// digestHex returns the hex part of a digest of the form sha256:<64 lowercase
// hex digits>.
func digestHex(d string) (string, error) {
	h, ok := strings.CutPrefix(d, "sha256:")
	if _, err := hex.DecodeString(h); !ok || len(h) != 64 || err != nil || strings.ToLower(h) != h {
		return "", errors.New("digest must be sha256: and 64 lowercase hex digits")
	}
	return h, nil
}
