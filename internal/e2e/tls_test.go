package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
)

// TestTLSSelfSigned: berth server --tls-self-signed serves HTTPS that the AWS
// SDK accepts once it trusts DATA/tls/cert.pem, and no plain HTTP.
func TestTLSSelfSigned(t *testing.T) {
	requireSandboxes(t)
	bin, _ := binaries(t)
	data := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "server", "--tls-self-signed", "--listen", addr, "--data-dir", data, "--cgroup-parent", "/berth-e2e-tls", "--insecure-no-auth")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/berth-e2e-tls")
		for _, d := range dirs {
			os.Remove(d)
		}
	})

	var client *http.Client
	waitFor(t, 30*time.Second, "the HTTPS server", func() bool {
		pem, err := os.ReadFile(filepath.Join(data, "tls", "cert.pem"))
		if err != nil {
			return false
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		resp, err := client.Get("https://" + addr + "/berth/v1/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	endpoint := "https://" + addr
	control := cp.NewFromConfig(aws.Config{Region: "us-east-1", HTTPClient: client,
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", "")},
		func(o *cp.Options) { o.BaseEndpoint = &endpoint })
	if _, err := control.ListAgentRuntimes(context.Background(), &cp.ListAgentRuntimesInput{}); err != nil {
		t.Errorf("ListAgentRuntimes over HTTPS: %v", err)
	}
	if resp, err := http.Get("http://" + addr + "/berth/v1/health"); err == nil && resp.StatusCode == 200 {
		t.Error("plain HTTP was served")
	}
}
