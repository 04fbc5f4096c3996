package storetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/store"
)

// The session registry's part of the suite, run by Run, and TwoStoresTakeOver
// and BenchSessions for the backends to call.

func newSession(runtimeID, sessionID, owner string, leaseUntil time.Time) store.Session {
	return store.Session{
		RuntimeID:  runtimeID,
		SessionID:  sessionID,
		Version:    1,
		SandboxID:  "sbx-" + runtimeID + "-" + sessionID,
		Owner:      owner,
		LeaseUntil: leaseUntil,
		CreatedAt:  at(0),
		LastUsed:   at(1),
	}
}

func sessionKey(s store.Session) string { return s.RuntimeID + "/" + s.SessionID }

func keyString(k store.SessionKey) string { return k.RuntimeID + "/" + k.SessionID }

func createSessions(t testing.TB, s store.Store, sessions ...store.Session) {
	t.Helper()
	for _, r := range sessions {
		if err := s.CreateSession(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func checkSession(t *testing.T, got, want store.Session) {
	t.Helper()
	got.LeaseUntil, got.CreatedAt, got.LastUsed = utc(t, got.LeaseUntil), utc(t, got.CreatedAt), utc(t, got.LastUsed)
	want.LeaseUntil, want.CreatedAt, want.LastUsed = want.LeaseUntil.UTC(), want.CreatedAt.UTC(), want.LastUsed.UTC()
	if got != want {
		t.Errorf("session:\n got %+v\nwant %+v", got, want)
	}
}

func getSession(t *testing.T, s store.Store, runtimeID, sessionID string) store.Session {
	t.Helper()
	r, err := s.GetSession(t.Context(), runtimeID, sessionID)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testSessionsCreate(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := newSession("rt", "s1", "replica-a", at(30))
	// Another zone and a monotonic clock reading must not matter.
	want.CreatedAt = want.CreatedAt.In(time.FixedZone("", 5*3600))
	createSessions(t, s, want)
	checkSession(t, getSession(t, s, "rt", "s1"), want)

	again := newSession("rt", "s1", "replica-b", at(40))
	again.SandboxID = "other"
	wantErr(t, "create the same session again", s.CreateSession(ctx, again), store.ErrExists)
	checkSession(t, getSession(t, s, "rt", "s1"), want)

	// The same session id in another runtime is another session.
	createSessions(t, s, newSession("rt2", "s1", "replica-a", at(30)))

	_, err := s.GetSession(ctx, "rt", "missing")
	wantErr(t, "get missing session", err, store.ErrNotFound)
	_, err = s.GetSession(ctx, "missing", "s1")
	wantErr(t, "get session of missing runtime", err, store.ErrNotFound)

	// A zero time comes back zero.
	zero := newSession("rt", "zero", "replica-a", time.Time{})
	zero.CreatedAt, zero.LastUsed = time.Time{}, time.Time{}
	createSessions(t, s, zero)
	checkSession(t, getSession(t, s, "rt", "zero"), zero)

	for _, tc := range []struct {
		field  string
		change func(*store.Session)
	}{
		{"RuntimeID", func(r *store.Session) { r.RuntimeID = "" }},
		{"SessionID", func(r *store.Session) { r.SessionID = "" }},
		{"SandboxID", func(r *store.Session) { r.SandboxID = "" }},
		{"Owner", func(r *store.Session) { r.Owner = "" }},
		{"Version", func(r *store.Session) { r.Version = 0 }},
	} {
		bad := newSession("rt", "bad", "replica-a", at(30))
		tc.change(&bad)
		err := s.CreateSession(ctx, bad)
		if err == nil || !strings.Contains(err.Error(), tc.field) || errors.Is(err, store.ErrExists) {
			t.Errorf("create session without %s: got error %v, want one naming %s", tc.field, err, tc.field)
		}
	}
	if _, err := s.GetSession(ctx, "rt", "bad"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an invalid session was stored: %v", err)
	}
}

// testSessionsTimes checks that lease and use times come back exactly at
// microsecond precision, the least a backend keeps.
func testSessionsTimes(t *testing.T, s store.Store) {
	want := newSession("rt", "s", "a", at(0).Add(999999*time.Microsecond))
	want.LastUsed = at(0).Add(time.Microsecond)
	want.CreatedAt = at(0).Add(-time.Microsecond)
	createSessions(t, s, want)
	checkSession(t, getSession(t, s, "rt", "s"), want)
}

func testSessionsList(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Created out of order, with keys that sort differently by byte and
	// by a natural-language collation.
	for _, k := range [][2]string{{"rt-b", "s2"}, {"rt-a", "s3"}, {"rt-b", "S1"}, {"rt-a", "s1"}, {"rt-a", "_"}, {"rt-c", "s1"}} {
		createSessions(t, s, newSession(k[0], k[1], "a", at(10)))
	}
	list := func(runtimeID string) []string {
		rs, err := s.ListSessions(ctx, runtimeID)
		if err != nil {
			t.Fatal(err)
		}
		return keys(rs, sessionKey)
	}
	for _, tc := range []struct {
		runtime string
		want    []string
	}{
		{"", []string{"rt-a/_", "rt-a/s1", "rt-a/s3", "rt-b/S1", "rt-b/s2", "rt-c/s1"}},
		{"rt-a", []string{"rt-a/_", "rt-a/s1", "rt-a/s3"}},
		{"rt-b", []string{"rt-b/S1", "rt-b/s2"}},
		{"rt-missing", nil},
	} {
		if got := list(tc.runtime); !slices.Equal(got, tc.want) {
			t.Errorf("list sessions of %q: %q, want %q", tc.runtime, got, tc.want)
		}
	}
	rs, err := s.ListSessions(ctx, "rt-c")
	if err != nil || len(rs) != 1 {
		t.Fatalf("list sessions of rt-c: %v, %v", rs, err)
	}
	checkSession(t, rs[0], newSession("rt-c", "s1", "a", at(10)))
}

func testSessionsDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := newSession("rt", "s1", "a", at(10))
	createSessions(t, s, r, newSession("rt", "s2", "a", at(10)))
	for _, tc := range []struct{ name, runtime, session, sandbox string }{
		{"wrong sandbox", "rt", "s1", "sbx-older"},
		{"another session's sandbox", "rt", "s1", "sbx-rt-s2"},
		{"missing session", "rt", "s3", r.SandboxID},
		{"missing runtime", "rt2", "s1", r.SandboxID},
	} {
		err := s.DeleteSession(ctx, tc.runtime, tc.session, tc.sandbox)
		wantErr(t, "delete session with "+tc.name, err, store.ErrNotFound)
	}
	checkSession(t, getSession(t, s, "rt", "s1"), r)
	if err := s.DeleteSession(ctx, "rt", "s1", r.SandboxID); err != nil {
		t.Fatalf("delete session: %v", err)
	}
	_, err := s.GetSession(ctx, "rt", "s1")
	wantErr(t, "get deleted session", err, store.ErrNotFound)
	wantErr(t, "delete session again", s.DeleteSession(ctx, "rt", "s1", r.SandboxID), store.ErrNotFound)
	getSession(t, s, "rt", "s2") // still there

	// Keys that no backend can store (PostgreSQL's text refuses them)
	// name no session rather than failing.
	bad := "\xff\x00"
	wantErr(t, "delete session with a key of invalid text", s.DeleteSession(ctx, bad, bad, bad), store.ErrNotFound)
	_, err = s.GetSession(ctx, bad, bad)
	wantErr(t, "get session with a key of invalid text", err, store.ErrNotFound)
	if rs, err := s.ListSessions(ctx, bad); err != nil || len(rs) != 0 {
		t.Errorf("list sessions of a runtime id of invalid text: %v, %v; want none", rs, err)
	}
	err = s.TouchSessions(ctx, []store.Touch{{SessionKey: store.SessionKey{RuntimeID: bad, SessionID: bad}, At: at(50)},
		{SessionKey: store.SessionKey{RuntimeID: "rt", SessionID: "s2"}, At: at(50)}})
	if err != nil {
		t.Errorf("touch with a key of invalid text: %v", err)
	}
	if got := getSession(t, s, "rt", "s2").LastUsed; !got.Equal(at(50)) {
		t.Errorf("touch next to a key of invalid text: LastUsed %s, want %s", got, at(50))
	}

	// The key is free again, for the session's next sandbox.
	r.SandboxID = "sbx-new"
	createSessions(t, s, r)
	checkSession(t, getSession(t, s, "rt", "s1"), r)
}

func testSessionsTouch(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := newSession("rt", "a", "x", at(10)) // LastUsed at(1)
	b := newSession("rt", "b", "x", at(10))
	c := newSession("rt", "c", "x", at(10))
	createSessions(t, s, a, b, c)
	key := func(id string) store.SessionKey { return store.SessionKey{RuntimeID: "rt", SessionID: id} }
	touch := func(touches ...store.Touch) {
		t.Helper()
		if err := s.TouchSessions(ctx, touches); err != nil {
			t.Fatalf("touch: %v", err)
		}
	}
	touch() // nothing to do
	touch(
		store.Touch{SessionKey: key("a"), At: at(5)},
		store.Touch{SessionKey: key("b"), At: at(0)}, // earlier: no change
		store.Touch{SessionKey: key("missing"), At: at(5)},
		store.Touch{SessionKey: store.SessionKey{RuntimeID: "other", SessionID: "a"}, At: at(5)},
		// Several touches of one session: the latest counts, in any order.
		store.Touch{SessionKey: key("c"), At: at(7)},
		store.Touch{SessionKey: key("c"), At: at(9)},
		store.Touch{SessionKey: key("c"), At: at(8)},
	)
	a.LastUsed, c.LastUsed = at(5), at(9)
	checkSession(t, getSession(t, s, "rt", "a"), a)
	checkSession(t, getSession(t, s, "rt", "b"), b)
	checkSession(t, getSession(t, s, "rt", "c"), c)
	for _, k := range []store.SessionKey{key("missing"), {RuntimeID: "other", SessionID: "a"}} {
		_, err := s.GetSession(ctx, k.RuntimeID, k.SessionID)
		wantErr(t, "get session that was only touched", err, store.ErrNotFound)
	}

	// Equal is no change, a microsecond more is one, and a lower time
	// never lowers.
	touch(store.Touch{SessionKey: key("a"), At: at(5)})
	checkSession(t, getSession(t, s, "rt", "a"), a)
	touch(store.Touch{SessionKey: key("a"), At: at(5).Add(time.Microsecond)})
	a.LastUsed = at(5).Add(time.Microsecond)
	checkSession(t, getSession(t, s, "rt", "a"), a)
	touch(store.Touch{SessionKey: key("a"), At: at(4)})
	checkSession(t, getSession(t, s, "rt", "a"), a)

	// A touch changes nothing but LastUsed.
	got := getSession(t, s, "rt", "b")
	if !got.LeaseUntil.Equal(at(10)) || got.Owner != "x" {
		t.Errorf("touch changed the lease: %+v", got)
	}

	// Hundreds of entries at once.
	var many []store.Touch
	for i := range 300 {
		id := fmt.Sprintf("m%03d", i)
		if i%2 == 0 {
			createSessions(t, s, newSession("rt", id, "x", at(10)))
		}
		many = append(many, store.Touch{SessionKey: key(id), At: at(100 + i)})
	}
	touch(many...)
	for i := 0; i < 300; i += 2 {
		id := fmt.Sprintf("m%03d", i)
		if got := getSession(t, s, "rt", id).LastUsed; !got.Equal(at(100 + i)) {
			t.Errorf("session %s: LastUsed %s, want %s", id, got, at(100+i))
		}
	}
}

func testSessionsHeartbeat(t *testing.T, s store.Store) {
	ctx := t.Context()
	createSessions(t, s,
		newSession("rt2", "s1", "a", at(10)),
		newSession("rt1", "s2", "a", at(10)),
		newSession("rt1", "s1", "a", at(-100)), // expired, not yet taken over: still a's
		newSession("rt1", "s3", "b", at(10)),
	)
	heartbeat := func(replica string, until time.Time) []string {
		t.Helper()
		ks, err := s.Heartbeat(ctx, replica, until)
		if err != nil {
			t.Fatalf("heartbeat of %s: %v", replica, err)
		}
		return keys(ks, keyString)
	}
	if got, want := heartbeat("a", at(20)), []string{"rt1/s1", "rt1/s2", "rt2/s1"}; !slices.Equal(got, want) {
		t.Errorf("heartbeat of a returns %q, want %q", got, want)
	}
	for _, k := range [][2]string{{"rt1", "s1"}, {"rt1", "s2"}, {"rt2", "s1"}} {
		if got := getSession(t, s, k[0], k[1]).LeaseUntil; !got.Equal(at(20)) {
			t.Errorf("lease of %s/%s after a's heartbeat: %s, want %s", k[0], k[1], got, at(20))
		}
	}
	want := newSession("rt1", "s3", "b", at(10))
	checkSession(t, getSession(t, s, "rt1", "s3"), want)

	if got := heartbeat("nobody", at(20)); len(got) != 0 {
		t.Errorf("heartbeat of a replica that owns nothing returns %q", got)
	}

	// A lease is set, not only raised: a replica leaving hands its
	// sessions over with a time already past.
	if got := heartbeat("b", at(5)); !slices.Equal(got, []string{"rt1/s3"}) {
		t.Errorf("heartbeat of b returns %q, want [rt1/s3]", got)
	}
	taken, err := s.TakeOver(ctx, "a", at(6), at(30))
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(taken, sessionKey); !slices.Equal(got, []string{"rt1/s3"}) {
		t.Errorf("after b left, a takes over %q, want [rt1/s3]", got)
	}
	// b learns that it no longer owns the session.
	if got := heartbeat("b", at(40)); len(got) != 0 {
		t.Errorf("heartbeat of b after a took its session returns %q", got)
	}
	if got, want := heartbeat("a", at(40)), []string{"rt1/s1", "rt1/s2", "rt1/s3", "rt2/s1"}; !slices.Equal(got, want) {
		t.Errorf("heartbeat of a returns %q, want %q", got, want)
	}
	if err := s.TouchSessions(ctx, []store.Touch{{SessionKey: store.SessionKey{RuntimeID: "rt1", SessionID: "s3"}, At: at(7)}}); err != nil {
		t.Fatal(err)
	}
	want.Owner, want.LeaseUntil, want.LastUsed = "a", at(40), at(7)
	checkSession(t, getSession(t, s, "rt1", "s3"), want)

	_, err = s.Heartbeat(ctx, "", at(50))
	if err == nil || !strings.Contains(err.Error(), "replica") {
		t.Errorf("heartbeat without a replica: got error %v, want one naming the replica", err)
	}
}

func testSessionsTakeOver(t *testing.T, s store.Store) {
	ctx := t.Context()
	early := newSession("rt", "early", "a", at(10))
	late := newSession("rt", "late", "b", at(20))
	live := newSession("rt", "live", "b", at(30))
	early.Version, early.LastUsed = 3, at(4)
	createSessions(t, s, live, late, early)

	take := func(now time.Time) []store.Session {
		t.Helper()
		taken, err := s.TakeOver(ctx, "c", now, at(100))
		if err != nil {
			t.Fatalf("take over at %s: %v", now, err)
		}
		return taken
	}
	if got := take(at(10)); len(got) != 0 {
		t.Errorf("take over at the end of a lease takes %q; the lease ends before now only after", keys(got, sessionKey))
	}
	got := take(at(20)) // late's lease ends at now: not taken
	if len(got) != 1 {
		t.Fatalf("take over at %s takes %q, want [rt/early]", at(20), keys(got, sessionKey))
	}
	early.Owner, early.LeaseUntil = "c", at(100)
	checkSession(t, got[0], early)
	checkSession(t, getSession(t, s, "rt", "early"), early)
	checkSession(t, getSession(t, s, "rt", "late"), late)

	got = take(at(20).Add(time.Microsecond))
	late.Owner, late.LeaseUntil = "c", at(100)
	if len(got) != 1 {
		t.Fatalf("take over a microsecond later takes %q, want [rt/late]", keys(got, sessionKey))
	}
	checkSession(t, got[0], late)
	checkSession(t, getSession(t, s, "rt", "live"), live)

	// Everything, in order, including the taker's own expired sessions.
	got = take(at(1000))
	if got, want := keys(got, sessionKey), []string{"rt/early", "rt/late", "rt/live"}; !slices.Equal(got, want) {
		t.Errorf("take over of everything takes %q, want %q", got, want)
	}
	if got := take(at(99)); len(got) != 0 {
		t.Errorf("take over of fresh leases takes %q", keys(got, sessionKey))
	}
	_, err := s.TakeOver(ctx, "", at(1000), at(2000))
	if err == nil || !strings.Contains(err.Error(), "replica") {
		t.Errorf("take over without a replica: got error %v, want one naming the replica", err)
	}
}

// testSessionsTakeOverConcurrent runs takers at once on one store.
func testSessionsTakeOverConcurrent(t *testing.T, s store.Store) {
	takeOverAtOnce(t, []store.Store{s}, 8)
}

// takeOverAtOnce creates expired sessions and has takers, per store, take
// them over at once, in rounds whose leases end before the next round, and
// checks that in each round every expired session went to exactly one
// taker.
func takeOverAtOnce(t *testing.T, stores []store.Store, takersPerStore int) {
	ctx := t.Context()
	const sessions, rounds = 500, 5
	for i := range sessions {
		// Leases end at different times, all before the first round,
		// and one session is live throughout.
		createSessions(t, stores[i%len(stores)], newSession(fmt.Sprintf("rt%d", i%3), fmt.Sprintf("s%03d", i), "dead", at(i%50)))
	}
	createSessions(t, stores[0], newSession("rt0", "live", "alive", at(100*(rounds+1))))
	counts := map[string]int{} // sessions taken per taker, over all rounds
	var owner map[string]string
	for round := range rounds {
		now, until := at(100*(round+1)), at(100*(round+1)+50)
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			start = make(chan struct{})
		)
		owner = map[string]string{} // session key -> taker
		for si, st := range stores {
			for i := range takersPerStore {
				taker := fmt.Sprintf("taker-%d-%d", si, i)
				wg.Go(func() {
					<-start
					taken, err := st.TakeOver(ctx, taker, now, until)
					if err != nil {
						t.Errorf("%s: %v", taker, err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					for _, r := range taken {
						k := sessionKey(r)
						if prev, ok := owner[k]; ok {
							t.Errorf("round %d: session %s taken over by both %s and %s", round, k, prev, taker)
						}
						owner[k] = taker
						counts[taker]++
						if r.Owner != taker || !r.LeaseUntil.Equal(until) {
							t.Errorf("round %d: %s took %s but it says owner %s until %s", round, taker, k, r.Owner, r.LeaseUntil)
						}
					}
				})
			}
		}
		close(start)
		wg.Wait()
		if len(owner) != sessions {
			t.Errorf("round %d: %d of %d expired sessions taken over", round, len(owner), sessions)
		}
	}
	t.Logf("sessions taken per taker in %d rounds: %v", rounds, counts)
	all, err := stores[len(stores)-1].ListSessions(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		k := sessionKey(r)
		if k == "rt0/live" {
			if r.Owner != "alive" {
				t.Errorf("live session taken over by %s", r.Owner)
			}
			continue
		}
		if r.Owner != owner[k] {
			t.Errorf("session %s is owned by %q, but %q took it over last", k, r.Owner, owner[k])
		}
	}
}

func testSessionsLiveReplicas(t *testing.T, s store.Store) {
	ctx := t.Context()
	live := func(now time.Time) []string {
		t.Helper()
		ids, err := s.LiveReplicas(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if got := live(at(0)); len(got) != 0 {
		t.Errorf("live replicas of an empty store: %q", got)
	}
	for _, hb := range []struct {
		replica string
		until   time.Time
	}{{"b", at(20)}, {"a", at(10)}, {"c", at(5)}, {"c", at(30)}} {
		if _, err := s.Heartbeat(ctx, hb.replica, hb.until); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		now  time.Time
		want []string
	}{
		{at(0), []string{"a", "b", "c"}},
		{at(10).Add(-time.Microsecond), []string{"a", "b", "c"}},
		{at(10), []string{"b", "c"}}, // a's heartbeat lasts until now, not beyond
		{at(20), []string{"c"}},
		{at(30), nil},
	} {
		if got := live(tc.now); !slices.Equal(got, tc.want) {
			t.Errorf("live replicas at %s: %q, want %q", tc.now, got, tc.want)
		}
	}
	// A replica that comes back long after its heartbeat ended is live
	// again, whatever Heartbeat prunes.
	back := at(30).Add(48 * time.Hour)
	if _, err := s.Heartbeat(ctx, "a", back); err != nil {
		t.Fatal(err)
	}
	if got := live(back.Add(-time.Hour)); !slices.Equal(got, []string{"a"}) {
		t.Errorf("live replicas after a came back: %q, want [a]", got)
	}
}

func testSessionsDeleteRuntime(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		for _, id := range []string{"doomed", "kept"} {
			if err := writeAll(ctx, tx, id); err != nil {
				return err
			}
		}
		return nil
	})
	createSessions(t, s,
		newSession("doomed", "s1", "a", at(10)),
		newSession("doomed", "s2", "b", at(10)),
		newSession("kept", "s1", "a", at(10)),
	)
	update(t, s, func(tx store.Tx) error { return tx.DeleteRuntime(ctx, "doomed") })
	rs, err := s.ListSessions(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(rs, sessionKey), []string{"kept/s1"}; !slices.Equal(got, want) {
		t.Errorf("sessions left after the runtime was deleted: %q, want %q", got, want)
	}
	// A rolled back deletion keeps them.
	errFn := errors.New("fn failed")
	err = s.Update(ctx, func(tx store.Tx) error {
		if err := tx.DeleteRuntime(ctx, "kept"); err != nil {
			return err
		}
		return errFn
	})
	wantErr(t, "rolled back deletion", err, errFn)
	getSession(t, s, "kept", "s1")
}

// HeartbeatPrunes checks, for a backend whose Heartbeat forgets replicas
// whose heartbeat ended more than retention before the heartbeat's until,
// that it does so, and keeps the others.
func HeartbeatPrunes(t *testing.T, s store.Store, retention time.Duration) {
	ctx := t.Context()
	for _, hb := range []struct {
		replica string
		until   time.Time
	}{{"old", at(0)}, {"recent", at(0).Add(time.Hour)}, {"now", at(0).Add(retention + time.Minute)}} {
		if _, err := s.Heartbeat(ctx, hb.replica, hb.until); err != nil {
			t.Fatal(err)
		}
	}
	ids, err := s.LiveReplicas(ctx, at(-1))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"now", "recent"}; !slices.Equal(ids, want) {
		t.Errorf("replicas kept: %q, want %q", ids, want)
	}
}

// TwoStoresTakeOver runs the registry's operations from two stores over the
// same data at once, as two Berth replicas would: takers on both stores split
// expired sessions between them, each to exactly one taker; then touches in
// random orders, heartbeats, take-overs and deletions of runtimes run at once
// and none fails (as a deadlock between them would fail). open is as for
// TwoStores.
func TwoStoresTakeOver(t *testing.T, open func(t *testing.T) store.Store) {
	stores := []store.Store{open(t), open(t)}
	for _, s := range stores {
		t.Cleanup(func() { s.Close() })
	}
	takeOverAtOnce(t, stores, 4)
	if t.Failed() {
		return
	}

	ctx := t.Context()
	update(t, stores[0], func(tx store.Tx) error { return writeAll(ctx, tx, "doomed") })
	for i := range 20 {
		createSessions(t, stores[1], newSession("doomed", fmt.Sprintf("s%03d", i), "taker-0-0", at(1000)))
	}
	all, err := stores[0].ListSessions(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	const rounds = 20
	for si, st := range stores {
		for w := range 2 {
			wg.Go(func() { // touches of every session, in random order
				rng := rand.New(rand.NewPCG(uint64(si), uint64(w)))
				for round := range rounds {
					touches := make([]store.Touch, 0, len(all))
					for _, r := range all {
						touches = append(touches, store.Touch{
							SessionKey: store.SessionKey{RuntimeID: r.RuntimeID, SessionID: r.SessionID},
							At:         at(600 + round*10 + w),
						})
					}
					rng.Shuffle(len(touches), func(i, j int) { touches[i], touches[j] = touches[j], touches[i] })
					if err := st.TouchSessions(ctx, touches); err != nil {
						t.Errorf("touch: %v", err)
						return
					}
				}
			})
		}
		wg.Go(func() { // heartbeats of the takers, and take-overs
			for round := range rounds {
				for i := range 4 {
					if _, err := st.Heartbeat(ctx, fmt.Sprintf("taker-%d-%d", si, i), at(1000+round)); err != nil {
						t.Errorf("heartbeat: %v", err)
						return
					}
				}
				if _, err := st.TakeOver(ctx, fmt.Sprintf("late-%d", si), at(990), at(1010)); err != nil {
					t.Errorf("take over: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() { // the deletion of a runtime, with its sessions
		if err := stores[1].Update(ctx, func(tx store.Tx) error { return tx.DeleteRuntime(ctx, "doomed") }); err != nil {
			t.Errorf("delete runtime: %v", err)
		}
	})
	wg.Wait()
	rest, err := stores[1].ListSessions(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rest {
		if r.RuntimeID == "doomed" {
			t.Errorf("session %s outlived its runtime", sessionKey(r))
		}
		if want := at(600 + (rounds-1)*10 + 1); r.LastUsed.Before(want) {
			t.Errorf("session %s: LastUsed %s, want at least %s", sessionKey(r), r.LastUsed, want)
		}
	}
}

// BenchSessions measures the registry's operations that run most often:
// TouchSessions of 100 sessions (a replica's batch of calls since its last
// flush) and the Heartbeat of a replica that owns 1000 sessions. open is as
// for Bench.
func BenchSessions(b *testing.B, open func(b *testing.B) store.Store) {
	b.Run("TouchSessions100", func(b *testing.B) {
		s := sessionsSeeded(b, open, 1000)
		ctx := b.Context()
		touches := make([]store.Touch, 100)
		i := 0
		for b.Loop() {
			i++
			for j := range touches {
				// Each time later, so that every touch writes.
				touches[j] = store.Touch{
					SessionKey: store.SessionKey{RuntimeID: "rt", SessionID: fmt.Sprintf("s%04d", (i*100+j)%1000)},
					At:         at(i),
				}
			}
			if err := s.TouchSessions(ctx, touches); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Heartbeat1000", func(b *testing.B) {
		s := sessionsSeeded(b, open, 1000)
		ctx := b.Context()
		i := 0
		for b.Loop() {
			i++
			ks, err := s.Heartbeat(ctx, "owner", at(i))
			if err != nil {
				b.Fatal(err)
			}
			if len(ks) != 1000 {
				b.Fatalf("heartbeat returns %d sessions, want 1000", len(ks))
			}
		}
	})
}

// sessionsSeeded opens a store holding n sessions of runtime "rt" owned by
// "owner" and n of runtime "other" owned by "other".
func sessionsSeeded(b *testing.B, open func(b *testing.B) store.Store, n int) store.Store {
	s := open(b)
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Errorf("close: %v", err)
		}
	})
	ctx := b.Context()
	for i := range n {
		for _, rt := range []string{"rt", "other"} {
			owner := "owner"
			if rt == "other" {
				owner = "other"
			}
			r := newSession(rt, fmt.Sprintf("s%04d", i), owner, at(0))
			if err := s.CreateSession(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	}
	return s
}
