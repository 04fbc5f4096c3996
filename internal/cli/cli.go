// Package cli is Berth's command-line client: the commands that take an
// agent from an empty folder to a deployed, invoked runtime (create, dev,
// deploy, invoke) and those that look after it (status, versions, endpoints,
// sessions, logs, destroy, config).
//
// Projects have the layout and configuration file of the AgentCore CLI
// (agentcore/agentcore.json, app/NAME/...), so a project made by
// `agentcore create` deploys on Berth and a Berth project stays valid for
// AgentCore. AgentCore operations go through the AWS SDK for Go v2; the few
// Berth-only calls (code upload, sessions, logs, health) are in berthapi.go.
package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/aws/smithy-go"
	"github.com/spf13/cobra"
)

// Exit codes of the client commands.
const (
	ExitOK          = 0   // success
	ExitError       = 1   // any other failure
	ExitUsage       = 2   // bad input: command line, names, agentcore.json
	ExitUnreachable = 3   // the Berth server cannot be reached
	ExitNotFound    = 4   // no project, unknown runtime, endpoint or session, not deployed
	ExitAgentFailed = 5   // the agent failed: deploy ended *_FAILED, or the agent did not answer (424)
	ExitInterrupted = 130 // stopped by Ctrl-C
)

// exitCodesHelp documents the exit codes in every command's help.
const exitCodesHelp = `Exit codes: 0 ok, 1 error, 2 bad input (usage, names, agentcore.json),
3 server unreachable, 4 not found (project, runtime, endpoint, session),
5 the agent failed (deploy *_FAILED, invocation 424), 130 interrupted.`

// Error is a failure the user can act on: what went wrong, what to do next
// and the exit code that says which kind of failure it was.
type Error struct {
	Code int
	Err  error
	// Hint says what to do next; it may span several lines.
	Hint string
}

func (e *Error) Error() string {
	if e.Hint == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + "\n" + e.Hint
}

func (e *Error) Unwrap() error { return e.Err }

// fail returns an *Error with a formatted message.
func fail(code int, hint, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...), Hint: hint}
}

// usageError marks a bad command line.
func usageError(format string, args ...any) error {
	return &Error{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// ExitCode returns the process exit code for an error a client command
// returned: the code of an *Error, 130 after Ctrl-C, 1 otherwise.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, context.Canceled) {
		return ExitInterrupted
	}
	// Cobra's own argument and flag errors.
	msg := err.Error()
	if strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") ||
		strings.HasPrefix(msg, "unknown shorthand flag") || strings.Contains(msg, "flag needs an argument") {
		return ExitUsage
	}
	return ExitError
}

// Commands returns the client commands, each with the global flags
// (--server, --region, --output), for the berth root command.
func Commands() []*cobra.Command {
	a := &app{env: os.LookupEnv}
	cmds := []*cobra.Command{
		a.createCommand(), a.devCommand(), a.deployCommand(), a.invokeCommand(),
		a.statusCommand(), a.versionsCommand(), a.endpointsCommand(), a.sessionsCommand(),
		a.logsCommand(), a.destroyCommand(), a.configCommand(),
	}
	for _, c := range cmds {
		a.globalFlags(c)
		setUsageErrors(c)
	}
	return cmds
}

// app holds what the client commands share: the global flags and how the
// environment is read.
type app struct {
	env func(string) (string, bool)

	server string
	region string
	output string
}

func (a *app) globalFlags(c *cobra.Command) {
	f := c.PersistentFlags()
	f.StringVar(&a.server, "server", "", "Berth server URL (env BERTH_ENDPOINT; default http://127.0.0.1:4780)")
	f.StringVar(&a.region, "region", "", "AWS region the SDK signs for (env AWS_REGION; default us-east-1)")
	f.StringVarP(&a.output, "output", "o", "", "output format: text or json (env BERTH_OUTPUT)")
	if c.Long == "" {
		c.Long = c.Short + "."
	}
	if !strings.Contains(c.Long, "Exit codes") {
		c.Long += "\n\n" + exitCodesHelp
	}
}

// setUsageErrors makes flag and argument errors of c and its subcommands
// exit with ExitUsage.
func setUsageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &Error{Code: ExitUsage, Err: err, Hint: "see: " + c.CommandPath() + " --help"}
	})
	if args := c.Args; args != nil {
		c.Args = func(cmd *cobra.Command, a []string) error {
			if err := args(cmd, a); err != nil {
				return &Error{Code: ExitUsage, Err: err, Hint: "see: " + cmd.CommandPath() + " --help"}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		setUsageErrors(sub)
	}
}

// settings resolves the configuration for a command run.
func (a *app) settings() (Settings, error) {
	s, err := Resolve(ResolveInput{Server: a.server, Region: a.region, Output: a.output, Env: a.env})
	if err != nil {
		return Settings{}, &Error{Code: ExitUsage, Err: err}
	}
	return s, nil
}

// remote is what a command that talks to the server works with: the
// resolved settings, the clients and where output goes.
type remote struct {
	Settings
	*clients
	out *output
}

// connect resolves the settings and builds the clients for cmd.
func (a *app) connect(cmd *cobra.Command) (*remote, error) {
	s, err := a.settings()
	if err != nil {
		return nil, err
	}
	return &remote{Settings: s, clients: newClients(s), out: newOutput(cmd, s.Output.Value == "json")}, nil
}

// serverError turns an error from a call to the server into one that says
// what to do: start the server, check the name, read the agent's log.
func serverError(s Settings, what string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) || errors.Is(err, context.Canceled) {
		return err
	}
	if unreachable(err) {
		return &Error{Code: ExitUnreachable,
			Err: fmt.Errorf("%s: Berth server not reachable at %s", what, s.Server.Value),
			Hint: "Start it (as root) with:  berth server &\n" +
				"or point the client at a running one with --server URL, BERTH_ENDPOINT or `berth config set server URL`."}
	}
	code, msg := apiErrorOf(err)
	switch code {
	case "ResourceNotFoundException":
		return &Error{Code: ExitNotFound, Err: fmt.Errorf("%s: %s", what, msg)}
	case "ValidationException":
		return &Error{Code: ExitUsage, Err: fmt.Errorf("%s: %s", what, msg)}
	case "RuntimeClientError":
		return &Error{Code: ExitAgentFailed, Err: fmt.Errorf("%s: the agent failed: %s", what, msg)}
	case "":
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %s: %s", what, code, msg)
}

// unreachable reports whether err means the server could not be reached.
func unreachable(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) || errors.Is(err, syscall.ECONNREFUSED)
}

// apiErrorOf returns the AWS error code and message of err, or "" and the
// error text.
func apiErrorOf(err error) (code, message string) {
	if err == nil {
		return "", ""
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode(), ae.ErrorMessage()
	}
	return "", err.Error()
}

// isNotFound reports whether err is the server's ResourceNotFoundException.
func isNotFound(err error) bool {
	code, _ := apiErrorOf(err)
	return code == "ResourceNotFoundException"
}
