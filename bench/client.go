package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berthrun/berth/internal/cli"
)

// Headers of the AgentCore data plane.
const hdrSessionID = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"

// echoBody is the warm call: the Go agent answers it with a small JSON
// document.
const echoBody = `{"op":"echo","prompt":"hello"}`

// errNoPools reports that the server has no warm-pool API.
var errNoPools = errors.New("GET /berth/v1/pools answered 404: this Berth has no warm pools")

// client calls one Berth server's HTTP API.
type client struct {
	base string
	http *http.Client
}

func newClient(addr string, keepAlive bool) *client {
	return &client{base: "http://" + addr, http: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 64, DisableKeepAlives: !keepAlive, DisableCompression: true}}}
}

func (c *client) do(ctx context.Context, method, path string, body io.Reader, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return c.http.Do(req)
}

// json makes a call with a JSON body (in, if not nil) and decodes the answer
// into out (if not nil).
func (c *client) json(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.do(ctx, method, path, body, map[string]string{"Content-Type": "application/json"})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return &httpError{method: method, path: path, status: resp.StatusCode, body: strings.TrimSpace(string(data))}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
		}
	}
	return nil
}

// httpError is a call that did not answer 2xx.
type httpError struct {
	method, path string
	status       int
	body         string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("%s %s: %d %s: %s", e.method, e.path, e.status, http.StatusText(e.status), e.body)
}

// agentRuntime is a deployed agent runtime.
type agentRuntime struct {
	ID, ARN string
}

// invocations is the data-plane path of the runtime's invocations.
func (r agentRuntime) invocations() string {
	return "/runtimes/" + url.PathEscape(r.ARN) + "/invocations"
}

// deploy uploads the agent's code and creates a runtime named name running
// it with env, and waits until it is ready.
func (c *client) deploy(ctx context.Context, a agentDef, name string, env map[string]string) (agentRuntime, error) {
	bundle, err := cli.PackDir(a.dir)
	if err != nil {
		return agentRuntime{}, fmt.Errorf("zip %s: %w", a.dir, err)
	}
	resp, err := c.do(ctx, http.MethodPut, "/berth/v1/code/bench/"+name+".zip", bytes.NewReader(bundle.Zip), nil)
	if err != nil {
		return agentRuntime{}, fmt.Errorf("upload %s: %w", name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return agentRuntime{}, fmt.Errorf("upload %s: %s", name, resp.Status)
	}
	var created struct{ AgentRuntimeID, AgentRuntimeArn string }
	err = c.json(ctx, http.MethodPut, "/runtimes/", map[string]any{
		"agentRuntimeName": name, "roleArn": "arn:aws:iam::000000000000:role/bench",
		"agentRuntimeArtifact": map[string]any{"codeConfiguration": map[string]any{
			"code":    map[string]any{"s3": map[string]any{"bucket": "bench", "prefix": name + ".zip"}},
			"runtime": a.runtime, "entryPoint": a.entry}},
		"environmentVariables": env,
	}, &created)
	if err != nil {
		return agentRuntime{}, fmt.Errorf("create runtime %s: %w", name, err)
	}
	for {
		var rt struct{ Status, FailureReason string }
		if err := c.json(ctx, http.MethodGet, "/runtimes/"+created.AgentRuntimeID+"/", nil, &rt); err != nil {
			return agentRuntime{}, err
		}
		switch rt.Status {
		case "READY":
			return agentRuntime{ID: created.AgentRuntimeID, ARN: created.AgentRuntimeArn}, nil
		case "CREATE_FAILED":
			return agentRuntime{}, fmt.Errorf("runtime %s failed: %s", name, rt.FailureReason)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return agentRuntime{}, err
		}
	}
}

// deleteRuntime deletes a runtime, which releases its warm pool.
func (c *client) deleteRuntime(ctx context.Context, id string) error {
	return c.json(ctx, http.MethodDelete, "/runtimes/"+id+"/", nil, nil)
}

// invoke makes the warm call in session sid and returns the time to the
// first byte of the answer.
func (c *client) invoke(ctx context.Context, rt agentRuntime, sid string) (time.Duration, error) {
	start := time.Now()
	resp, err := c.do(ctx, http.MethodPost, rt.invocations(), strings.NewReader(echoBody),
		map[string]string{"Content-Type": "application/json", hdrSessionID: sid})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var first [1]byte
	if _, err := io.ReadFull(resp.Body, first[:]); err != nil {
		return 0, fmt.Errorf("invoke: %s, and reading the answer failed: %w", resp.Status, err)
	}
	d := time.Since(start)
	rest, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("invoke: %s: %s%s", resp.Status, first[:], rest)
	}
	if err != nil {
		return 0, fmt.Errorf("invoke: read the answer: %w", err)
	}
	return d, nil
}

// stopSession stops a session, which removes its sandbox.
func (c *client) stopSession(ctx context.Context, rt agentRuntime, sid string) error {
	return c.json(ctx, http.MethodDelete, "/berth/v1/sessions/"+rt.ID+"/"+sid, nil, nil)
}

// coldStart starts a new session, returns the time to its first answer's
// first byte, and stops it.
func (c *client) coldStart(ctx context.Context, rt agentRuntime) (time.Duration, error) {
	sid := newSessionID()
	d, err := c.invoke(ctx, rt, sid)
	if err != nil {
		return 0, err
	}
	return d, c.stopSession(ctx, rt, sid)
}

// liveSessions returns how many sessions the server runs.
func (c *client) liveSessions(ctx context.Context) (int, error) {
	var out struct{ Sessions []json.RawMessage }
	if err := c.json(ctx, http.MethodGet, "/berth/v1/sessions", nil, &out); err != nil {
		return 0, err
	}
	return len(out.Sessions), nil
}

// poolState is one warm pool as GET /berth/v1/pools describes it.
type poolState struct {
	RuntimeID string `json:"runtimeId"`
	Size      int    `json:"size"`
	Ready     int    `json:"ready"`
	Starting  int    `json:"starting"`
}

// pools returns the server's warm pools, or errNoPools.
func (c *client) pools(ctx context.Context) ([]poolState, error) {
	var out struct {
		Pools []poolState `json:"pools"`
	}
	err := c.json(ctx, http.MethodGet, "/berth/v1/pools", nil, &out)
	if he, ok := errors.AsType[*httpError](err); ok && he.status == http.StatusNotFound {
		return nil, errNoPools
	}
	return out.Pools, err
}

// waitPoolFull waits until the runtime's pool holds size ready sandboxes.
func (c *client) waitPoolFull(ctx context.Context, runtimeID string, size int) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last poolState
	for {
		pools, err := c.pools(ctx)
		if err != nil {
			return fmt.Errorf("wait for the warm pool of %s: %w", runtimeID, err)
		}
		for _, p := range pools {
			if p.RuntimeID == runtimeID {
				last = p
				if p.Size != size {
					return fmt.Errorf("the warm pool of %s has size %d; the runtime asked for %d", runtimeID, p.Size, size)
				}
				if p.Ready == size {
					return nil
				}
			}
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return fmt.Errorf("wait for the warm pool of %s (last: %+v): %w", runtimeID, last, err)
		}
	}
}

func newSessionID() string { return "bench-" + rand.Text() + rand.Text() }

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
