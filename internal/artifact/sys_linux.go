package artifact

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// lockDir takes an exclusive lock on the file at path, so that two Stores
// never share a directory: each would remove the other's work in tmp/.
func lockDir(path string) (io.Closer, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("in use by another process")
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil // closing the file releases the lock
}

// syncTree makes everything written under root durable. One syncfs costs far
// less than an fsync per file for bundles of thousands of files.
func syncTree(root *os.Root, _ string) error {
	d, err := root.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}
