package session

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/sandbox"
)

// logDriver is a sharedDriver that keeps each sandbox's output, as the
// kubernetes driver does (sandbox.LogSource).
type logDriver struct {
	*sharedDriver
	output map[string]string // by sandbox id
	asked  []sandbox.LogOptions
}

func (d *logDriver) Logs(_ context.Context, id string, o sandbox.LogOptions) (io.ReadCloser, error) {
	d.asked = append(d.asked, o)
	out, ok := d.output[id]
	if !ok {
		return nil, sandbox.ErrNotFound
	}
	return io.NopCloser(strings.NewReader(out)), nil
}

func TestSandboxLogs(t *testing.T) {
	shared := func() *sharedDriver {
		return &sharedDriver{fakeDriver: &fakeDriver{}, labels: map[string]map[string]string{}}
	}
	const line = "2026-01-02T03:04:05.000000001Z hello\n"
	cases := []struct {
		name     string
		driver   sandbox.Driver
		registry bool
		session  string
		want     string
		wantErr  []error // errors.Is each
	}{
		{"the record's sandbox's output", &logDriver{sharedDriver: shared(), output: map[string]string{"sb-1": line}}, true, "s1", line, nil},
		{"no record", &logDriver{sharedDriver: shared(), output: map[string]string{"sb-1": line}}, true, "s2", "", []error{ErrNotFound}},
		{"the sandbox is gone", &logDriver{sharedDriver: shared(), output: map[string]string{}}, true, "s1", "", []error{ErrNotFound, sandbox.ErrNotFound}},
		{"a driver that keeps no output", shared(), true, "s1", "", []error{ErrNotFound}},
		{"no registry", &logDriver{sharedDriver: shared(), output: map[string]string{"sb-1": line}}, false, "s1", "", []error{ErrNotFound}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := Options{LogDir: t.TempDir(), Replica: "a"}
			if c.registry {
				reg := newMemRegistry()
				reg.Create(t.Context(), Record{RuntimeID: "rt", SessionID: "s1", SandboxID: "sb-1", Owner: "b",
					LeaseUntil: time.Now().Add(time.Hour), CreatedAt: time.Now(), LastUsed: time.Now()})
				opts.Registry = reg
			}
			m := New(c.driver, opts)
			defer m.Close()
			o := sandbox.LogOptions{Follow: true, Since: time.Unix(5, 0), Tail: 3}
			rc, err := m.SandboxLogs(t.Context(), "rt", c.session, o)
			for _, want := range c.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("err = %v, want %v", err, want)
				}
			}
			if c.wantErr != nil {
				if err == nil {
					rc.Close()
				} else if !strings.Contains(err.Error(), c.session) {
					t.Errorf("err = %v, want it to name session %s", err, c.session)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, _ := io.ReadAll(rc)
			if string(got) != c.want {
				t.Errorf("output %q, want %q", got, c.want)
			}
			if d := c.driver.(*logDriver); len(d.asked) != 1 || d.asked[0] != o {
				t.Errorf("driver asked %+v, want %+v", d.asked, o)
			}
		})
	}
}
