package image

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// dockerConfig is the part of a Docker client configuration file
// (~/.docker/config.json) that holds registry credentials.
type dockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
		RegistryToken string `json:"registrytoken"`
	} `json:"auths"`
}

// keychain resolves registry credentials from a Docker configuration file,
// read once when the store opens. Credential helpers (credsStore) are not
// run: a server should not execute programs named by a config file.
type keychain struct {
	auths map[string]authn.AuthConfig // by registry host[:port]
}

// loadKeychain reads the Docker configuration file at file. An empty file
// name gives a keychain without credentials (anonymous pulls).
func loadKeychain(file string) (*keychain, error) {
	k := &keychain{auths: map[string]authn.AuthConfig{}}
	if file == "" {
		return k, nil
	}
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read registry credentials: %w", err)
	}
	var cfg dockerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("registry credentials %s: not a Docker config file: %w", file, err)
	}
	for host, a := range cfg.Auths {
		ac := authn.AuthConfig{Username: a.Username, Password: a.Password,
			IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return nil, fmt.Errorf("registry credentials %s: auths[%q].auth: not base64: %w", file, host, err)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("registry credentials %s: auths[%q].auth: want base64 of user:password", file, host)
			}
			ac.Username, ac.Password = user, pass
		}
		k.auths[registryKey(host)] = ac
	}
	return k, nil
}

// registryKey reduces a Docker config "auths" key, which may be a URL
// ("https://index.docker.io/v1/"), to the registry's host[:port].
func registryKey(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	s, _, _ = strings.Cut(s, "/")
	if s == "index.docker.io" || s == "registry-1.docker.io" {
		s = "docker.io"
	}
	return s
}

// Resolve implements authn.Keychain.
func (k *keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if ac, ok := k.auths[registryKey(r.RegistryStr())]; ok {
		return authn.FromConfig(ac), nil
	}
	return authn.Anonymous, nil
}

// httpGuard refuses plain-HTTP requests to registries the operator has not
// marked insecure. go-containerregistry falls back to HTTP on its own for
// loopback and private addresses; Berth allows it only where told to.
type httpGuard struct {
	next     http.RoundTripper
	insecure map[string]bool // host[:port]
}

func (g *httpGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.insecure[req.URL.Host] {
		return nil, fmt.Errorf("registry %s answers only over plain HTTP, which Berth uses only for registries marked insecure (berth server --insecure-registry %s)",
			req.URL.Host, req.URL.Host)
	}
	return g.next.RoundTrip(req)
}
