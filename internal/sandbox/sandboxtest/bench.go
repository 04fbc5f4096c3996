package sandboxtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berthrun/berth/internal/sandbox/netns"
)

// BenchmarkColdStart measures a cold start through the driver: from Start
// until the agent's first HTTP 200. Stopping is not measured.
func BenchmarkColdStart(b *testing.B, cfg Config) {
	s := &suite{cfg: cfg, code: BuildAgent(b), prefix: randomHex(3)}
	// TempDir, not b.TempDir: a sandbox's root must reach the state.
	d := cfg.NewDriver(b, TempDir(b))
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		spec := s.spec(fmt.Sprintf("cold%d", i), randomHex(4))
		sb, err := d.Start(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sb.Stop(ctx) }) // if the iteration fails
		a := newAgent(sb)
		a.waitReady(b)
		b.StopTimer()
		if err := sb.Stop(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkDial measures one DialContext (and Close) to a running agent.
func BenchmarkDial(b *testing.B, cfg Config) {
	s := &suite{cfg: cfg, code: BuildAgent(b), prefix: randomHex(3)}
	d := cfg.NewDriver(b, b.TempDir())
	a, _ := s.startReady(b, d, "dial", nil)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		c, err := a.sb.DialContext(ctx, "tcp", agentAddr)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkRuntimeFloor measures the floor under BenchmarkColdStart: the
// same agent started by hand with the OCI runtime binary from a minimal
// bundle (the `runc spec` defaults: its own namespaces, a read-only root
// holding only the agent, no limits but its own cgroup), until its /ping
// answers through the same kind of dial.
func BenchmarkRuntimeFloor(b *testing.B, binary string) {
	bin, err := exec.LookPath(binary)
	if err != nil {
		b.Skipf("OCI runtime %s not found: %v", binary, err)
	}
	if os.Geteuid() != 0 {
		b.Skip("running an OCI runtime needs root")
	}
	code := BuildAgent(b)
	dir := b.TempDir()
	root := filepath.Join(dir, "root")
	rootfs := filepath.Join(dir, "rootfs")
	for _, p := range []string{"proc", "dev", "sys"} {
		if err := os.MkdirAll(filepath.Join(rootfs, p), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	agent, err := os.ReadFile(filepath.Join(code, "agent"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "agent"), agent, 0o755); err != nil {
		b.Fatal(err)
	}
	cgroupParent := "/sandboxtest-floor-" + randomHex(3)
	b.Cleanup(func() { removeCgroupParent(cgroupParent) })
	// Whatever a failed iteration left running goes before its cgroups.
	b.Cleanup(func() { deleteAll(bin, root) })

	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("floor%d", i)
		bundle := filepath.Join(dir, id)
		b.StopTimer()
		if err := writeFloorBundle(bundle, rootfs, cgroupParent+"/"+id); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		pid, err := floorStart(ctx, bin, root, bundle, id)
		b.StopTimer()
		if err != nil {
			b.Fatalf("%s: %v", binary, err)
		}
		if err := killAndDelete(bin, root, id, pid); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(bundle)
		b.StartTimer()
	}
}

// floorStart runs the container id from bundle with the runtime bin and
// waits until its agent answers /ping. It returns the agent's pid.
func floorStart(ctx context.Context, bin, root, bundle, id string) (int, error) {
	pidFile := filepath.Join(bundle, "pid")
	// The agent inherits the runtime's standard streams: they must not be
	// pipes this process waits on, so the runtime logs to a file.
	logFile := filepath.Join(bundle, "runtime.log")
	run := exec.CommandContext(ctx, bin, "--root", root, "--log", logFile, "run", "--detach", "--pid-file", pidFile, "--bundle", bundle, id)
	if err := run.Run(); err != nil {
		log, _ := os.ReadFile(logFile)
		return 0, fmt.Errorf("run: %v: %s", err, log)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return 0, fmt.Errorf("pid file: %w", err)
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	client := httpClient(func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netns.Dial(ctx, ns, network, addr)
	})
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := waitPing(ctx, client, nil); err != nil {
		return 0, fmt.Errorf("agent not ready: %w", err)
	}
	return pid, nil
}

// deleteAll force-deletes every container in the runtime's root.
func deleteAll(bin, root string) {
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		exec.Command(bin, "--root", root, "delete", "--force", e.Name()).Run()
	}
}

// writeFloorBundle writes the minimal bundle of BenchmarkRuntimeFloor.
func writeFloorBundle(bundle, rootfs, cgroupsPath string) error {
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return err
	}
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	spec := specs.Spec{
		Version: "1.0.2", // crun 1.8 accepts only 1.0.x
		Process: &specs.Process{
			Args:            []string{"/agent"},
			Env:             []string{"PATH=/usr/bin:/bin", "AGENT_NAME=floor"},
			Cwd:             "/",
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
			NoNewPrivileges: true,
		},
		Root:     &specs.Root{Path: rootfs, Readonly: true},
		Hostname: "floor",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: cgroupsPath,
			Resources:   &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
		},
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}

// killAndDelete kills the container's init process, waits for it to go and
// deletes the container.
func killAndDelete(bin, root, id string, pid int) error {
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
		// Reap it if it is this process's child (under a subreaper), or
		// wait until it has exited.
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10_000)
		}
		unix.Close(fd)
	}
	out, err := exec.Command(bin, "--root", root, "delete", "--force", id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("delete %s: %v: %s", id, err, out)
	}
	return nil
}

// removeCgroupParent removes the (empty) cgroup parent from every hierarchy.
func removeCgroupParent(parent string) {
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("cgroup", "cgroup2"))
	if err != nil {
		return
	}
	for _, m := range mounts {
		unix.Rmdir(filepath.Join(m.Mountpoint, parent))
	}
}
