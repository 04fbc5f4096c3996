package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	"github.com/spf13/cobra"
)

// DefaultTarget is the deployed-state target Berth records deployments
// under. It is not AgentCore's "default", so that deploying a project to
// Berth never overwrites what `agentcore deploy` recorded for AWS.
const DefaultTarget = "berth"

// runtimeFlags select a runtime: by name in the project, or by ID or ARN.
type runtimeFlags struct {
	name   string
	id     string
	target string
}

// add registers --runtime, --runtime-id and --target on cmd (and, if
// persistent, its subcommands).
func (f *runtimeFlags) add(cmd *cobra.Command, persistent bool) {
	f.addProject(cmd, persistent)
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	fs.StringVar(&f.id, "runtime-id", "", "runtime ID or ARN, to use a runtime outside a project")
}

// addProject registers --runtime and --target: for commands that work on a
// project's runtimes only.
func (f *runtimeFlags) addProject(cmd *cobra.Command, persistent bool) {
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	fs.StringVarP(&f.name, "runtime", "r", "", "runtime name in agentcore.json (default: the project's only runtime)")
	fs.StringVar(&f.target, "target", DefaultTarget, "deployment target in agentcore/.cli/deployed-state.json")
	cmd.RegisterFlagCompletionFunc("runtime", completeRuntimes)
}

// completeRuntimes completes --runtime with the runtimes of the project the
// shell is in.
func completeRuntimes(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	p, err := FindProject(wd)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, r := range p.Spec.Runtimes {
		names = append(names, r.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// runtimeRef is a deployed runtime a command works on.
type runtimeRef struct {
	// Name is the runtime's name in agentcore.json; "" outside a project.
	Name    string
	Project *Project
	Spec    *RuntimeSpec
	ID, ARN string
}

// label names the runtime for people.
func (r *runtimeRef) label() string {
	if r.Name != "" {
		return r.Name
	}
	return r.ID
}

// findProject finds the project the working directory is in.
func findProject() (*Project, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	p, err := FindProject(wd)
	if errors.Is(err, ErrNoProject) {
		return nil, &Error{Code: ExitNotFound, Err: fmt.Errorf("not in an agent project: %w", err),
			Hint: "Create one with:  berth create --name MyAgent\n" +
				"or cd into a project made by `berth create` or `agentcore create`; outside a project, name a runtime with --runtime-id."}
	}
	return p, err
}

// runtimeIDOf returns the runtime ID in an ID or a runtime ARN.
func runtimeIDOf(idOrARN string) string {
	if strings.HasPrefix(idOrARN, "arn:") {
		if _, id, ok := strings.Cut(idOrARN, ":runtime/"); ok {
			id, _, _ = strings.Cut(id, "/")
			return id
		}
	}
	return idOrARN
}

// resolveRuntime finds the runtime f selects: --runtime-id, else the
// project's runtime (--runtime, or its only one) as recorded in the deployed
// state, or found by its deployed name.
func (s *remote) resolveRuntime(ctx context.Context, f runtimeFlags) (*runtimeRef, error) {
	if f.id != "" {
		id := runtimeIDOf(f.id)
		out, err := s.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id)})
		if err != nil {
			return nil, serverError(s.Settings, "runtime "+f.id, err)
		}
		return &runtimeRef{ID: aws.ToString(out.AgentRuntimeId), ARN: aws.ToString(out.AgentRuntimeArn)}, nil
	}
	p, err := findProject()
	if err != nil {
		return nil, err
	}
	spec, err := p.Runtime(f.name)
	if err != nil {
		return nil, err
	}
	ref := &runtimeRef{Name: spec.Name, Project: p, Spec: spec}
	st, err := p.LoadDeployedState()
	if err != nil {
		return nil, err
	}
	res, err := st.Resources(f.target)
	if err != nil {
		return nil, err
	}
	if rs, ok := res.Runtimes[spec.Name]; ok && rs.RuntimeID != "" {
		ref.ID, ref.ARN = rs.RuntimeID, rs.RuntimeArn
		return ref, nil
	}
	found, err := s.findByName(ctx, p.DeployedName(spec))
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, &Error{Code: ExitNotFound, Err: fmt.Errorf("runtime %s of project %s is not deployed (target %s)", spec.Name, p.Spec.Name, f.target),
			Hint: "Deploy it with:  berth deploy"}
	}
	ref.ID, ref.ARN = found.id, found.arn
	return ref, nil
}

type foundRuntime struct{ id, arn string }

// findByName looks for a runtime by its AgentCore name.
func (s *remote) findByName(ctx context.Context, name string) (*foundRuntime, error) {
	pages := cp.NewListAgentRuntimesPaginator(s.control, &cp.ListAgentRuntimesInput{})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, serverError(s.Settings, "list runtimes", err)
		}
		for _, r := range page.AgentRuntimes {
			if aws.ToString(r.AgentRuntimeName) == name {
				return &foundRuntime{id: aws.ToString(r.AgentRuntimeId), arn: aws.ToString(r.AgentRuntimeArn)}, nil
			}
		}
	}
	return nil, nil
}

// projectRuntimes returns the runtimes a project-wide command works on: the
// one --runtime or --runtime-id names, else every runtime of the project
// that is deployed. Outside a project without --runtime-id it returns nil.
func (s *remote) projectRuntimes(ctx context.Context, f runtimeFlags) ([]*runtimeRef, *Project, error) {
	if f.id != "" || f.name != "" {
		r, err := s.resolveRuntime(ctx, f)
		if err != nil {
			return nil, nil, err
		}
		return []*runtimeRef{r}, r.Project, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil, nil, err
	}
	p, err := FindProject(wd)
	if errors.Is(err, ErrNoProject) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var refs []*runtimeRef
	for i := range p.Spec.Runtimes {
		r, err := s.resolveRuntime(ctx, runtimeFlags{name: p.Spec.Runtimes[i].Name, target: f.target})
		var e *Error
		if errors.As(err, &e) && e.Code == ExitNotFound {
			refs = append(refs, &runtimeRef{Name: p.Spec.Runtimes[i].Name, Project: p, Spec: &p.Spec.Runtimes[i]})
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		refs = append(refs, r)
	}
	return refs, p, nil
}
