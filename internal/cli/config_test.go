package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// envMap makes an environment lookup from a map.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestResolve(t *testing.T) {
	file := `{"server": "http://file:1", "region": "eu-west-1", "output": "json", "accessKeyId": "FILEKEY", "secretAccessKey": "filesecret"}`
	for _, c := range []struct {
		name     string
		flags    ResolveInput
		env      map[string]string
		file     string
		want     map[string]Setting // by key: server, data, region, output, key
		wantErr  string
		errInMsg string
	}{
		{name: "defaults", want: map[string]Setting{
			"server": {DefaultServer, "default"}, "data": {DefaultServer, "default"}, "region": {DefaultRegion, "default"},
			"output": {"text", "default"}, "key": {placeholderAccessKey, "default (placeholder: accepted only by a server run with --insecure-no-auth)"},
		}},
		{name: "file beats default", file: file, want: map[string]Setting{
			"server": {"http://file:1", "config file"}, "data": {"http://file:1", "config file"}, "region": {"eu-west-1", "config file"},
			"output": {"json", "config file"}, "key": {"FILEKEY", "config file"},
		}},
		{name: "env beats file", file: file, env: map[string]string{
			"AWS_ENDPOINT_URL": "http://global:2", "AWS_REGION": "us-west-2", "BERTH_OUTPUT": "text",
			"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret",
		}, want: map[string]Setting{
			"server": {"http://global:2", "env AWS_ENDPOINT_URL"}, "data": {"http://global:2", "env AWS_ENDPOINT_URL"},
			"region": {"us-west-2", "env AWS_REGION"}, "output": {"text", "env BERTH_OUTPUT"}, "key": {"ENVKEY", "env AWS_ACCESS_KEY_ID"},
		}},
		{name: "AgentCore's per-plane variables", env: map[string]string{
			"AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL": "http://control:3", "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": "http://data:4",
			"AWS_ENDPOINT_URL": "http://global:2",
		}, want: map[string]Setting{
			"server": {"http://control:3", "env AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL"},
			"data":   {"http://data:4", "env AWS_ENDPOINT_URL_BEDROCK_AGENTCORE"},
		}},
		{name: "one plane's variable serves both", env: map[string]string{"AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": "http://data:4"},
			want: map[string]Setting{
				"server": {"http://data:4", "env AWS_ENDPOINT_URL_BEDROCK_AGENTCORE"},
				"data":   {"http://data:4", "env AWS_ENDPOINT_URL_BEDROCK_AGENTCORE"},
			}},
		{name: "BERTH_ENDPOINT beats AgentCore's", file: file, env: map[string]string{
			"BERTH_ENDPOINT": "http://berth:5/", "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL": "http://control:3",
			"AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": "http://data:4",
		}, want: map[string]Setting{
			"server": {"http://berth:5", "env BERTH_ENDPOINT"}, "data": {"http://berth:5", "env BERTH_ENDPOINT"},
		}},
		{name: "flags beat everything", file: file, flags: ResolveInput{Server: "http://flag:6", Region: "ap-south-1", Output: "json"},
			env: map[string]string{"BERTH_ENDPOINT": "http://berth:5", "AWS_REGION": "us-west-2", "BERTH_OUTPUT": "text"},
			want: map[string]Setting{
				"server": {"http://flag:6", "flag --server"}, "data": {"http://flag:6", "flag --server"},
				"region": {"ap-south-1", "flag --region"}, "output": {"json", "flag --output"},
			}},
		{name: "half the env credentials are none", file: file, env: map[string]string{"AWS_ACCESS_KEY_ID": "ENVKEY"},
			want: map[string]Setting{"key": {"FILEKEY", "config file"}}},
		{name: "bad URL names its source", env: map[string]string{"BERTH_ENDPOINT": "127.0.0.1:4780"}, wantErr: "env BERTH_ENDPOINT"},
		{name: "bad flag URL", flags: ResolveInput{Server: "ftp://x"}, wantErr: "flag --server"},
		{name: "bad region", flags: ResolveInput{Region: "nowhere"}, wantErr: "region from flag --region"},
		{name: "bad output", env: map[string]string{"BERTH_OUTPUT": "yaml"}, wantErr: "env BERTH_OUTPUT"},
		{name: "bad file", file: `{"server": "http://x:1", "colour": "red"}`, wantErr: "unknown field"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			env := map[string]string{"XDG_CONFIG_HOME": dir}
			for k, v := range c.env {
				env[k] = v
			}
			if c.file != "" {
				os.MkdirAll(filepath.Join(dir, "berth"), 0o700)
				if err := os.WriteFile(filepath.Join(dir, "berth", "config.json"), []byte(c.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			in := c.flags
			in.Env = envMap(env)
			s, err := Resolve(in)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Resolve error = %v, want one mentioning %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]Setting{"server": s.Server, "data": s.DataServer, "region": s.Region, "output": s.Output, "key": s.AccessKeyID}
			for k, want := range c.want {
				if got[k] != want {
					t.Errorf("%s = %+v, want %+v", k, got[k], want)
				}
			}
			if want := filepath.Join(dir, "berth", "config.json"); s.ConfigFile != want {
				t.Errorf("ConfigFile = %q, want %q", s.ConfigFile, want)
			}
		})
	}
}

func TestConfigPath(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"XDG_CONFIG_HOME": "/x", "HOME": "/home/u"}, "/x/berth/config.json"},
		{map[string]string{"XDG_CONFIG_HOME": "", "HOME": "/home/u"}, "/home/u/.config/berth/config.json"},
		{map[string]string{"HOME": "/home/u"}, "/home/u/.config/berth/config.json"},
	} {
		got, err := ConfigPath(envMap(c.env))
		if err != nil || got != c.want {
			t.Errorf("ConfigPath(%v) = %q, %v; want %q", c.env, got, err, c.want)
		}
	}
}

// runCLI runs a client command in-process with its output captured.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errb bytes.Buffer
	for _, c := range Commands() {
		if c.Name() != args[0] {
			continue
		}
		root := c.Root()
		root.SetArgs(args[1:])
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SilenceErrors, root.SilenceUsage = true, true
		err = root.Execute()
		return out.String(), errb.String(), err
	}
	t.Fatalf("no command %q", args[0])
	return
}

func TestConfigCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("BERTH_ENDPOINT", "")
	t.Setenv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE", "")
	t.Setenv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL", "")
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	t.Setenv("BERTH_OUTPUT", "")
	path := filepath.Join(dir, "berth", "config.json")

	if _, _, err := runCLI(t, "config", "set", "server", "http://10.0.0.1:4780/"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "config", "set", "region", "eu-central-1"); err != nil {
		t.Fatal(err)
	}
	var file fileConfig
	data, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(data, &file) != nil {
		t.Fatalf("config file: %v\n%s", err, data)
	}
	if file.Server != "http://10.0.0.1:4780" || file.Region != "eu-central-1" {
		t.Errorf("config file = %+v", file)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("config file mode = %v, %v; want 0600", fi.Mode(), err)
	}

	out, _, err := runCLI(t, "config")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"http://10.0.0.1:4780", "config file", "eu-central-1", path} {
		if !strings.Contains(out, want) {
			t.Errorf("berth config output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCLI(t, "config", "--server", "http://flag:1", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var s Settings
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Server != (Setting{"http://flag:1", "flag --server"}) {
		t.Errorf("berth config -o json: %+v, %v\n%s", s.Server, err, out)
	}
	if strings.Contains(out, "secret") {
		t.Errorf("berth config -o json shows a secret:\n%s", out)
	}

	if _, _, err := runCLI(t, "config", "unset", "region"); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	if strings.Contains(string(data), "eu-central-1") {
		t.Errorf("region still in the file after unset:\n%s", data)
	}

	for _, bad := range [][]string{
		{"config", "set", "colour", "red"},
		{"config", "set", "server", "not a url"},
		{"config", "set", "output", "yaml"},
		{"config", "set", "server"},
	} {
		if _, _, err := runCLI(t, bad...); ExitCode(err) != ExitUsage {
			t.Errorf("berth %s: exit code %d (%v), want %d", strings.Join(bad, " "), ExitCode(err), err, ExitUsage)
		}
	}
}
