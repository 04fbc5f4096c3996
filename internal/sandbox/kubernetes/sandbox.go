package kubernetes

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// errStopped is the Err of a sandbox ended by Stop.
var errStopped = errors.New("stopped")

// Sandbox is one pod running an agent.
type Sandbox struct {
	d           *Driver
	id, name    string
	bundleToken string

	started chan struct{} // closed once the agent runs, has exited or cannot start
	done    chan struct{} // closed once the agent has exited
	gone    chan struct{} // closed once the watch saw the pod deleted

	mu        sync.Mutex
	uid       types.UID
	podIP     string
	startFail error  // why the agent could not start
	status    string // the pod's last observed state, for a Start timeout
	err       error  // why the agent exited
	stopped   bool
	out       *os.File           // where the agent's output goes (a copy of the caller's), or nil
	logCancel context.CancelFunc // stops copying the agent's output
	logDone   chan struct{}      // closed when the copying has ended

	stopMu sync.Mutex // serialises Stop
}

func newSandbox(d *Driver, id, name string) *Sandbox {
	return &Sandbox{d: d, id: id, name: name, started: make(chan struct{}), done: make(chan struct{}), gone: make(chan struct{})}
}

// ID returns the sandbox's id.
func (s *Sandbox) ID() string { return s.id }

// PodName returns the name of the sandbox's pod.
func (s *Sandbox) PodName() string { return s.name }

// PodIP returns the pod's IP address, once it runs.
func (s *Sandbox) PodIP() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.podIP
}

// Done is closed when the agent has exited or the pod is gone.
func (s *Sandbox) Done() <-chan struct{} { return s.done }

// Err says why the agent exited; nil before Done is closed.
func (s *Sandbox) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// DialContext connects to the agent: to the pod's IP at addr's port,
// whatever addr's host (the agent's loopback address, for Berth, means
// the pod).
func (s *Sandbox) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial sandbox %s: %w", s.id, err)
	}
	select {
	case <-s.done:
		return nil, fmt.Errorf("dial sandbox %s: the agent has exited: %w", s.id, s.Err())
	default:
	}
	ip := s.PodIP()
	if ip == "" {
		return nil, fmt.Errorf("dial sandbox %s: the pod has no IP address yet", s.id)
	}
	var dialer net.Dialer
	return dialer.DialContext(ctx, network, net.JoinHostPort(ip, port))
}

// Stop deletes the pod and waits until it is gone. It is safe to call more
// than once and after the agent has exited.
func (s *Sandbox) Stop(ctx context.Context) error {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	s.mu.Lock()
	uid := s.uid
	s.stopped = true
	s.mu.Unlock()
	if err := s.d.deletePod(ctx, s.name, string(uid), s.gone); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", s.id, err)
	}
	if err := s.d.deletePolicy(ctx, s.name); err != nil {
		return fmt.Errorf("stop sandbox %s: %w", s.id, err)
	}
	s.finish(errStopped)
	s.closeOutput()
	s.d.forget(s)
	return nil
}

// SetLabels adds labels to the pod's, as Start does with Spec.Labels: each
// becomes the annotation berth.run/<key>, and the label berth.run/<key>
// where its value fits in one (where it does not, a label of that key is
// removed rather than left saying something else). It is one JSON merge
// patch, made only if the pod still has the uid it was created with.
func (s *Sandbox) SetLabels(ctx context.Context, labels map[string]string) error {
	s.mu.Lock()
	uid := s.uid
	s.mu.Unlock()
	patch, err := labelPatch(uid, labels)
	if err != nil {
		return fmt.Errorf("label sandbox %s: %w", s.id, err)
	}
	if _, err := s.d.client.CoreV1().Pods(s.d.opts.Namespace).Patch(ctx, s.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("label sandbox %s: patch pod %s: %w", s.id, s.name, err)
	}
	return nil
}

// labelPatch is the JSON merge patch that gives a pod labels (see
// SetLabels). Naming the uid makes the patch fail on another pod of the
// same name, since a pod's uid cannot change.
func labelPatch(uid types.UID, labels map[string]string) ([]byte, error) {
	podLabels := map[string]any{}
	annotations := map[string]any{}
	for k, v := range labels {
		if !labelKeyPattern.MatchString(k) {
			return nil, fmt.Errorf("label %q: want 1 to 40 characters of [a-z0-9-]", k)
		}
		annotations["berth.run/"+k] = v
		if validLabelValue(v) == "" {
			podLabels["berth.run/"+k] = v
		} else {
			podLabels["berth.run/"+k] = nil // null deletes
		}
	}
	meta := map[string]any{"labels": podLabels, "annotations": annotations}
	if uid != "" {
		meta["uid"] = uid
	}
	return json.Marshal(map[string]any{"metadata": meta})
}

func (s *Sandbox) setUID(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uid = uid
}

// uidIs reports whether the sandbox's pod has this uid (or its pod is
// being created, and so has none yet).
func (s *Sandbox) uidIs(uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uid == "" || s.uid == uid
}

func (s *Sandbox) startErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startFail
}

func (s *Sandbox) lastStatus() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status == "" {
		return "no status observed"
	}
	return s.status
}

// markStarted closes started once, with failure (nil if the agent runs).
// It must be called with s.mu held.
func (s *Sandbox) markStarted(failure error) {
	select {
	case <-s.started:
		return
	default:
	}
	s.startFail = failure
	close(s.started)
}

// finish closes done once, with reason as Err.
func (s *Sandbox) finish(reason error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finishLocked(reason)
}

func (s *Sandbox) finishLocked(reason error) {
	select {
	case <-s.done:
		return
	default:
	}
	s.err = reason
	s.markStarted(nil)
	close(s.done)
}

// cannotStart lists the waiting reasons that mean the container will never
// run.
var cannotStart = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// observe updates the sandbox from a state of its pod.
func (s *Sandbox) observe(pod *corev1.Pod, deleted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pod.Status.PodIP != "" {
		s.podIP = pod.Status.PodIP
	}
	s.status = fmt.Sprintf("phase %s", pod.Status.Phase)
	for _, c := range pod.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s.status += fmt.Sprintf(", %s: %s", c.Type, c.Message)
		}
	}
	if deleted {
		reason := errors.New("the pod was deleted")
		if s.stopped {
			reason = errStopped
		}
		s.markStarted(reason)
		s.finishLocked(reason)
		if !isClosed(s.gone) {
			close(s.gone)
		}
		return
	}
	for _, c := range pod.Status.InitContainerStatuses {
		if w := c.State.Waiting; w != nil && cannotStart[w.Reason] {
			s.markStarted(fmt.Errorf("init container %s: %s: %s", c.Name, w.Reason, w.Message))
			return
		}
		if t := c.State.Terminated; t != nil && t.ExitCode != 0 {
			s.markStarted(fmt.Errorf("fetch the code bundle: init container exited with status %d (%s): %s", t.ExitCode, t.Reason, t.Message))
			return
		}
	}
	for _, c := range pod.Status.ContainerStatuses {
		if c.Name != agentContainer {
			continue
		}
		switch {
		case c.State.Waiting != nil:
			w := c.State.Waiting
			s.status += fmt.Sprintf(", agent waiting: %s %s", w.Reason, w.Message)
			if cannotStart[w.Reason] {
				s.markStarted(fmt.Errorf("container %s: %s: %s", c.Name, w.Reason, w.Message))
			}
		case c.State.Running != nil:
			if s.podIP != "" {
				s.markStarted(nil)
				s.startOutputLocked()
			}
		case c.State.Terminated != nil:
			t := c.State.Terminated
			if t.Reason == "StartError" || t.Reason == "ContainerCannotRun" {
				s.markStarted(fmt.Errorf("run the agent: %s", t.Message))
				return
			}
			s.startOutputLocked()
			s.finishLocked(exitReason(t))
		}
	}
	if (pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded) && !isClosed(s.done) {
		// Failed without a terminated agent: evicted, or its node lost.
		reason := fmt.Errorf("pod %s: %s: %s", pod.Status.Phase, pod.Status.Reason, pod.Status.Message)
		s.markStarted(reason)
		s.finishLocked(reason)
	}
}

// exitReason describes how the agent's container ended.
func exitReason(t *corev1.ContainerStateTerminated) error {
	switch {
	case t.Reason == "OOMKilled":
		return fmt.Errorf("killed: out of memory (OOMKilled, status %d)", t.ExitCode)
	case t.Signal != 0:
		return fmt.Errorf("killed by signal %d (%s)", t.Signal, t.Reason)
	case t.Message != "":
		// With TerminationMessageFallbackToLogsOnError, the end of the
		// agent's log: what it said before it died.
		msg := strings.TrimSpace(t.Message)
		return fmt.Errorf("exited with status %d (%s): %s", t.ExitCode, t.Reason, msg[max(len(msg)-500, 0):])
	default:
		return fmt.Errorf("exited with status %d (%s)", t.ExitCode, t.Reason)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// openOutput keeps a copy of the caller's output file: Kubernetes merges
// the agent's stdout and stderr into one log stream, which goes to stdout
// (or to stderr when there is no stdout).
func (s *Sandbox) openOutput(stdout, stderr *os.File) error {
	f := stdout
	if f == nil {
		f = stderr
	}
	if f == nil {
		return nil
	}
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	syscall.CloseOnExec(fd)
	s.out = os.NewFile(uintptr(fd), f.Name())
	return nil
}

// startOutputLocked starts copying the agent's log to its output file,
// once. It must be called with s.mu held.
func (s *Sandbox) startOutputLocked() {
	if s.out == nil || s.logCancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.logCancel, s.logDone = cancel, make(chan struct{})
	out, done := s.out, s.logDone
	go func() {
		defer close(done)
		s.copyLogs(ctx, out)
	}()
}

// copyLogs follows the agent container's log until it ends (the container
// exited or the pod is gone) or ctx is cancelled.
func (s *Sandbox) copyLogs(ctx context.Context, out *os.File) {
	req := s.d.client.CoreV1().Pods(s.d.opts.Namespace).GetLogs(s.name, &corev1.PodLogOptions{Container: agentContainer, Follow: true})
	for attempt := 0; attempt < 20; attempt++ {
		stream, err := req.Stream(ctx)
		if err == nil {
			_, err = io.Copy(out, stream)
			stream.Close()
			if err == nil || ctx.Err() != nil {
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.d.log.Debug("kubernetes driver: follow the agent's log", "sandbox", s.id, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// closeOutput stops copying the agent's output and closes the copy of the
// caller's file.
func (s *Sandbox) closeOutput() {
	s.mu.Lock()
	cancel, done, out := s.logCancel, s.logDone, s.out
	s.out = nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	if out != nil {
		out.Close()
	}
}

// writeTar writes dir's regular files, directories and symbolic links to
// w as a tar stream, with their modes.
func writeTar(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		var link string
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil // devices, sockets and pipes are not code
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return fmt.Errorf("tar %s: %w", dir, err)
	}
	return tw.Close()
}
