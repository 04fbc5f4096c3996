// Package telemetry keeps what Berth observes of its agents: each session's
// output as timestamped log lines, readable by runtime, session, time and
// stream, and followable live.
package telemetry

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// LogFile is the name of a session's log inside its directory.
const LogFile = "agent.log"

// Streams an agent writes to.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// maxLine bounds one log line; longer output is split.
const maxLine = 16 << 10

// SessionLog writes one session's log: each line its agent prints, prefixed
// with the time it was read and the stream it came from, in one file so
// stdout and stderr stay in order. The file stops growing at a size limit,
// noting that it did.
type SessionLog struct {
	mu        sync.Mutex
	f         *os.File
	size      int64
	limit     int64
	truncated bool
	wg        sync.WaitGroup
}

// OpenSessionLog opens (appending) the log in dir, to grow to at most limit
// bytes.
func OpenSessionLog(dir string, limit int64) (*SessionLog, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create session log dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, LogFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open session log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open session log: %w", err)
	}
	return &SessionLog{f: f, size: fi.Size(), limit: limit}, nil
}

// Pipe returns a file for the agent to write stream to. Lines written to it
// are logged until every copy of the file is closed; the caller closes its
// own copy once the agent holds one.
func (l *SessionLog) Pipe(stream string) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("session log pipe: %w", err)
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer r.Close()
		br := bufio.NewReaderSize(r, maxLine)
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 {
				l.write(stream, line)
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return // EOF: every writer has gone
			}
		}
	}()
	return w, nil
}

func (l *SessionLog) write(stream string, line []byte) {
	line = bytes.TrimRight(line, "\r\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.truncated {
		return
	}
	rec := fmt.Appendf(nil, "%s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), stream, line)
	if l.size+int64(len(rec)) > l.limit {
		l.truncated = true
		rec = fmt.Appendf(nil, "%s %s [berth: log limit of %d bytes reached; later output is dropped]\n",
			time.Now().UTC().Format(time.RFC3339Nano), Stderr, l.limit)
	}
	n, _ := l.f.Write(rec)
	l.size += int64(n)
}

// Close waits for the agent's output to end and closes the file.
func (l *SessionLog) Close() error {
	l.wg.Wait()
	return l.f.Close()
}

// Line is one logged line.
type Line struct {
	Time    time.Time `json:"time"`
	Session string    `json:"sessionId"`
	Stream  string    `json:"stream"`
	// Level is the line's severity (debug, info, warn, error), as the line
	// says it (a JSON "level" field, or a leading INFO, ERROR:... word) or,
	// if it does not, as its stream suggests (stdout info, stderr warn).
	Level string `json:"level"`
	Text  string `json:"line"`
}

// Levels in increasing severity.
var levels = map[string]int{"debug": 0, "info": 1, "warn": 2, "error": 3}

// ValidLevel reports whether level is one Query.Level accepts.
func ValidLevel(level string) bool {
	_, ok := levels[level]
	return ok
}

var levelWords = map[string]string{
	"DEBUG": "debug", "TRACE": "debug", "INFO": "info", "NOTICE": "info", "WARN": "warn", "WARNING": "warn",
	"ERROR": "error", "ERR": "error", "CRITICAL": "error", "FATAL": "error", "PANIC": "error",
}

// lineLevel finds a line's level; see Line.Level.
func lineLevel(stream, text string) string {
	t := strings.TrimSpace(text)
	if strings.HasPrefix(t, "{") {
		var rec map[string]any
		if json.Unmarshal([]byte(t), &rec) == nil {
			for _, k := range []string{"level", "levelname", "severity", "lvl"} {
				if v, ok := rec[k].(string); ok {
					if l, ok := levelWords[strings.ToUpper(v)]; ok {
						return l
					}
				}
			}
		}
	}
	word := strings.TrimLeft(t, "[")
	if i := strings.IndexFunc(word, func(r rune) bool { return r < 'A' || r > 'Z' }); i > 0 {
		word = word[:i]
	}
	if l, ok := levelWords[word]; ok {
		return l
	}
	if stream == Stderr {
		return "warn"
	}
	return "info"
}

// parseLine reads one record of a log file.
func parseLine(rec string) (Line, bool) {
	ts, rest, ok := strings.Cut(rec, " ")
	if !ok {
		return Line{}, false
	}
	stream, text, _ := strings.Cut(rest, " ")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return Line{}, false
	}
	return Line{Time: t, Stream: stream, Level: lineLevel(stream, text), Text: text}, true
}

// Query selects log lines.
type Query struct {
	// Dirs maps session IDs to their log directories.
	Dirs map[string]string
	// Since and Until drop lines older than Since or newer than Until
	// (zero: no bound).
	Since, Until time.Time
	// Level keeps only lines at least that severe ("" keeps all).
	Level string
	// Stream keeps only one stream ("" keeps both).
	Stream string
	// Tail keeps only the last Tail lines of the history (0 keeps all).
	Tail int
}

func (q Query) keep(l Line) bool {
	return (q.Since.IsZero() || !l.Time.Before(q.Since)) && (q.Until.IsZero() || !l.Time.After(q.Until)) &&
		(q.Stream == "" || l.Stream == q.Stream) && (q.Level == "" || levels[l.Level] >= levels[q.Level])
}

// Read returns the selected lines of the sessions' logs, oldest first.
func Read(q Query) ([]Line, error) {
	var out []Line
	for id, dir := range q.Dirs {
		data, err := os.ReadFile(filepath.Join(dir, LogFile))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read log of session %s: %w", id, err)
		}
		for _, rec := range strings.Split(string(data), "\n") {
			if l, ok := parseLine(rec); ok && q.keep(l) {
				l.Session = id
				out = append(out, l)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b Line) int { return a.Time.Compare(b.Time) })
	if q.Tail > 0 && len(out) > q.Tail {
		out = out[len(out)-q.Tail:]
	}
	return out, nil
}

// Follow sends the selected history, then every new line as it is logged,
// until ctx ends. dirs is called again at every poll, so sessions that start
// later are followed too.
func Follow(ctx context.Context, q Query, dirs func() map[string]string, poll time.Duration, emit func(Line) error) error {
	lines, err := Read(q)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if err := emit(l); err != nil {
			return err
		}
	}
	// Remember how far each file has been read.
	offsets := map[string]int64{}
	for id, dir := range q.Dirs {
		if fi, err := os.Stat(filepath.Join(dir, LogFile)); err == nil {
			offsets[id] = fi.Size()
		}
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		current := dirs()
		ids := slices.Sorted(func(yield func(string) bool) {
			for id := range current {
				if !yield(id) {
					return
				}
			}
		})
		for _, id := range ids {
			n, err := readFrom(filepath.Join(current[id], LogFile), offsets[id], func(l Line) error {
				if !q.keep(l) {
					return nil
				}
				l.Session = id
				return emit(l)
			})
			offsets[id] += n
			if err != nil {
				return err
			}
		}
	}
}

// readFrom emits the whole lines of a file after offset and returns how many
// bytes they took.
func readFrom(path string, offset int64, emit func(Line) error) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return 0, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	end := bytes.LastIndexByte(data, '\n') + 1 // a partial last line waits
	for _, rec := range strings.Split(string(data[:end]), "\n") {
		if l, ok := parseLine(rec); ok {
			if err := emit(l); err != nil {
				return 0, err
			}
		}
	}
	return int64(end), nil
}

// infoFile names the file that records which session a log directory holds
// (directory names of unusual session IDs are hashes).
const infoFile = "session.json"

// SessionInfo describes the session a log directory belongs to.
type SessionInfo struct {
	RuntimeID string    `json:"runtimeId"`
	SessionID string    `json:"sessionId"`
	Version   int       `json:"version"`
	StartedAt time.Time `json:"startedAt"`
}

// WriteSessionInfo records in dir which session it belongs to.
func WriteSessionInfo(dir string, info SessionInfo) error {
	data, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, infoFile), data, 0o640); err != nil {
		return fmt.Errorf("record session log info: %w", err)
	}
	return nil
}

// SessionDirs returns the log directories of a runtime's sessions, live or
// ended, under root, keyed by session ID.
func SessionDirs(root, runtimeID string) map[string]string {
	out := map[string]string{}
	base := filepath.Join(root, runtimeID)
	ents, _ := os.ReadDir(base)
	for _, e := range ents {
		dir := filepath.Join(base, e.Name())
		data, err := os.ReadFile(filepath.Join(dir, infoFile))
		var info SessionInfo
		if err != nil || json.Unmarshal(data, &info) != nil || info.SessionID == "" {
			continue
		}
		out[info.SessionID] = dir
	}
	return out
}

// Prune removes the logs of sessions that are not live: those not written
// for maxAge, then the oldest while all logs under root take more than
// maxBytes. live reports whether a directory belongs to a live session.
// It returns how many session logs it removed.
func Prune(root string, maxAge time.Duration, maxBytes int64, live func(dir string) bool) (int, error) {
	type entry struct {
		dir  string
		mod  time.Time
		size int64
	}
	var all []entry
	var total int64
	runtimes, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("prune logs: %w", err)
	}
	for _, rt := range runtimes {
		sessions, _ := os.ReadDir(filepath.Join(root, rt.Name()))
		for _, s := range sessions {
			dir := filepath.Join(root, rt.Name(), s.Name())
			fi, err := os.Stat(filepath.Join(dir, LogFile))
			if err != nil {
				continue
			}
			total += fi.Size()
			if !live(dir) && !strings.HasPrefix(s.Name(), "pool-") {
				all = append(all, entry{dir, fi.ModTime(), fi.Size()})
			}
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return a.mod.Compare(b.mod) })
	removed := 0
	for _, e := range all {
		if time.Since(e.mod) < maxAge && total <= maxBytes {
			break
		}
		if err := os.RemoveAll(e.dir); err != nil {
			return removed, fmt.Errorf("prune logs: %w", err)
		}
		total -= e.size
		removed++
	}
	return removed, nil
}
