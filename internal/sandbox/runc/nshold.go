package runc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// nsHolder is a process that holds a new network namespace, and with a user
// namespace a new user namespace that owns it, while a sandbox's network is
// set up in it and the OCI runtime makes the sandbox join both.
//
// The sandbox's network namespace must belong to the sandbox's user
// namespace, or the runtime could not mount sysfs in it; a namespace made
// by the driver alone would belong to the host's. Cloning both at once
// makes the network namespace the user namespace's. The holder is cat
// reading a pipe: it exits when the driver closes the pipe, or when the
// driver's process dies, so a crash leaves no holder behind.
type nsHolder struct {
	cmd  *exec.Cmd
	stop *os.File // the pipe's write end: closing it ends the holder
	// net and user are the namespaces' paths (user is empty without a
	// user namespace).
	net, user string
}

// holdNamespaces starts a holder of a network namespace and, if ids says
// sandboxes have one, a user namespace mapped as the sandboxes' are.
func holdNamespaces(cat string, ids identity) (*nsHolder, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("hold sandbox namespaces: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(cat)
	cmd.Stdin = r
	attr := &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if ids.userns {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(ids.hostBase), Size: idMapSize}}
		attr.UidMappings, attr.GidMappings = m, m
		// setgroups stays allowed, as in a user namespace the runtime
		// makes: with it denied, the runtime could not drop the
		// supplementary groups it runs with before running the agent.
		attr.GidMappingsEnableSetgroups = true
	}
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("hold sandbox namespaces: start %s: %w", cat, err)
	}
	h := &nsHolder{cmd: cmd, stop: w, net: "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"}
	if ids.userns {
		h.user = "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/user"
	}
	return h, nil
}

// release ends the holder and waits for it. The namespaces live on as long
// as the sandbox's processes are in them.
func (h *nsHolder) release() error {
	h.stop.Close()
	err := h.cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return nil // killed or failed after it served: either way gone
	}
	return err
}
