package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	dp "github.com/aws/aws-sdk-go-v2/service/bedrockagentcore"
	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

type invokeOptions struct {
	runtimeFlags
	promptFile string
	sessionID  string
	endpoint   string
	raw        bool
	stream     bool
}

func (a *app) invokeCommand() *cobra.Command {
	var o invokeOptions
	cmd := &cobra.Command{
		Use:   "invoke [PROMPT | -]",
		Short: "Call the deployed agent with a prompt and print its answer as it streams",
		Long: `Call the deployed agent through AgentCore's InvokeAgentRuntime with
{"prompt": PROMPT}, asking for JSON or server-sent events. Streamed text is
printed as it arrives (JSON strings as text, other values as JSON lines).

The prompt is the argument, the contents of --prompt-file, or standard input
with "-". Every call runs in a session; the session id is printed at the end
(on stderr) so that the next call can continue the session with
--session-id. If the agent fails, the end of that session's log is shown.`,
		Example: `  berth invoke "What is Berth?"
  berth invoke --session-id 3f1c... "And then?"
  echo '{"long": "prompt"}' | berth invoke -
  berth invoke --runtime-id arn:aws:bedrock-agentcore:us-east-1:000000000000:runtime/MyAgent_MyAgent-abc123 "Hi"`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prompt, err := readPrompt(cmd, args, o.promptFile)
			if err != nil {
				return err
			}
			s, err := a.connect(cmd)
			if err != nil {
				return err
			}
			return s.invoke(cmd.Context(), o, prompt)
		},
	}
	o.runtimeFlags.add(cmd, false)
	f := cmd.Flags()
	f.StringVarP(&o.promptFile, "prompt-file", "f", "", "read the prompt from this file")
	f.StringVarP(&o.sessionID, "session-id", "s", "", "continue this session (33 to 256 characters; default: a new one)")
	f.StringVarP(&o.endpoint, "endpoint", "e", "", "endpoint (qualifier) to call (default DEFAULT, the newest version)")
	f.BoolVar(&o.raw, "json", false, "print the agent's response body as it is")
	f.BoolVar(&o.stream, "stream", false, `also ask for a stream in the payload ("stream": true)`)
	return cmd
}

// readPrompt reads the prompt from the argument, a file or stdin ("-").
func readPrompt(cmd *cobra.Command, args []string, file string) (string, error) {
	switch {
	case file != "" && len(args) > 0:
		return "", usageError("give the prompt as an argument or with --prompt-file, not both")
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return "", usageError("--prompt-file: %v", err)
		}
		return string(data), nil
	case len(args) == 0:
		return "", usageError(`no prompt: give it as an argument (berth invoke "Hello"), with --prompt-file FILE, or on stdin with -`)
	case args[0] == "-":
		data, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return "", fmt.Errorf("read prompt from stdin: %w", err)
		}
		return strings.TrimRight(string(data), "\n"), nil
	}
	return args[0], nil
}

// invokeResult is invoke's JSON output.
type invokeResult struct {
	RuntimeArn  string          `json:"runtimeArn"`
	Endpoint    string          `json:"endpoint"`
	SessionID   string          `json:"sessionId"`
	ContentType string          `json:"contentType"`
	StatusCode  int32           `json:"statusCode"`
	Events      []any           `json:"events,omitempty"`
	Body        json.RawMessage `json:"body,omitempty"`
	Text        string          `json:"text,omitempty"`
}

func (s *remote) invoke(ctx context.Context, o invokeOptions, prompt string) error {
	if o.sessionID != "" && (len(o.sessionID) < 33 || len(o.sessionID) > 256) {
		return usageError("--session-id is %d characters long; session ids are 33 to 256", len(o.sessionID))
	}
	ref, err := s.resolveRuntime(ctx, o.runtimeFlags)
	if err != nil {
		return err
	}
	sessionID := o.sessionID
	if sessionID == "" {
		sessionID = uuid.NewString()
	}
	body := map[string]any{"prompt": prompt}
	if o.stream {
		body["stream"] = true
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return err
	}
	in := &dp.InvokeAgentRuntimeInput{
		AgentRuntimeArn:  aws.String(ref.ARN),
		RuntimeSessionId: aws.String(sessionID),
		Payload:          payload,
		ContentType:      aws.String("application/json"),
		Accept:           aws.String("application/json, text/event-stream"),
	}
	endpoint := "DEFAULT"
	if o.endpoint != "" {
		in.Qualifier, endpoint = aws.String(o.endpoint), o.endpoint
	}
	resp, err := s.data.InvokeAgentRuntime(ctx, in)
	if err != nil {
		err = serverError(s.Settings, "invoke "+ref.label(), err)
		var e *Error
		if errors.As(err, &e) {
			switch e.Code {
			case ExitAgentFailed:
				e.Hint = "Session: " + sessionID
				if tail := s.logTail(ctx, ref.ID, sessionID); tail != "" {
					e.Hint = "The end of session " + sessionID + "'s log:\n" + tail
				}
				e.Hint += "\nMore with:  berth logs --session " + sessionID
			case ExitNotFound:
				e.Hint = "Check the runtime and endpoint with:  berth status"
			}
		}
		return err
	}
	defer resp.Response.Close()
	if got := aws.ToString(resp.RuntimeSessionId); got != "" {
		sessionID = got
	}
	ctype := aws.ToString(resp.ContentType)

	if s.out.json {
		res := invokeResult{RuntimeArn: ref.ARN, Endpoint: endpoint, SessionID: sessionID, ContentType: ctype, StatusCode: aws.ToInt32(resp.StatusCode)}
		if strings.HasPrefix(ctype, "text/event-stream") {
			err = readSSE(resp.Response, func(_, data string) error {
				var v any
				if json.Unmarshal([]byte(data), &v) != nil {
					v = data
				}
				res.Events = append(res.Events, v)
				return nil
			})
		} else {
			var data []byte
			data, err = io.ReadAll(resp.Response)
			if json.Valid(data) {
				res.Body = data
			} else {
				res.Text = string(data)
			}
		}
		if err != nil {
			return fmt.Errorf("read the agent's answer: %w", err)
		}
		return s.out.printJSON(res)
	}

	var agentErr error
	switch {
	case o.raw:
		_, err = io.Copy(s.out.w, resp.Response)
	case strings.HasPrefix(ctype, "text/event-stream"):
		p := &ssePrinter{w: s.out.w, errw: s.out.errw}
		err = readSSE(resp.Response, p.event)
		p.end()
		agentErr = p.agentErr
	default:
		err = printBody(s.out.w, resp.Response)
	}
	if err != nil {
		return fmt.Errorf("read the agent's answer: %w", err)
	}
	fmt.Fprintf(s.out.errw, "%s\n", s.out.paint(fmt.Sprintf("session: %s  (reuse with --session-id)", sessionID), faint, true))
	if agentErr != nil {
		return &Error{Code: ExitAgentFailed, Err: agentErr, Hint: "More with:  berth logs --session " + sessionID}
	}
	return nil
}

// readSSE reads server-sent events from r and calls fn with each event's
// name ("" for the default) and data, as each one is complete.
func readSSE(r io.Reader, fn func(event, data string) error) error {
	br := bufio.NewReader(r)
	var event string
	var data []string
	dispatch := func() error {
		if len(data) == 0 {
			event = ""
			return nil
		}
		err := fn(event, strings.Join(data, "\n"))
		event, data = "", nil
		return err
	}
	for {
		line, err := br.ReadString('\n')
		if line != "" || err == nil {
			line = strings.TrimRight(line, "\r\n")
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch {
			case line == "":
				if err := dispatch(); err != nil {
					return err
				}
			case field == "data":
				data = append(data, value)
			case field == "event":
				event = value
			}
		}
		if errors.Is(err, io.EOF) {
			return dispatch()
		}
		if err != nil {
			return err
		}
	}
}

// ssePrinter prints a stream of events for people: JSON strings as text as
// they arrive, other JSON values on lines of their own, errors the agent
// reports on stderr.
type ssePrinter struct {
	w, errw io.Writer
	// midLine is set when the last text written did not end a line.
	midLine  bool
	agentErr error
}

func (p *ssePrinter) text(s string) {
	if s == "" {
		return
	}
	io.WriteString(p.w, s)
	p.midLine = !strings.HasSuffix(s, "\n")
}

func (p *ssePrinter) line(s string) {
	if p.midLine {
		io.WriteString(p.w, "\n")
	}
	io.WriteString(p.w, s+"\n")
	p.midLine = false
}

func (p *ssePrinter) event(event, data string) error {
	var v any
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		if event == "error" {
			p.fail(data)
			return nil
		}
		// Not JSON: some agents send plain text chunks.
		p.text(data)
		return nil
	}
	if obj, ok := v.(map[string]any); ok && (event == "error" || obj["error"] != nil) {
		msg, _ := obj["error"].(string)
		if msg == "" {
			msg = data
		}
		p.fail(msg)
		return nil
	}
	if event == "error" {
		p.fail(data)
		return nil
	}
	if s, ok := v.(string); ok {
		p.text(s)
		return nil
	}
	var buf bytes.Buffer
	json.Compact(&buf, []byte(data))
	p.line(buf.String())
	return nil
}

func (p *ssePrinter) fail(msg string) {
	if p.midLine {
		io.WriteString(p.w, "\n")
		p.midLine = false
	}
	fmt.Fprintf(p.errw, "agent error: %s\n", msg)
	p.agentErr = fmt.Errorf("the agent reported an error: %s", msg)
}

// end finishes the last line.
func (p *ssePrinter) end() {
	if p.midLine {
		io.WriteString(p.w, "\n")
		p.midLine = false
	}
}

// printBody prints a non-streamed answer: a JSON string as text, anything
// else as it is, ending with a newline.
func printBody(w io.Writer, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	var s string
	if json.Unmarshal(data, &s) == nil {
		data = []byte(s)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	_, err = w.Write(data)
	return err
}
