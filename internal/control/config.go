package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/berthrun/berth/internal/sandbox"
)

// Config is what one version of a runtime runs. It is immutable once the
// version is created; UpdateRuntime makes a new version with a new Config.
type Config struct {
	Description string             `json:"description,omitempty"`
	RoleARN     string             `json:"roleArn"`
	Code        *CodeArtifact      `json:"code,omitempty"`
	Container   *ContainerArtifact `json:"container,omitempty"`
	Network     Network            `json:"network"`
	Protocol    Protocol           `json:"protocol"`
	Lifecycle   Lifecycle          `json:"lifecycle"`
	Env         map[string]string  `json:"env,omitempty"`
	// HeaderAllowlist names request headers passed through to the agent.
	HeaderAllowlist []string `json:"headerAllowlist,omitempty"`
	// Extra holds API members Berth stores and returns unchanged, keyed by
	// member name: those it does not act on yet (filesystems, ...) and
	// authorizerConfiguration, which is also parsed into JWT.
	Extra map[string]json.RawMessage `json:"extra,omitempty"`
	// JWT is the customJWTAuthorizer of Extra["authorizerConfiguration"],
	// if any. It is not stored: Extra is the one source, parsed again
	// when a version is read, so the two cannot disagree.
	JWT *JWTAuthorizer `json:"-"`
}

// CodeArtifact is an agent shipped as a code bundle (a zip) run by one of the
// host's language runtimes.
type CodeArtifact struct {
	Bucket     string   `json:"bucket"`
	Key        string   `json:"key"`
	VersionID  string   `json:"versionId,omitempty"`
	Runtime    string   `json:"runtime"` // PYTHON_3_10 ... PYTHON_3_14, NODE_22
	EntryPoint []string `json:"entryPoint"`
}

// ContainerArtifact is an agent shipped as an OCI image.
type ContainerArtifact struct {
	URI string `json:"uri"`
}

// Network is a runtime's network configuration.
type Network struct {
	Mode           string   `json:"mode"` // PUBLIC or VPC
	SecurityGroups []string `json:"securityGroups,omitempty"`
	Subnets        []string `json:"subnets,omitempty"`
}

// Protocol says how Berth talks to the agent.
type Protocol struct {
	Server string `json:"server"` // HTTP, MCP, A2A or AGUI
	Port   int    `json:"port"`
	Path   string `json:"path"`
}

// Lifecycle bounds a session's life, in seconds.
type Lifecycle struct {
	IdleTimeout int `json:"idleTimeout"`
	MaxLifetime int `json:"maxLifetime"`
}

// Defaults and limits of the AgentCore contract.
const (
	DefaultIdleTimeout = 900
	DefaultMaxLifetime = 28800
	MaxLifecycle       = 28800
	maxEnvVars         = 50
	maxEndpoints       = 10
	maxVersions        = 1000
)

// Berth's extensions to a runtime's configuration. AgentCore's API has no
// field for them, so they ride in environmentVariables (the agent sees them
// too, harmlessly), which keeps every AgentCore client able to set them.
const (
	// EnvWarmPoolSize asks for that many warm sandboxes of each served
	// version of the runtime.
	EnvWarmPoolSize = "BERTH_WARM_POOL_SIZE"
	// EnvWarmPoolIdle shrinks the warm pool to nothing after that many
	// seconds without a new session (0: never).
	EnvWarmPoolIdle = "BERTH_WARM_POOL_IDLE"
	// EnvNetwork chooses the sandbox network of a PUBLIC runtime: none
	// (loopback only), outbound (anything but the host and other
	// sandboxes, through NAT) or allowlist (only EnvNetworkAllow). Unset,
	// it is the server's default (outbound unless the operator disabled
	// outbound access).
	EnvNetwork = "BERTH_NETWORK"
	// EnvNetworkAllow lists what an allowlist runtime's sandboxes may
	// reach: comma-separated host names, IPv4 addresses and CIDRs, each
	// with an optional :PORT.
	EnvNetworkAllow = "BERTH_NETWORK_ALLOW"
	// EnvOCIRuntime picks the OCI runtime the runtime's sandboxes run with,
	// one of OCIRuntimes; without it, the server's default (berth server
	// --oci-runtime). Drivers without a choice (berth dev) ignore it.
	EnvOCIRuntime = "BERTH_OCI_RUNTIME"
)

// OCIRuntimes returns the values EnvOCIRuntime accepts: runc, crun and runsc
// (gVisor, for stronger isolation).
func OCIRuntimes() []string { return []string{"runc", "crun", "runsc"} }

// maxAllowEntries bounds EnvNetworkAllow (each entry is a filter rule or
// two, and a host name a lookup at every cold start).
const maxAllowEntries = 64

// Code runtimes Berth accepts.
var codeRuntimes = []string{"PYTHON_3_10", "PYTHON_3_11", "PYTHON_3_12", "PYTHON_3_13", "PYTHON_3_14", "NODE_22"}

var (
	nameRE       = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]{0,47}$`)
	roleARNRE    = regexp.MustCompile(`^arn:[a-z-]+:iam::\d{12}:role/[a-zA-Z0-9+=,.@\-_/]+$`)
	envKeyRE     = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	headerNameRE = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]{1,256}$`)
)

// FieldError is a problem with one input field, named by its API member path
// (for example "lifecycleConfiguration.maxLifetime").
type FieldError struct {
	Field   string
	Message string
}

// ValidationError lists every field of a request that is not acceptable.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Field + ": " + f.Message
	}
	return "invalid request: " + strings.Join(parts, "; ")
}

// validator collects field errors.
type validator struct{ errs []FieldError }

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) err() error {
	if len(v.errs) == 0 {
		return nil
	}
	return &ValidationError{Fields: v.errs}
}

// ValidateName checks a runtime or endpoint name.
func validateName(v *validator, field, name string) {
	if !nameRE.MatchString(name) {
		v.add(field, "%q must start with a letter and contain only letters, digits and underscores, at most 48 characters", name)
	}
}

// normalize fills defaults and validates c. minLifecycle is the smallest
// lifecycle value accepted (60 s in AgentCore; tests may lower it).
func (c *Config) normalize(minLifecycle int) error {
	var v validator
	if n := len(c.Description); n > 1200 {
		v.add("description", "is %d characters; at most 1200 are allowed", n)
	}
	if c.RoleARN == "" {
		v.add("roleArn", "is required")
	} else if !roleARNRE.MatchString(c.RoleARN) {
		v.add("roleArn", "%q is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)", c.RoleARN)
	}
	switch {
	case c.Code == nil && c.Container == nil:
		v.add("agentRuntimeArtifact", "is required: give codeConfiguration or containerConfiguration")
	case c.Code != nil && c.Container != nil:
		v.add("agentRuntimeArtifact", "must hold exactly one of codeConfiguration and containerConfiguration")
	case c.Code != nil:
		const f = "agentRuntimeArtifact.codeConfiguration"
		if c.Code.Bucket == "" {
			v.add(f+".code.s3.bucket", "is required")
		}
		if c.Code.Key == "" {
			v.add(f+".code.s3.prefix", "is required")
		}
		if !slices.Contains(codeRuntimes, c.Code.Runtime) {
			v.add(f+".runtime", "%q is not one of %s", c.Code.Runtime, strings.Join(codeRuntimes, ", "))
		}
		if len(c.Code.EntryPoint) == 0 || c.Code.EntryPoint[0] == "" {
			v.add(f+".entryPoint", "is required, e.g. [\"main.py\"]")
		}
		for i, a := range c.Code.EntryPoint {
			if len(a) > 128 {
				v.add(fmt.Sprintf("%s.entryPoint[%d]", f, i), "is longer than 128 characters")
			}
		}
	case c.Container != nil:
		if c.Container.URI == "" {
			v.add("agentRuntimeArtifact.containerConfiguration.containerUri", "is required")
		}
	}

	switch c.Network.Mode {
	case "":
		c.Network.Mode = "PUBLIC"
	case "PUBLIC":
	case "VPC":
		if len(c.Network.Subnets) == 0 || len(c.Network.SecurityGroups) == 0 {
			v.add("networkConfiguration.networkModeConfig", "subnets and securityGroups are required in VPC mode")
		}
	default:
		v.add("networkConfiguration.networkMode", "%q is not PUBLIC or VPC", c.Network.Mode)
	}

	defPort, defPath := 8080, "/invocations"
	switch c.Protocol.Server {
	case "":
		c.Protocol.Server = "HTTP"
	case "HTTP", "AGUI":
	case "MCP":
		defPort, defPath = 8000, "/mcp"
	case "A2A":
		defPort, defPath = 9000, "/"
	default:
		v.add("protocolConfiguration.serverProtocol", "%q is not one of HTTP, MCP, A2A, AGUI", c.Protocol.Server)
	}
	if c.Protocol.Port == 0 {
		c.Protocol.Port = defPort
	} else if c.Protocol.Port < 8000 || c.Protocol.Port > 12000 || c.Protocol.Port == 8443 {
		v.add("protocolConfiguration.port", "%d is outside 8000-12000 or is 8443", c.Protocol.Port)
	}
	if c.Protocol.Path == "" {
		c.Protocol.Path = defPath
	} else if !strings.HasPrefix(c.Protocol.Path, "/") {
		v.add("protocolConfiguration.path", "%q must start with /", c.Protocol.Path)
	}

	lc := &c.Lifecycle
	switch {
	case lc.MaxLifetime == 0 && lc.IdleTimeout == 0:
		lc.IdleTimeout, lc.MaxLifetime = DefaultIdleTimeout, DefaultMaxLifetime
	case lc.IdleTimeout == 0:
		lc.IdleTimeout = min(DefaultIdleTimeout, lc.MaxLifetime)
	case lc.MaxLifetime == 0:
		lc.MaxLifetime = DefaultMaxLifetime
	}
	for _, f := range []struct {
		name string
		val  int
	}{{"idleRuntimeSessionTimeout", lc.IdleTimeout}, {"maxLifetime", lc.MaxLifetime}} {
		if f.val < minLifecycle || f.val > MaxLifecycle {
			v.add("lifecycleConfiguration."+f.name, "%d is outside %d-%d seconds", f.val, minLifecycle, MaxLifecycle)
		}
	}
	if lc.IdleTimeout > lc.MaxLifetime {
		v.add("lifecycleConfiguration.idleRuntimeSessionTimeout", "%d exceeds maxLifetime %d", lc.IdleTimeout, lc.MaxLifetime)
	}

	validateNetwork(&v, c.Env)
	for _, name := range []string{EnvWarmPoolSize, EnvWarmPoolIdle} {
		if val, ok := c.Env[name]; ok {
			if n, err := strconv.Atoi(val); err != nil || n < 0 || n > 1000 {
				v.add("environmentVariables."+name, "%q is not a number from 0 to 1000", val)
			}
		}
	}
	if val, ok := c.Env[EnvOCIRuntime]; ok && !slices.Contains(OCIRuntimes(), val) {
		v.add("environmentVariables."+EnvOCIRuntime, "%q is not one of %s", val, strings.Join(OCIRuntimes(), ", "))
	}
	if n := len(c.Env); n > maxEnvVars {
		v.add("environmentVariables", "has %d entries; at most %d are allowed", n, maxEnvVars)
	}
	for _, k := range sortedKeys(c.Env) {
		if len(k) > 100 || !envKeyRE.MatchString(k) {
			v.add("environmentVariables", "name %q must match [a-zA-Z_][a-zA-Z0-9_]* and be at most 100 characters", k)
		} else if len(c.Env[k]) > 2048 {
			v.add("environmentVariables."+k, "value is longer than 2048 characters")
		}
	}

	c.JWT = nil
	if raw, ok := c.Extra["authorizerConfiguration"]; ok {
		c.JWT = parseAuthorizer(&v, raw)
	}

	if n := len(c.HeaderAllowlist); n > 20 {
		v.add("requestHeaderConfiguration.requestHeaderAllowlist", "has %d headers; at most 20 are allowed", n)
	}
	seen := map[string]bool{}
	for _, h := range c.HeaderAllowlist {
		const f = "requestHeaderConfiguration.requestHeaderAllowlist"
		lower := strings.ToLower(h)
		switch {
		case !headerNameRE.MatchString(h):
			v.add(f, "%q is not a valid header name", h)
		case seen[lower]:
			v.add(f, "%q is listed twice", h)
		case strings.HasPrefix(lower, "x-amzn-bedrock-agentcore-runtime-custom-"):
		case strings.HasPrefix(lower, "x-amz-"), strings.HasPrefix(lower, "x-amzn-"):
			v.add(f, "%q is reserved: x-amz-* and x-amzn-* headers cannot be allowlisted, except X-Amzn-Bedrock-AgentCore-Runtime-Custom-*", h)
		case lower == "authorization" && c.Extra["authorizerConfiguration"] == nil:
			v.add(f, "Authorization can be allowlisted only for runtimes with a customJWTAuthorizer")
		}
		seen[lower] = true
	}
	return v.err()
}

// decodeAuthorizer sets c.JWT from a stored configuration, which was valid
// when stored.
func (c *Config) decodeAuthorizer() error {
	raw, ok := c.Extra["authorizerConfiguration"]
	if !ok {
		return nil
	}
	var v validator
	c.JWT = parseAuthorizer(&v, raw)
	return v.err()
}

// validateNetwork checks Berth's network extensions in env.
func validateNetwork(v *validator, env map[string]string) {
	mode, hasMode := env[EnvNetwork]
	if hasMode {
		if _, err := sandbox.ParseNetworkMode(mode); err != nil {
			v.add("environmentVariables."+EnvNetwork, "%q is not none, outbound or allowlist", mode)
			return
		}
	}
	list, hasList := env[EnvNetworkAllow]
	switch {
	case mode == string(sandbox.NetworkAllowlist) && !hasList:
		v.add("environmentVariables."+EnvNetworkAllow, "is required with %s=allowlist: list the hosts, addresses or CIDRs (each with an optional :PORT) the agent may reach", EnvNetwork)
	case hasList && mode != string(sandbox.NetworkAllowlist):
		v.add("environmentVariables."+EnvNetworkAllow, "is only used with %s=allowlist", EnvNetwork)
	case hasList:
		dests, err := sandbox.ParseDestinations(list)
		if err != nil {
			v.add("environmentVariables."+EnvNetworkAllow, "%v", err)
		} else if len(dests) > maxAllowEntries {
			v.add("environmentVariables."+EnvNetworkAllow, "has %d entries; at most %d are allowed", len(dests), maxAllowEntries)
		}
	}
}

// NetworkPolicy is what the server lets runtimes' sandboxes reach.
type NetworkPolicy struct {
	// NoOutbound refuses modes outbound and allowlist: PUBLIC runtimes
	// get none, and runtimes that ask for more fail to deploy.
	NoOutbound bool
}

// errNetworkVPC is why a VPC runtime cannot run.
var errNetworkVPC = errors.New("networkConfiguration.networkMode VPC is not supported by Berth: use PUBLIC (and " +
	EnvNetwork + " to limit the agent's network)")

// SandboxNetwork returns the network the sandboxes of a runtime with c get
// under policy p, or an error naming the setting that p does not allow.
//
// AgentCore's PUBLIC mode maps to outbound, its nearest meaning (the agent
// reaches the internet), unless EnvNetwork says otherwise or p refuses
// outbound access, when it maps to none. VPC has no counterpart.
func (c *Config) SandboxNetwork(p NetworkPolicy) (sandbox.Network, error) {
	if c.Network.Mode == "VPC" {
		return sandbox.Network{}, errNetworkVPC
	}
	mode, ok := c.Env[EnvNetwork]
	if !ok {
		if p.NoOutbound {
			return sandbox.Network{Mode: sandbox.NetworkNone}, nil
		}
		return sandbox.Network{Mode: sandbox.NetworkOutbound}, nil
	}
	m, err := sandbox.ParseNetworkMode(mode)
	if err != nil {
		return sandbox.Network{}, fmt.Errorf("environmentVariables.%s: %w", EnvNetwork, err)
	}
	n := sandbox.Network{Mode: m}
	if n.Enabled() && p.NoOutbound {
		return sandbox.Network{}, fmt.Errorf("environmentVariables.%s: %s: this Berth server gives sandboxes no network access (its operator started it with --sandbox-outbound=false, or the host cannot)", EnvNetwork, mode)
	}
	if m == sandbox.NetworkAllowlist {
		if n.Allow, err = sandbox.ParseDestinations(c.Env[EnvNetworkAllow]); err != nil {
			return sandbox.Network{}, fmt.Errorf("environmentVariables.%s: %w", EnvNetworkAllow, err)
		}
	}
	return n, nil
}
