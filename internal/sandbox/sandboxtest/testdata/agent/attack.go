package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// attacks are the escape attempts of /attack?name=NAME. Each returns nil
// only if the attempt worked; none harms the host when it does (clocks are
// set to the time they have, files are opened and closed unwritten, modules
// are empty).
var attacks = map[string]func(r *http.Request) error{
	"signal": func(r *http.Request) error {
		pid, sig := atoi(r, "pid"), atoi(r, "sig")
		if pid <= 0 {
			return errors.New("bad pid")
		}
		return unix.Kill(pid, unix.Signal(sig))
	},
	// kill -9 -1: every process the agent may signal.
	"kill-all": func(*http.Request) error { return unix.Kill(-1, unix.SIGKILL) },
	"ptrace": func(r *http.Request) error {
		pid := atoi(r, "pid")
		if pid <= 0 {
			return errors.New("bad pid")
		}
		// A tracer is one thread.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := unix.PtraceAttach(pid); err != nil {
			return err
		}
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WALL, nil)
		return unix.PtraceDetach(pid)
	},
	"mount-tmpfs": func(*http.Request) error { return mountAt("tmpfs", "tmpfs", 0) },
	"mount-bind":  func(*http.Request) error { return mountAt("/usr", "", unix.MS_BIND) },
	"mount-proc":  func(*http.Request) error { return mountAt("proc", "proc", 0) },
	"unshare": func(*http.Request) error {
		return unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_NEWNET | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	},
	// What unshare(1) does for a multi-threaded program: start a child in
	// new user, mount and PID namespaces.
	"clone-namespaces": func(*http.Request) error {
		c := exec.Command("/proc/self/exe", "sleep")
		c.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID}
		if err := c.Start(); err != nil {
			return err
		}
		c.Process.Kill()
		c.Wait()
		return nil
	},
	"setns": func(*http.Request) error {
		fd, err := unix.Open("/proc/1/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		runtime.LockOSThread() // the thread stays locked: it may have moved
		return unix.Setns(fd, unix.CLONE_NEWNS)
	},
	"init-module": func(*http.Request) error { return unix.InitModule([]byte{0}, "") },
	"finit-module": func(*http.Request) error {
		f, err := os.Open("/proc/self/exe")
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.FinitModule(int(f.Fd()), "", 0)
	},
	"settimeofday": func(*http.Request) error {
		tv := unix.NsecToTimeval(time.Now().UnixNano())
		return unix.Settimeofday(&tv)
	},
	"clock-settime": func(*http.Request) error {
		ts := unix.NsecToTimespec(time.Now().UnixNano())
		return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
	},
	"packet-socket": func(*http.Request) error {
		return closeFD(unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL))))
	},
	// Take another address (another sandbox's) on the sandbox's own link,
	// to send from it.
	"set-address": func(r *http.Request) error {
		ip := net.ParseIP(r.FormValue("addr")).To4()
		if ip == nil {
			return errors.New("bad addr")
		}
		ifr, err := unix.NewIfreq(r.FormValue("link"))
		if err != nil {
			return err
		}
		if err := ifr.SetInet4Addr(ip); err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr)
	},
	"raw-socket": func(*http.Request) error {
		return closeFD(unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW))
	},
	// The classic escape from a chroot: chroot deeper, then climb out.
	"chroot": func(*http.Request) error {
		dir, err := os.MkdirTemp("", "chroot")
		if err != nil {
			return err
		}
		defer os.Remove(dir)
		return unix.Chroot(dir)
	},
	"pivot-root": func(*http.Request) error { return unix.PivotRoot("/tmp", "/tmp") },
	"open-write": func(r *http.Request) error {
		return closeFD(unix.Open(r.FormValue("path"), unix.O_WRONLY|unix.O_CLOEXEC, 0))
	},
	"open-read": func(r *http.Request) error {
		return closeFD(unix.Open(r.FormValue("path"), unix.O_RDONLY|unix.O_CLOEXEC, 0))
	},
	"mknod": func(*http.Request) error {
		p := filepath.Join(os.TempDir(), "mem")
		defer os.Remove(p)
		return unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 1))) // /dev/mem
	},
	// Where mknod is allowed (gVisor's Sentry makes the node in its own
	// tmpfs), what matters is whether the node reaches host memory.
	"mknod-read": func(*http.Request) error {
		p := filepath.Join(os.TempDir(), "mem")
		defer os.Remove(p)
		if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 1))); err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Read(make([]byte, 1))
		return err
	},
	"setuid":    func(*http.Request) error { return unix.Setuid(0) },
	"setgid":    func(*http.Request) error { return unix.Setgid(0) },
	"setgroups": func(*http.Request) error { return unix.Setgroups([]int{0}) },
	"keyctl": func(*http.Request) error {
		_, err := unix.KeyctlJoinSessionKeyring("sandboxtest")
		return err
	},
	"add-key": func(*http.Request) error {
		_, err := unix.AddKey("user", "sandboxtest", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
		return err
	},
	"bpf": func(*http.Request) error {
		// BPF_MAP_CREATE of a one-entry array map.
		attr := [5]uint32{unix.BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0}
		fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		return closeFD(int(fd), errnoErr(errno))
	},
	"perf-event-open": func(*http.Request) error {
		attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK}
		attr.Size = uint32(unsafe.Sizeof(attr))
		return closeFD(unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC))
	},
	"io-uring": func(*http.Request) error {
		var params [120]byte // struct io_uring_params
		fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params)), 0)
		return closeFD(int(fd), errnoErr(errno))
	},
	"userfaultfd": func(*http.Request) error {
		fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
		return closeFD(int(fd), errnoErr(errno))
	},
	// "Shocker": open a host inode by handle, bypassing the mount
	// namespace; inode 2 is the root of an ext4 file system.
	"open-by-handle": func(*http.Request) error {
		root, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(root)
		h := make([]byte, 8)
		binary.LittleEndian.PutUint32(h, 2)
		return closeFD(unix.OpenByHandleAt(root, unix.NewFileHandle(1, h), unix.O_RDONLY))
	},
}

// attackHandler serves /attack?name=NAME&...: it answers 200 with
// {"error": why it failed}, an empty error if the attack worked.
func attackHandler(w http.ResponseWriter, r *http.Request) {
	attack, ok := attacks[r.FormValue("name")]
	if !ok {
		http.Error(w, "no such attack", http.StatusNotFound)
		return
	}
	var res struct {
		Error string `json:"error"`
		Errno string `json:"errno,omitempty"`
	}
	if err := attack(r); err != nil {
		res.Error = err.Error()
		var errno unix.Errno
		if errors.As(err, &errno) {
			res.Errno = unix.ErrnoName(errno)
		}
	}
	json.NewEncoder(w).Encode(res)
}

// mountAt mounts source on a new directory of /tmp.
func mountAt(source, fstype string, flags uintptr) error {
	dir, err := os.MkdirTemp("", "mnt")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	if err := unix.Mount(source, dir, fstype, flags, ""); err != nil {
		return err
	}
	return unix.Unmount(dir, unix.MNT_DETACH)
}

// scanPIDs serves /scan-pids?max=N: the pids up to N that exist (signal 0
// does not fail with ESRCH) other than the agent's own threads, one a line.
func scanPIDs(w http.ResponseWriter, r *http.Request) {
	own := make(map[int]bool)
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		n, _ := strconv.Atoi(t.Name())
		own[n] = true
	}
	var found []string
	for pid := 1; pid <= atoi(r, "max"); pid++ {
		if own[pid] {
			continue
		}
		if err := unix.Kill(pid, 0); err != unix.ESRCH {
			found = append(found, fmt.Sprintf("%d (%v)", pid, err))
		}
	}
	io.WriteString(w, strings.Join(found, "\n"))
}

// find serves /find?name=S: every path of the file tree (but /proc, /sys
// and the read-only system directories) whose name contains S, one a line.
func find(w http.ResponseWriter, r *http.Request) {
	name := r.FormValue("name")
	skip := map[string]bool{"/proc": true, "/sys": true, "/usr": true}
	var found []string
	filepath.WalkDir("/", func(p string, d fs.DirEntry, err error) error {
		if skip[p] {
			return fs.SkipDir
		}
		if err == nil && strings.Contains(d.Name(), name) {
			found = append(found, p)
		}
		return nil // unreadable directories are skipped
	})
	io.WriteString(w, strings.Join(found, "\n"))
}

// unixListeners are the abstract unix sockets of /listen-unix, kept open.
var unixListeners sync.Map

// listenUnix serves /listen-unix?name=S: listen on the abstract unix socket
// @S, which is private to the network namespace, and accept forever.
func listenUnix(w http.ResponseWriter, r *http.Request) {
	ln, err := net.Listen("unix", "@"+r.FormValue("name"))
	if err == nil {
		unixListeners.Store(r.FormValue("name"), ln)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, "hello")
				c.Close()
			}
		}()
	}
	reply(w, "listening", err)
}

// dialUnix serves /dial-unix?name=S: connect to the abstract unix socket
// @S.
func dialUnix(w http.ResponseWriter, r *http.Request) {
	c, err := net.DialTimeout("unix", "@"+r.FormValue("name"), 2*time.Second)
	if err == nil {
		c.Close()
	}
	reply(w, "connected", err)
}

// peer serves /peer: the AGENT_NAME of whoever answers on 127.0.0.1:8080.
func peer(w http.ResponseWriter, r *http.Request) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://127.0.0.1:8080/env?key=AGENT_NAME")
	if err != nil {
		reply(w, "", err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	reply(w, string(body), err)
}

func atoi(r *http.Request, key string) int {
	n, _ := strconv.Atoi(r.FormValue(key))
	return n
}

// closeFD closes fd if the call that returned it succeeded.
func closeFD(fd int, err error) error {
	if err == nil {
		unix.Close(fd)
	}
	return err
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
