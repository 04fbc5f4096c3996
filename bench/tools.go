package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// tools are the outside programs the harness uses; an empty path means
// missing.
type tools struct {
	nginx, wrk, nsenter string
}

// findTools looks for nginx, wrk and nsenter and, if install is set,
// installs the first two with apt-get when they are missing. It returns
// notes on what it did or could not do.
func findTools(ctx context.Context, install bool) (tools, []string) {
	var notes []string
	look := func() tools {
		var t tools
		t.nginx, _ = exec.LookPath("nginx")
		t.wrk, _ = exec.LookPath("wrk")
		t.nsenter, _ = exec.LookPath("nsenter")
		return t
	}
	t := look()
	var missing []string
	if t.nginx == "" {
		missing = append(missing, "nginx-light")
	}
	if t.wrk == "" {
		missing = append(missing, "wrk")
	}
	if len(missing) == 0 {
		return t, nil
	}
	cmd := "apt-get install -y --no-install-recommends " + strings.Join(missing, " ")
	if !install {
		return t, []string{fmt.Sprintf("%s not installed; install with: %s", strings.Join(missing, " and "), cmd)}
	}
	if err := aptInstall(ctx, missing); err != nil {
		notes = append(notes, fmt.Sprintf("could not install %s (%v); install by hand with: %s", strings.Join(missing, " and "), err, cmd))
	} else {
		notes = append(notes, "installed "+strings.Join(missing, " and ")+" with apt-get")
	}
	return look(), notes
}

// aptInstall installs Debian packages, updating the package lists first if
// the install fails without them.
func aptInstall(ctx context.Context, pkgs []string) error {
	apt := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %w: %s", args[0], err, lastLine(out))
		}
		return nil
	}
	install := append([]string{"install", "-y", "-q", "--no-install-recommends"}, pkgs...)
	if err := apt(install...); err == nil {
		return nil
	}
	if err := apt("update", "-q"); err != nil {
		return err
	}
	return apt(install...)
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// machine describes the host a run measured.
type machine struct {
	Date     time.Time
	CPU      string
	Cores    int
	Memory   string
	Kernel   string
	OS       string
	Go       string
	Cgroups  string
	Runtimes [][2]string // OCI runtime, its version
	Nginx    string
	Wrk      string
	Load     string // load average when the run began
	LoadEnd  string // and when it ended
}

// describeMachine reads what the results file says about the host.
func describeMachine(ctx context.Context, cg cgroups, runtimes []string, t tools) machine {
	m := machine{Date: time.Now().UTC(), Cores: runtime.NumCPU(), Go: runtime.Version(), Cgroups: cg.version()}
	cpu := keyValues("/proc/cpuinfo", ":")
	m.CPU = cpu["model name"]
	if kb, err := strconv.ParseInt(strings.TrimSuffix(keyValues("/proc/meminfo", ":")["MemTotal"], " kB"), 10, 64); err == nil {
		m.Memory = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	m.OS = strings.Trim(keyValues("/etc/os-release", "=")["PRETTY_NAME"], `"`)
	for _, r := range runtimes {
		m.Runtimes = append(m.Runtimes, [2]string{r, version(ctx, r, "--version")})
	}
	if t.nginx != "" {
		m.Nginx = version(ctx, t.nginx, "-v")
	}
	if t.wrk != "" {
		m.Wrk = version(ctx, t.wrk, "-v")
	}
	m.Load = loadAverage()
	return m
}

// loadAverage returns the 1, 5 and 15-minute load averages: other work on
// the host skews a run's numbers.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// keyValues reads "key SEP value" lines; the first of each key wins.
func keyValues(path, sep string) map[string]string {
	kv := map[string]string{}
	data, err := os.ReadFile(path)
	if err != nil {
		return kv
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), sep)
		k = strings.TrimSpace(k)
		if _, seen := kv[k]; ok && !seen {
			kv[k] = strings.TrimSpace(v)
		}
	}
	return kv
}

// version returns the first line a program prints about its version, or
// "not installed".
func version(ctx context.Context, bin string, arg string) string {
	if _, err := exec.LookPath(bin); err != nil {
		return "not installed"
	}
	// nginx -v prints to stderr, wrk -v exits 1: take whatever it said.
	out, _ := exec.CommandContext(ctx, bin, arg).CombinedOutput()
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(first)
}
