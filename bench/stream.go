package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// stream measures server-sent events: the agent's stream op sends frames
// stamped with its clock (the host's: sandboxes share it), so each frame's
// arrival minus its stamp is the delay of the path it took.
func (b *bench) stream(ctx context.Context, s *agentSession) {
	n, delay := b.cfg.StreamFrames, b.cfg.StreamDelay
	t := b.rep.section("Streaming", fmt.Sprintf(
		"%d streams per path, alternating, each `{\"op\":\"stream\",\"n\":%d,\"delay\":%g}`: the agent writes and "+
			"flushes one SSE frame carrying its send time `t` every %s. *first frame*: from sending the request "+
			"to the first frame; *frame delay*: a frame's arrival minus its `t`, over every frame. *direct* dials "+
			"the agent inside its sandbox as Berth does; *Berth* goes through InvokeAgentRuntime.",
		b.cfg.Streams, n, delay.Seconds(), delay),
		"path", "first frame p50", "frame delay p50", "frame delay p99", "frames")
	defer b.rep.done(t)

	paths, closePaths := s.paths()
	defer closePaths()
	hdr := map[string]string{"Content-Type": "application/json", hdrSessionID: s.sid}
	first := map[string][]time.Duration{}
	lags := map[string][]time.Duration{}
	for range b.cfg.Streams {
		for _, p := range paths {
			ttff, l, err := streamOnce(ctx, p.rt, p.url, hdr, n, delay)
			if err != nil {
				b.rep.fail(t, fmt.Errorf("%s: %w", p.name, err))
				return
			}
			first[p.name] = append(first[p.name], ttff)
			lags[p.name] = append(lags[p.name], l...)
		}
	}
	for _, p := range paths {
		t.add(p.name, ms(pct(first[p.name], 50)), ms(pct(lags[p.name], 50)), ms(pct(lags[p.name], 99)), strconv.Itoa(len(lags[p.name])))
	}
	add50 := pct(lags["Berth"], 50) - pct(lags["direct"], 50)
	add99 := pct(lags["Berth"], 99) - pct(lags["direct"], 99)
	t.add("added by Berth", ms(pct(first["Berth"], 50)-pct(first["direct"], 50)), ms(add50), ms(add99), "")
	b.rep.check("stream: delay added per frame (p50)", "≤ 1 ms", ms(add50), add50 <= time.Millisecond)
	b.rep.check("stream: delay added per frame (p99)", "≤ 1 ms", ms(add99), add99 <= time.Millisecond)
	// A proxy that buffered the answer would deliver the first frame only
	// once the agent had sent them all.
	whole := time.Duration(n-1) * delay
	ff := pct(first["Berth"], 50)
	b.rep.check("stream: first frame arrives before the stream ends (no buffering)",
		fmt.Sprintf("< ½ of the stream's %s", ms(whole)), ms(ff), n > 1 && ff < whole/2)
}

// streamOnce asks the agent at url for n frames delay apart and returns the
// time to the first frame and each frame's delay (arrival minus the agent's
// send time).
func streamOnce(ctx context.Context, rt http.RoundTripper, url string, hdr map[string]string, n int, delay time.Duration) (time.Duration, []time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute+time.Duration(n)*delay)
	defer cancel()
	body := fmt.Sprintf(`{"op":"stream","n":%d,"delay":%g}`, n, delay.Seconds())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return 0, nil, fmt.Errorf("stream: %s: %s", resp.Status, msg)
	}
	var ttff time.Duration
	var lags []time.Duration
	err = readFrames(resp.Body, func(arrived time.Time, sent time.Time) {
		if lags == nil {
			ttff = arrived.Sub(start)
		}
		lags = append(lags, arrived.Sub(sent))
	})
	if err != nil {
		return 0, nil, err
	}
	if len(lags) != n {
		return 0, nil, fmt.Errorf("stream: got %d frames, want %d", len(lags), n)
	}
	return ttff, lags, nil
}

// readFrames reads SSE "data:" lines holding {"t": seconds} from r and calls
// frame with each one's arrival and send time.
func readFrames(r io.Reader, frame func(arrived, sent time.Time)) error {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if data, ok := strings.CutPrefix(line, "data:"); ok {
			arrived := time.Now()
			var f struct {
				T float64 `json:"t"`
			}
			if jerr := json.Unmarshal([]byte(strings.TrimSpace(data)), &f); jerr != nil || f.T <= 0 {
				return fmt.Errorf("stream: frame %q has no send time t", strings.TrimSpace(line))
			}
			sec, frac := math.Modf(f.T)
			frame(arrived, time.Unix(int64(sec), int64(frac*1e9)))
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream: %w", err)
		}
	}
}
