package telemetry

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Opener opens one session's output as a sandbox driver keeps it
// (sandbox.LogSource): one printed line per line, oldest first, each
// starting with its RFC 3339 time and a space, stdout and stderr merged.
// Lines before since (which the driver may round down) are left out; a
// positive tail keeps only the last tail lines; with follow, the reader
// goes on with new output until the output ends or ctx does.
type Opener func(ctx context.Context, since time.Time, tail int, follow bool) (io.ReadCloser, error)

// StreamHistory is the history of one session's output as a driver keeps
// it, read by ReadStream, and the means to follow it on.
type StreamHistory struct {
	// Lines are the selected lines, oldest first, in the shape Read gives
	// for log files.
	Lines []Line

	session string
	q       Query
	open    Opener
	last    time.Time // of the last line read, selected or not
}

// ReadStream reads the selected history of one session's output through
// open. The streams are merged, so every line counts as stdout (its level
// is found as for stdout).
func ReadStream(ctx context.Context, session string, q Query, open Opener) (*StreamHistory, error) {
	lines, last, err := readStream(ctx, session, q, open)
	if err != nil {
		return nil, err
	}
	return &StreamHistory{Lines: lines, session: session, q: q, open: open, last: last}, nil
}

// Follow sends every line printed after the history, as it is printed,
// until ctx ends or the output does (the agent exited).
func (h *StreamHistory) Follow(ctx context.Context, emit func(Line) error) error {
	// Follow from the last line read: the driver's since is coarser, so
	// lines up to it come again and are skipped.
	since, last := h.q.Since, h.last
	if last.After(since) {
		since = last
	}
	rc, err := h.open(ctx, since, 0, true)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("follow the output of session %s: %w", h.session, err)
	}
	defer rc.Close()
	err = scanStream(rc, h.session, func(l Line) error {
		if (!last.IsZero() && !l.Time.After(last)) || !h.q.keep(l) {
			return nil
		}
		return emit(l)
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("follow the output of session %s: %w", h.session, err)
	}
	return nil
}

// readStream reads the selected history and returns it with the time of
// the last line read, selected or not.
func readStream(ctx context.Context, session string, q Query, open Opener) ([]Line, time.Time, error) {
	// The driver can keep only the last lines itself when no filter but
	// since applies and it can apply since exactly (to the second).
	serverTail := 0
	if q.Tail > 0 && q.Level == "" && q.Until.IsZero() && q.Stream != Stderr && q.Since.Equal(q.Since.Truncate(time.Second)) {
		serverTail = q.Tail
	}
	rc, err := open(ctx, q.Since, serverTail, false)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read the output of session %s: %w", session, err)
	}
	defer rc.Close()
	var out []Line
	var last time.Time
	err = scanStream(rc, session, func(l Line) error {
		last = l.Time
		if !q.keep(l) {
			return nil
		}
		out = append(out, l)
		if q.Tail > 0 && len(out) > 2*q.Tail {
			// Keep memory bounded by the tail, not by the whole output.
			out = append(out[:0], out[len(out)-q.Tail:]...)
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read the output of session %s: %w", session, err)
	}
	if q.Tail > 0 && len(out) > q.Tail {
		out = out[len(out)-q.Tail:]
	}
	return out, last, nil
}

// scanStream emits each line of a driver's output as a Line of session,
// splitting lines longer than maxLine. A line without a leading time (the
// rest of a split line) takes the time of the line before it.
func scanStream(r io.Reader, session string, emit func(Line) error) error {
	br := bufio.NewReaderSize(r, maxLine)
	var prev time.Time
	for {
		raw, err := br.ReadSlice('\n')
		if len(raw) > 0 {
			l := streamLine(string(bytes.TrimRight(raw, "\r\n")), prev)
			l.Session = session
			prev = l.Time
			if err := emit(l); err != nil {
				return err
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

// streamLine reads one line of a driver's output; prev is the time of the
// line before it.
func streamLine(raw string, prev time.Time) Line {
	ts, text, _ := strings.Cut(raw, " ") // an empty line may lack the space
	if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
		return Line{Time: t.UTC(), Stream: Stdout, Level: lineLevel(Stdout, text), Text: text}
	}
	return Line{Time: prev, Stream: Stdout, Level: lineLevel(Stdout, raw), Text: raw}
}
