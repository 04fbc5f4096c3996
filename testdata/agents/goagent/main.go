// Command goagent is a test agent that follows the AgentCore HTTP contract.
// JSON bodies carry an "op" that makes it probe its sandbox;
// application/octet-stream bodies are sent back as they came.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type agent struct {
	mu        sync.Mutex
	count     int
	busyUntil time.Time
}

func main() {
	a := &agent{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", a.ping)
	mux.HandleFunc("POST /invocations", a.invoke)
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	log.Fatal(http.ListenAndServe("0.0.0.0:"+port, mux))
}

func (a *agent) ping(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	busy := time.Now().Before(a.busyUntil)
	a.mu.Unlock()
	status := "Healthy"
	if busy {
		status = "HealthyBusy"
	}
	writeJSON(w, map[string]any{"status": status, "time_of_last_update": time.Now().Unix()})
}

func (a *agent) invoke(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") == "application/octet-stream" {
		// Read it all first: Go's HTTP/1 server cannot read a request
		// body after the response has begun.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
		return
	}
	var req struct {
		Op     string   `json:"op"`
		Prompt string   `json:"prompt"`
		Env    []string `json:"env"`
		Path   string   `json:"path"`
		Data   string   `json:"data"`
		Host   string   `json:"host"`
		Port   int      `json:"port"`
		N      int      `json:"n"`
		Delay  float64  `json:"delay"`
		Secs   float64  `json:"seconds"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":"Invalid JSON"}`, http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.count++
	count := a.count
	a.mu.Unlock()

	res := map[string]any{}
	var err error
	switch req.Op {
	case "", "echo":
		fmt.Println("echo:", req.Prompt)
		env := map[string]string{}
		for _, k := range req.Env {
			env[k] = os.Getenv(k)
		}
		res["echo"], res["env"] = req.Prompt, env
	case "stream":
		w.Header().Set("Content-Type", "text/event-stream")
		f := w.(http.Flusher)
		for i := range req.N {
			fmt.Fprintf(w, "data: {\"i\": %d, \"t\": %f}\n\n", i, float64(time.Now().UnixNano())/1e9)
			f.Flush()
			time.Sleep(time.Duration(req.Delay * float64(time.Second)))
		}
		return
	case "headers":
		h := map[string]string{}
		for k := range r.Header {
			h[strings.ToLower(k)] = r.Header.Get(k)
		}
		res["headers"] = h
	case "write":
		err = os.WriteFile(req.Path, []byte(req.Data), 0o644)
		res["ok"] = err == nil
	case "read":
		var b []byte
		b, err = os.ReadFile(req.Path)
		res["data"] = string(b)
	case "ps":
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if n, perr := strconv.Atoi(e.Name()); perr == nil {
				pids = append(pids, n)
			}
		}
		sort.Ints(pids)
		res["pids"] = pids
	case "connect":
		var c net.Conn
		c, err = net.DialTimeout("tcp", net.JoinHostPort(req.Host, strconv.Itoa(req.Port)), time.Second)
		if err == nil {
			c.Close()
			res["ok"] = true
		}
	case "busy":
		a.mu.Lock()
		a.busyUntil = time.Now().Add(time.Duration(req.Secs * float64(time.Second)))
		a.mu.Unlock()
		res["ok"] = true
	case "crash":
		fmt.Fprintln(os.Stderr, "agent: crashing on request")
		os.Exit(3)
	default:
		err = fmt.Errorf("unknown op %s", req.Op)
	}
	if err != nil {
		res["error"] = err.Error()
	}
	res["count"] = count
	res["session"] = r.Header.Get("X-Amzn-Bedrock-AgentCore-Runtime-Session-Id")
	res["requestId"] = r.Header.Get("X-Amzn-Bedrock-AgentCore-Runtime-Request-Id")
	res["pid"] = os.Getpid()
	writeJSON(w, res)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
