package cli

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/spf13/cobra"
)

// templates holds the files `berth create` writes: project/ for the project
// root, and one folder per language for app/NAME/. Every file is a
// text/template; a .tmpl suffix (which keeps Go from compiling the Go
// agent's sources as part of Berth) is dropped.
//
//go:embed all:templates
var templates embed.FS

// CreateOptions says what project to scaffold.
type CreateOptions struct {
	Name      string
	Language  string // python, typescript or go
	Protocol  string // HTTP
	Build     string // CodeZip or Container; "" for the language's default
	OutputDir string // the project is created in OutputDir/Name
}

// languageInfo is what differs between the agent templates.
type languageInfo struct {
	title          string
	entrypoint     string
	runtimeVersion string
	defaultBuild   string
}

var languages = map[string]languageInfo{
	"python":     {title: "Python", entrypoint: "main.py", runtimeVersion: "PYTHON_3_12", defaultBuild: "CodeZip"},
	"typescript": {title: "TypeScript (JavaScript with JSDoc types)", entrypoint: "main.js", runtimeVersion: "NODE_22", defaultBuild: "CodeZip"},
	// AgentCore has no Go code runtime: Go agents are container builds,
	// and its schema wants a script entrypoint even there, where it is
	// not used.
	"go": {title: "Go", entrypoint: "unused.js", defaultBuild: "Container"},
}

// templateData is what the templates are rendered with.
type templateData struct {
	Name           string // the project's (and its runtime's) name
	Lower          string // Name in lower case: module and image names
	Language       string
	LanguageTitle  string
	Build          string
	RuntimeVersion string
	PythonVersion  string // 3.12 for PYTHON_3_12
}

// projectFileOut is agentcore.json as `agentcore create` writes it: every
// top-level array present, all empty but runtimes.
type projectFileOut struct {
	Schema            string            `json:"$schema"`
	Name              string            `json:"name"`
	Version           int               `json:"version"`
	ManagedBy         string            `json:"managedBy"`
	Tags              map[string]string `json:"tags"`
	Runtimes          []RuntimeSpec     `json:"runtimes"`
	Memories          []any             `json:"memories"`
	KnowledgeBases    []any             `json:"knowledgeBases"`
	Credentials       []any             `json:"credentials"`
	Evaluators        []any             `json:"evaluators"`
	OnlineEvalConfigs []any             `json:"onlineEvalConfigs"`
	AgentCoreGateways []any             `json:"agentCoreGateways"`
	PolicyEngines     []any             `json:"policyEngines"`
	ConfigBundles     []any             `json:"configBundles"`
	ABTests           []any             `json:"abTests"`
	Harnesses         []any             `json:"harnesses"`
}

// normalizeCreate checks and completes o, returning the language's details.
func normalizeCreate(o *CreateOptions) (languageInfo, error) {
	if !projectNameRE.MatchString(o.Name) {
		return languageInfo{}, usageError("project name %q is not valid: it must start with a letter and hold only letters and digits (no - or _), at most 23 characters, like MyAgent", o.Name)
	}
	o.Language = strings.ToLower(o.Language)
	switch o.Language {
	case "", "py":
		o.Language = "python"
	case "ts", "javascript", "js":
		o.Language = "typescript"
	case "golang":
		o.Language = "go"
	}
	lang, ok := languages[o.Language]
	if !ok {
		return lang, usageError("language %q is not one of python, typescript, go", o.Language)
	}
	if p := strings.ToUpper(o.Protocol); p != "" && p != "HTTP" {
		return lang, usageError("protocol %q: berth create scaffolds HTTP agents only (MCP, A2A and AGUI runtimes deploy, but bring your own code)", o.Protocol)
	}
	o.Protocol = "HTTP"
	switch strings.ToLower(o.Build) {
	case "":
		o.Build = lang.defaultBuild
	case "codezip":
		o.Build = "CodeZip"
	case "container":
		o.Build = "Container"
	default:
		return lang, usageError("build %q is not CodeZip or Container", o.Build)
	}
	if o.Language == "go" && o.Build == "CodeZip" {
		return lang, usageError("AgentCore has no Go code runtime: Go agents are --build Container (which Berth deploys by building the binary locally)")
	}
	if o.OutputDir == "" {
		o.OutputDir = "."
	}
	return lang, nil
}

// Scaffold creates a project in o.OutputDir/o.Name with the layout and
// configuration of `agentcore create`, and returns its directory and the
// files it wrote, relative to it.
func Scaffold(o CreateOptions) (string, []string, error) {
	lang, err := normalizeCreate(&o)
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(o.OutputDir, o.Name)
	if _, err := os.Lstat(dir); err == nil {
		return "", nil, usageError("%s already exists: choose another name or --output-dir", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", nil, err
	}
	data := templateData{Name: o.Name, Lower: strings.ToLower(o.Name), Language: o.Language,
		LanguageTitle: lang.title, Build: o.Build, RuntimeVersion: lang.runtimeVersion}
	if v, ok := strings.CutPrefix(lang.runtimeVersion, "PYTHON_"); ok {
		data.PythonVersion = strings.ReplaceAll(v, "_", ".")
	}
	codeLocation := "app/" + o.Name + "/"
	files := map[string][]byte{}
	if err := renderTemplates("templates/project", data, "", files); err != nil {
		return "", nil, err
	}
	if err := renderTemplates("templates/"+o.Language, data, codeLocation, files); err != nil {
		return "", nil, err
	}
	if o.Build != "Container" {
		delete(files, codeLocation+"Dockerfile")
		delete(files, codeLocation+".dockerignore")
	}
	rt := RuntimeSpec{Name: o.Name, Build: o.Build, Entrypoint: lang.entrypoint, CodeLocation: codeLocation,
		RuntimeVersion: lang.runtimeVersion, NetworkMode: "PUBLIC", Protocol: o.Protocol}
	spec := projectFileOut{Schema: projectSchemaURL, Name: o.Name, Version: 1, ManagedBy: "CDK", Tags: map[string]string{},
		Runtimes: []RuntimeSpec{rt}, Memories: []any{}, KnowledgeBases: []any{}, Credentials: []any{}, Evaluators: []any{},
		OnlineEvalConfigs: []any{}, AgentCoreGateways: []any{}, PolicyEngines: []any{}, ConfigBundles: []any{},
		ABTests: []any{}, Harnesses: []any{}}
	js, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return "", nil, err
	}
	files[projectFile] = append(js, '\n')
	files[targetsFile] = []byte("[]\n")

	names := sortedKeys(files)
	for _, name := range names {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", nil, fmt.Errorf("create project: %w", err)
		}
		perm := os.FileMode(0o644)
		if name == envLocalFile {
			perm = 0o600
		}
		if err := os.WriteFile(p, files[name], perm); err != nil {
			return "", nil, fmt.Errorf("create project: %w", err)
		}
	}
	return dir, names, nil
}

// renderTemplates renders the templates under root into files, at prefix.
func renderTemplates(root string, data templateData, prefix string, files map[string][]byte) error {
	return fs.WalkDir(templates, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		src, err := templates.ReadFile(p)
		if err != nil {
			return err
		}
		t, err := template.New(path.Base(p)).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return fmt.Errorf("template %s: %w", p, err)
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return fmt.Errorf("template %s: %w", p, err)
		}
		name := prefix + strings.TrimSuffix(strings.TrimPrefix(p, root+"/"), ".tmpl")
		files[name] = buf.Bytes()
		return nil
	})
}

func (a *app) createCommand() *cobra.Command {
	var o CreateOptions
	cmd := &cobra.Command{
		Use:   "create --name NAME",
		Short: "Scaffold an agent project (the layout and agentcore.json of `agentcore create`)",
		Long: `Scaffold an agent project in NAME/, with the layout and configuration file of
the AgentCore CLI, so that it deploys to Berth (berth deploy) and stays valid
for AgentCore (agentcore deploy):

  NAME/agentcore/agentcore.json   the project and its runtime
  NAME/agentcore/aws-targets.json AgentCore deployment targets
  NAME/app/NAME/                  the agent, with a test of its own
  NAME/README.md

The agent follows AgentCore's HTTP contract (POST /invocations, GET /ping on
$PORT), uses its language's standard library only (it runs offline, with
nothing to install), echoes the prompt, streams server-sent events when asked,
and marks where the model call goes.`,
		Example: `  berth create --name MyAgent
  berth create --name MyAgent --language typescript
  berth create --name MyAgent --language go --output-dir ~/agents`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Name == "" {
				return usageError("--name is required, like: berth create --name MyAgent")
			}
			s, err := a.settings()
			if err != nil {
				return err
			}
			out := newOutput(cmd, s.Output.Value == "json")
			dir, files, err := Scaffold(o)
			if err != nil {
				return err
			}
			if out.json {
				return out.printJSON(map[string]any{"project": dir, "files": files})
			}
			out.printf("Created project %s in %s\n", o.Name, dir)
			for _, f := range files {
				out.printf("  %s\n", f)
			}
			out.printf("\nNext:\n  cd %s\n  berth dev            # run it locally\n  berth deploy         # run it on Berth\n  berth invoke \"Hello\"\n", dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.Name, "name", "n", "", "project and agent name: a letter, then letters and digits, at most 23 (required)")
	f.StringVarP(&o.Language, "language", "l", "python", "agent language: python, typescript or go")
	f.StringVar(&o.Protocol, "protocol", "HTTP", "agent protocol: HTTP")
	f.StringVar(&o.Build, "build", "", "CodeZip or Container (default CodeZip; Container for go)")
	f.StringVar(&o.OutputDir, "output-dir", ".", "directory to create the project in")
	cmd.RegisterFlagCompletionFunc("language", cobra.FixedCompletions([]string{"python", "typescript", "go"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("build", cobra.FixedCompletions([]string{"CodeZip", "Container"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("protocol", cobra.FixedCompletions([]string{"HTTP"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
