package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// agentcoreProject is a project laid out as `agentcore create --name
// ProbeHttp --framework Strands --protocol HTTP --build CodeZip` writes it,
// with a standard-library main.py in place of the Strands one (which needs
// packages) and a deployment of its own recorded for AWS.
var agentcoreProject = map[string]string{
	"AGENTS.md": "# AgentCore Project\n",
	"README.md": "# ProbeHttp\n",
	"agentcore/agentcore.json": `{
  "name": "ProbeHttp",
  "version": 1,
  "managedBy": "CDK",
  "tags": {},
  "runtimes": [
    {
      "name": "ProbeHttp",
      "build": "CodeZip",
      "entrypoint": "main.py",
      "codeLocation": "app/ProbeHttp/",
      "runtimeVersion": "PYTHON_3_14",
      "networkMode": "PUBLIC",
      "protocol": "HTTP"
    }
  ],
  "memories": [],
  "knowledgeBases": [],
  "credentials": [],
  "evaluators": [],
  "onlineEvalConfigs": [],
  "agentCoreGateways": [],
  "policyEngines": [],
  "configBundles": [],
  "abTests": [],
  "harnesses": []
}
`,
	"agentcore/aws-targets.json": "[]\n",
	"agentcore/.env.local":       "# secrets\n",
	"agentcore/.gitignore":       ".cli/\n.env.local\n",
	"agentcore/.cli/deployed-state.json": `{"targets": {"default": {"resources": {
  "runtimes": {"ProbeHttp": {"runtimeId": "ProbeHttp_ProbeHttp-AWSAWSAWS1", "runtimeArn": "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/ProbeHttp_ProbeHttp-AWSAWSAWS1", "roleArn": "arn:aws:iam::123456789012:role/r"}},
  "stackName": "AgentCore-ProbeHttp-default"}}}}`,
	"agentcore/.llm-context/README.md":      "# types\n",
	"agentcore/.llm-context/agentcore.ts":   "interface AgentCoreProjectSpec {}\n",
	"agentcore/.llm-context/aws-targets.ts": "interface AwsTarget {}\n",
	"agentcore/cdk/bin/cdk.ts":              "// cdk app\n",
	"agentcore/cdk/lib/cdk-stack.ts":        "// stack\n",
	"agentcore/cdk/cdk.json":                "{}\n",
	"agentcore/cdk/package.json":            `{"name": "cdk"}` + "\n",
	"app/ProbeHttp/pyproject.toml":          "[project]\nname = \"probehttp\"\n",
	"app/ProbeHttp/README.md":               "# agent\n",
	"app/ProbeHttp/.gitignore":              ".venv/\n",
	"app/ProbeHttp/model/__init__.py":       "",
	"app/ProbeHttp/model/load.py":           "def load_model():\n    return None\n",
	"app/ProbeHttp/mcp_client/__init__.py":  "",
	"app/ProbeHttp/mcp_client/client.py":    "",
	"app/ProbeHttp/skills/fetcher.py":       "",
	// What a local setup leaves, which must not be shipped.
	"app/ProbeHttp/.venv/bin/python":                 "#!/bin/false\n",
	"app/ProbeHttp/__pycache__/main.cpython-314.pyc": "junk",
	"app/ProbeHttp/main.py": `import json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from model.load import load_model


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def reply(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply({"status": "Healthy", "time_of_last_update": int(time.time())})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        here = os.path.dirname(os.path.abspath(__file__))
        self.reply({"result": "probe: " + req["prompt"], "model": load_model(), "files": sorted(os.listdir(here))})


ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
`,
}

// TestCLIAgentCoreProject deploys and calls a project made by the AgentCore
// CLI, then destroys it, leaving AgentCore's own records alone.
func TestCLIAgentCoreProject(t *testing.T) {
	b := startBerth(t, "")
	c := b.cli()
	project := filepath.Join(t.TempDir(), "ProbeHttp")
	for name, content := range agentcoreProject {
		p := filepath.Join(project, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	c.ok(filepath.Join(project, "app", "ProbeHttp", "model"), "deploy") // found from a subdirectory
	r := c.ok(project, "invoke", "hello")
	var answer struct {
		Result string
		Model  any
		Files  []string
	}
	if err := json.Unmarshal([]byte(r.stdout), &answer); err != nil {
		t.Fatalf("answer is not the agent's JSON: %v\n%s", err, r)
	}
	if answer.Result != "probe: hello" {
		t.Errorf("answer = %+v", answer)
	}
	for _, f := range []string{"main.py", "model", "mcp_client", "skills", "pyproject.toml"} {
		if !slices.Contains(answer.Files, f) {
			t.Errorf("%s is not in the bundle: %q", f, answer.Files)
		}
	}
	for _, f := range []string{".venv", "__pycache__"} {
		if slices.Contains(answer.Files, f) {
			t.Errorf("%s was shipped: %q", f, answer.Files)
		}
	}

	st := readDeployedState(t, project)
	if st.Targets["default"].Resources.Runtimes["ProbeHttp"].RuntimeID != "ProbeHttp_ProbeHttp-AWSAWSAWS1" {
		t.Errorf("AgentCore's record of its AWS deployment changed: %+v", st.Targets["default"])
	}
	if st.Targets["berth"].Resources.Runtimes["ProbeHttp"].RuntimeID == "" {
		t.Errorf("Berth's deployment not recorded: %+v", st)
	}

	c.ok(project, "destroy", "--yes")
	data, _ := os.ReadFile(filepath.Join(project, "agentcore", ".cli", "deployed-state.json"))
	if !strings.Contains(string(data), "ProbeHttp_ProbeHttp-AWSAWSAWS1") || !strings.Contains(string(data), "AgentCore-ProbeHttp-default") {
		t.Errorf("destroy removed AgentCore's records:\n%s", data)
	}
	waitFor(t, 10*time.Second, "no sessions after destroy", func() bool { return len(b.sessions()) == 0 })
}
