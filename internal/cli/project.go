package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Paths of an AgentCore project, relative to its root.
const (
	configDir        = "agentcore"
	projectFile      = "agentcore/agentcore.json"
	targetsFile      = "agentcore/aws-targets.json"
	cliDir           = "agentcore/.cli"
	deployedFile     = "agentcore/.cli/deployed-state.json"
	envLocalFile     = "agentcore/.env.local"
	projectSchemaURL = "https://schema.agentcore.aws.dev/v1/agentcore.json"
)

// ProjectSpec is agentcore/agentcore.json: the members Berth reads. The
// file's other members are AgentCore resources Berth does not run
// (memories, gateways, ...); Berth leaves them alone.
type ProjectSpec struct {
	Name      string            `json:"name"`
	Version   int               `json:"version"`
	ManagedBy string            `json:"managedBy"`
	Tags      map[string]string `json:"tags,omitempty"`
	Runtimes  []RuntimeSpec     `json:"runtimes"`
}

// RuntimeSpec is one entry of agentcore.json's runtimes (AgentCore's
// AgentEnvSpec).
type RuntimeSpec struct {
	Name                   string                  `json:"name"`
	Description            string                  `json:"description,omitempty"`
	Build                  string                  `json:"build"`
	Entrypoint             string                  `json:"entrypoint"`
	CodeLocation           string                  `json:"codeLocation"`
	Dockerfile             string                  `json:"dockerfile,omitempty"`
	RuntimeVersion         string                  `json:"runtimeVersion,omitempty"`
	EnvVars                []EnvVar                `json:"envVars,omitempty"`
	NetworkMode            string                  `json:"networkMode,omitempty"`
	Protocol               string                  `json:"protocol,omitempty"`
	RequestHeaderAllowlist []string                `json:"requestHeaderAllowlist,omitempty"`
	ExecutionRoleArn       string                  `json:"executionRoleArn,omitempty"`
	Tags                   map[string]string       `json:"tags,omitempty"`
	LifecycleConfiguration *LifecycleSpec          `json:"lifecycleConfiguration,omitempty"`
	Endpoints              map[string]EndpointSpec `json:"endpoints,omitempty"`
}

// EnvVar is one environment variable of a runtime.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// LifecycleSpec bounds a runtime's sessions, in seconds.
type LifecycleSpec struct {
	IdleRuntimeSessionTimeout int `json:"idleRuntimeSessionTimeout,omitempty"`
	MaxLifetime               int `json:"maxLifetime,omitempty"`
}

// EndpointSpec is a named endpoint of a runtime pinned to a version.
type EndpointSpec struct {
	Version     int    `json:"version"`
	Description string `json:"description,omitempty"`
}

// Project is an AgentCore project on disk.
type Project struct {
	// Dir is the project's root, the directory that holds agentcore/.
	Dir  string
	Spec ProjectSpec
}

// Validation rules of AgentCore's schema (agentcore validate).
var (
	projectNameRE  = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,22}$`)
	runtimeNameRE  = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]{0,47}$`)
	entrypointRE   = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_/.-]*\.(py|ts|js)(:[a-zA-Z_][a-zA-Z0-9_]*)?$`)
	envVarNameRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	runtimeVersion = []string{"PYTHON_3_10", "PYTHON_3_11", "PYTHON_3_12", "PYTHON_3_13", "PYTHON_3_14", "NODE_18", "NODE_20", "NODE_22"}
	protocols      = []string{"HTTP", "MCP", "A2A", "AGUI"}
)

// headerPrefix is the prefix of custom headers a runtime may allowlist.
const headerPrefix = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-"

// ErrNoProject is returned when no agentcore/agentcore.json is found.
var ErrNoProject = errors.New("no agentcore/agentcore.json here or in any parent directory")

// FindProject looks for agentcore/agentcore.json in dir and its parents and
// loads the project it finds.
func FindProject(dir string) (*Project, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	for d := dir; ; {
		if _, err := os.Stat(filepath.Join(d, projectFile)); err == nil {
			return LoadProject(d)
		}
		parent := filepath.Dir(d)
		if parent == d {
			return nil, ErrNoProject
		}
		d = parent
	}
}

// LoadProject reads the project whose root is dir.
func LoadProject(dir string) (*Project, error) {
	path := filepath.Join(dir, projectFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read project: %w", err)
	}
	p := &Project{Dir: dir}
	if err := json.Unmarshal(data, &p.Spec); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %w", path, err)
	}
	return p, nil
}

// ValidationError lists what is wrong with a project's configuration.
type ValidationError struct {
	File     string
	Problems []string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%s is not valid:\n  - %s", e.File, strings.Join(e.Problems, "\n  - "))
}

// Validate checks the project against AgentCore's schema rules (those that
// `agentcore validate` applies to what Berth reads) and against what Berth
// needs to deploy it.
func (p *Project) Validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	s := p.Spec
	if !projectNameRE.MatchString(s.Name) {
		add("name %q must start with a letter and hold only letters and digits, at most 23 characters", s.Name)
	}
	if s.Version < 1 {
		add("version must be an integer of at least 1")
	}
	if s.ManagedBy != "" && s.ManagedBy != "CDK" {
		add("managedBy %q must be CDK", s.ManagedBy)
	}
	seen := map[string]bool{}
	for i, r := range s.Runtimes {
		at := fmt.Sprintf("runtimes[%d]", i)
		if r.Name != "" {
			at = fmt.Sprintf("runtime %q", r.Name)
		}
		if !runtimeNameRE.MatchString(r.Name) {
			add("%s: name %q must start with a letter and hold only letters, digits and underscores, at most 48 characters", at, r.Name)
		} else if n := len(s.Name) + 1 + len(r.Name); n > 48 {
			add("%s: the deployed name %s_%s is %d characters; AgentCore allows 48: shorten the project or runtime name", at, s.Name, r.Name, n)
		}
		if seen[r.Name] {
			add("%s: listed twice", at)
		}
		seen[r.Name] = true
		if r.Build != "CodeZip" && r.Build != "Container" {
			add("%s: build %q must be CodeZip or Container", at, r.Build)
		}
		if !entrypointRE.MatchString(r.Entrypoint) {
			add("%s: entrypoint %q must be a .py, .ts or .js file, optionally with :handler (like main.py)", at, r.Entrypoint)
		}
		if r.CodeLocation == "" {
			add("%s: codeLocation is required (like app/%s/)", at, r.Name)
		} else if filepath.IsAbs(r.CodeLocation) || strings.HasPrefix(filepath.Clean(r.CodeLocation), "..") {
			add("%s: codeLocation %q must be a path inside the project", at, r.CodeLocation)
		}
		if r.RuntimeVersion != "" && !slices.Contains(runtimeVersion, r.RuntimeVersion) {
			add("%s: runtimeVersion %q must be one of %s", at, r.RuntimeVersion, strings.Join(runtimeVersion, ", "))
		}
		for _, e := range r.EnvVars {
			if len(e.Name) > 255 || !envVarNameRE.MatchString(e.Name) {
				add("%s: envVars name %q must start with a letter or underscore and hold only letters, digits and underscores", at, e.Name)
			}
		}
		if r.NetworkMode != "" && r.NetworkMode != "PUBLIC" && r.NetworkMode != "VPC" {
			add("%s: networkMode %q must be PUBLIC or VPC", at, r.NetworkMode)
		}
		if r.Protocol != "" && !slices.Contains(protocols, r.Protocol) {
			add("%s: protocol %q must be one of %s", at, r.Protocol, strings.Join(protocols, ", "))
		}
		if n := len(r.RequestHeaderAllowlist); n > 20 {
			add("%s: requestHeaderAllowlist has %d headers; at most 20 are allowed", at, n)
		}
		for _, h := range r.RequestHeaderAllowlist {
			if h != "Authorization" && !strings.HasPrefix(h, headerPrefix) {
				add("%s: requestHeaderAllowlist entry %q must be Authorization or start with %s", at, h, headerPrefix)
			}
		}
		if lc := r.LifecycleConfiguration; lc != nil {
			for _, f := range []struct {
				name string
				v    int
			}{{"idleRuntimeSessionTimeout", lc.IdleRuntimeSessionTimeout}, {"maxLifetime", lc.MaxLifetime}} {
				if f.v != 0 && (f.v < 60 || f.v > 28800) {
					add("%s: lifecycleConfiguration.%s %d must be 60 to 28800 seconds", at, f.name, f.v)
				}
			}
			if lc.IdleRuntimeSessionTimeout != 0 && lc.MaxLifetime != 0 && lc.IdleRuntimeSessionTimeout > lc.MaxLifetime {
				add("%s: lifecycleConfiguration.idleRuntimeSessionTimeout must not exceed maxLifetime", at)
			}
		}
		for _, name := range sortedKeys(r.Endpoints) {
			e := r.Endpoints[name]
			switch {
			case !runtimeNameRE.MatchString(name):
				add("%s: endpoint name %q must start with a letter and hold only letters, digits and underscores", at, name)
			case name == "DEFAULT":
				add("%s: endpoint DEFAULT always follows the newest version and cannot be pinned", at)
			}
			if e.Version < 1 {
				add("%s: endpoint %q: version must be 1 or more", at, name)
			}
			if len(e.Description) > 256 {
				add("%s: endpoint %q: description is longer than 256 characters", at, name)
			}
		}
	}
	if len(problems) > 0 {
		return &ValidationError{File: filepath.Join(p.Dir, projectFile), Problems: problems}
	}
	return nil
}

// Runtime returns the runtime named name, or the project's only runtime if
// name is "".
func (p *Project) Runtime(name string) (*RuntimeSpec, error) {
	names := make([]string, len(p.Spec.Runtimes))
	for i := range p.Spec.Runtimes {
		if p.Spec.Runtimes[i].Name == name {
			return &p.Spec.Runtimes[i], nil
		}
		names[i] = p.Spec.Runtimes[i].Name
	}
	switch {
	case len(names) == 0:
		return nil, fail(ExitNotFound, "Add one to "+projectFile+" (see README.md), or start again with: berth create --name NAME",
			"project %s has no runtimes", p.Spec.Name)
	case name == "" && len(names) == 1:
		return &p.Spec.Runtimes[0], nil
	case name == "":
		return nil, usageError("project %s has several runtimes (%s): choose one with --runtime NAME", p.Spec.Name, strings.Join(names, ", "))
	}
	return nil, fail(ExitNotFound, "", "no runtime named %q in %s (runtimes: %s)", name, projectFile, strings.Join(names, ", "))
}

// DeployedName is the AgentCore runtime name of r: project_runtime, as the
// AgentCore CLI names it.
func (p *Project) DeployedName(r *RuntimeSpec) string { return p.Spec.Name + "_" + r.Name }

// Bucket is the code store bucket of the project's bundles.
func (p *Project) Bucket() string { return "berth-" + strings.ToLower(p.Spec.Name) }

// CodeDir is the absolute path of r's code location.
func (p *Project) CodeDir(r *RuntimeSpec) string {
	return filepath.Join(p.Dir, filepath.FromSlash(r.CodeLocation))
}

// DeployedState is agentcore/.cli/deployed-state.json, in AgentCore's shape:
// {"targets": {TARGET: {"resources": {"runtimes": {...},
// "runtimeEndpoints": {...}}}}}. Members Berth does not use are kept as
// they are when the file is rewritten.
type DeployedState struct {
	path    string
	raw     map[string]json.RawMessage
	targets map[string]map[string]json.RawMessage
}

// RuntimeState is what is recorded of a deployed runtime. The first members
// are AgentCore's; the code members are Berth's, for destroy.
type RuntimeState struct {
	RuntimeID      string `json:"runtimeId"`
	RuntimeArn     string `json:"runtimeArn"`
	RoleArn        string `json:"roleArn"`
	RuntimeVersion int    `json:"runtimeVersion,omitempty"`
	CodeBucket     string `json:"codeBucket,omitempty"`
	CodeKey        string `json:"codeKey,omitempty"`
	CodeVersionID  string `json:"codeVersionId,omitempty"`
	// ImageName is the name berth deploy --image uploaded the runtime's
	// image as (repository:tag), which destroy drops.
	ImageName string `json:"imageName,omitempty"`
}

// EndpointState is what is recorded of a deployed endpoint.
type EndpointState struct {
	EndpointID  string `json:"endpointId"`
	EndpointArn string `json:"endpointArn"`
}

// TargetResources is the part of a deployment target Berth reads and
// writes: its runtimes and their endpoints.
type TargetResources struct {
	Runtimes         map[string]RuntimeState  `json:"runtimes,omitempty"`
	RuntimeEndpoints map[string]EndpointState `json:"runtimeEndpoints,omitempty"`
}

// endpointKey is the runtimeEndpoints key of a runtime's endpoint.
func endpointKey(runtime, endpoint string) string { return runtime + "/" + endpoint }

// LoadDeployedState reads the project's deployed state; a missing file is
// an empty state.
func (p *Project) LoadDeployedState() (*DeployedState, error) {
	st := &DeployedState{path: filepath.Join(p.Dir, deployedFile), raw: map[string]json.RawMessage{},
		targets: map[string]map[string]json.RawMessage{}}
	data, err := os.ReadFile(st.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read deployed state: %w", err)
	}
	if err := json.Unmarshal(data, &st.raw); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %w (delete it if it is damaged; berth deploy finds runtimes by name)", st.path, err)
	}
	if t := st.raw["targets"]; len(t) > 0 {
		if err := json.Unmarshal(t, &st.targets); err != nil {
			return nil, fmt.Errorf("%s: targets: %w", st.path, err)
		}
	}
	return st, nil
}

// Resources returns what is recorded for target.
func (st *DeployedState) Resources(target string) (TargetResources, error) {
	var r TargetResources
	if raw := st.targets[target]["resources"]; len(raw) > 0 {
		if err := json.Unmarshal(raw, &r); err != nil {
			return r, fmt.Errorf("%s: targets.%s.resources: %w", st.path, target, err)
		}
	}
	if r.Runtimes == nil {
		r.Runtimes = map[string]RuntimeState{}
	}
	if r.RuntimeEndpoints == nil {
		r.RuntimeEndpoints = map[string]EndpointState{}
	}
	return r, nil
}

// SetResources records r for target and writes the file.
func (st *DeployedState) SetResources(target string, r TargetResources) error {
	t := st.targets[target]
	if t == nil {
		t = map[string]json.RawMessage{}
		st.targets[target] = t
	}
	var res map[string]json.RawMessage
	if raw := t["resources"]; len(raw) > 0 {
		if err := json.Unmarshal(raw, &res); err != nil {
			return fmt.Errorf("%s: targets.%s.resources: %w", st.path, target, err)
		}
	}
	if res == nil {
		res = map[string]json.RawMessage{}
	}
	for name, v := range map[string]any{"runtimes": r.Runtimes, "runtimeEndpoints": r.RuntimeEndpoints} {
		data, _ := json.Marshal(v)
		if string(data) == "{}" || string(data) == "null" {
			delete(res, name)
		} else {
			res[name] = data
		}
	}
	if len(res) == 0 {
		delete(t, "resources")
	} else {
		t["resources"], _ = json.Marshal(res)
	}
	if len(t) == 0 {
		delete(st.targets, target)
	}
	st.raw["targets"], _ = json.Marshal(st.targets)
	data, err := json.MarshalIndent(st.raw, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(st.path), 0o755); err != nil {
		return fmt.Errorf("write deployed state: %w", err)
	}
	return writeFileAtomic(st.path, append(data, '\n'), 0o644)
}

// writeFileAtomic writes data to path through a temporary file, so that a
// reader never sees half a file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
