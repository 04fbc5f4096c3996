package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
	"github.com/spf13/cobra"
)

// defaultRoleArn stands in for an execution role when agentcore.json names
// none: AgentCore requires one, Berth does not use it.
const defaultRoleArn = "arn:aws:iam::000000000000:role/BerthAgentRuntime"

// goBinary is the name of a compiled Go agent in its bundle.
const goBinary = "agent"

// desiredRuntime is what a runtime of agentcore.json should be deployed as.
type desiredRuntime struct {
	Description string
	RoleArn     string
	Bucket      string
	Key         string
	VersionID   string
	Runtime     string
	EntryPoint  []string
	NetworkMode string
	Protocol    string
	Lifecycle   LifecycleSpec
	Env         map[string]string
	Headers     []string
	// ContainerURI, if set, deploys this image instead of a code bundle.
	ContainerURI string
}

// normalizedLifecycle fills in AgentCore's defaults as the server does, so
// that an unset lifecycle compares equal to the deployed one.
func normalizedLifecycle(l *LifecycleSpec) LifecycleSpec {
	const idle, max = 900, 28800
	var out LifecycleSpec
	if l != nil {
		out = *l
	}
	switch {
	case out.IdleRuntimeSessionTimeout == 0 && out.MaxLifetime == 0:
		out = LifecycleSpec{IdleRuntimeSessionTimeout: idle, MaxLifetime: max}
	case out.IdleRuntimeSessionTimeout == 0:
		out.IdleRuntimeSessionTimeout = min(idle, out.MaxLifetime)
	case out.MaxLifetime == 0:
		out.MaxLifetime = max
	}
	return out
}

// codeRuntime is the API's code runtime for a runtimeVersion of
// agentcore.json (the API knows Node.js only as NODE_22) or, when it is
// unset, for the entry point's language.
func codeRuntime(version, entry string) string {
	switch {
	case strings.HasPrefix(version, "PYTHON_"):
		return version
	case strings.HasPrefix(version, "NODE_"):
		return "NODE_22"
	case strings.HasSuffix(entry, ".js") || strings.HasSuffix(entry, ".mjs") || strings.HasSuffix(entry, ".cjs"):
		return "NODE_22"
	}
	return "PYTHON_3_12"
}

// changes lists what differs between the desired runtime and a deployed
// version; none means a deploy has nothing to do.
func (d *desiredRuntime) changes(got *cp.GetAgentRuntimeOutput) []string {
	var out []string
	add := func(name string, differ bool) {
		if differ {
			out = append(out, name)
		}
	}
	var code cptypes.CodeConfiguration
	var s3 cptypes.S3Location
	var image string
	switch a := got.AgentRuntimeArtifact.(type) {
	case *cptypes.AgentRuntimeArtifactMemberCodeConfiguration:
		code = a.Value
		if loc, ok := code.Code.(*cptypes.CodeMemberS3); ok {
			s3 = loc.Value
		}
	case *cptypes.AgentRuntimeArtifactMemberContainerConfiguration:
		image = aws.ToString(a.Value.ContainerUri)
	}
	if d.ContainerURI != "" {
		add("image", image != d.ContainerURI)
	} else {
		add("code", aws.ToString(s3.Bucket) != d.Bucket || aws.ToString(s3.Prefix) != d.Key || aws.ToString(s3.VersionId) != d.VersionID)
		add("runtimeVersion", string(code.Runtime) != d.Runtime)
		add("entrypoint", !slices.Equal(code.EntryPoint, d.EntryPoint))
	}
	add("description", aws.ToString(got.Description) != d.Description)
	add("executionRoleArn", aws.ToString(got.RoleArn) != d.RoleArn)
	mode := ""
	if got.NetworkConfiguration != nil {
		mode = string(got.NetworkConfiguration.NetworkMode)
	}
	add("networkMode", mode != d.NetworkMode)
	proto := ""
	if got.ProtocolConfiguration != nil {
		proto = string(got.ProtocolConfiguration.ServerProtocol)
	}
	add("protocol", proto != d.Protocol)
	var lc LifecycleSpec
	if got.LifecycleConfiguration != nil {
		lc.IdleRuntimeSessionTimeout = int(aws.ToInt32(got.LifecycleConfiguration.IdleRuntimeSessionTimeout))
		lc.MaxLifetime = int(aws.ToInt32(got.LifecycleConfiguration.MaxLifetime))
	}
	add("lifecycleConfiguration", lc != d.Lifecycle)
	add("envVars", !maps.Equal(got.EnvironmentVariables, d.Env))
	var headers []string
	if h, ok := got.RequestHeaderConfiguration.(*cptypes.RequestHeaderConfigurationMemberRequestHeaderAllowlist); ok {
		headers = h.Value
	}
	add("requestHeaderAllowlist", !slices.Equal(headers, d.Headers))
	return out
}

func (d *desiredRuntime) artifact() cptypes.AgentRuntimeArtifact {
	if d.ContainerURI != "" {
		return &cptypes.AgentRuntimeArtifactMemberContainerConfiguration{Value: cptypes.ContainerConfiguration{
			ContainerUri: aws.String(d.ContainerURI)}}
	}
	return &cptypes.AgentRuntimeArtifactMemberCodeConfiguration{Value: cptypes.CodeConfiguration{
		Code: &cptypes.CodeMemberS3{Value: cptypes.S3Location{
			Bucket: aws.String(d.Bucket), Prefix: aws.String(d.Key), VersionId: aws.String(d.VersionID)}},
		Runtime:    cptypes.AgentManagedRuntimeType(d.Runtime),
		EntryPoint: d.EntryPoint,
	}}
}

func (d *desiredRuntime) lifecycle() *cptypes.LifecycleConfiguration {
	return &cptypes.LifecycleConfiguration{
		IdleRuntimeSessionTimeout: aws.Int32(int32(d.Lifecycle.IdleRuntimeSessionTimeout)),
		MaxLifetime:               aws.Int32(int32(d.Lifecycle.MaxLifetime)),
	}
}

func (d *desiredRuntime) headerConfig() cptypes.RequestHeaderConfiguration {
	if len(d.Headers) == 0 {
		return nil
	}
	return &cptypes.RequestHeaderConfigurationMemberRequestHeaderAllowlist{Value: d.Headers}
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

type deployOptions struct {
	runtimeFlags
	wait    bool
	timeout time.Duration
	// image is a container image tarball to deploy instead of the
	// runtime's code.
	image string
}

// deployResult is what deploying one runtime did.
type deployResult struct {
	Name             string           `json:"name"`
	AgentRuntimeName string           `json:"agentRuntimeName"`
	RuntimeID        string           `json:"runtimeId"`
	RuntimeArn       string           `json:"runtimeArn"`
	Version          string           `json:"version"`
	Status           string           `json:"status"`
	Action           string           `json:"action"` // created, updated or unchanged
	Changes          []string         `json:"changes,omitempty"`
	CodeVersionID    string           `json:"codeVersionId"`
	Endpoints        []endpointResult `json:"endpoints"`
}

type endpointResult struct {
	Name          string `json:"name"`
	Arn           string `json:"arn"`
	LiveVersion   string `json:"liveVersion,omitempty"`
	TargetVersion string `json:"targetVersion,omitempty"`
	Status        string `json:"status"`
	Action        string `json:"action,omitempty"`
}

func (a *app) deployCommand() *cobra.Command {
	var o deployOptions
	cmd := &cobra.Command{
		Use:   "deploy",
		Short: "Package the project's agents, upload them and create or update their runtimes",
		Long: `Deploy the project's runtimes to a Berth server. For each runtime of
agentcore/agentcore.json: package its code location into a zip (leaving out
what .berthignore and the defaults exclude; Go container projects are built
with the local Go toolchain instead), upload it, then create the runtime or
update it, wait until the new version is READY and set its named endpoints
(endpoints in agentcore.json). Lifecycle, environment variables, protocol and
header allowlist come from agentcore.json.

Deploying with nothing changed (same code, same settings) makes no new
version. What was deployed is recorded in agentcore/.cli/deployed-state.json.

With --image FILE.tar, the runtime runs that container image instead of its
code: a docker-archive (docker save) or a tar of an OCI image layout
(docker buildx build --output type=oci), built for the server's platform.
It is uploaded to the server as berth.local/NAME:latest (NAME being the
runtime's deployed name in lower case) and deployed as
berth.local/NAME@DIGEST, so every version keeps its own image.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			return s.deploy(cmd.Context(), o)
		},
	}
	o.runtimeFlags.addProject(cmd, false)
	cmd.Flags().BoolVar(&o.wait, "wait", true, "wait until each new version is READY")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for a version to be READY")
	cmd.Flags().StringVar(&o.image, "image", "", "deploy this container image tarball (docker save or an OCI layout tar) instead of the code")
	return cmd
}

func (s *remote) deploy(ctx context.Context, o deployOptions) error {
	p, err := findProject()
	if err != nil {
		return err
	}
	results, err := s.deployProject(ctx, p, o)
	if err != nil {
		return err
	}
	if s.out.json {
		return s.out.printJSON(map[string]any{"project": p.Spec.Name, "target": o.target, "runtimes": results})
	}
	for _, r := range results {
		s.out.printf("\nRuntime   %s  version %s  %s  (%s)\n", r.AgentRuntimeName, r.Version, s.out.paint(r.Status, statusColor(r.Status), false), r.Action)
		s.out.printf("ARN       %s\n", r.RuntimeArn)
		for _, e := range r.Endpoints {
			v := e.LiveVersion
			if v == "" {
				v = e.TargetVersion
			}
			s.out.printf("Endpoint  %-8s -> version %s  %s\n", e.Name, v, e.Arn)
		}
	}
	if len(results) > 0 {
		s.out.printf("\nInvoke it:  berth invoke \"Hello\"")
		if len(p.Spec.Runtimes) > 1 {
			s.out.printf(" --runtime %s", results[0].Name)
		}
		s.out.printf("\n")
	}
	return nil
}

// deployProject deploys the project's runtimes (the one o names, or all)
// and returns what it did for each.
func (s *remote) deployProject(ctx context.Context, p *Project, o deployOptions) ([]*deployResult, error) {
	if err := p.Validate(); err != nil {
		return nil, &Error{Code: ExitUsage, Err: err, Hint: "Fix agentcore/agentcore.json and run berth deploy again."}
	}
	specs := p.Spec.Runtimes
	if o.name != "" {
		r, err := p.Runtime(o.name)
		if err != nil {
			return nil, err
		}
		specs = []RuntimeSpec{*r}
	}
	if len(specs) == 0 {
		_, err := p.Runtime("")
		return nil, err
	}
	if o.image != "" && len(specs) > 1 {
		return nil, fail(ExitUsage, "Name the runtime to run it with --runtime NAME.",
			"--image deploys one runtime, and the project has %d", len(specs))
	}
	st, err := p.LoadDeployedState()
	if err != nil {
		return nil, err
	}
	res, err := st.Resources(o.target)
	if err != nil {
		return nil, err
	}
	if err := s.berth.Health(ctx); err != nil {
		return nil, serverError(s.Settings, "deploy", err)
	}
	s.out.notef("Deploying project %s to %s (target %s)\n", p.Spec.Name, s.Server.Value, o.target)
	var results []*deployResult
	for i := range specs {
		d := &deployer{remote: s, project: p, spec: &specs[i], state: st, res: &res, opts: o}
		r, err := d.run(ctx)
		if r != nil {
			results = append(results, r)
		}
		if err != nil {
			return results, err
		}
	}
	if o.name == "" {
		for _, name := range sortedKeys(res.Runtimes) {
			if !slices.ContainsFunc(p.Spec.Runtimes, func(r RuntimeSpec) bool { return r.Name == name }) {
				s.out.warnf("runtime %s is deployed (%s) but no longer in agentcore.json; `berth destroy` removes it\n",
					name, res.Runtimes[name].RuntimeID)
			}
		}
	}
	return results, nil
}

// deployer deploys one runtime of a project.
type deployer struct {
	*remote
	project *Project
	spec    *RuntimeSpec
	state   *DeployedState
	res     *TargetResources
	opts    deployOptions
	// missingEntry is set when the entry point is not in the bundle
	// (left out by .berthignore, say): preparation will fail.
	missingEntry string
}

func (d *deployer) notef(format string, args ...any) {
	d.out.notef("%s: "+format, append([]any{d.spec.Name}, args...)...)
}

func (d *deployer) run(ctx context.Context) (*deployResult, error) {
	p, spec := d.project, d.spec
	want := &desiredRuntime{
		Description: spec.Description,
		RoleArn:     spec.ExecutionRoleArn,
		NetworkMode: spec.NetworkMode,
		Protocol:    spec.Protocol,
		Lifecycle:   normalizedLifecycle(spec.LifecycleConfiguration),
		Env:         map[string]string{},
		Headers:     spec.RequestHeaderAllowlist,
	}
	if want.RoleArn == "" {
		want.RoleArn = defaultRoleArn
	}
	if want.NetworkMode == "" {
		want.NetworkMode = "PUBLIC"
	}
	if want.Protocol == "" {
		want.Protocol = "HTTP"
	}
	for _, e := range spec.EnvVars {
		want.Env[e.Name] = e.Value
	}
	var artifactID, imageName string
	if d.opts.image != "" {
		obj, name, err := d.uploadImage(ctx)
		if err != nil {
			return nil, err
		}
		want.ContainerURI, artifactID, imageName = obj.ContainerURI, obj.Digest, name
	} else {
		bundle, entry, err := d.pack(ctx)
		if err != nil {
			return nil, err
		}
		want.Bucket, want.Key, want.VersionID = p.Bucket(), spec.Name+".zip", bundle.Digest
		want.Runtime, want.EntryPoint = codeRuntime(spec.RuntimeVersion, entry[0]), entry
		if err := d.upload(ctx, want, bundle); err != nil {
			return nil, err
		}
		artifactID = bundle.Digest
	}

	result := &deployResult{Name: spec.Name, AgentRuntimeName: p.DeployedName(spec), CodeVersionID: artifactID}
	current, err := d.current(ctx)
	if err != nil {
		return nil, err
	}
	var version string
	switch {
	case current == nil:
		d.notef("creating runtime %s\n", result.AgentRuntimeName)
		out, err := d.control.CreateAgentRuntime(ctx, &cp.CreateAgentRuntimeInput{
			AgentRuntimeName:           aws.String(result.AgentRuntimeName),
			AgentRuntimeArtifact:       want.artifact(),
			RoleArn:                    aws.String(want.RoleArn),
			Description:                optional(want.Description),
			NetworkConfiguration:       &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkMode(want.NetworkMode)},
			ProtocolConfiguration:      &cptypes.ProtocolConfiguration{ServerProtocol: cptypes.ServerProtocol(want.Protocol)},
			LifecycleConfiguration:     want.lifecycle(),
			EnvironmentVariables:       want.Env,
			RequestHeaderConfiguration: want.headerConfig(),
			Tags:                       spec.Tags,
		})
		if err != nil {
			return nil, serverError(d.Settings, "create runtime "+result.AgentRuntimeName, err)
		}
		result.Action, result.RuntimeID, result.RuntimeArn = "created", aws.ToString(out.AgentRuntimeId), aws.ToString(out.AgentRuntimeArn)
		version = aws.ToString(out.AgentRuntimeVersion)
	default:
		result.RuntimeID, result.RuntimeArn = aws.ToString(current.AgentRuntimeId), aws.ToString(current.AgentRuntimeArn)
		result.Changes = want.changes(current)
		failed := strings.HasSuffix(string(current.Status), "FAILED")
		if len(result.Changes) == 0 && !failed {
			result.Action, version = "unchanged", aws.ToString(current.AgentRuntimeVersion)
			d.notef("unchanged (version %s)\n", version)
			break
		}
		if len(result.Changes) == 0 {
			d.notef("version %s is %s: trying again\n", aws.ToString(current.AgentRuntimeVersion), current.Status)
		} else {
			d.notef("updating %s: %s changed\n", result.AgentRuntimeName, strings.Join(result.Changes, ", "))
		}
		out, err := d.control.UpdateAgentRuntime(ctx, &cp.UpdateAgentRuntimeInput{
			AgentRuntimeId:             current.AgentRuntimeId,
			AgentRuntimeArtifact:       want.artifact(),
			RoleArn:                    aws.String(want.RoleArn),
			Description:                optional(want.Description),
			NetworkConfiguration:       &cptypes.NetworkConfiguration{NetworkMode: cptypes.NetworkMode(want.NetworkMode)},
			ProtocolConfiguration:      &cptypes.ProtocolConfiguration{ServerProtocol: cptypes.ServerProtocol(want.Protocol)},
			LifecycleConfiguration:     want.lifecycle(),
			EnvironmentVariables:       want.Env,
			RequestHeaderConfiguration: want.headerConfig(),
		})
		if err != nil {
			return nil, serverError(d.Settings, "update runtime "+result.AgentRuntimeName, err)
		}
		result.Action, version = "updated", aws.ToString(out.AgentRuntimeVersion)
	}
	result.Version = version
	d.res.Runtimes[spec.Name] = RuntimeState{RuntimeID: result.RuntimeID, RuntimeArn: result.RuntimeArn, RoleArn: want.RoleArn,
		RuntimeVersion: atoi(version), CodeBucket: want.Bucket, CodeKey: want.Key, CodeVersionID: want.VersionID, ImageName: imageName}
	if err := d.state.SetResources(d.opts.target, *d.res); err != nil {
		return result, err
	}

	status := "CREATING"
	if result.Action == "unchanged" || !d.opts.wait {
		got, err := d.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(result.RuntimeID), AgentRuntimeVersion: aws.String(version)})
		if err != nil {
			return result, serverError(d.Settings, "runtime "+result.RuntimeID, err)
		}
		status = string(got.Status)
	} else {
		got, err := d.waitReady(ctx, result.RuntimeID, version)
		if err != nil {
			return result, err
		}
		status = string(got.Status)
	}
	result.Status = status
	eps, err := d.reconcileEndpoints(ctx, result.RuntimeID, version)
	result.Endpoints = eps
	return result, err
}

// atoi parses a version number; 0 if it is not one.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// pack packages the runtime's code and returns the bundle and the entry
// point to run it with.
func (d *deployer) pack(ctx context.Context) (*Bundle, []string, error) {
	spec := d.spec
	dir := d.project.CodeDir(spec)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, nil, fail(ExitUsage, "Fix codeLocation in agentcore/agentcore.json.",
			"runtime %s: code location %s is not a directory", spec.Name, spec.CodeLocation)
	}
	entry, _, _ := strings.Cut(spec.Entrypoint, ":")
	if spec.Build == "Container" {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return d.buildGo(ctx, dir)
		}
		if !strings.HasSuffix(entry, ".py") && !strings.HasSuffix(entry, ".js") {
			return nil, nil, fail(ExitUsage, "Build the image (docker build, then docker save -o img.tar IMAGE) and run berth deploy --image img.tar, or set build to CodeZip with a .py or .js entrypoint.",
				"runtime %s: Berth does not build container images", spec.Name)
		}
		d.out.warnf("%s: Berth does not build container images; deploying %s as a code bundle run by %s (dependencies the Dockerfile installs must be vendored). To run the Dockerfile's image, build it and use berth deploy --image img.tar\n",
			spec.Name, spec.CodeLocation, entry)
	}
	if strings.HasSuffix(entry, ".ts") {
		js := strings.TrimSuffix(entry, ".ts") + ".js"
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(js))); err != nil {
			return nil, nil, fail(ExitUsage,
				fmt.Sprintf("Compile it to JavaScript first, e.g.:  npx esbuild %s --bundle --platform=node --format=esm --outfile=%s", entry, js),
				"runtime %s: entrypoint %s is TypeScript, and Berth runs JavaScript", spec.Name, entry)
		}
		entry = js
	}
	if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(entry))); errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fail(ExitUsage, "Fix entrypoint in agentcore/agentcore.json.",
			"runtime %s: entrypoint %s is not in %s", spec.Name, entry, spec.CodeLocation)
	}
	b, err := PackDir(dir)
	if err != nil {
		return nil, nil, err
	}
	d.notef("packaged %s (%d files, %s, %s)\n", spec.CodeLocation, b.Files, humanSize(int64(len(b.Zip))), shortDigest(b.Digest))
	if !slices.Contains(b.Names, entry) {
		d.missingEntry = entry
	}
	return b, []string{entry}, nil
}

// buildGo builds a Go agent for Linux with the local toolchain and packs
// the executable: Berth runs it as the bundle's entry point.
func (d *deployer) buildGo(ctx context.Context, dir string) (*Bundle, []string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, nil, fail(ExitError, "Install Go (https://go.dev/dl) or put it on PATH.",
			"runtime %s: building a Go agent needs the Go toolchain", d.spec.Name)
	}
	tmp, err := os.MkdirTemp("", "berth-build-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, goBinary)
	d.notef("building %s with %s (GOOS=linux CGO_ENABLED=0)\n", d.spec.CodeLocation, goTool)
	// -trimpath and no VCS stamp make the build reproducible, so an
	// unchanged agent gives the same digest and no new version.
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, nil, fail(ExitError, strings.TrimSpace(string(out)), "runtime %s: go build failed: %v", d.spec.Name, err)
	}
	b, err := packFile(bin, goBinary)
	if err != nil {
		return nil, nil, err
	}
	d.notef("built %s (%s, %s)\n", goBinary, humanSize(int64(len(b.Zip))), shortDigest(b.Digest))
	return b, []string{goBinary}, nil
}

// upload puts the bundle in Berth's code store unless it is already the
// current object of its bucket and key.
func (d *deployer) upload(ctx context.Context, want *desiredRuntime, b *Bundle) error {
	where := want.Bucket + "/" + want.Key
	if obj, err := d.berth.StatCode(ctx, want.Bucket, want.Key); err == nil && obj.VersionID == b.Digest {
		d.notef("code unchanged in %s\n", where)
		return nil
	} else if err != nil && !isNotFound(err) {
		return serverError(d.Settings, "code "+where, err)
	}
	obj, err := d.berth.PutCode(ctx, want.Bucket, want.Key, b.Zip)
	if err != nil {
		return serverError(d.Settings, "upload code to "+where, err)
	}
	if obj.VersionID != b.Digest {
		return fmt.Errorf("upload code to %s: the server stored %s, not %s", where, obj.VersionID, b.Digest)
	}
	d.notef("uploaded to %s\n", where)
	return nil
}

// uploadImage uploads the image tarball of --image and returns what the
// server made of it, with a containerUri pinned to its digest.
func (d *deployer) uploadImage(ctx context.Context) (ImageObject, string, error) {
	data, err := os.ReadFile(d.opts.image)
	if err != nil {
		return ImageObject{}, "", fail(ExitUsage, "Give --image a docker save tarball or a tar of an OCI image layout.", "--image: %v", err)
	}
	name := strings.ToLower(d.project.DeployedName(d.spec)) + ":latest"
	d.notef("uploading image %s (%s)\n", d.opts.image, humanSize(int64(len(data))))
	obj, err := d.berth.PutImage(ctx, name, data)
	if err != nil {
		return ImageObject{}, "", serverError(d.Settings, "upload image "+d.opts.image, err)
	}
	obj.ContainerURI = strings.TrimSuffix(obj.ContainerURI, ":latest") + "@" + obj.Digest
	d.notef("uploaded as %s (%s, %d layers, %s compressed)\n", obj.ContainerURI, obj.Architecture, obj.Layers, humanSize(obj.CompressedSize))
	return obj, name, nil
}

// current returns the deployed runtime's newest version, or nil if the
// runtime is not deployed: not recorded in the deployed state, nor found on
// the server by its name.
func (d *deployer) current(ctx context.Context) (*cp.GetAgentRuntimeOutput, error) {
	id := d.res.Runtimes[d.spec.Name].RuntimeID
	if id == "" {
		name := d.project.DeployedName(d.spec)
		found, err := d.findByName(ctx, name)
		if err != nil || found == nil {
			return nil, err
		}
		d.notef("found runtime %s on the server (%s)\n", name, found.id)
		id = found.id
	}
	out, err := d.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id)})
	if isNotFound(err) {
		d.notef("runtime %s recorded in %s no longer exists: creating it again\n", id, deployedFile)
		delete(d.res.Runtimes, d.spec.Name)
		return nil, nil
	}
	if err != nil {
		return nil, serverError(d.Settings, "runtime "+id, err)
	}
	return out, nil
}

// waitReady polls a version until it is READY or has failed, showing its
// progress.
func (d *deployer) waitReady(ctx context.Context, id, version string) (*cp.GetAgentRuntimeOutput, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.timeout)
	defer cancel()
	prog := d.out.progress()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := d.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id), AgentRuntimeVersion: aws.String(version)})
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			prog.done(fmt.Sprintf("version %s not READY after %s", version, d.opts.timeout))
			return nil, fail(ExitError, "It may still become READY: check with  berth status", "runtime %s version %s is still preparing after %s", d.spec.Name, version, d.opts.timeout)
		}
		if err != nil {
			return nil, serverError(d.Settings, "runtime "+id, err)
		}
		switch got.Status {
		case cptypes.AgentRuntimeStatusReady:
			prog.done(fmt.Sprintf("%s version %s %s in %.1fs", d.spec.Name, version, d.out.paint("READY", green, true), time.Since(prog.start).Seconds()))
			return got, nil
		case cptypes.AgentRuntimeStatusCreateFailed, cptypes.AgentRuntimeStatusUpdateFailed:
			prog.done(fmt.Sprintf("%s version %s %s", d.spec.Name, version, d.out.paint(string(got.Status), red, true)))
			hint := "Fix the problem and run berth deploy again (the runtime stays recorded; berth destroy removes it)."
			if d.missingEntry != "" {
				hint = fmt.Sprintf("The entrypoint %s is not in the bundle: is it listed in %s%s?\n", d.missingEntry, d.spec.CodeLocation, IgnoreFile) + hint
			}
			if tail := d.logTail(ctx, id, ""); tail != "" {
				hint = "The agent's last log lines:\n" + tail + "\n" + hint
			}
			return got, &Error{Code: ExitAgentFailed,
				Err:  fmt.Errorf("runtime %s version %s is %s: %s", d.spec.Name, version, got.Status, aws.ToString(got.FailureReason)),
				Hint: hint}
		}
		prog.set(fmt.Sprintf("%s version %s: %s", d.spec.Name, version, got.Status))
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// logTail returns the last lines an agent's sessions logged, indented, or ""
// if there are none or they cannot be read. The server writes a log as the
// agent prints, so an empty one is read again after a moment.
func (s *remote) logTail(ctx context.Context, runtimeID, sessionID string) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var lines []string
	for attempt := 0; attempt < 3 && len(lines) == 0; attempt++ {
		if attempt > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		err := s.berth.Logs(ctx, LogQuery{RuntimeID: runtimeID, SessionID: sessionID, Tail: 20}, func(l LogLine) error {
			lines = append(lines, fmt.Sprintf("  %s %s| %s", l.Time.Local().Format("15:04:05.000"), l.Stream, l.Line))
			return nil
		})
		if err != nil {
			return ""
		}
	}
	return strings.Join(lines, "\n")
}

// reconcileEndpoints makes the runtime's named endpoints what agentcore.json
// says: created if missing, moved to their version if elsewhere. Endpoints
// not in agentcore.json are left alone.
func (d *deployer) reconcileEndpoints(ctx context.Context, id, newest string) ([]endpointResult, error) {
	var out []endpointResult
	names := append([]string{"DEFAULT"}, sortedKeys(d.spec.Endpoints)...)
	for _, name := range names {
		want, pinned := d.spec.Endpoints[name]
		var version string
		var action string
		got, err := d.control.GetAgentRuntimeEndpoint(ctx, &cp.GetAgentRuntimeEndpointInput{AgentRuntimeId: aws.String(id), EndpointName: aws.String(name)})
		switch {
		case !pinned && err != nil:
			return out, serverError(d.Settings, "endpoint "+name, err)
		case !pinned:
		case want.Version > atoi(newest):
			return out, fail(ExitUsage, "Fix endpoints in agentcore/agentcore.json.",
				"runtime %s: endpoint %s pins version %d, but the newest version is %s", d.spec.Name, name, want.Version, newest)
		case isNotFound(err):
			version = strconv.Itoa(want.Version)
			_, err = d.control.CreateAgentRuntimeEndpoint(ctx, &cp.CreateAgentRuntimeEndpointInput{AgentRuntimeId: aws.String(id),
				Name: aws.String(name), AgentRuntimeVersion: aws.String(version), Description: optional(want.Description)})
			if err != nil {
				return out, serverError(d.Settings, "create endpoint "+name, err)
			}
			action = "created"
		case err != nil:
			return out, serverError(d.Settings, "endpoint "+name, err)
		default:
			version = strconv.Itoa(want.Version)
			if aws.ToString(got.TargetVersion) != version || (want.Description != "" && aws.ToString(got.Description) != want.Description) {
				_, err = d.control.UpdateAgentRuntimeEndpoint(ctx, &cp.UpdateAgentRuntimeEndpointInput{AgentRuntimeId: aws.String(id),
					EndpointName: aws.String(name), AgentRuntimeVersion: aws.String(version), Description: optional(want.Description)})
				if err != nil {
					return out, serverError(d.Settings, "update endpoint "+name, err)
				}
				action = "updated"
			}
		}
		if action != "" {
			got, err = d.control.GetAgentRuntimeEndpoint(ctx, &cp.GetAgentRuntimeEndpointInput{AgentRuntimeId: aws.String(id), EndpointName: aws.String(name)})
			if err != nil {
				return out, serverError(d.Settings, "endpoint "+name, err)
			}
			d.notef("endpoint %s -> version %s (%s)\n", name, version, action)
		}
		out = append(out, endpointResult{Name: name, Arn: aws.ToString(got.AgentRuntimeEndpointArn), LiveVersion: aws.ToString(got.LiveVersion),
			TargetVersion: aws.ToString(got.TargetVersion), Status: string(got.Status), Action: action})
		d.res.RuntimeEndpoints[endpointKey(d.spec.Name, name)] = EndpointState{EndpointID: aws.ToString(got.Id), EndpointArn: aws.ToString(got.AgentRuntimeEndpointArn)}
	}
	return out, d.state.SetResources(d.opts.target, *d.res)
}
