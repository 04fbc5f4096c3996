package cli

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	cp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol"
	cptypes "github.com/aws/aws-sdk-go-v2/service/bedrockagentcorecontrol/types"
	"github.com/spf13/cobra"
)

// runtimeStatus is what `berth status` shows of a runtime.
type runtimeStatus struct {
	Name             string           `json:"name,omitempty"`
	AgentRuntimeName string           `json:"agentRuntimeName,omitempty"`
	RuntimeID        string           `json:"runtimeId,omitempty"`
	RuntimeArn       string           `json:"runtimeArn,omitempty"`
	Status           string           `json:"status"`
	Version          string           `json:"version,omitempty"`
	FailureReason    string           `json:"failureReason,omitempty"`
	LastUpdatedAt    *time.Time       `json:"lastUpdatedAt,omitempty"`
	Endpoints        []endpointResult `json:"endpoints,omitempty"`
	Sessions         int              `json:"sessions"`
}

func (a *app) statusCommand() *cobra.Command {
	var f runtimeFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the project's runtimes: status, version, ARN, endpoints and live sessions",
		Long: `Show the project's runtimes with their status, newest version, ARN,
endpoints and number of live sessions. Outside a project it lists every
runtime on the server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			return s.status(cmd.Context(), f)
		},
	}
	f.add(cmd, false)
	return cmd
}

func (s *remote) status(ctx context.Context, f runtimeFlags) error {
	refs, p, err := s.projectRuntimes(ctx, f)
	if err != nil {
		return err
	}
	if refs == nil && p == nil {
		// Outside a project: every runtime on the server.
		pages := cp.NewListAgentRuntimesPaginator(s.control, &cp.ListAgentRuntimesInput{})
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return serverError(s.Settings, "list runtimes", err)
			}
			for _, r := range page.AgentRuntimes {
				refs = append(refs, &runtimeRef{ID: aws.ToString(r.AgentRuntimeId), ARN: aws.ToString(r.AgentRuntimeArn)})
			}
		}
	}
	sessions, err := s.berth.Sessions(ctx, "")
	if err != nil {
		return serverError(s.Settings, "list sessions", err)
	}
	var out []runtimeStatus
	for _, r := range refs {
		st := runtimeStatus{Name: r.Name, RuntimeID: r.ID, RuntimeArn: r.ARN, Status: "NOT_DEPLOYED"}
		if r.Project != nil {
			st.AgentRuntimeName = r.Project.DeployedName(r.Spec)
		}
		if r.ID != "" {
			got, err := s.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(r.ID)})
			switch {
			case isNotFound(err):
				st.Status = "NOT_FOUND"
			case err != nil:
				return serverError(s.Settings, "runtime "+r.ID, err)
			default:
				st.AgentRuntimeName, st.Status, st.Version = aws.ToString(got.AgentRuntimeName), string(got.Status), aws.ToString(got.AgentRuntimeVersion)
				st.FailureReason, st.LastUpdatedAt = aws.ToString(got.FailureReason), got.LastUpdatedAt
				if st.Endpoints, err = s.endpoints(ctx, r.ID); err != nil {
					return err
				}
			}
			for _, ss := range sessions {
				if ss.RuntimeID == r.ID {
					st.Sessions++
				}
			}
		}
		out = append(out, st)
	}
	if s.out.json {
		res := map[string]any{"server": s.Server.Value, "runtimes": out}
		if p != nil {
			res["project"] = p.Spec.Name
		}
		return s.out.printJSON(res)
	}
	if p != nil {
		s.out.printf("Project %s (%s) on %s\n", p.Spec.Name, p.Dir, s.Server.Value)
	} else {
		s.out.printf("Runtimes on %s\n", s.Server.Value)
	}
	if len(out) == 0 {
		s.out.printf("  none yet\n")
	}
	for _, st := range out {
		name := st.Name
		if name == "" {
			name = st.AgentRuntimeName
		}
		s.out.printf("\n%s  %s", name, s.out.paint(st.Status, statusColor(st.Status), false))
		if st.Version != "" {
			s.out.printf("  version %s", st.Version)
		}
		s.out.printf("\n")
		switch st.Status {
		case "NOT_DEPLOYED":
			s.out.printf("  not deployed: berth deploy\n")
			continue
		case "NOT_FOUND":
			s.out.printf("  %s no longer exists on the server: berth deploy creates it again\n", st.RuntimeID)
			continue
		}
		s.out.printf("  ARN        %s\n", st.RuntimeArn)
		if st.FailureReason != "" {
			s.out.printf("  failure    %s\n", st.FailureReason)
		}
		for _, e := range st.Endpoints {
			s.out.printf("  endpoint   %-10s -> %s  %s\n", e.Name, endpointVersion(e), s.out.paint(e.Status, statusColor(e.Status), false))
		}
		s.out.printf("  sessions   %d live\n", st.Sessions)
	}
	return nil
}

// endpointVersion describes where an endpoint points: "3", or "2 (moving
// to 3)".
func endpointVersion(e endpointResult) string {
	switch {
	case e.LiveVersion == "":
		return "version " + e.TargetVersion
	case e.TargetVersion != "" && e.TargetVersion != e.LiveVersion:
		return "version " + e.LiveVersion + " (moving to " + e.TargetVersion + ")"
	}
	return "version " + e.LiveVersion
}

// endpoints lists a runtime's endpoints, DEFAULT first.
func (s *remote) endpoints(ctx context.Context, id string) ([]endpointResult, error) {
	var out []endpointResult
	pages := cp.NewListAgentRuntimeEndpointsPaginator(s.control, &cp.ListAgentRuntimeEndpointsInput{AgentRuntimeId: aws.String(id)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, serverError(s.Settings, "list endpoints of "+id, err)
		}
		for _, e := range page.RuntimeEndpoints {
			out = append(out, endpointResult{Name: aws.ToString(e.Name), Arn: aws.ToString(e.AgentRuntimeEndpointArn),
				LiveVersion: aws.ToString(e.LiveVersion), TargetVersion: aws.ToString(e.TargetVersion), Status: string(e.Status)})
		}
	}
	slices.SortFunc(out, func(a, b endpointResult) int {
		switch {
		case a.Name == b.Name:
			return 0
		case a.Name == "DEFAULT":
			return -1
		case b.Name == "DEFAULT":
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

func (a *app) versionsCommand() *cobra.Command {
	var f runtimeFlags
	cmd := &cobra.Command{
		Use:   "versions",
		Short: "List a runtime's versions and the endpoints that point at them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ref, err := s.resolveRuntime(ctx, f)
			if err != nil {
				return err
			}
			type version struct {
				Version     string    `json:"version"`
				Status      string    `json:"status"`
				Description string    `json:"description,omitempty"`
				UpdatedAt   time.Time `json:"lastUpdatedAt"`
				Endpoints   []string  `json:"endpoints"`
			}
			eps, err := s.endpoints(ctx, ref.ID)
			if err != nil {
				return err
			}
			var vs []version
			pages := cp.NewListAgentRuntimeVersionsPaginator(s.control, &cp.ListAgentRuntimeVersionsInput{AgentRuntimeId: aws.String(ref.ID)})
			for pages.HasMorePages() {
				page, err := pages.NextPage(ctx)
				if err != nil {
					return serverError(s.Settings, "list versions of "+ref.label(), err)
				}
				for _, r := range page.AgentRuntimes {
					v := version{Version: aws.ToString(r.AgentRuntimeVersion), Status: string(r.Status),
						Description: aws.ToString(r.Description), UpdatedAt: aws.ToTime(r.LastUpdatedAt), Endpoints: []string{}}
					for _, e := range eps {
						if e.LiveVersion == v.Version || (e.LiveVersion == "" && e.TargetVersion == v.Version) {
							v.Endpoints = append(v.Endpoints, e.Name)
						}
					}
					vs = append(vs, v)
				}
			}
			slices.SortFunc(vs, func(a, b version) int { return atoi(b.Version) - atoi(a.Version) })
			if s.out.json {
				return s.out.printJSON(map[string]any{"runtimeId": ref.ID, "versions": vs})
			}
			rows := make([][]string, len(vs))
			for i, v := range vs {
				rows[i] = []string{v.Version, s.out.paint(v.Status, statusColor(v.Status), false), v.UpdatedAt.Local().Format(time.DateTime), strings.Join(v.Endpoints, ", ")}
			}
			s.out.table([]string{"VERSION", "STATUS", "UPDATED", "ENDPOINTS"}, rows)
			return nil
		},
	}
	f.add(cmd, false)
	return cmd
}

func (a *app) endpointsCommand() *cobra.Command {
	var f runtimeFlags
	var description string
	cmd := &cobra.Command{
		Use:   "endpoints",
		Short: "List, create, update or delete a runtime's named endpoints",
		Long: `List, create, update or delete a runtime's named endpoints. An endpoint is a
name callers use (berth invoke --endpoint NAME) pinned to one version;
DEFAULT always follows the newest version.

Endpoints listed in agentcore.json (runtimes[].endpoints) are set again by
every berth deploy; change them there to make a change stick.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.listEndpoints(cmd, f)
		},
	}
	f.add(cmd, true)
	list := &cobra.Command{
		Use:   "list",
		Short: "List the runtime's endpoints",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return a.listEndpoints(cmd, f) },
	}
	var version int
	create := &cobra.Command{
		Use:   "create NAME --version N",
		Short: "Create an endpoint pinned to a version",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.changeEndpoint(cmd, f, "create", args[0], version, description)
		},
	}
	update := &cobra.Command{
		Use:   "update NAME --version N",
		Short: "Point an endpoint at another version",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.changeEndpoint(cmd, f, "update", args[0], version, description)
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an endpoint (DEFAULT goes only with its runtime)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.changeEndpoint(cmd, f, "delete", args[0], 0, "")
		},
	}
	for _, c := range []*cobra.Command{create, update} {
		c.Flags().IntVar(&version, "version", 0, "version to point at (required)")
		c.Flags().StringVar(&description, "description", "", "what the endpoint is for")
		c.MarkFlagRequired("version")
	}
	cmd.AddCommand(list, create, update, del)
	return cmd
}

func (a *app) listEndpoints(cmd *cobra.Command, f runtimeFlags) error {
	s, err := a.connect(cmd)
	if err != nil {
		return err
	}
	ref, err := s.resolveRuntime(cmd.Context(), f)
	if err != nil {
		return err
	}
	eps, err := s.endpoints(cmd.Context(), ref.ID)
	if err != nil {
		return err
	}
	if s.out.json {
		return s.out.printJSON(map[string]any{"runtimeId": ref.ID, "endpoints": eps})
	}
	rows := make([][]string, len(eps))
	for i, e := range eps {
		rows[i] = []string{e.Name, e.LiveVersion, e.TargetVersion, s.out.paint(e.Status, statusColor(e.Status), false), e.Arn}
	}
	s.out.table([]string{"NAME", "LIVE", "TARGET", "STATUS", "ARN"}, rows)
	return nil
}

// changeEndpoint creates, updates or deletes an endpoint and records it in
// the deployed state.
func (a *app) changeEndpoint(cmd *cobra.Command, f runtimeFlags, op, name string, version int, description string) error {
	if op != "delete" && version < 1 {
		return usageError("--version must be 1 or more")
	}
	if name == "DEFAULT" {
		return usageError("DEFAULT always follows the newest version: it cannot be created, pinned or deleted")
	}
	s, err := a.connect(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	ref, err := s.resolveRuntime(ctx, f)
	if err != nil {
		return err
	}
	id, v := aws.String(ref.ID), aws.String(strconv.Itoa(version))
	switch op {
	case "create":
		_, err = s.control.CreateAgentRuntimeEndpoint(ctx, &cp.CreateAgentRuntimeEndpointInput{AgentRuntimeId: id, Name: aws.String(name),
			AgentRuntimeVersion: v, Description: optional(description)})
	case "update":
		_, err = s.control.UpdateAgentRuntimeEndpoint(ctx, &cp.UpdateAgentRuntimeEndpointInput{AgentRuntimeId: id, EndpointName: aws.String(name),
			AgentRuntimeVersion: v, Description: optional(description)})
	case "delete":
		_, err = s.control.DeleteAgentRuntimeEndpoint(ctx, &cp.DeleteAgentRuntimeEndpointInput{AgentRuntimeId: id, EndpointName: aws.String(name)})
	}
	if err != nil {
		return serverError(s.Settings, op+" endpoint "+name, err)
	}
	var res endpointResult
	if op != "delete" {
		got, err := s.control.GetAgentRuntimeEndpoint(ctx, &cp.GetAgentRuntimeEndpointInput{AgentRuntimeId: id, EndpointName: aws.String(name)})
		if err != nil {
			return serverError(s.Settings, "endpoint "+name, err)
		}
		res = endpointResult{Name: name, Arn: aws.ToString(got.AgentRuntimeEndpointArn), LiveVersion: aws.ToString(got.LiveVersion),
			TargetVersion: aws.ToString(got.TargetVersion), Status: string(got.Status), Action: op + "d"}
		if err := recordEndpoint(ref, f.target, name, &EndpointState{EndpointID: aws.ToString(got.Id), EndpointArn: res.Arn}); err != nil {
			return err
		}
	} else {
		res = endpointResult{Name: name, Status: "DELETED", Action: "deleted"}
		if err := recordEndpoint(ref, f.target, name, nil); err != nil {
			return err
		}
	}
	if s.out.json {
		return s.out.printJSON(res)
	}
	if op == "delete" {
		s.out.printf("deleted endpoint %s of %s\n", name, ref.label())
	} else {
		s.out.printf("endpoint %s of %s -> %s  %s\n", name, ref.label(), endpointVersion(res), s.out.paint(res.Status, statusColor(res.Status), false))
	}
	if ref.Spec != nil {
		if e, ok := ref.Spec.Endpoints[name]; ok && (op == "delete" || e.Version != version) {
			s.out.warnf("agentcore.json pins %s to version %d: the next berth deploy sets it back; change it there to keep this\n", name, e.Version)
		}
	}
	return nil
}

// recordEndpoint writes (or, with st nil, removes) an endpoint in the
// deployed state of the runtime's project.
func recordEndpoint(ref *runtimeRef, target, name string, st *EndpointState) error {
	if ref.Project == nil {
		return nil
	}
	ds, err := ref.Project.LoadDeployedState()
	if err != nil {
		return err
	}
	res, err := ds.Resources(target)
	if err != nil {
		return err
	}
	if st == nil {
		delete(res.RuntimeEndpoints, endpointKey(ref.Name, name))
	} else {
		res.RuntimeEndpoints[endpointKey(ref.Name, name)] = *st
	}
	return ds.SetResources(target, res)
}

func (a *app) sessionsCommand() *cobra.Command {
	var f runtimeFlags
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List live sessions, or stop one",
		Long: `List the live sessions of the project's runtimes (outside a project: of every
runtime on the server), or stop one with: berth sessions stop SESSION_ID.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.listSessions(cmd, f) },
	}
	f.add(cmd, true)
	list := &cobra.Command{
		Use:   "list",
		Short: "List live sessions",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return a.listSessions(cmd, f) },
	}
	stop := &cobra.Command{
		Use:   "stop SESSION_ID",
		Short: "Stop a session: its sandbox and everything in it end now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			id := args[0]
			runtimeID := ""
			if f.id != "" || f.name != "" {
				ref, err := s.resolveRuntime(ctx, f)
				if err != nil {
					return err
				}
				runtimeID = ref.ID
			} else {
				// The session names its runtime: find it among the live ones.
				all, err := s.berth.Sessions(ctx, "")
				if err != nil {
					return serverError(s.Settings, "list sessions", err)
				}
				for _, ss := range all {
					if ss.SessionID == id {
						runtimeID = ss.RuntimeID
					}
				}
				if runtimeID == "" {
					return fail(ExitNotFound, "List live sessions with:  berth sessions", "no live session %s", id)
				}
			}
			if err := s.berth.StopSession(ctx, runtimeID, id); err != nil {
				return serverError(s.Settings, "stop session "+id, err)
			}
			if s.out.json {
				return s.out.printJSON(map[string]string{"runtimeId": runtimeID, "sessionId": id, "state": "stopped"})
			}
			s.out.printf("stopped session %s\n", id)
			return nil
		},
	}
	cmd.AddCommand(list, stop)
	return cmd
}

func (a *app) listSessions(cmd *cobra.Command, f runtimeFlags) error {
	s, err := a.connect(cmd)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	refs, p, err := s.projectRuntimes(ctx, f)
	if err != nil {
		return err
	}
	all, err := s.berth.Sessions(ctx, "")
	if err != nil {
		return serverError(s.Settings, "list sessions", err)
	}
	names := map[string]string{}
	for _, r := range refs {
		if r.ID != "" {
			names[r.ID] = r.label()
		}
	}
	sessions := []SessionInfo{}
	for _, ss := range all {
		if _, ok := names[ss.RuntimeID]; ok || (refs == nil && p == nil) {
			sessions = append(sessions, ss)
		}
	}
	if s.out.json {
		return s.out.printJSON(map[string]any{"sessions": sessions})
	}
	if len(sessions) == 0 {
		s.out.printf("no live sessions\n")
		return nil
	}
	rows := make([][]string, len(sessions))
	for i, ss := range sessions {
		rt := names[ss.RuntimeID]
		if rt == "" {
			rt = ss.RuntimeID
		}
		rows[i] = []string{ss.SessionID, rt, ss.Version, ss.State, humanDuration(ss.AgeSeconds), humanDuration(ss.IdleSeconds), strconv.Itoa(ss.Inflight)}
	}
	s.out.table([]string{"SESSION", "RUNTIME", "VERSION", "STATE", "AGE", "IDLE", "IN FLIGHT"}, rows)
	return nil
}

func (a *app) logsCommand() *cobra.Command {
	var (
		f runtimeFlags
		q LogQuery
	)
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Show what the agent printed, per session; --follow for new lines as they come",
		Long: `Show the agent's output (stdout and stderr) for all its sessions, or one with
--session, oldest first. --follow keeps printing new lines until Ctrl-C.`,
		Example: `  berth logs -n 50
  berth logs --session 3f1c... --follow
  berth logs --since 10m --stream stderr
  berth logs --level error --until 5m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.Stream != "" && q.Stream != "stdout" && q.Stream != "stderr" {
				return usageError("--stream %q is not stdout or stderr", q.Stream)
			}
			if q.Tail < 0 {
				return usageError("-n must not be negative")
			}
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			ref, err := s.resolveRuntime(ctx, f)
			if err != nil {
				return err
			}
			q.RuntimeID = ref.ID
			err = s.berth.Logs(ctx, q, func(l LogLine) error {
				if s.out.json {
					return jsonLine(s.out.w, l)
				}
				stream := l.Stream
				switch {
				case l.Level == "error":
					stream = s.out.paint(stream, red, false)
				case l.Level == "warn":
					stream = s.out.paint(stream, yellow, false)
				}
				session := l.SessionID
				if len(session) > 8 && q.SessionID == "" {
					session = session[:8]
				}
				_, err := fmt.Fprintf(s.out.w, "%s %s %s| %s\n", s.out.paint(l.Time.Local().Format("2006-01-02 15:04:05.000"), faint, false), session, stream, l.Line)
				return err
			})
			if q.Follow && ctx.Err() != nil {
				return nil // Ctrl-C ends following
			}
			if err != nil {
				e := serverError(s.Settings, "logs of "+ref.label(), err)
				if ExitCode(e) == ExitNotFound && q.SessionID != "" {
					return &Error{Code: ExitNotFound, Err: e, Hint: "List sessions with:  berth sessions"}
				}
				return e
			}
			return nil
		},
	}
	f.add(cmd, false)
	fl := cmd.Flags()
	fl.StringVar(&q.SessionID, "session", "", "only this session")
	fl.BoolVarP(&q.Follow, "follow", "F", false, "keep printing new lines until Ctrl-C")
	fl.StringVar(&q.Since, "since", "", "only lines newer than this: a duration (10m, 1h) or an RFC 3339 time")
	fl.StringVar(&q.Until, "until", "", "only lines older than this: a duration ago or an RFC 3339 time")
	fl.StringVar(&q.Level, "level", "", "only lines at least this severe: debug, info, warn or error")
	fl.StringVar(&q.Stream, "stream", "", "only stdout or stderr")
	fl.IntVarP(&q.Tail, "lines", "n", 0, "only the last N lines (0: all)")
	cmd.RegisterFlagCompletionFunc("stream", cobra.FixedCompletions([]string{"stdout", "stderr"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// deleteWait is how long destroy waits for a runtime to be gone.
const deleteWait = 60 * time.Second

func (a *app) destroyCommand() *cobra.Command {
	var (
		f   runtimeFlags
		yes bool
	)
	cmd := &cobra.Command{
		Use:   "destroy",
		Short: "Delete what berth deploy made: runtimes, their endpoints and sessions, uploaded code",
		Long: `Delete what berth deploy made for this project: its runtimes (with their
versions, endpoints and live sessions), the code bundles it uploaded (the
server then removes bundles no other runtime uses) and their records in
agentcore/.cli/deployed-state.json. Nothing else is touched: not other
projects' runtimes, not the project's files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			return s.destroy(cmd, f, yes)
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	f.addProject(cmd, false)
	cmd.Flags().Lookup("runtime").Usage = "only this runtime of agentcore.json (default: all)"
	return cmd
}

// destroyItem is one runtime destroy removes.
type destroyItem struct {
	Name          string `json:"name"`
	RuntimeID     string `json:"runtimeId"`
	CodeBucket    string `json:"codeBucket"`
	CodeKey       string `json:"codeKey"`
	RuntimeResult string `json:"runtime"`
	CodeResult    string `json:"code"`
	// ImageName is the image upload to drop with it, if any.
	ImageName   string `json:"imageName,omitempty"`
	ImageResult string `json:"image,omitempty"`
}

func (s *remote) destroy(cmd *cobra.Command, f runtimeFlags, yes bool) error {
	ctx := cmd.Context()
	p, err := findProject()
	if err != nil {
		return err
	}
	st, err := p.LoadDeployedState()
	if err != nil {
		return err
	}
	res, err := st.Resources(f.target)
	if err != nil {
		return err
	}
	if err := s.berth.Health(ctx); err != nil {
		return serverError(s.Settings, "destroy", err)
	}
	// What was recorded, and runtimes of agentcore.json found by name (a
	// deploy whose record was lost).
	var items []*destroyItem
	seen := map[string]bool{}
	for _, name := range sortedKeys(res.Runtimes) {
		if f.name != "" && name != f.name {
			continue
		}
		rs := res.Runtimes[name]
		bucket, key := rs.CodeBucket, rs.CodeKey
		if bucket == "" {
			bucket, key = p.Bucket(), name+".zip"
		}
		items = append(items, &destroyItem{Name: name, RuntimeID: rs.RuntimeID, CodeBucket: bucket, CodeKey: key, ImageName: rs.ImageName})
		seen[name] = true
	}
	for i := range p.Spec.Runtimes {
		r := &p.Spec.Runtimes[i]
		if seen[r.Name] || (f.name != "" && r.Name != f.name) {
			continue
		}
		found, err := s.findByName(ctx, p.DeployedName(r))
		if err != nil {
			return err
		}
		item := &destroyItem{Name: r.Name, CodeBucket: p.Bucket(), CodeKey: r.Name + ".zip"}
		if found != nil {
			item.RuntimeID = found.id
		}
		items = append(items, item)
	}
	if f.name != "" && len(items) == 0 {
		return fail(ExitNotFound, "", "no runtime named %q in %s or its deployed state", f.name, projectFile)
	}
	if !yes {
		if !isTerminal(cmd.InOrStdin()) {
			return usageError("destroy deletes runtimes: confirm with --yes")
		}
		s.out.notef("This deletes from %s:\n", s.Server.Value)
		for _, it := range items {
			id := it.RuntimeID
			if id == "" {
				id = "not deployed"
			}
			s.out.notef("  runtime %s (%s) with its endpoints and sessions, and code %s/%s\n", it.Name, id, it.CodeBucket, it.CodeKey)
		}
		fmt.Fprint(s.out.errw, "Continue? [y/N] ")
		var answer string
		fmt.Fscanln(cmd.InOrStdin(), &answer)
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return fail(ExitError, "", "destroy cancelled")
		}
	}
	for _, it := range items {
		it.RuntimeResult, it.CodeResult = "absent", "absent"
		if it.RuntimeID != "" {
			_, err := s.control.DeleteAgentRuntime(ctx, &cp.DeleteAgentRuntimeInput{AgentRuntimeId: aws.String(it.RuntimeID)})
			switch {
			case isNotFound(err):
			case err != nil:
				return serverError(s.Settings, "delete runtime "+it.RuntimeID, err)
			default:
				if err := s.waitDeleted(ctx, it.RuntimeID); err != nil {
					return err
				}
				it.RuntimeResult = "deleted"
			}
		}
		// After the runtime: the server collects the bundles no version
		// uses any more.
		err := s.berth.DeleteCode(ctx, it.CodeBucket, it.CodeKey)
		switch {
		case isNotFound(err):
		case err != nil:
			return serverError(s.Settings, "delete code "+it.CodeBucket+"/"+it.CodeKey, err)
		default:
			it.CodeResult = "deleted"
		}
		if it.ImageName != "" {
			it.ImageResult = "absent"
			err := s.berth.DeleteImage(ctx, it.ImageName)
			switch {
			case isNotFound(err):
			case err != nil:
				return serverError(s.Settings, "delete image "+it.ImageName, err)
			default:
				it.ImageResult = "deleted"
			}
		}
		delete(res.Runtimes, it.Name)
		for k := range res.RuntimeEndpoints {
			if strings.HasPrefix(k, it.Name+"/") {
				delete(res.RuntimeEndpoints, k)
			}
		}
		if err := st.SetResources(f.target, res); err != nil {
			return err
		}
		if it.ImageName != "" {
			s.out.notef("%s: runtime %s, code %s/%s %s, image %s %s\n", it.Name, it.RuntimeResult, it.CodeBucket, it.CodeKey, it.CodeResult,
				it.ImageName, it.ImageResult)
		} else {
			s.out.notef("%s: runtime %s, code %s/%s %s\n", it.Name, it.RuntimeResult, it.CodeBucket, it.CodeKey, it.CodeResult)
		}
	}
	if s.out.json {
		return s.out.printJSON(map[string]any{"project": p.Spec.Name, "target": f.target, "destroyed": items})
	}
	s.out.printf("Destroyed project %s's deployment on %s (%d runtime(s)).\n", p.Spec.Name, s.Server.Value, len(items))
	return nil
}

// waitDeleted waits until a runtime being deleted is gone.
func (s *remote) waitDeleted(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, deleteWait)
	defer cancel()
	for {
		got, err := s.control.GetAgentRuntime(ctx, &cp.GetAgentRuntimeInput{AgentRuntimeId: aws.String(id)})
		if isNotFound(err) {
			return nil
		}
		if ctx.Err() != nil {
			return fail(ExitError, "Check with:  berth status", "runtime %s is still being deleted after %s", id, deleteWait)
		}
		if err != nil {
			return serverError(s.Settings, "runtime "+id, err)
		}
		if got.Status == cptypes.AgentRuntimeStatusDeleteFailed {
			return fmt.Errorf("delete runtime %s: %s", id, aws.ToString(got.FailureReason))
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}
