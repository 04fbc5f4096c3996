// Package sandbox defines how Berth runs one agent session in isolation.
//
// A Driver starts sandboxes; each Sandbox has its own PID, mount, network, IPC
// and UTS namespaces, a private writable /tmp and working directory, a
// read-only view of the host system and cgroup limits. Berth never reaches an
// agent through a host port: it dials the agent inside the sandbox's own
// network namespace with Sandbox.DialContext, so every agent can listen on
// :8080 without colliding with any other.
//
// Drivers live in sub-packages (runc is the first); the conformance suite in
// sandboxtest is what every driver must pass.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"time"
)

// Spec describes one sandbox to start.
type Spec struct {
	// ID names the sandbox uniquely among the driver's live sandboxes. It is
	// made of [A-Za-z0-9_.-] and at most 64 characters long.
	ID string

	// Args is the agent's command line. Args[0] is resolved inside the
	// sandbox, against Env's PATH when it has no slash.
	Args []string
	// Env is the agent's whole environment, as KEY=value pairs.
	Env []string

	// CodeDir, if set, is a host directory that appears inside the sandbox at
	// WorkDir as a writable copy-on-write view: the agent can change files
	// there, but its changes are its own and vanish with the sandbox, and
	// CodeDir itself is never modified (it is shared by every sandbox of a
	// runtime version).
	CodeDir string
	// WorkDir is the agent's working directory inside the sandbox.
	WorkDir string

	// RootLayers, if set, makes the sandbox run a container image: its
	// root file system is the union of these host directories (the image's
	// unpacked layers, the bottom one first, shared by every sandbox and
	// never modified) under a writable layer of the sandbox's own, which
	// vanishes with it. The host's system view is not shown then, CodeDir
	// must be empty, and WorkDir may be any absolute directory ("/"
	// included).
	RootLayers []string
	// Image, if set, is a container image reference for drivers whose
	// nodes pull images themselves (kubernetes); such drivers run it
	// instead of RootLayers, with Args, Env, WorkDir and User resolved
	// from its config as for RootLayers. It names the image by digest
	// ("registry/repo@sha256:..."), so that every sandbox of a version
	// runs the same bytes. CodeDir and RootLayers must be empty then.
	// Drivers that unpack images themselves (runc) refuse it.
	Image string
	// User is whom the agent of a RootLayers or Image sandbox runs as, in
	// the image's ids. Other sandboxes ignore it: their agent is always
	// the driver's unprivileged user.
	User User

	// Limits bounds the resources the sandbox can use.
	Limits Limits

	// Network says what the sandbox may reach beyond its own loopback.
	// Drivers that do not isolate agents (package process) ignore it.
	Network Network
	// Runtime names the OCI runtime to run the sandbox with ("runc",
	// "crun", "runsc"), for drivers that offer a choice; empty means the
	// driver's default. Drivers without a choice ignore it.
	Runtime string

	// Labels say what the sandbox is for (e.g. "runtime", "version" and
	// "session" with their ids). Drivers that can attach them to what they
	// create (kubernetes: the pod's labels) do; others ignore them. Keys
	// are made of [a-z0-9-].
	Labels map[string]string

	// Stdout and Stderr receive the agent's output. The driver hands these
	// files to the agent directly; the caller keeps ownership and may close
	// them once Start returns.
	Stdout, Stderr *os.File
}

// User is a uid and gid inside a sandbox. Uid 0 is the image's root, which
// holds no capabilities; drivers with user namespaces map it to an
// unprivileged host user.
type User struct {
	UID, GID       uint32
	AdditionalGids []uint32
}

// idPattern is what Spec.ID allows.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Validate checks the fields of s every driver reads the same way: the ID,
// the command line and the environment. Drivers check the rest.
func (s Spec) Validate() error {
	if !idPattern.MatchString(s.ID) || s.ID == "." || s.ID == ".." {
		return fmt.Errorf("invalid id %q: want 1 to 64 characters of [A-Za-z0-9_.-]", s.ID)
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return errors.New("no command: args is empty")
	}
	if s.Image != "" && (len(s.RootLayers) > 0 || s.CodeDir != "") {
		return fmt.Errorf("image %q: a sandbox of an image has no code dir or root layers", s.Image)
	}
	for _, kv := range s.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("env entry %q: want KEY=value", kv)
		}
	}
	return nil
}

// Limits are the resource limits of one sandbox. A zero field means the
// driver's default.
type Limits struct {
	MemoryBytes int64 // memory limit (OOM-kill above it)
	MilliCPUs   int64 // CPU quota in thousandths of a CPU
	Pids        int64 // maximum number of processes and threads
	TmpBytes    int64 // size of the private /tmp
}

// Or returns l with its zero fields taken from def.
func (l Limits) Or(def Limits) Limits {
	if l.MemoryBytes == 0 {
		l.MemoryBytes = def.MemoryBytes
	}
	if l.MilliCPUs == 0 {
		l.MilliCPUs = def.MilliCPUs
	}
	if l.Pids == 0 {
		l.Pids = def.Pids
	}
	if l.TmpBytes == 0 {
		l.TmpBytes = def.TmpBytes
	}
	return l
}

// Sandbox is one running, isolated agent.
type Sandbox interface {
	// ID returns the Spec.ID the sandbox was started with.
	ID() string
	// DialContext connects to addr (an IP literal and port, e.g.
	// "127.0.0.1:8080") inside the sandbox's network namespace.
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	// Done is closed when the sandbox's agent process has exited, whether it
	// crashed, was killed or was stopped.
	Done() <-chan struct{}
	// Err describes, once Done is closed, why the agent exited (for example
	// "exited with status 1" or "killed: out of memory"). It is nil before.
	Err() error
	// Stop kills every process of the sandbox and releases everything it
	// held: processes, mounts, cgroups, namespaces and its writable layer.
	// It is safe to call more than once and after the agent has exited.
	Stop(ctx context.Context) error
}

// Stats is what a sandbox uses.
type Stats struct {
	MemoryBytes int64   // memory in use now, page cache included
	CPUSeconds  float64 // CPU time consumed so far
}

// StatsReader is implemented by sandboxes that can report their resource
// use.
type StatsReader interface {
	Stats() (Stats, error)
}

// Labeler is implemented by sandboxes whose labels (Spec.Labels) can
// change after Start, so that what they say stays true when a sandbox
// started for one purpose serves another: a warm sandbox, started for no
// session, is labelled with the session that claims it.
type Labeler interface {
	// SetLabels adds labels to the sandbox's, replacing those of the same
	// keys. Keys are made of [a-z0-9-], as in Spec.Labels.
	SetLabels(ctx context.Context, labels map[string]string) error
}

// LogSource is implemented by drivers that keep each sandbox's output
// themselves and can give it back to any replica of Berth, not only to the
// one whose Spec.Stdout received it (kubernetes: the pod's log). Replicas
// use it to show the logs of sessions another replica started.
type LogSource interface {
	// Logs returns the output of the live sandbox id, whoever started it,
	// one line per printed line, oldest first, each line starting with the
	// RFC 3339 time (nanoseconds, UTC) it was printed and a space.
	// Stdout and stderr may be merged. With o.Follow the reader goes on
	// with new output until the agent exits or ctx ends. ErrNotFound if
	// there is no such sandbox.
	Logs(ctx context.Context, id string, o LogOptions) (io.ReadCloser, error)
}

// LogOptions select what LogSource.Logs returns.
type LogOptions struct {
	// Follow keeps the reader open for new output.
	Follow bool
	// Since, if not zero, drops the lines printed before it. Drivers may
	// round it down (Kubernetes: to the second), so callers that need
	// precision filter again.
	Since time.Time
	// Tail, if positive, keeps only the last Tail lines of the output
	// there is when the call is made.
	Tail int
}

// Driver starts sandboxes.
type Driver interface {
	// Start creates and starts a sandbox. It returns once the agent process
	// has been started; it does not wait for the agent to become healthy.
	Start(ctx context.Context, spec Spec) (Sandbox, error)
	// Cleanup removes what sandboxes of an earlier run of Berth left behind
	// (after a crash or a kill), so no process, mount or cgroup is leaked.
	Cleanup(ctx context.Context) error
}

// Shared is implemented by drivers whose sandboxes outlive the Berth process
// that started them and can be reached from every replica of Berth that
// shares the driver's cluster (kubernetes). Replicas use it to serve each
// other's sessions and to take them over when a replica dies.
type Shared interface {
	// Attach returns the live sandbox id, whoever started it, once its
	// agent runs. Its agent's output is not copied: it goes where the
	// starter's Spec said. ErrNotFound if there is no such sandbox or its
	// agent has exited.
	Attach(ctx context.Context, id string) (Sandbox, error)
	// List returns every live sandbox of the driver's owner, whoever
	// started it.
	List(ctx context.Context) ([]Listing, error)
	// Remove stops the sandbox id, whoever started it, and waits until it
	// is gone. A sandbox that does not exist is no error.
	Remove(ctx context.Context, id string) error
}

// Listing describes a live sandbox of a Shared driver.
type Listing struct {
	ID      string
	Labels  map[string]string // the Spec's labels
	Created time.Time
}

// ErrNotFound reports that no live sandbox has the given id.
var ErrNotFound = errors.New("sandbox not found")

// ErrUnavailable reports that a driver cannot run on this host (for example,
// its OCI runtime is not installed or Berth is not root).
var ErrUnavailable = errors.New("sandbox driver unavailable")
