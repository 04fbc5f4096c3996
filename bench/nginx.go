package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// nginxConfig is a reverse proxy on listen to upstream, tuned as one would
// for a fair comparison: no access log, keep-alive to the upstream, no limit
// on requests per connection (Berth has none). Everything nginx writes stays
// under dir.
func nginxConfig(dir, listen, upstream string) string {
	return strings.NewReplacer("DIR", dir, "LISTEN", listen, "UPSTREAM", upstream).Replace(`daemon off;
master_process on;
worker_processes auto;
user root;
pid DIR/nginx.pid;
error_log DIR/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path DIR/tmp/body;
    proxy_temp_path DIR/tmp/proxy;
    fastcgi_temp_path DIR/tmp/fastcgi;
    uwsgi_temp_path DIR/tmp/uwsgi;
    scgi_temp_path DIR/tmp/scgi;
    upstream agent {
        server UPSTREAM;
        keepalive 256;
        keepalive_requests 100000000;
    }
    server {
        listen LISTEN;
        keepalive_requests 100000000;
        location / {
            proxy_pass http://agent;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`)
}

// nginxProxy is an nginx running as a reverse proxy to an agent.
type nginxProxy struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{}
	err    error // of Wait, once done is closed
}

// startNginx runs bin with its own configuration in dir, inside the network
// namespace ns (whose dialer is d), listening on listen and proxying to
// upstream, and returns once it accepts connections.
func startNginx(ctx context.Context, bin, dir string, d *netnsDialer, ns, listen, upstream string) (*nginxProxy, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConfig(dir, listen, upstream)), 0o644); err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "error.log")
	out, err := os.Create(filepath.Join(dir, "output.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	ctx, cancel := context.WithCancel(ctx)
	cmd := inNetns(ctx, ns, bin, "-c", conf, "-p", dir, "-e", logFile)
	cmd.Stdout, cmd.Stderr = out, out
	// SIGQUIT is nginx's graceful shutdown; a master that ignores it is
	// killed after WaitDelay.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	p := &nginxProxy{cmd: cmd, cancel: cancel, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	if err := d.waitListening(ctx, listen, p.done); err != nil {
		p.stop()
		log, _ := os.ReadFile(logFile)
		msg, _ := os.ReadFile(out.Name())
		return nil, fmt.Errorf("nginx did not start: %w: %s %s", err, strings.TrimSpace(string(msg)), strings.TrimSpace(string(log)))
	}
	return p, nil
}

// stop shuts nginx down and waits for it.
func (p *nginxProxy) stop() {
	p.cancel()
	<-p.done
}
