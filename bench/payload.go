package main

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

// payload sends a large application/octet-stream body, which the agent
// echoes, directly and through Berth, and watches the memory of this
// process (which hosts Berth) meanwhile.
func (b *bench) payload(ctx context.Context, s *agentSession) {
	size := b.cfg.PayloadBytes
	t := b.rep.section("Payload", fmt.Sprintf(
		"a %s MB application/octet-stream request that the agent reads whole and sends back (%d round trips per "+
			"path, alternating, after one unmeasured each; the answer's length and CRC are checked). *peak RSS growth*: this process hosts "+
			"Berth, so before each call it collects garbage and returns freed memory to the OS, reads VmRSS, "+
			"resets the peak (`echo 5 > /proc/self/clear_refs`) and after the call reads VmHWM; the growth is the "+
			"difference. The client streams both bodies with small buffers, so it adds little: the *direct* row, "+
			"where Berth is idle, shows how little.", mb(size), b.cfg.PayloadReps),
		"path", "size", "round trip p50", "MB/s each way", "peak RSS growth (max)")
	defer b.rep.done(t)

	paths, closePaths := s.paths()
	defer closePaths()
	hdr := map[string]string{"Content-Type": "application/octet-stream", hdrSessionID: s.sid}
	// One unmeasured round trip per path first, which makes the
	// connections and grows the agent's heap to hold a body.
	for _, p := range paths {
		if _, err := payloadOnce(ctx, p.rt, p.url, hdr, size); err != nil {
			b.rep.fail(t, fmt.Errorf("%s: %w", p.name, err))
			return
		}
	}
	times := map[string][]time.Duration{}
	growth := map[string]int64{}
	for range b.cfg.PayloadReps {
		for _, p := range paths {
			var d time.Duration
			g, err := peakGrowth(func() error {
				var err error
				d, err = payloadOnce(ctx, p.rt, p.url, hdr, size)
				return err
			})
			if err != nil {
				b.rep.fail(t, fmt.Errorf("%s: %w", p.name, err))
				return
			}
			times[p.name] = append(times[p.name], d)
			growth[p.name] = max(growth[p.name], g)
		}
	}
	for _, p := range paths {
		d := pct(times[p.name], 50)
		t.add(p.name, mb(size)+" MB", ms(d), fmt.Sprintf("%.0f", float64(size)/1e6/d.Seconds()), mib(float64(growth[p.name])))
	}
	const target = "payload: RSS growth of the process hosting Berth, through Berth"
	got := mib(float64(growth["Berth"]))
	if size < 100_000_000 {
		b.rep.skipped(target, "< 32 MiB at 100 MB", fmt.Sprintf("measured at %s MB only: %s", mb(size), got))
	} else {
		b.rep.check(target, "< 32 MiB at 100 MB", got, growth["Berth"] < 32<<20)
	}
}

func mb(size int64) string { return strconv.FormatFloat(float64(size)/1e6, 'f', -1, 64) }

// payloadOnce sends size bytes to url, reads the echo and checks it.
func payloadOnce(ctx context.Context, rt http.RoundTripper, url string, hdr map[string]string, size int64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	src := newPattern()
	want := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	if _, err := io.Copy(want, io.LimitReader(src, size)); err != nil {
		return 0, err
	}
	src = newPattern()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, io.LimitReader(src, size))
	if err != nil {
		return 0, err
	}
	req.ContentLength = size
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return 0, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	got := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	n, err := io.Copy(got, resp.Body)
	d := time.Since(start)
	switch {
	case err != nil:
		return 0, fmt.Errorf("read the echo: %w", err)
	case n != size:
		return 0, fmt.Errorf("the echo is %d bytes, want %d", n, size)
	case got.Sum32() != want.Sum32():
		return 0, fmt.Errorf("the echo differs from what was sent")
	}
	return d, nil
}

// pattern is an endless stream of bytes that repeats a random block: cheap
// to produce, and not all zeros, which a compressing hop could flatter.
type pattern struct {
	block []byte
	off   int
}

func newPattern() *pattern {
	r := rand.NewChaCha8([32]byte{'b', 'e', 'r', 't', 'h'})
	p := &pattern{block: make([]byte, 1<<16)}
	r.Read(p.block)
	return p
}

func (p *pattern) Read(b []byte) (int, error) {
	n := copy(b, p.block[p.off:])
	p.off = (p.off + n) % len(p.block)
	return n, nil
}

// peakGrowth runs f and returns how far this process's resident memory
// peaked above where it was before.
func peakGrowth(f func() error) (int64, error) {
	runtime.GC()
	debug.FreeOSMemory()
	before, err := procStatus("VmRSS")
	if err != nil {
		return 0, err
	}
	// Resets VmHWM to the current RSS (Linux 4.0).
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return 0, fmt.Errorf("reset the peak RSS: %w", err)
	}
	if err := f(); err != nil {
		return 0, err
	}
	peak, err := procStatus("VmHWM")
	if err != nil {
		return 0, err
	}
	return peak - before, nil
}

// procStatus returns a "kB" field of /proc/self/status in bytes.
func procStatus(field string) (int64, error) {
	v, ok := keyValues("/proc/self/status", ":")[field]
	kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if !ok || err != nil {
		return 0, fmt.Errorf("/proc/self/status has no %s in kB", field)
	}
	return kb << 10, nil
}
