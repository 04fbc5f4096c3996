//go:build !linux

package artifact

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// lockDir opens the lock file without locking it: Berth runs sandboxes on
// Linux only, and elsewhere the store serves tests and development, where
// one process at a time is the caller's promise.
func lockDir(path string) (io.Closer, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}

// syncTree makes everything written under dir durable, one fsync per file
// and directory.
func syncTree(_ *os.Root, dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}
