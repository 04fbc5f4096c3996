package runc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/berthrun/berth/internal/sandbox"
)

// RuntimeNames returns the OCI runtimes a Runtimes can run sandboxes with.
func RuntimeNames() []string { return []string{"runc", "crun", "runsc"} }

// RuntimeName returns the name of the OCI runtime binary (a name or a path)
// among RuntimeNames: "runsc" for any runsc-<something>, else its base name.
func RuntimeName(binary string) string {
	if isGVisor(binary) {
		return "runsc"
	}
	return filepath.Base(binary)
}

// Runtimes is a sandbox.Driver that runs each sandbox with the OCI runtime
// its Spec.Runtime names, or with its default one, through one Driver per
// runtime. The default's Driver is made by NewRuntimes; the others on first
// use, so that a runtime installed later needs no restart. It is safe for
// concurrent use.
type Runtimes struct {
	def      string
	binaries map[string]string
	opts     Options

	mu      sync.Mutex
	drivers map[string]*Driver
}

var _ sandbox.Driver = (*Runtimes)(nil)

// NewRuntimes returns a Runtimes whose default runtime is def (one of
// RuntimeNames). binaries maps a runtime's name to its binary, a path or a
// name looked up in PATH; a runtime not in it is looked up by its own name.
//
// Each runtime's Driver gets opts with its own Binary, a StateDir of
// opts.StateDir/<name> and a CgroupParent of opts.CgroupParent/<name>
// (default /berth/<name>). opts.Platform applies to runsc only.
func NewRuntimes(def string, binaries map[string]string, opts Options) (*Runtimes, error) {
	for name := range binaries {
		if !slices.Contains(RuntimeNames(), name) {
			return nil, fmt.Errorf("OCI runtime %q: want one of %s", name, strings.Join(RuntimeNames(), ", "))
		}
	}
	if !slices.Contains(RuntimeNames(), def) {
		return nil, fmt.Errorf("default OCI runtime %q: want one of %s", def, strings.Join(RuntimeNames(), ", "))
	}
	if opts.StateDir == "" {
		return nil, errors.New("runc driver: no state directory")
	}
	if opts.CgroupParent == "" {
		opts.CgroupParent = "/berth"
	}
	r := &Runtimes{def: def, binaries: binaries, opts: opts, drivers: make(map[string]*Driver)}
	if _, err := r.Driver(def); err != nil {
		return nil, err
	}
	return r, nil
}

// Default returns the name of the default runtime.
func (r *Runtimes) Default() string { return r.def }

// Driver returns the Driver of runtime name, making it on first use. Its
// error wraps sandbox.ErrUnavailable when the runtime is not installed (and
// says how to install it); a later call tries again.
func (r *Runtimes) Driver(name string) (*Driver, error) {
	if !slices.Contains(RuntimeNames(), name) {
		return nil, fmt.Errorf("OCI runtime %q: want one of %s", name, strings.Join(RuntimeNames(), ", "))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if d := r.drivers[name]; d != nil {
		return d, nil
	}
	opts := r.opts
	opts.Binary = name
	if bin := r.binaries[name]; bin != "" {
		opts.Binary = bin
	}
	if name != "runsc" {
		opts.Platform = ""
	}
	opts.StateDir = filepath.Join(r.opts.StateDir, name)
	opts.CgroupParent = path.Join(r.opts.CgroupParent, name)
	d, err := New(opts)
	if err != nil {
		return nil, err
	}
	r.drivers[name] = d
	return d, nil
}

// Check reports whether sandboxes can run with runtime name: nil, or an
// error that says what is missing.
func (r *Runtimes) Check(name string) error {
	_, err := r.Driver(name)
	return err
}

// Start starts a sandbox with the runtime spec.Runtime names, or the
// default one.
func (r *Runtimes) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	name := spec.Runtime
	if name == "" {
		name = r.def
	}
	d, err := r.Driver(name)
	if err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	spec.Runtime = ""
	return d.Start(ctx, spec)
}

// Cleanup removes what an earlier run left behind, for every runtime that
// has a state directory.
func (r *Runtimes) Cleanup(ctx context.Context) error {
	var errs []error
	for _, name := range RuntimeNames() {
		if _, err := os.Stat(filepath.Join(r.opts.StateDir, name)); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		d, err := r.Driver(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("clean up %s sandboxes: %w", name, err))
			continue
		}
		if err := d.Cleanup(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
