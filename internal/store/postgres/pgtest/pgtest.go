// Package pgtest gives tests a real PostgreSQL server: the one named by
// $BERTH_TEST_POSTGRES if that is set, or else one it starts from the
// PostgreSQL binaries installed on the machine (Debian's postgresql
// package), in a temporary directory, listening on 127.0.0.1 at a free port
// and on a Unix socket in that directory. Each test gets a database of its
// own.
//
// A test package makes one Server, in TestMain:
//
//	var pg *pgtest.Server
//
//	func TestMain(m *testing.M) {
//		os.Exit(pgtest.Main(m, &pg))
//	}
//
// and each test that needs PostgreSQL calls pg.Database(t), which starts the
// server on first use, so that a run of tests that need none starts none,
// and skips the test, saying why, when no PostgreSQL is installed.
package pgtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable that points the tests at an
// existing PostgreSQL server instead of starting one. Its value is a
// connection string for a role that may create databases.
const EnvDSN = "BERTH_TEST_POSTGRES"

// Server is a PostgreSQL server for tests, started on first use.
type Server struct {
	once     sync.Once
	startErr error
	*instance
}

// instance is a server that is running, or that is not there.
type instance struct {
	// admin connects to the server's maintenance database as a role that
	// may create and drop databases.
	admin *url.URL
	// unavailable, if set, says why there is no server.
	unavailable string
	// password is the superuser's, for a server this package started.
	password string

	argv    []string // runs the server
	cred    *syscall.Credential
	cmd     *exec.Cmd
	exited  chan struct{}
	stderr  *strings.Builder // of cmd; read once exited is closed
	dir     string
	counter atomic.Int64
}

// Main stores a new Server in *srv, runs the tests and stops the server if
// a test started it. It returns the exit code for os.Exit.
func Main(m *testing.M, srv **Server) int {
	s := &Server{}
	*srv = s
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// start returns the server named by $BERTH_TEST_POSTGRES, or starts one. If
// PostgreSQL is not installed, it returns an instance that says why; it
// fails only when PostgreSQL is there but does not start.
func start(ctx context.Context) (*instance, error) {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		u, err := url.Parse(dsn)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, fmt.Errorf("$%s must be a postgres:// URL", EnvDSN)
		}
		return &instance{admin: u}, nil
	}
	bin, err := findBinaries()
	if err != nil {
		return &instance{unavailable: err.Error()}, nil
	}
	if _, err := credential(); err != nil {
		return &instance{unavailable: err.Error()}, nil
	}
	var lastErr error
	// The free port may be taken by someone else between finding it and
	// the server binding it; a few tries make that harmless.
	for range 3 {
		s, err := startCluster(ctx, bin)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// findBinaries returns the directory holding initdb and postgres: the one
// of initdb on $PATH, or the newest /usr/lib/postgresql/*/bin.
func findBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("PostgreSQL is not installed (no initdb on $PATH or in /usr/lib/postgresql/*/bin; apt-get install postgresql, or set $%s)", EnvDSN)
}

// startCluster initializes a cluster in a new temporary directory and runs
// postgres on it. As root it runs both as the user postgres, since they
// refuse to run as root.
func startCluster(ctx context.Context, bin string) (_ *instance, err error) {
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "berth-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
	}
	password := rand.Text()
	pwfile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(password+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	if cred != nil {
		if err := os.Chown(pwfile, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("start postgres: %w", err)
		}
	}
	data := filepath.Join(dir, "data")
	// TCP connections must give the password, so that tests see a DSN
	// with a secret in it; the socket in dir is for nobody else.
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "--pgdata", data, "--username", "postgres",
		"--pwfile", pwfile, "--auth-local", "trust", "--auth-host", "scram-sha-256",
		"--encoding", "UTF8", "--locale", "C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	// The tests' working directory may be closed to the user postgres.
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &instance{dir: dir, password: password}
	s.admin = &url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", password),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Path:     "/postgres",
		RawQuery: "sslmode=disable",
	}
	// Surviving a power loss is of no use in a throwaway cluster, and
	// fsync is slow; commits still wait for their WAL to be written, so
	// acknowledged transactions survive the server process being killed.
	s.argv = []string{filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(port),
		"-c", "unix_socket_directories=" + dir,
		"-c", "fsync=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "shared_buffers=32MB"}
	s.cred = cred
	if err := s.launch(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// launch runs postgres and waits until it accepts connections.
func (s *instance) launch(ctx context.Context) error {
	s.cmd = exec.Command(s.argv[0], s.argv[1:]...)
	s.cmd.Dir = s.dir
	// The server must not outlive the tests, even if they crash; its own
	// process group lets Crash kill it with all its backends.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	s.cmd.Stdout = io.Discard
	s.stderr = &strings.Builder{}
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	s.exited = exited
	cmd := s.cmd
	go func() {
		cmd.Wait()
		close(exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		s.stop()
		return err
	}
	return nil
}

// Crash kills the server and all its processes with SIGKILL, as a crash
// would, and starts it again on the same files, where it recovers from its
// write-ahead log. It skips the test for a server named by
// $BERTH_TEST_POSTGRES, which is not this package's to kill.
func (s *Server) Crash(tb testing.TB) {
	tb.Helper()
	if s.instance == nil || s.cmd == nil {
		tb.Skip("pgtest: the server is not one this package started, so it cannot crash it")
	}
	if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		tb.Fatalf("pgtest: kill postgres: %v", err)
	}
	<-s.exited
	if err := s.launch(tb.Context()); err != nil {
		tb.Fatalf("pgtest: restart postgres after the crash: %v", err)
	}
}

// credential returns the user to run PostgreSQL as: nil (the current user)
// unless that is root, else the user postgres that Debian's package makes.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("PostgreSQL refuses to run as root, and there is no user postgres to run it as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user postgres: gid %q: %w", u.Gid, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady waits until the server accepts connections, it exits, or a
// minute passes.
func (s *instance) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		conn, err := pgx.Connect(ctx, s.admin.String())
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-s.exited:
			return fmt.Errorf("postgres exited while starting: %s", s.stderr.String())
		case <-ctx.Done():
			return fmt.Errorf("postgres did not accept connections: %w; last error: %v", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Password returns the password in the connection strings of Database, for
// tests that check it is not leaked; "" before the first Database or for a
// server named by $BERTH_TEST_POSTGRES.
func (s *Server) Password() string {
	if s.instance == nil {
		return ""
	}
	return s.password
}

// Stop stops the server if Database started it, and removes its files. It
// does nothing to a server named by $BERTH_TEST_POSTGRES.
func (s *Server) Stop() error {
	if s.instance == nil {
		return nil
	}
	return s.stop()
}

func (s *instance) stop() error {
	if s.cmd == nil {
		return nil
	}
	defer os.RemoveAll(s.dir)
	// SIGINT is PostgreSQL's fast shutdown: sessions are ended, no
	// checkpoint is waited for beyond the shutdown one.
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop postgres: %w", err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(30 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL) // with its backends
		<-s.exited
		return errors.New("stop postgres: it did not shut down within 30s; killed")
	}
}

// Database creates an empty database for the test, dropped when the test
// ends, and returns its connection string (a postgres:// URL). It skips the
// test if there is no PostgreSQL.
func (s *Server) Database(tb testing.TB) string {
	tb.Helper()
	if s == nil {
		tb.Fatal("pgtest: no server; make one in TestMain with pgtest.Main")
	}
	s.once.Do(func() { s.instance, s.startErr = start(context.Background()) })
	if s.startErr != nil {
		tb.Fatalf("pgtest: %v", s.startErr)
	}
	if s.unavailable != "" {
		tb.Skip(s.unavailable)
	}
	name := fmt.Sprintf("berth_test_%d_%d", os.Getpid(), s.counter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.admin1(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// FORCE ends sessions a test left open, e.g. in a killed child.
		if err := s.admin1(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: %v", err)
		}
	})
	u := *s.admin
	u.Path = "/" + name
	return u.String()
}

// admin1 runs one statement on the maintenance database.
func (s *instance) admin1(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.admin.String())
	if err != nil {
		return fmt.Errorf("connect to the test server: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}
