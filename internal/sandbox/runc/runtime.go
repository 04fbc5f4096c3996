package runc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// runtime runs the OCI runtime binary (runc, crun or runsc; they share the
// command line used here) over one state root.
type runtime struct {
	bin  string // absolute path of the binary
	root string // its --root
	// gvisor is true for runsc, which needs the global flags of
	// gvisorFlags and sets sandboxes up differently (see Driver).
	gvisor bool
	// platform is runsc's --platform.
	platform string
}

// isGVisor reports whether the OCI runtime binary is gVisor's runsc, by its
// name: runsc, or runsc-<something> for a second installation.
func isGVisor(binary string) bool {
	base := filepath.Base(binary)
	return base == "runsc" || strings.HasPrefix(base, "runsc-")
}

// command builds one invocation of the runtime.
func (r runtime) command(ctx context.Context, args ...string) *exec.Cmd {
	global := []string{"--root", r.root}
	if r.gvisor {
		global = append(global, r.gvisorFlags()...)
	}
	return exec.CommandContext(ctx, r.bin, append(global, args...)...)
}

// gvisorFlags are runsc's global flags. Every command gets them, as runsc
// reads its configuration from its flags, not from its state.
func (r runtime) gvisorFlags() []string {
	return []string{
		// gVisor's own network stack (--network=sandbox) cannot be
		// reached by dialling inside the namespace, and fails on some
		// kernels. With the host network, the Sentry uses the sockets of
		// the network namespace it runs in: the sandbox's own, which
		// has only loopback (see netns.NewLoopback).
		"--network=host",
		"--platform=" + r.platform,
		// Load the spec's seccomp filter inside the sandbox too: the
		// Sentry has its own host filter, and this one limits what the
		// agent may ask of the Sentry, as under runc.
		"--oci-seccomp",
	}
}

// output runs a short runtime command and returns its standard output; its
// error carries the runtime's own message.
func (r runtime) output(ctx context.Context, args ...string) ([]byte, error) {
	cmd := r.command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return out, fmt.Errorf("%s %s: %s: %w", filepath.Base(r.bin), args[0], lastLine(msg), err)
		}
		return out, fmt.Errorf("%s %s: %w", filepath.Base(r.bin), args[0], err)
	}
	return out, nil
}

// run creates and starts container id from the bundle in dir, detached. The
// container's standard input is /dev/null and its standard output and error
// are stdout and stderr (nil means /dev/null), handed over as they are. The
// runtime logs to dir/runtime.log, where a failure's reason is read from.
func (r runtime) run(ctx context.Context, id, dir, pidFile string, stdout, stderr *os.File) error {
	logFile := filepath.Join(dir, "runtime.log")
	args := []string{"--log", logFile, "--log-format", "json", "run", "--detach", "--pid-file", pidFile, "--bundle", dir}
	if !r.gvisor {
		// A session keyring per container would count against the
		// kernel's per-user key quota (200 keys by default), and every
		// sandbox's root is the same host user: a few hundred sandboxes
		// would exhaust it. The agent cannot use keyrings anyway: the
		// seccomp filter refuses keyctl, add_key and request_key.
		args = append(args, "--no-new-keyring")
	}
	cmd := r.command(ctx, append(args, id)...)
	// Only set non-nil files: a nil *os.File in an io.Writer is not nil and
	// would make exec copy through a pipe.
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if stderr != nil {
		cmd.Stderr = stderr
	}
	if err := cmd.Run(); err != nil {
		if msg := logError(logFile); msg != "" {
			// runc says "runc run failed: <why>".
			msg = strings.TrimPrefix(msg, filepath.Base(r.bin)+" run failed: ")
			return fmt.Errorf("%s run: %s: %w", filepath.Base(r.bin), msg, err)
		}
		return fmt.Errorf("%s run: %w", filepath.Base(r.bin), err)
	}
	return nil
}

// delete removes container id, killing it first if it still runs. A
// container the runtime does not know is not an error.
func (r runtime) delete(ctx context.Context, id string) error {
	_, err := r.output(ctx, "delete", "--force", id)
	if err != nil && !r.exists(id) {
		return nil
	}
	return err
}

// exists reports whether the runtime still has state for container id.
func (r runtime) exists(id string) bool {
	_, err := os.Lstat(r.statePath(id))
	return !errors.Is(err, fs.ErrNotExist)
}

// statePath is where the runtime keeps the state of container id: a
// directory for runc and crun, a file for runsc (whose containers are each
// in a sandbox of the same id).
func (r runtime) statePath(id string) string {
	if r.gvisor {
		return filepath.Join(r.root, id+"_sandbox:"+id+".state")
	}
	return filepath.Join(r.root, id)
}

// goferPid returns the pid of the gofer, runsc's file proxy, of container
// id. runsc leaves it running when `run --detach` exits, so it becomes this
// process's child (see New) and must be reaped.
func (r runtime) goferPid(id string) (int, error) {
	data, err := os.ReadFile(r.statePath(id))
	if err != nil {
		return 0, fmt.Errorf("runsc state: %w", err)
	}
	var st struct {
		GoferPid int `json:"goferPid"`
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return 0, fmt.Errorf("runsc state %s: %w", r.statePath(id), err)
	}
	if st.GoferPid <= 0 {
		return 0, fmt.Errorf("runsc state %s: no gofer pid", r.statePath(id))
	}
	return st.GoferPid, nil
}

// list returns the IDs of every container in the runtime's root.
func (r runtime) list(ctx context.Context) ([]string, error) {
	if _, err := os.Stat(r.root); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	out, err := r.output(ctx, "list", "--format", "json")
	if err != nil {
		return nil, err
	}
	var states []struct {
		ID string `json:"id"`
	}
	// runc prints "null" for no containers.
	if err := json.Unmarshal(out, &states); err != nil {
		return nil, fmt.Errorf("%s list: %w", filepath.Base(r.bin), err)
	}
	ids := make([]string, 0, len(states))
	for _, s := range states {
		ids = append(ids, s.ID)
	}
	return ids, nil
}

// logError returns the message of the last error the runtime logged, in the
// JSON lines format runc and crun share, or "".
func logError(file string) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	var msg string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var line struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && (line.Level == "error" || line.Level == "fatal") {
			msg = line.Msg
		}
	}
	return msg
}

// lastLine returns the last line of s.
func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
