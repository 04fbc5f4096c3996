package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/berthrun/berth/internal/sandbox/netns"
	sandboxnet "github.com/berthrun/berth/internal/sandbox/network"
	"github.com/berthrun/berth/internal/sandbox/runc"
	"github.com/berthrun/berth/internal/server"
)

// berth is a Berth server running in this process.
type berth struct {
	*client
	name       string
	parent     string // cgroup parent of its sandboxes
	cgroupBase string // the server's cgroup parent, above parent
	cg         cgroups
	cancel     context.CancelFunc
	served     chan error
}

// startBerth starts a server named name (its data lives in tmp/name and
// its sandboxes' cgroups under a parent of its own).
func (b *bench) startBerth(ctx context.Context, name string, cfg server.Config) (*berth, error) {
	cfg.DataDir = filepath.Join(b.tmp, name)
	cfg.Addr = "127.0.0.1:0"
	cfg.CgroupParent = b.cgroupParent(name)
	cfg.Logger = b.cfg.Log.With("server", name)
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start Berth (%s): %w", name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	// The server gives each OCI runtime a cgroup parent of its own, below
	// its own; the sandboxes here are all of the default runtime.
	def := cfg.OCIRuntime
	if def == "" {
		def = "runc"
	}
	s := &berth{client: newClient(srv.Addr().String(), true), name: name, cgroupBase: cfg.CgroupParent,
		parent: cfg.CgroupParent + "/" + runc.RuntimeName(def), cg: b.cg, cancel: cancel, served: make(chan error, 1)}
	go func() { s.served <- srv.Serve(ctx) }()
	return s, nil
}

// stop shuts the server down, which ends every session, and checks that no
// sandbox cgroup is left.
func (s *berth) stop() error {
	s.cancel()
	err := <-s.served
	s.http.CloseIdleConnections()
	if left := s.cg.leftovers(s.parent); len(left) > 0 {
		err = errors.Join(err, fmt.Errorf("server %s shut down but left %d sandbox cgroups, e.g. %s", s.name, len(left), left[0]))
	} else if rerr := errors.Join(s.cg.removeParent(s.parent), s.cg.removeParent(s.cgroupBase)); rerr != nil {
		err = errors.Join(err, fmt.Errorf("remove cgroup parent %s: %w", s.parent, rerr))
	}
	return err
}

// newFloor returns a driver that starts agents by hand in the OCI runtime
// ociRuntime, the way Berth would but without Berth. With network, its
// sandboxes can have networks as Berth's do (same pool, same lock); netErr
// says why they cannot when the host has no sandbox network.
func (b *bench) newFloor(ociRuntime string, network bool) (_ *runc.Driver, parent string, netErr, err error) {
	parent = b.cgroupParent("floor-" + ociRuntime)
	var m *sandboxnet.Manager
	if network {
		m, netErr = sandboxnet.New(sandboxnet.Options{Logger: b.cfg.Log})
		if netErr != nil && !errors.Is(netErr, sandboxnet.ErrUnavailable) {
			return nil, "", nil, fmt.Errorf("sandbox network for the floor: %w", netErr)
		}
	}
	d, err := runc.New(runc.Options{Binary: ociRuntime, StateDir: filepath.Join(b.tmp, "floor-"+ociRuntime),
		CgroupParent: parent, Network: m, Logger: b.cfg.Log})
	if err != nil {
		return nil, "", nil, fmt.Errorf("sandbox driver for the floor: %w", err)
	}
	return d, parent, netErr, nil
}

// checkFloor checks that the by-hand sandboxes under parent are all gone.
func (b *bench) checkFloor(parent string) error {
	if left := b.cg.leftovers(parent); len(left) > 0 {
		return fmt.Errorf("sandboxes started by hand left %d cgroups, e.g. %s", len(left), left[0])
	}
	return b.cg.removeParent(parent)
}

// agentSession is one live session of the Go agent on a server, which the
// warm, stream and payload sections call both through Berth and directly.
type agentSession struct {
	srv *berth
	rt  agentRuntime
	sid string
	// netns is the sandbox's network namespace (/proc/PID/ns/net), where
	// the agent listens on 127.0.0.1:8080.
	netns string
	// direct reaches the agent in its sandbox, as Berth does: by dialling
	// inside its network namespace.
	direct *netnsDialer
}

// newAgentSession starts a session of rt on srv, which must run no other
// sandbox, and finds its sandbox.
func newAgentSession(ctx context.Context, srv *berth, rt agentRuntime) (*agentSession, error) {
	sid := newSessionID()
	if _, err := srv.invoke(ctx, rt, sid); err != nil {
		return nil, fmt.Errorf("start a session: %w", err)
	}
	ids, err := srv.cg.sandboxes(srv.parent)
	if err != nil {
		return nil, err
	}
	if len(ids) != 1 {
		return nil, fmt.Errorf("find the session's sandbox: want 1 cgroup under %s, found %d", srv.parent, len(ids))
	}
	pid, err := srv.cg.pid(srv.parent, ids[0])
	if err != nil {
		return nil, err
	}
	ns := fmt.Sprintf("/proc/%d/ns/net", pid)
	d, err := openNetns(ns)
	if err != nil {
		return nil, err
	}
	return &agentSession{srv: srv, rt: rt, sid: sid, netns: ns, direct: d}, nil
}

func (s *agentSession) close() { s.direct.close() }

// netnsDialer dials inside a network namespace.
type netnsDialer struct{ ns *os.File }

func openNetns(path string) (*netnsDialer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open the sandbox's network namespace: %w", err)
	}
	return &netnsDialer{ns: f}, nil
}

// dial connects to addr inside the namespace.
func (d *netnsDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	return netns.Dial(ctx, d.ns, "tcp", addr)
}

func (d *netnsDialer) close() { d.ns.Close() }

// waitListening waits until something accepts connections on addr inside the
// namespace, or done is closed.
func (d *netnsDialer) waitListening(ctx context.Context, addr string, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		c, err := d.dial(ctx, addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return errors.New("exited before it listened")
		case <-ctx.Done():
			return fmt.Errorf("nothing listens on %s: %w", addr, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// inNetns returns a command that runs name with args inside the network
// namespace at ns (nsenter execs it in place, so the command's process is
// name's).
func inNetns(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	if ns == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns, "--", name}, args...)...)
}

// cgroupParent is the cgroup parent of the server or driver name in this
// run.
func (b *bench) cgroupParent(name string) string {
	return "/berth-bench-" + b.runID + "-" + strings.ReplaceAll(name, "/", "-")
}

// path is one way to call the session's agent.
type path struct {
	name string
	rt   http.RoundTripper
	url  string
}

// paths returns the two ways to the session's agent the streaming and
// payload sections compare: dialled directly inside its sandbox, and
// through Berth; the function returned closes their idle connections.
func (s *agentSession) paths() ([]path, func()) {
	direct := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return s.direct.dial(ctx, agentAddr)
	}}
	return []path{
		{"direct", direct, "http://" + agentAddr + "/invocations"},
		{"Berth", s.srv.http.Transport, s.srv.base + s.rt.invocations()},
	}, direct.CloseIdleConnections
}
