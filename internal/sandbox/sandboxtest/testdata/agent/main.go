// Command agent is the test agent of the sandbox conformance suite: an HTTP
// server on 0.0.0.0:$PORT (8080 when PORT is unset, as in an isolating
// sandbox) whose endpoints probe the sandbox it runs in and, under /attack
// (attack.go), try to escape it.
//
// It prints one line to standard output and one to standard error at start,
// and exits at once with status $AGENT_EXIT when that is set.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		time.Sleep(time.Hour)
		return
	}
	name := os.Getenv("AGENT_NAME")
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	fmt.Fprintf(os.Stdout, "agent %s: hello on stdout\n", name)
	fmt.Fprintf(os.Stderr, "agent %s: hello on stderr\n", name)
	if code := os.Getenv("AGENT_EXIT"); code != "" {
		n, _ := strconv.Atoi(code)
		os.Exit(n)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "pong") })
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.FormValue("key"))
		if !ok {
			http.Error(w, "unset", http.StatusNotFound)
			return
		}
		io.WriteString(w, v)
	})
	mux.HandleFunc("/hostname", func(w http.ResponseWriter, r *http.Request) {
		h, err := os.Hostname()
		reply(w, h, err)
	})
	mux.HandleFunc("/readlink", func(w http.ResponseWriter, r *http.Request) {
		v, err := os.Readlink(r.FormValue("path"))
		reply(w, v, err)
	})
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		data, err := os.ReadFile(r.FormValue("path"))
		reply(w, string(data), err)
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		reply(w, "ok", os.WriteFile(r.FormValue("path"), []byte(r.FormValue("data")), 0o644))
	})
	mux.HandleFunc("/replace", func(w http.ResponseWriter, r *http.Request) {
		// As editors do: write a new file and rename it over the old.
		p := r.FormValue("path")
		err := os.WriteFile(p+".new", []byte(r.FormValue("data")), 0o644)
		if err == nil {
			err = os.Rename(p+".new", p)
		}
		reply(w, "ok", err)
	})
	mux.HandleFunc("/stat", func(w http.ResponseWriter, r *http.Request) {
		_, err := os.Lstat(r.FormValue("path"))
		reply(w, "exists", err)
	})
	mux.HandleFunc("/fill", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.FormValue("mb"))
		p := r.FormValue("path")
		defer os.Remove(p)
		reply(w, "ok", fill(p, mb))
	})
	mux.HandleFunc("/pids", func(w http.ResponseWriter, r *http.Request) {
		entries, err := os.ReadDir("/proc")
		var pids []string
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				pids = append(pids, e.Name())
			}
		}
		reply(w, strings.Join(pids, " "), err)
	})
	mux.HandleFunc("/ifaces", func(w http.ResponseWriter, r *http.Request) {
		ifaces, err := net.Interfaces()
		var names []string
		for _, i := range ifaces {
			names = append(names, i.Name)
		}
		reply(w, strings.Join(names, " "), err)
	})
	mux.HandleFunc("/dial", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", r.FormValue("addr"), 2*time.Second)
		if err == nil {
			c.Close()
		}
		reply(w, "connected", err)
	})
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		// An HTTP GET of url, for the network tests.
		c := http.Client{Timeout: 3 * time.Second}
		resp, err := c.Get(r.FormValue("url"))
		if err != nil {
			reply(w, "", err)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		reply(w, string(body), err)
	})
	mux.HandleFunc("/self", func(w http.ResponseWriter, r *http.Request) {
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://127.0.0.1:" + port + "/ping")
		if err != nil {
			reply(w, "", err)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		reply(w, string(body), err)
	})
	// What /proc/self/status may not show (gVisor's does not), from
	// prctl: "no_new_privs" is 0 or 1, "cap_ambient" the ambient set in
	// hex, as in /proc/self/status.
	mux.HandleFunc("/prctl", func(w http.ResponseWriter, r *http.Request) {
		switch r.FormValue("what") {
		case "no_new_privs":
			v, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
			reply(w, strconv.Itoa(v), err)
		case "cap_ambient":
			var set uint64
			for c := 0; c <= unix.CAP_LAST_CAP; c++ {
				v, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, uintptr(c), 0, 0)
				if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: a capability this kernel lacks
					reply(w, "", err)
					return
				}
				if v == 1 {
					set |= 1 << c
				}
			}
			reply(w, fmt.Sprintf("%016x", set), nil)
		default:
			http.Error(w, "what: want no_new_privs or cap_ambient", http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/fork", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.FormValue("n"))
		started, err := fork(n)
		res := struct {
			Started int    `json:"started"`
			Error   string `json:"error,omitempty"`
		}{Started: started}
		if err != nil {
			res.Error = err.Error()
		}
		json.NewEncoder(w).Encode(res)
	})
	mux.HandleFunc("/spawn", func(w http.ResponseWriter, r *http.Request) {
		// A child that outlives the request, to be killed with the sandbox.
		c := exec.Command("/proc/self/exe", "sleep")
		err := c.Start()
		if err == nil {
			go c.Wait()
		}
		reply(w, "spawned", err)
	})
	mux.HandleFunc("/alloc", func(w http.ResponseWriter, r *http.Request) {
		mb, _ := strconv.Atoi(r.FormValue("mb"))
		var hold [][]byte
		for range mb {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			hold = append(hold, b)
		}
		fmt.Fprintf(w, "allocated %d MiB", len(hold))
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.FormValue("code"))
		io.WriteString(w, "bye")
		w.(http.Flusher).Flush()
		go func() {
			time.Sleep(20 * time.Millisecond)
			os.Exit(code)
		}()
	})
	mux.HandleFunc("/attack", attackHandler)
	mux.HandleFunc("/scan-pids", scanPIDs)
	mux.HandleFunc("/find", find)
	mux.HandleFunc("/listen-unix", listenUnix)
	mux.HandleFunc("/dial-unix", dialUnix)
	mux.HandleFunc("/peer", peer)
	if err := http.ListenAndServe("0.0.0.0:"+port, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// reply writes v, or err with status 404 for a missing file and 500
// otherwise.
func reply(w http.ResponseWriter, v string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		http.Error(w, err.Error(), http.StatusNotFound)
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
	default:
		io.WriteString(w, v)
	}
}

// fill writes mb MiB to the file p.
func fill(p string, mb int) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for range mb {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// fork starts up to n sleeping copies of the agent and stops at the first
// failure. It kills them all before it returns.
func fork(n int) (int, error) {
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for range n {
		c := exec.Command("/proc/self/exe", "sleep")
		if err := c.Start(); err != nil {
			return len(cmds), err
		}
		cmds = append(cmds, c)
	}
	return len(cmds), nil
}
