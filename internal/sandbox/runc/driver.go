// Package runc runs sandboxes as containers of a production OCI runtime:
// runc by default, crun, which takes the same command line, or gVisor's
// runsc, for stronger isolation: its agent's system calls go to gVisor's
// Sentry, a kernel in user space, not to the host's kernel.
//
// Each sandbox gets new PID, mount, network, IPC and UTS namespaces; its
// network namespace has only loopback, unless its Spec.Network asks for more
// and Options.Network provides it (package network): the driver then makes
// the sandbox's network namespace (owned by its user namespace, as the
// runtime's would be; see nsHolder), sets its network up, and only then runs
// the runtime, which joins both. Its root is a read-only skeleton,
// built once per driver and shared by all its sandboxes, onto which the
// host's /usr (and /bin, /lib, ... as symlinks or read-only bind mounts,
// mirroring the host) and a short list of /etc entries are bound read-only.
// /tmp is a private tmpfs of Limits.TmpBytes. The working directory is an
// overlay whose lower layer is the shared CodeDir and whose upper layer lives
// in the sandbox's own directory under the state directory, or, without a
// CodeDir, a tmpfs of Limits.TmpBytes.
//
// A sandbox of a container image (Spec.RootLayers) has no skeleton nor host
// system view: its root is a writable overlay of the image's shared layers
// under an upper layer in the sandbox's own directory, mounted by the driver
// and removed with the sandbox; /proc, /dev, /sys and /tmp are as above, and
// the host's /etc/hosts and /etc/resolv.conf are bound over the image's. Its
// agent runs as Spec.User: with a user namespace the image's ids are the
// sandbox's (its root is host uid HostIDBase, unprivileged), without one
// they are shifted by HostIDBase. Image layers must be unpacked with owners
// shifted by HostIDBase (package image does) so that they belong to the
// same users either way.
//
// The agent runs as an unprivileged user with no capabilities, no_new_privs
// and Docker's default seccomp profile. Where the host allows, each sandbox
// also gets a user namespace in which the agent is uid 1000 and root is an
// unprivileged host user (see Options.HostIDBase); elsewhere the agent runs
// as that same host user without one.
//
// Limits go through linux.resources to the sandbox's own cgroup,
// CgroupParent/<id>, which the runtime creates in every hierarchy. The driver
// detects whether the host has cgroup v2 (unified) or v1 (legacy or hybrid)
// only to read the OOM-kill counter and to remove leftovers; the runtime
// handles both.
//
// The driver keeps no process per sandbox: the runtime starts the agent
// detached and exits. New makes the calling process a child subreaper, so
// each agent becomes its child when the runtime exits; the driver waits for
// the agent's exit through a pidfd on Go's netpoller (a parked goroutine, no
// thread) and reaps it for its exit status. Berth reaches the agent by
// dialling inside the sandbox's network namespace (package netns), never
// through a host port.
//
// runsc differs in a few explicit ways, all in this package. Its Sentry
// cannot bring up an interface, so the driver creates each sandbox's network
// namespace itself, with loopback up, and runs runsc with its host network
// inside it. gVisor does not mount overlayfs, so a CodeDir's copy-on-write
// view is an overlay the driver mounts on the host, in the sandbox's
// directory, and binds in. The pid runsc reports, which the driver waits on,
// is the Sentry's: it exits with the agent's status, or with 128+n when the
// agent was killed by signal n. Sandboxes get no user namespace: gVisor runs
// the Sentry and its file proxy (the gofer) in user namespaces of their own,
// unprivileged, and the agent's ids are the Sentry's, not the host's. The
// spec's seccomp filter is loaded inside the Sentry (--oci-seccomp), and the
// cgroup limits apply to the Sentry, which holds the agent's memory.
package runc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/netns"
	"github.com/berthrun/berth/internal/sandbox/network"
)

// Options configure a Driver.
type Options struct {
	// Binary is the OCI runtime: a name looked up in PATH, or a path.
	// The default is "runc"; "crun" works too.
	Binary string
	// StateDir holds everything the driver keeps on disk: the runtime's
	// state root, the shared rootfs skeleton and one directory per sandbox
	// (with the sandbox's writable layer). It must be on a file system
	// overlayfs accepts as an upper layer (ext4, xfs, btrfs, tmpfs) and its
	// path may not contain ',' or ':'. Required. Drivers that share a
	// StateDir share their sandboxes: a new driver's Cleanup removes what an
	// earlier one left.
	StateDir string
	// CgroupParent is the cgroup below which each sandbox gets its own,
	// CgroupParent/<id>, in every hierarchy. The default is "/berth".
	// Drivers with different StateDirs on one host need different parents.
	CgroupParent string
	// EtcFiles names the entries of the host's /etc that sandboxes see,
	// read-only. Nil means DefaultEtcFiles. Secrets such as shadow are
	// refused.
	EtcFiles []string
	// Defaults replace the zero fields of a sandbox's limits. Its own zero
	// fields mean DefaultLimits.
	Defaults sandbox.Limits
	// HostIDBase is the first of the 65536 host uids and gids that
	// sandboxes use: a sandbox's user namespace maps its ids 0 to 65535 to
	// HostIDBase to HostIDBase+65535, and its agent (uid and gid 1000
	// inside) is HostIDBase+1000 on the host, with or without a user
	// namespace. No host user or other container runtime should use them.
	// Zero means DefaultHostIDBase.
	HostIDBase uint32
	// NoUserNamespace runs sandboxes without a user namespace even where
	// the host allows one. Their agents still run as the unprivileged
	// HostIDBase+1000.
	//
	// Without it, sandboxes get a user namespace if the kernel allows them
	// and the sandboxes' root (HostIDBase) may look up StateDir, as the
	// runtime sets a sandbox up from inside its namespace: every directory
	// above StateDir must be searchable by others (mode o+x, as
	// /var/lib/docker is with Docker's userns-remap), and so must every
	// CodeDir with the directories above it. Otherwise New logs a warning
	// and runs sandboxes without one.
	NoUserNamespace bool
	// Network gives sandboxes a network beyond loopback (modes outbound
	// and allowlist). Nil means sandboxes can have loopback only: Start
	// refuses other modes.
	Network *network.Manager
	// Platform is how runsc intercepts the agent's system calls, when
	// Binary is runsc: "ptrace" (the default, which works everywhere) or
	// what else that runsc offers (runsc help platforms). It must be empty
	// for other runtimes.
	Platform string
	// Logger receives the driver's logs. Nil means slog.Default().
	Logger *slog.Logger
}

// Driver starts sandboxes with an OCI runtime. It runs every sandbox with
// its own runtime, whatever Spec.Runtime says: Runtimes chooses among
// several. It is safe for concurrent use.
type Driver struct {
	rt           runtime
	sandboxes    string // per-sandbox directories (bundles)
	rootfs       string // the shared read-only skeleton
	cgroupParent string
	cgroups      cgroupHost
	system       []specs.Mount
	defaults     sandbox.Limits
	ids          identity
	seccomp      *specs.LinuxSeccomp
	net          *network.Manager
	cat          string // the holder of networked sandboxes' namespaces (see nsHolder)
	log          *slog.Logger

	mu   sync.Mutex
	live map[string]bool // ids of this driver's sandboxes, which Cleanup spares
}

var _ sandbox.Driver = (*Driver)(nil)

// New checks that the host can run sandboxes, makes the calling process a
// child subreaper (see the package documentation) and prepares the state
// directory and the rootfs skeleton. It does not touch sandboxes left by an
// earlier run: call Cleanup for that.
//
// New returns an error wrapping sandbox.ErrUnavailable when the runtime is
// not installed or the process is not root.
func New(opts Options) (*Driver, error) {
	binary := opts.Binary
	if binary == "" {
		binary = "runc"
	}
	if uid := os.Geteuid(); uid != 0 {
		return nil, fmt.Errorf("%w: the %s driver needs root, and this process runs as uid %d", sandbox.ErrUnavailable, filepath.Base(binary), uid)
	}
	bin, err := exec.LookPath(binary)
	if err != nil {
		where := "in PATH"
		if strings.ContainsRune(binary, '/') {
			where = "at " + binary
		}
		return nil, fmt.Errorf("%w: OCI runtime %s not found %s: install it with apt-get install %s (%v)",
			sandbox.ErrUnavailable, filepath.Base(binary), where, filepath.Base(binary), err)
	}
	// Waiting on agents needs pidfds (Linux 5.4).
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return nil, fmt.Errorf("%w: this kernel has no pidfds (Linux 5.4 or later is needed): %v", sandbox.ErrUnavailable, err)
	}
	unix.Close(pidfd)
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	gvisor := isGVisor(binary)
	platform := opts.Platform
	switch {
	case gvisor && platform == "":
		platform = "ptrace"
	case !gvisor && platform != "":
		return nil, fmt.Errorf("runc driver: platform %q: only runsc takes a platform, not %s", platform, filepath.Base(binary))
	}

	if opts.StateDir == "" {
		return nil, errors.New("runc driver: no state directory")
	}
	state, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("runc driver: state directory: %w", err)
	}
	if strings.ContainsAny(state, ",:\\\n") {
		return nil, fmt.Errorf("runc driver: state directory %q: overlayfs cannot take a path with ',', ':' or '\\'", state)
	}
	parent := opts.CgroupParent
	if parent == "" {
		parent = "/berth"
	}
	if !path.IsAbs(parent) || path.Clean(parent) != parent || parent == "/" {
		return nil, fmt.Errorf("runc driver: cgroup parent %q: want a clean absolute path such as /berth", parent)
	}
	etc := opts.EtcFiles
	if etc == nil {
		etc = DefaultEtcFiles()
	}
	defaults := opts.Defaults.Or(DefaultLimits())
	if err := validate(sandbox.Spec{ID: "defaults", Args: []string{"x"}, WorkDir: "/x", Limits: defaults}); err != nil {
		return nil, fmt.Errorf("runc driver: default limits: %w", err)
	}
	base := opts.HostIDBase
	if base == 0 {
		base = DefaultHostIDBase
	}
	// The highest id, 2^32-1, means "no id" to the kernel.
	if base < idMapSize || uint64(base)+idMapSize > math.MaxUint32 {
		return nil, fmt.Errorf("runc driver: host id base %d: want %d to %d, so that the %d ids above it are neither the host's own users nor past the last id",
			base, idMapSize, math.MaxUint32-idMapSize, idMapSize)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	filter, err := defaultSeccomp()
	if err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}

	if gvisor {
		filter = gvisorSeccomp(filter)
	}

	cgroups, err := detectCgroups()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrUnavailable, err)
	}
	view, err := inspectHost("/", etc)
	if err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	var cat string
	if opts.Network != nil {
		if cat, err = exec.LookPath("cat"); err != nil {
			return nil, fmt.Errorf("runc driver: sandbox networks need cat (coreutils) to hold their namespaces: %w", err)
		}
	}
	d := &Driver{
		rt:           runtime{bin: bin, root: filepath.Join(state, "runtime"), gvisor: gvisor, platform: platform},
		sandboxes:    filepath.Join(state, "sandboxes"),
		rootfs:       filepath.Join(state, "rootfs"),
		cgroupParent: parent,
		cgroups:      cgroups,
		system:       view.mounts,
		defaults:     defaults,
		ids:          identity{hostBase: base},
		seccomp:      filter,
		net:          opts.Network,
		cat:          cat,
		log:          logger,
		live:         make(map[string]bool),
	}
	// A sandbox's root looks up the skeleton and its overlay directories
	// (only those) from inside its user namespace: the state directory and
	// the one of sandboxes are searchable but not readable by others.
	for _, dir := range []struct {
		path string
		perm fs.FileMode
	}{{state, 0o711}, {d.rt.root, 0o700}, {d.sandboxes, 0o711}} {
		if err := mkdirMode(dir.path, dir.perm); err != nil {
			return nil, fmt.Errorf("runc driver: %w", err)
		}
	}
	if err := view.build(d.rootfs); err != nil {
		return nil, fmt.Errorf("runc driver: %w", err)
	}
	switch err := userNamespaceUsable(state, base); {
	case opts.NoUserNamespace:
		logger.Debug("sandboxes run without a user namespace, as configured")
	case gvisor:
		// runsc puts its Sentry and gofer in user namespaces of its own;
		// the agent's ids exist only inside the Sentry.
		logger.Debug("sandboxes run without a user namespace of the driver's: runsc isolates them itself")
	case err != nil:
		logger.Warn("sandboxes run without a user namespace", "reason", err)
	default:
		d.ids.userns = true
	}
	// The runtime exits once the agent runs; as a subreaper this process
	// inherits the agent, so it can collect its exit status and no zombie
	// is left to whatever init the host has.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("runc driver: become a child subreaper: %w", err)
	}
	logger.Debug("sandbox driver ready", "runtime", bin, "state", state, "cgroup_version", cgroups.version(), "cgroup_parent", parent,
		"user_namespace", d.ids.userns, "agent_host_id", d.ids.agentOnHost())
	return d, nil
}

// Start creates and starts a sandbox, and returns once its agent process
// runs.
func (d *Driver) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	if err := validate(spec); err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	if spec.Network.Enabled() && d.net == nil {
		return nil, fmt.Errorf("start sandbox %q: network mode %s: this driver gives sandboxes no network (loopback only)", spec.ID, spec.Network.Mode)
	}
	if spec.CodeDir != "" {
		if err := isDir("code dir", spec.CodeDir); err != nil {
			return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
		}
		if d.ids.userns {
			// The runtime mounts the overlay from inside the user
			// namespace.
			if err := checkReachable(spec.CodeDir, d.ids.hostBase, true); err != nil {
				return nil, fmt.Errorf("start sandbox %q: code dir %s: the sandbox's root (host uid %d) cannot read it: %w",
					spec.ID, spec.CodeDir, d.ids.hostBase, err)
			}
		}
	}
	dir := filepath.Join(d.sandboxes, spec.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("start sandbox %q: a sandbox with this id exists", spec.ID)
		}
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	d.mu.Lock()
	d.live[spec.ID] = true
	d.mu.Unlock()
	s, err := d.start(ctx, spec, dir)
	if err != nil {
		// Clean up even if ctx is what failed the start.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if derr := d.destroy(cctx, spec.ID); derr != nil {
			d.log.Warn("clean up a sandbox that failed to start", "id", spec.ID, "err", derr)
		} else {
			d.forget(spec.ID)
		}
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	return s, nil
}

// forget drops id from the driver's live sandboxes once it is gone.
func (d *Driver) forget(id string) {
	d.mu.Lock()
	delete(d.live, id)
	d.mu.Unlock()
}

// start does the work of Start once the sandbox's directory exists.
func (d *Driver) start(ctx context.Context, spec sandbox.Spec, dir string) (*container, error) {
	b := bundle{
		spec:        spec,
		limits:      spec.Limits.Or(d.defaults),
		rootfs:      d.rootfs,
		system:      d.system,
		cgroupsPath: d.cgroupsPath(spec.ID),
		limitSwap:   d.cgroups.swap,
		ids:         d.ids,
		seccomp:     d.seccomp,
		gvisor:      d.rt.gvisor,
	}
	var ns *os.File // the sandbox's network namespace, when the driver makes it
	if d.rt.gvisor {
		var err error
		if ns, err = netns.NewLoopback(); err != nil {
			return nil, err
		}
		// runsc enters the namespace by this path; it stays open for
		// dialling the agent.
		b.netns = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd())
	}
	c, err := d.startContainer(ctx, b, dir, ns)
	if err != nil && ns != nil {
		ns.Close()
	}
	return c, err
}

// startContainer writes the bundle of b in dir and runs it. ns is the
// network namespace the driver made for the sandbox, or nil.
func (d *Driver) startContainer(ctx context.Context, b bundle, dir string, ns *os.File) (*container, error) {
	spec := b.spec
	if len(spec.RootLayers) > 0 {
		// The sandbox's root looks up its root file system here.
		if err := os.Chmod(dir, 0o711); err != nil {
			return nil, err
		}
		root, err := mountImageRoot(dir, spec, d.ids)
		if err != nil {
			return nil, err
		}
		b.rootfs = root
	} else if spec.CodeDir != "" || spec.Network.Enabled() {
		// The sandbox's root looks up the overlay directories and the
		// network's /etc files (and nothing else) here; the overlay's
		// belong to the agent, whose files they hold.
		if err := os.Chmod(dir, 0o711); err != nil {
			return nil, err
		}
	}
	if spec.CodeDir != "" {
		b.upperDir = filepath.Join(dir, "upper")
		b.workDir = filepath.Join(dir, "work")
		owner := int(d.ids.agentOnHost())
		for _, p := range []string{b.upperDir, b.workDir} {
			if err := os.Mkdir(p, 0o700); err != nil {
				return nil, err
			}
			if err := os.Chown(p, owner, owner); err != nil {
				return nil, err
			}
		}
	}
	var plan *network.Attachment
	if spec.Network.Enabled() {
		var err error
		if plan, err = d.planNetwork(ctx, &b, dir); err != nil {
			return nil, err
		}
	}
	if spec.CodeDir != "" && b.gvisor {
		// gVisor cannot mount overlayfs itself: mount it here and bind
		// it in. destroy unmounts it.
		b.merged = filepath.Join(dir, "merged")
		if err := os.Mkdir(b.merged, 0o700); err != nil {
			return nil, err
		}
		opts := "lowerdir=" + spec.CodeDir + ",upperdir=" + b.upperDir + ",workdir=" + b.workDir
		if err := unix.Mount("overlay", b.merged, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return nil, fmt.Errorf("mount the working directory's overlay: %w", err)
		}
	}
	// The mount point must exist in the shared, read-only skeleton. checkWorkDir
	// keeps it out of the skeleton's symlinks. (An image's root is its
	// own and writable: the runtime creates what is missing.)
	if len(spec.RootLayers) == 0 {
		if err := mkdirAll(filepath.Join(d.rootfs, spec.WorkDir)); err != nil {
			return nil, fmt.Errorf("create workdir mount point: %w", err)
		}
	}
	pidFile := filepath.Join(dir, "pid")
	switch {
	case plan == nil:
	case ns != nil:
		// gVisor's namespace is the driver's own: set it up first.
		if err := d.attachNetwork(plan, dir, b.netns); err != nil {
			return nil, err
		}
	default:
		// A networked sandbox joins namespaces a holder made (a network
		// namespace owned by a user namespace, as the runtime's own
		// are, which sysfs needs), set up before the runtime runs: the
		// agent never sees its network unconfigured, and the runtime
		// runs once.
		h, err := holdNamespaces(d.cat, d.ids)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := h.release(); err != nil {
				d.log.Warn("the holder of a sandbox's namespaces failed", "id", spec.ID, "err", err)
			}
		}()
		if err := d.attachNetwork(plan, dir, h.net); err != nil {
			return nil, err
		}
		b.netns, b.userns = h.net, h.user
	}
	return d.run(ctx, b, dir, pidFile, ns)
}

// run writes the bundle's config.json in dir and runs the sandbox. ns is
// the network namespace the driver made for it, or nil.
func (d *Driver) run(ctx context.Context, b bundle, dir, pidFile string, ns *os.File) (*container, error) {
	if err := writeJSON(filepath.Join(dir, "config.json"), buildSpec(b)); err != nil {
		return nil, err
	}
	if err := d.rt.run(ctx, b.spec.ID, dir, pidFile, b.spec.Stdout, b.spec.Stderr); err != nil {
		return nil, err
	}
	pid, err := readPid(pidFile)
	if err != nil {
		return nil, err
	}
	gofer := 0
	if d.rt.gvisor {
		if gofer, err = d.rt.goferPid(b.spec.ID); err != nil {
			d.log.Warn("runsc's gofer is not known: it will not be reaped", "id", b.spec.ID, "err", err)
		}
	}
	return d.watch(b.spec.ID, pid, b.limits, ns, gofer)
}

// Cleanup kills and removes every sandbox an earlier driver over the same
// state directory left behind: containers in the runtime's root, their
// cgroups, networks and directories; with a network manager, it also prunes
// the filters of sandboxes whose links are gone (see network.Prune), such
// as those of a state directory removed since. It spares the sandboxes this
// driver started, but is meant to run once, before the first Start.
func (d *Driver) Cleanup(ctx context.Context) error {
	ids, err := d.rt.list(ctx)
	if err != nil {
		return fmt.Errorf("clean up sandboxes: %w", err)
	}
	entries, err := os.ReadDir(d.sandboxes)
	if err != nil {
		return fmt.Errorf("clean up sandboxes: %w", err)
	}
	for _, e := range entries {
		ids = append(ids, e.Name())
	}
	var errs []error
	d.mu.Lock()
	seen := maps.Clone(d.live)
	d.mu.Unlock()
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		d.log.Info("removing a sandbox left by an earlier run", "id", id)
		if err := d.destroy(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	if d.net != nil {
		pruned, err := network.Prune()
		if err != nil {
			errs = append(errs, err)
		}
		if len(pruned) > 0 {
			d.log.Info("removed the network filters of sandboxes that are gone", "links", pruned)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up sandboxes: %w", err)
	}
	return nil
}

// destroy removes everything sandbox id may hold on the host: its container
// (killing what still runs), its cgroups and its directory.
func (d *Driver) destroy(ctx context.Context, id string) error {
	if err := d.rt.delete(ctx, id); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	// The marker is written before the network is made and removed with
	// the sandbox's directory: while it exists, some of it may be left.
	if data, err := os.ReadFile(filepath.Join(d.sandboxes, id, networkMarker)); err == nil {
		// The sandbox's address follows the link's name once known.
		var addr netip.Addr
		if f := strings.Fields(string(data)); len(f) > 1 {
			addr, _ = netip.ParseAddr(f[1])
		}
		if err := network.Remove(d.linkName(id), addr); err != nil {
			return fmt.Errorf("remove sandbox %q: %w", id, err)
		}
	}
	// The overlay mounted for a runsc sandbox's working directory, if any.
	merged := filepath.Join(d.sandboxes, id, "merged")
	if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove sandbox %q: unmount %s: %w", id, merged, err)
	}
	if err := d.cgroups.remove(ctx, d.cgroupsPath(id)); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	if err := unmountImageRoot(filepath.Join(d.sandboxes, id)); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	if err := os.RemoveAll(filepath.Join(d.sandboxes, id)); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	return nil
}

// UserNamespace reports whether sandboxes get a user namespace (see
// Options.NoUserNamespace).
func (d *Driver) UserNamespace() bool { return d.ids.userns }

// AgentOwner returns the host uid and gid that agents run as, with or without
// a user namespace. Files the agent should be able to change in place, such
// as a CodeDir's, must belong to them; files of other owners it can read
// (when their mode lets others read) and replace in its working directory,
// but not change.
func (d *Driver) AgentOwner() (uid, gid int) {
	id := int(d.ids.agentOnHost())
	return id, id
}

// CgroupVersion reports how the host's cgroups are set up: 2 on a pure
// cgroup v2 (unified) host, 1 on a v1 or hybrid host, where the controllers
// are v1 hierarchies. The runtime handles both; this is for reports.
func (d *Driver) CgroupVersion() int { return d.cgroups.version() }

// cgroupsPath is the cgroup of sandbox id, relative to each hierarchy's
// root.
func (d *Driver) cgroupsPath(id string) string {
	return path.Join(d.cgroupParent, id)
}

// networkMarker is the file in a sandbox's directory that says it has a
// network (modes outbound and allowlist) to remove with it.
const networkMarker = "network"

// linkName is the name of the host link and nftables chain of sandbox id:
// unique on the host, as the state directory is the driver's own.
func (d *Driver) linkName(id string) string {
	return network.LinkName(filepath.Join(d.sandboxes, id))
}

// planNetwork prepares the network of the sandbox in dir (see
// network.Manager.Plan) and adds its /etc/resolv.conf and /etc/hosts to b.
func (d *Driver) planNetwork(ctx context.Context, b *bundle, dir string) (*network.Attachment, error) {
	link := d.linkName(b.spec.ID)
	a, err := d.net.Plan(ctx, link, b.spec.Network)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, networkMarker), []byte(link+"\n"), 0o600); err != nil {
		return nil, err
	}
	files := []struct {
		name string
		data []byte
	}{{"resolv.conf", a.ResolvConf}, {"hosts", a.Hosts}}
	for _, f := range files {
		if f.data == nil {
			continue
		}
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.name, err)
		}
		// The skeleton must have the mount point.
		if err := touch(filepath.Join(d.rootfs, "etc", f.name)); err != nil {
			return nil, err
		}
		b.etc = append(b.etc, specs.Mount{Destination: "/etc/" + f.name, Type: "bind", Source: p,
			Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}})
	}
	return a, nil
}

// attachNetwork sets the planned network up in the namespace at nsPath and
// records the sandbox's address beside its link for destroy.
func (d *Driver) attachNetwork(plan *network.Attachment, dir, nsPath string) error {
	if err := d.net.Attach(plan, nsPath); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, networkMarker), []byte(plan.Link+" "+plan.Addr.String()+"\n"), 0o600)
}

// readPid reads the pid file the runtime wrote.
func readPid(file string) (int, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("read pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("read pid: bad pid file %q", data)
	}
	return pid, nil
}

// touch creates an empty file at p unless something is there.
func touch(p string) error {
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("create mount point %s: %w", p, err)
	}
	return f.Close()
}
