package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
)

// DefaultServer is where the client looks for Berth when nothing says
// otherwise: `berth server`'s default listener.
const DefaultServer = "http://127.0.0.1:4780"

// DefaultRegion is the region the SDK signs for when none is configured.
const DefaultRegion = "us-east-1"

// placeholderAccessKey is used to sign requests when no credentials are
// configured; only a server run with --insecure-no-auth accepts it.
const placeholderAccessKey = "BERTHPLACEHOLDERKEY"

// Setting is one resolved configuration value and where it came from.
type Setting struct {
	Value string `json:"value"`
	// Source is "flag --server", "env BERTH_ENDPOINT", "config file" or
	// "default".
	Source string `json:"source"`
}

// Settings is the client's resolved configuration.
type Settings struct {
	// Server is the URL of the control plane and of Berth's own API.
	Server Setting `json:"server"`
	// DataServer is the URL of the data plane (invocations). Berth serves
	// both on one listener, so the two differ only if the environment
	// says so.
	DataServer      Setting `json:"dataServer"`
	Region          Setting `json:"region"`
	Output          Setting `json:"output"`
	AccessKeyID     Setting `json:"accessKeyId"`
	SecretAccessKey Setting `json:"-"`
	SessionToken    string  `json:"-"`
	// ConfigFile is the path of the configuration file, which may not
	// exist.
	ConfigFile string `json:"configFile"`
}

// fileConfig is the configuration file ($XDG_CONFIG_HOME/berth/config.json).
type fileConfig struct {
	Server          string `json:"server,omitempty"`
	Region          string `json:"region,omitempty"`
	Output          string `json:"output,omitempty"`
	AccessKeyID     string `json:"accessKeyId,omitempty"`
	SecretAccessKey string `json:"secretAccessKey,omitempty"`
}

// configKeys are the keys `berth config set` accepts, with the file member
// each one sets.
var configKeys = map[string]func(*fileConfig) *string{
	"server":            func(c *fileConfig) *string { return &c.Server },
	"region":            func(c *fileConfig) *string { return &c.Region },
	"output":            func(c *fileConfig) *string { return &c.Output },
	"access-key-id":     func(c *fileConfig) *string { return &c.AccessKeyID },
	"secret-access-key": func(c *fileConfig) *string { return &c.SecretAccessKey },
}

// ResolveInput is what the configuration is resolved from.
type ResolveInput struct {
	// Flag values; "" when the flag was not given.
	Server, Region, Output string
	// Env looks up environment variables (os.LookupEnv).
	Env func(string) (string, bool)
}

// ConfigPath returns the configuration file's path:
// $XDG_CONFIG_HOME/berth/config.json, else ~/.config/berth/config.json.
func ConfigPath(env func(string) (string, bool)) (string, error) {
	if dir, ok := env("XDG_CONFIG_HOME"); ok && dir != "" {
		return filepath.Join(dir, "berth", "config.json"), nil
	}
	home, ok := env("HOME")
	if !ok || home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the configuration file: %w", err)
		}
		home = h
	}
	return filepath.Join(home, ".config", "berth", "config.json"), nil
}

// Resolve works out the configuration. Each value comes from the first of:
// its flag, the environment, the configuration file, the default. For the
// server that is --server, then BERTH_ENDPOINT, then AgentCore's
// AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL (data plane:
// AWS_ENDPOINT_URL_BEDROCK_AGENTCORE) and AWS_ENDPOINT_URL, then the file,
// then http://127.0.0.1:4780.
func Resolve(in ResolveInput) (Settings, error) {
	env := func(name string) string {
		if v, ok := in.Env(name); ok {
			return strings.TrimSpace(v)
		}
		return ""
	}
	var s Settings
	path, err := ConfigPath(in.Env)
	if err != nil {
		return s, err
	}
	s.ConfigFile = path
	file, err := readConfigFile(path)
	if err != nil {
		return s, err
	}
	type source struct{ value, name string }
	first := func(sources ...source) Setting {
		for _, src := range sources {
			if src.value != "" {
				return Setting{Value: src.value, Source: src.name}
			}
		}
		return Setting{}
	}
	fromEnv := func(name string) source { return source{env(name), "env " + name} }
	fromFile := func(v string) source { return source{v, "config file"} }

	s.Server = first(source{in.Server, "flag --server"}, fromEnv("BERTH_ENDPOINT"),
		fromEnv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL"), fromEnv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE"),
		fromEnv("AWS_ENDPOINT_URL"), fromFile(file.Server), source{DefaultServer, "default"})
	s.DataServer = first(source{in.Server, "flag --server"}, fromEnv("BERTH_ENDPOINT"),
		fromEnv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE"), fromEnv("AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL"),
		fromEnv("AWS_ENDPOINT_URL"), fromFile(file.Server), source{DefaultServer, "default"})
	s.Region = first(source{in.Region, "flag --region"}, fromEnv("AWS_REGION"), fromEnv("AWS_DEFAULT_REGION"),
		fromFile(file.Region), source{DefaultRegion, "default"})
	s.Output = first(source{in.Output, "flag --output"}, fromEnv("BERTH_OUTPUT"), fromFile(file.Output),
		source{"text", "default"})
	if id, secret := env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		s.AccessKeyID = Setting{id, "env AWS_ACCESS_KEY_ID"}
		s.SecretAccessKey = Setting{secret, "env AWS_SECRET_ACCESS_KEY"}
		s.SessionToken = env("AWS_SESSION_TOKEN")
	} else if file.AccessKeyID != "" && file.SecretAccessKey != "" {
		s.AccessKeyID = Setting{file.AccessKeyID, "config file"}
		s.SecretAccessKey = Setting{file.SecretAccessKey, "config file"}
	} else {
		s.AccessKeyID = Setting{placeholderAccessKey, "default (placeholder: accepted only by a server run with --insecure-no-auth)"}
		s.SecretAccessKey = Setting{"placeholder", "default"}
	}

	for _, u := range []Setting{s.Server, s.DataServer} {
		if err := checkServerURL(u.Value); err != nil {
			return s, fmt.Errorf("server URL from %s: %w", u.Source, err)
		}
	}
	s.Server.Value = strings.TrimRight(s.Server.Value, "/")
	s.DataServer.Value = strings.TrimRight(s.DataServer.Value, "/")
	if err := checkRegion(s.Region.Value); err != nil {
		return s, fmt.Errorf("region from %s: %w", s.Region.Source, err)
	}
	if err := checkOutput(s.Output.Value); err != nil {
		return s, fmt.Errorf("output format from %s: %w", s.Output.Source, err)
	}
	return s, nil
}

func readConfigFile(path string) (fileConfig, error) {
	var c fileConfig
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read configuration file: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("configuration file %s: %w (fix or delete it)", path, err)
	}
	return c, nil
}

// writeConfigFile writes c to path, readable by its owner only since it may
// hold credentials.
func writeConfigFile(path string, c fileConfig) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write configuration file: %w", err)
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(data, '\n'), 0o600)
}

func checkServerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL with a host, like %s", s, DefaultServer)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q must not have a query or fragment", s)
	}
	return nil
}

var regionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

func checkRegion(s string) error {
	if !regionRE.MatchString(s) {
		return fmt.Errorf("%q is not a region name like us-east-1", s)
	}
	return nil
}

func checkOutput(s string) error {
	if s != "text" && s != "json" {
		return fmt.Errorf("%q is not text or json", s)
	}
	return nil
}

// checkConfigValue validates a value `berth config set` is given.
func checkConfigValue(key, value string) error {
	switch key {
	case "server":
		return checkServerURL(value)
	case "region":
		return checkRegion(value)
	case "output":
		return checkOutput(value)
	}
	if value == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func (a *app) configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show the client's configuration and where each value comes from",
		Long: `Show the client's resolved configuration and where each value comes from.

Each value comes from the first of: its flag, the environment, the
configuration file ($XDG_CONFIG_HOME/berth/config.json or
~/.config/berth/config.json), the default. The server URL is read from
--server, BERTH_ENDPOINT, AWS_ENDPOINT_URL_BEDROCK_AGENTCORE_CONTROL (data
plane: AWS_ENDPOINT_URL_BEDROCK_AGENTCORE), AWS_ENDPOINT_URL, the file, then
http://127.0.0.1:4780. Credentials come from AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, the file, or a placeholder.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.settings()
			if err != nil {
				return err
			}
			out := newOutput(cmd, s.Output.Value == "json")
			if out.json {
				return out.printJSON(s)
			}
			secret := Setting{Value: "(not shown)", Source: s.SecretAccessKey.Source}
			rows := [][]string{
				{"server", s.Server.Value, s.Server.Source},
				{"data-server", s.DataServer.Value, s.DataServer.Source},
				{"region", s.Region.Value, s.Region.Source},
				{"output", s.Output.Value, s.Output.Source},
				{"access-key-id", s.AccessKeyID.Value, s.AccessKeyID.Source},
				{"secret-access-key", secret.Value, secret.Source},
			}
			out.table([]string{"KEY", "VALUE", "FROM"}, rows)
			state := "exists"
			if _, err := os.Stat(s.ConfigFile); err != nil {
				state = "not created yet: berth config set KEY VALUE creates it"
			}
			out.printf("\nconfig file: %s (%s)\n", s.ConfigFile, state)
			return nil
		},
	}
	keys := make([]string, 0, len(configKeys))
	for k := range configKeys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	set := &cobra.Command{
		Use:       "set KEY VALUE",
		Short:     "Write a value to the configuration file (keys: " + strings.Join(keys, ", ") + ")",
		Args:      cobra.ExactArgs(2),
		ValidArgs: keys,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.editConfig(cmd, args[0], &args[1])
		},
	}
	unset := &cobra.Command{
		Use:       "unset KEY",
		Short:     "Remove a value from the configuration file",
		Args:      cobra.ExactArgs(1),
		ValidArgs: keys,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.editConfig(cmd, args[0], nil)
		},
	}
	cmd.AddCommand(set, unset)
	return cmd
}

// editConfig sets key to *value in the configuration file, or removes it
// when value is nil.
func (a *app) editConfig(cmd *cobra.Command, key string, value *string) error {
	field, ok := configKeys[key]
	if !ok {
		keys := make([]string, 0, len(configKeys))
		for k := range configKeys {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return usageError("unknown configuration key %q; keys are %s", key, strings.Join(keys, ", "))
	}
	if value != nil {
		if err := checkConfigValue(key, *value); err != nil {
			return usageError("%s: %v", key, err)
		}
	}
	path, err := ConfigPath(a.env)
	if err != nil {
		return err
	}
	c, err := readConfigFile(path)
	if err != nil {
		return err
	}
	if value == nil {
		*field(&c) = ""
	} else {
		*field(&c) = strings.TrimRight(*value, "/")
	}
	if err := writeConfigFile(path, c); err != nil {
		return err
	}
	out := newOutput(cmd, a.output == "json")
	if out.json {
		return out.printJSON(map[string]any{"configFile": path, "key": key, "value": value})
	}
	if value == nil {
		out.printf("removed %s from %s\n", key, path)
	} else {
		out.printf("set %s in %s\n", key, path)
	}
	return nil
}
