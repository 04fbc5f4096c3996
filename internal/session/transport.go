package session

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kept-alive connections to one agent: how many, and for how long.
const (
	maxIdleConns = 64
	idleTimeout  = 90 * time.Second
)

// agentTransport reaches one session's agent.
//
// A call whose body is already in memory (http.NoBody or a body with
// GetBody and a known length up to inlineBody) is written and its answer
// read by the caller's own goroutine over a kept-alive connection, which
// removes the hand-offs between net/http's per-connection reader and writer
// goroutines from the warm path: each is a wakeup, and on a small machine
// wakeups, not bytes, are what a warm call costs. Every other call (a large
// or streamed request body, which the agent may answer while it is still
// being sent) goes through net/http's Transport.
type agentTransport struct {
	dial func(ctx context.Context) (net.Conn, error)
	std  *http.Transport

	mu     sync.Mutex
	idle   []*agentConn
	closed bool
}

// inlineBody is the largest request body sent on the caller's goroutine.
const inlineBody = 64 << 10

func newAgentTransport(dial func(ctx context.Context) (net.Conn, error)) *agentTransport {
	return &agentTransport{
		dial: dial,
		std: &http.Transport{
			DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
			MaxIdleConnsPerHost: maxIdleConns,
			IdleConnTimeout:     idleTimeout,
			DisableCompression:  true,
		},
	}
}

// agentConn is a kept-alive connection of the direct path.
type agentConn struct {
	net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// RoundTrip implements http.RoundTripper. The request's URL host is ignored.
func (t *agentTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !inMemory(req) {
		return t.std.RoundTrip(req)
	}
	c, err := t.conn(req.Context())
	if err != nil {
		return nil, err
	}
	// A cancelled call unblocks by failing the connection's I/O; the
	// connection is then not reused.
	stop := context.AfterFunc(req.Context(), func() { c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.Close()
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}
	if err := req.Write(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	resp, err := http.ReadResponse(c.br, req)
	if err != nil {
		return fail(err)
	}
	resp.Body = &agentBody{ReadCloser: resp.Body, t: t, c: c, stop: stop, keep: !resp.Close && !req.Close, eof: resp.Body == http.NoBody}
	return resp, nil
}

// conn returns a live idle connection, or a new one. A POST is never sent
// twice, so a kept-alive connection the agent has closed meanwhile must be
// found out before the request goes on it, not after.
func (t *agentTransport) conn(ctx context.Context) (*agentConn, error) {
	for {
		t.mu.Lock()
		n := len(t.idle)
		if n == 0 {
			t.mu.Unlock()
			break
		}
		c := t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		if time.Since(c.idleSince) < idleTimeout && c.br.Buffered() == 0 && quiet(c.Conn) {
			return c, nil
		}
		c.Close()
	}
	nc, err := t.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &agentConn{Conn: nc, br: bufio.NewReader(nc), bw: bufio.NewWriter(nc)}, nil
}

// quiet says whether an idle connection has nothing to read: neither the
// agent's end of it (EOF), nor an error, nor stray bytes. It costs one
// non-blocking recv.
func quiet(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var (
		buf  [1]byte
		live bool
	)
	err = rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		live = err == unix.EAGAIN
		return true
	})
	return err == nil && live
}

// put keeps c for the next call, unless the transport is closed or has
// enough idle connections.
func (t *agentTransport) put(c *agentConn) {
	c.idleSince = time.Now()
	t.mu.Lock()
	if !t.closed && len(t.idle) < maxIdleConns {
		t.idle = append(t.idle, c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// CloseIdleConnections closes the kept-alive connections; connections in use
// are closed when their calls end.
func (t *agentTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.closed = nil, true
	t.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
	t.std.CloseIdleConnections()
}

// agentBody is the answer's body on the direct path: read to its end, it
// gives the connection back for the next call; closed early, it closes it.
type agentBody struct {
	io.ReadCloser
	t    *agentTransport
	c    *agentConn
	stop func() bool
	keep bool
	eof  bool
	done bool
}

func (b *agentBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *agentBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	err := b.ReadCloser.Close()
	// A cancellation that already fired has spoiled the connection.
	if b.stop() && b.eof && b.keep && err == nil {
		b.t.put(b.c)
	} else {
		b.c.Close()
	}
	return err
}

// inMemory says whether req's body can be sent on the direct path.
func inMemory(req *http.Request) bool {
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		return true
	case req.GetBody == nil || req.ContentLength <= 0 || req.ContentLength > inlineBody:
		return false
	}
	return true
}
