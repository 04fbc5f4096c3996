// Package storetest is the conformance suite of store.Store. Every backend
// runs Run, and may run Bench, on fresh stores of its own kind:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := mybackend.Open(t.Context(), ...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// The suite pins down what the interface's doc leaves to be read: creating a
// version or endpoint of a missing runtime is store.ErrNotFound, listing the
// children of a missing runtime is an empty list, times come back in UTC
// equal to within a microsecond or better, a zero time comes back zero, a
// nil blob may come back empty and the other way round, records with an
// empty key or a version number below 1 are refused, and a context canceled
// before Update commits leaves nothing written.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berthrun/berth/internal/store"
)

// Run runs the conformance suite. open must return a new, empty store each
// time it is called; Run closes it, and cleanups that open registers on t
// run after that.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		test func(t *testing.T, s store.Store)
	}{
		{"Runtimes", testRuntimes},
		{"Versions", testVersions},
		{"VersionsByArtifact", testVersionsByArtifact},
		{"Endpoints", testEndpoints},
		{"Idempotency", testIdempotency},
		{"IdempotencyExpiry", testIdempotencyExpiry},
		{"Times", testTimes},
		{"InvalidRecords", testInvalidRecords},
		{"ListRuntimesPages", testListRuntimesPages},
		{"ListVersionsPages", testListVersionsPages},
		{"ListEndpointsPages", testListEndpointsPages},
		{"CascadeDelete", testCascadeDelete},
		{"UpdateError", testUpdateError},
		{"UpdatePanic", testUpdatePanic},
		{"UpdateCanceled", testUpdateCanceled},
		{"ViewReadOnly", testViewReadOnly},
		{"ViewIsolation", testViewIsolation},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"SessionsCreate", testSessionsCreate},
		{"SessionsTimes", testSessionsTimes},
		{"SessionsList", testSessionsList},
		{"SessionsDelete", testSessionsDelete},
		{"SessionsTouch", testSessionsTouch},
		{"SessionsHeartbeat", testSessionsHeartbeat},
		{"SessionsTakeOver", testSessionsTakeOver},
		{"SessionsTakeOverConcurrent", testSessionsTakeOverConcurrent},
		{"SessionsLiveReplicas", testSessionsLiveReplicas},
		{"SessionsDeleteRuntime", testSessionsDeleteRuntime},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tt.test(t, s)
		})
	}
}

// at returns a fixed time, sec seconds after the suite's epoch, with
// microsecond precision, the least every backend keeps.
func at(sec int) time.Time {
	return time.Date(2025, 3, 14, 15, 9, 26, 535897000, time.UTC).Add(time.Duration(sec) * time.Second)
}

func newRuntime(id string) store.Runtime {
	return store.Runtime{ID: id, Name: "name-" + id, LatestVersion: 1, CreatedAt: at(0), UpdatedAt: at(1)}
}

func newVersion(runtimeID string, number int) store.Version {
	return store.Version{
		RuntimeID: runtimeID,
		Number:    number,
		Status:    "CREATING",
		Artifact:  "sha256:" + runtimeID,
		Config:    fmt.Appendf(nil, `{"runtime":%q,"version":%d}`, runtimeID, number),
		CreatedAt: at(number),
		UpdatedAt: at(number + 1),
	}
}

func newEndpoint(runtimeID, name string) store.Endpoint {
	return store.Endpoint{
		RuntimeID:     runtimeID,
		Name:          name,
		ID:            name + "-" + runtimeID,
		Description:   "endpoint " + name,
		LiveVersion:   1,
		TargetVersion: 1,
		Status:        "READY",
		CreatedAt:     at(2),
		UpdatedAt:     at(3),
	}
}

// update runs fn in s.Update and fails the test if that fails.
func update(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

// view runs fn in s.View and fails the test if that fails.
func view(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.View(t.Context(), fn); err != nil {
		t.Fatalf("view: %v", err)
	}
}

// wantErr fails the test unless errors.Is(err, target).
func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

// utc checks that a time came back in UTC and returns it with the location
// pointer every UTC time.Time shares, so that records compare with ==.
func utc(t *testing.T, tm time.Time) time.Time {
	t.Helper()
	if tm.Location() != time.UTC {
		t.Errorf("time %s is in %s, want UTC", tm, tm.Location())
	}
	return tm.UTC()
}

func checkRuntime(t *testing.T, got, want store.Runtime) {
	t.Helper()
	got.CreatedAt, got.UpdatedAt = utc(t, got.CreatedAt), utc(t, got.UpdatedAt)
	want.CreatedAt, want.UpdatedAt = want.CreatedAt.UTC(), want.UpdatedAt.UTC()
	if got != want {
		t.Errorf("runtime:\n got %+v\nwant %+v", got, want)
	}
}

func checkVersion(t *testing.T, got, want store.Version) {
	t.Helper()
	if !bytes.Equal(got.Config, want.Config) {
		t.Errorf("version %d of %s: config %q, want %q", want.Number, want.RuntimeID, got.Config, want.Config)
	}
	got.Config, want.Config = nil, nil
	got.CreatedAt, got.UpdatedAt = utc(t, got.CreatedAt), utc(t, got.UpdatedAt)
	want.CreatedAt, want.UpdatedAt = want.CreatedAt.UTC(), want.UpdatedAt.UTC()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("version:\n got %+v\nwant %+v", got, want)
	}
}

func checkEndpoint(t *testing.T, got, want store.Endpoint) {
	t.Helper()
	got.CreatedAt, got.UpdatedAt = utc(t, got.CreatedAt), utc(t, got.UpdatedAt)
	want.CreatedAt, want.UpdatedAt = want.CreatedAt.UTC(), want.UpdatedAt.UTC()
	if got != want {
		t.Errorf("endpoint:\n got %+v\nwant %+v", got, want)
	}
}

func checkIdempotency(t *testing.T, got, want store.Idempotency) {
	t.Helper()
	if got.Key != want.Key || got.RequestHash != want.RequestHash || !bytes.Equal(got.Result, want.Result) ||
		!utc(t, got.CreatedAt).Equal(want.CreatedAt) {
		t.Errorf("idempotency record:\n got %+v\nwant %+v", got, want)
	}
}

// keys returns the key of each record, to compare lists by.
func keys[T any](records []T, key func(T) string) []string {
	out := make([]string, 0, len(records))
	for _, r := range records {
		out = append(out, key(r))
	}
	return out
}

func runtimeKey(r store.Runtime) string   { return r.ID }
func versionKey(v store.Version) string   { return fmt.Sprintf("%s/%d", v.RuntimeID, v.Number) }
func endpointKey(e store.Endpoint) string { return e.RuntimeID + "/" + e.Name }

func testRuntimes(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := newRuntime("a-1"), newRuntime("b-2")
	a.Deleting = true
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateRuntime(ctx, a); err != nil {
			return err
		}
		return tx.CreateRuntime(ctx, b)
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetRuntime(ctx, a.ID)
		if err != nil {
			return err
		}
		checkRuntime(t, got, a)
		got, err = tx.GetRuntimeByName(ctx, b.Name)
		if err != nil {
			return err
		}
		checkRuntime(t, got, b)
		_, err = tx.GetRuntime(ctx, "missing")
		wantErr(t, "get missing runtime", err, store.ErrNotFound)
		_, err = tx.GetRuntimeByName(ctx, "missing")
		wantErr(t, "get runtime by missing name", err, store.ErrNotFound)
		// Keys from a request's URL may be any bytes.
		for _, odd := range []string{"\xff\xfe", "a\x00b"} {
			_, err = tx.GetRuntime(ctx, odd)
			wantErr(t, fmt.Sprintf("get runtime %q", odd), err, store.ErrNotFound)
			_, err = tx.GetEndpoint(ctx, odd, "DEFAULT")
			wantErr(t, fmt.Sprintf("get endpoint of runtime %q", odd), err, store.ErrNotFound)
		}
		// The transaction is still usable.
		if _, err := tx.GetRuntime(ctx, a.ID); err != nil {
			t.Errorf("get runtime after odd keys: %v", err)
		}
		return nil
	})

	sameID := newRuntime(a.ID)
	sameID.Name = "other"
	sameName := newRuntime("c-3")
	sameName.Name = a.Name
	for _, tc := range []struct {
		name string
		r    store.Runtime
	}{{"same ID", sameID}, {"same name", sameName}} {
		err := s.Update(ctx, func(tx store.Tx) error { return tx.CreateRuntime(ctx, tc.r) })
		wantErr(t, "create runtime with "+tc.name, err, store.ErrExists)
	}

	// Rename a, make it point at version 7 and clear Deleting.
	a2 := a
	a2.Name, a2.LatestVersion, a2.Deleting, a2.UpdatedAt = "renamed", 7, false, at(100)
	update(t, s, func(tx store.Tx) error { return tx.UpdateRuntime(ctx, a2) })
	renameToB := a2
	renameToB.Name = b.Name
	missing := newRuntime("missing")
	update(t, s, func(tx store.Tx) error {
		wantErr(t, "update runtime to a taken name", tx.UpdateRuntime(ctx, renameToB), store.ErrExists)
		wantErr(t, "update missing runtime", tx.UpdateRuntime(ctx, missing), store.ErrNotFound)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetRuntimeByName(ctx, "renamed")
		if err != nil {
			return err
		}
		checkRuntime(t, got, a2)
		_, err = tx.GetRuntimeByName(ctx, a.Name)
		wantErr(t, "get runtime by its old name", err, store.ErrNotFound)
		return nil
	})

	update(t, s, func(tx store.Tx) error { return tx.DeleteRuntime(ctx, a.ID) })
	update(t, s, func(tx store.Tx) error {
		wantErr(t, "delete deleted runtime", tx.DeleteRuntime(ctx, a.ID), store.ErrNotFound)
		_, err := tx.GetRuntime(ctx, a.ID)
		wantErr(t, "get deleted runtime", err, store.ErrNotFound)
		// The ID and the name are free again.
		return tx.CreateRuntime(ctx, a)
	})
	view(t, s, func(tx store.Tx) error {
		rs, err := tx.ListRuntimes(ctx, "", 0)
		if err != nil {
			return err
		}
		if got, want := keys(rs, runtimeKey), []string{a.ID, b.ID}; !slices.Equal(got, want) {
			t.Errorf("runtimes %q, want %q", got, want)
		}
		return nil
	})
}

func testVersions(t *testing.T, s store.Store) {
	ctx := t.Context()
	v1, v2 := newVersion("rt", 1), newVersion("rt", 2)
	v2.Config = nil // an empty document is a document
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateRuntime(ctx, newRuntime("rt")); err != nil {
			return err
		}
		if err := tx.CreateVersion(ctx, v1); err != nil {
			return err
		}
		return tx.CreateVersion(ctx, v2)
	})
	update(t, s, func(tx store.Tx) error {
		wantErr(t, "create taken version", tx.CreateVersion(ctx, newVersion("rt", 1)), store.ErrExists)
		wantErr(t, "create version of missing runtime", tx.CreateVersion(ctx, newVersion("missing", 1)), store.ErrNotFound)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		for _, want := range []store.Version{v1, v2} {
			got, err := tx.GetVersion(ctx, want.RuntimeID, want.Number)
			if err != nil {
				return err
			}
			checkVersion(t, got, want)
		}
		_, err := tx.GetVersion(ctx, "rt", 3)
		wantErr(t, "get missing version", err, store.ErrNotFound)
		_, err = tx.GetVersion(ctx, "missing", 1)
		wantErr(t, "get version of missing runtime", err, store.ErrNotFound)
		return nil
	})

	v1.Status, v1.FailureReason, v1.UpdatedAt = "FAILED", "image pull failed", at(50)
	update(t, s, func(tx store.Tx) error { return tx.UpdateVersion(ctx, v1) })
	update(t, s, func(tx store.Tx) error {
		wantErr(t, "update missing version", tx.UpdateVersion(ctx, newVersion("rt", 3)), store.ErrNotFound)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetVersion(ctx, "rt", 1)
		if err != nil {
			return err
		}
		checkVersion(t, got, v1)
		return nil
	})

	update(t, s, func(tx store.Tx) error { return tx.DeleteVersion(ctx, "rt", 2) })
	update(t, s, func(tx store.Tx) error {
		wantErr(t, "delete deleted version", tx.DeleteVersion(ctx, "rt", 2), store.ErrNotFound)
		wantErr(t, "delete version of missing runtime", tx.DeleteVersion(ctx, "missing", 1), store.ErrNotFound)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		vs, err := tx.ListVersions(ctx, "rt", 0, 0)
		if err != nil {
			return err
		}
		if got, want := keys(vs, versionKey), []string{"rt/1"}; !slices.Equal(got, want) {
			t.Errorf("versions %q, want %q", got, want)
		}
		return nil
	})
}

func testVersionsByArtifact(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		for _, id := range []string{"a", "b"} {
			if err := tx.CreateRuntime(ctx, newRuntime(id)); err != nil {
				return err
			}
		}
		for _, v := range []struct {
			runtime  string
			number   int
			artifact string
		}{{"a", 1, "x"}, {"a", 2, "x"}, {"a", 3, "y"}, {"b", 1, "x"}, {"b", 2, "y"}} {
			version := newVersion(v.runtime, v.number)
			version.Artifact = v.artifact
			if err := tx.CreateVersion(ctx, version); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		for _, tc := range []struct {
			artifact string
			want     []string
		}{
			{"x", []string{"a/1", "a/2", "b/1"}},
			{"y", []string{"a/3", "b/2"}},
			{"z", []string{}},
		} {
			vs, err := tx.ListVersionsByArtifact(ctx, tc.artifact)
			if err != nil {
				return err
			}
			for _, v := range vs {
				if v.Artifact != tc.artifact {
					t.Errorf("version %s has artifact %q, want %q", versionKey(v), v.Artifact, tc.artifact)
				}
			}
			// The order is not part of the contract.
			got := keys(vs, versionKey)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("versions of artifact %q: %q, want %q", tc.artifact, got, tc.want)
			}
		}
		return nil
	})
}

func testEndpoints(t *testing.T, s store.Store) {
	ctx := t.Context()
	def, beta := newEndpoint("rt", "DEFAULT"), newEndpoint("rt", "beta")
	beta.LiveVersion = 0 // serves nothing yet
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateRuntime(ctx, newRuntime("rt")); err != nil {
			return err
		}
		if err := tx.CreateEndpoint(ctx, def); err != nil {
			return err
		}
		return tx.CreateEndpoint(ctx, beta)
	})
	update(t, s, func(tx store.Tx) error {
		wantErr(t, "create taken endpoint", tx.CreateEndpoint(ctx, newEndpoint("rt", "DEFAULT")), store.ErrExists)
		wantErr(t, "create endpoint of missing runtime", tx.CreateEndpoint(ctx, newEndpoint("missing", "DEFAULT")), store.ErrNotFound)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		for _, want := range []store.Endpoint{def, beta} {
			got, err := tx.GetEndpoint(ctx, want.RuntimeID, want.Name)
			if err != nil {
				return err
			}
			checkEndpoint(t, got, want)
		}
		_, err := tx.GetEndpoint(ctx, "rt", "missing")
		wantErr(t, "get missing endpoint", err, store.ErrNotFound)
		_, err = tx.GetEndpoint(ctx, "missing", "DEFAULT")
		wantErr(t, "get endpoint of missing runtime", err, store.ErrNotFound)
		return nil
	})

	beta.Description, beta.LiveVersion, beta.TargetVersion = "moved", 1, 2
	beta.Status, beta.FailureReason, beta.UpdatedAt = "UPDATING", "none yet", at(60)
	update(t, s, func(tx store.Tx) error { return tx.UpdateEndpoint(ctx, beta) })
	update(t, s, func(tx store.Tx) error {
		wantErr(t, "update missing endpoint", tx.UpdateEndpoint(ctx, newEndpoint("rt", "missing")), store.ErrNotFound)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetEndpoint(ctx, "rt", "beta")
		if err != nil {
			return err
		}
		checkEndpoint(t, got, beta)
		return nil
	})

	update(t, s, func(tx store.Tx) error { return tx.DeleteEndpoint(ctx, "rt", "beta") })
	update(t, s, func(tx store.Tx) error {
		wantErr(t, "delete deleted endpoint", tx.DeleteEndpoint(ctx, "rt", "beta"), store.ErrNotFound)
		wantErr(t, "delete endpoint of missing runtime", tx.DeleteEndpoint(ctx, "missing", "DEFAULT"), store.ErrNotFound)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		es, err := tx.ListEndpoints(ctx, "rt", "", 0)
		if err != nil {
			return err
		}
		if got, want := keys(es, endpointKey), []string{"rt/DEFAULT"}; !slices.Equal(got, want) {
			t.Errorf("endpoints %q, want %q", got, want)
		}
		return nil
	})
}

func testIdempotency(t *testing.T, s store.Store) {
	ctx := t.Context()
	recs := []store.Idempotency{
		{Key: "CreateRuntime/token-1", RequestHash: "h1", Result: []byte(`{"id":"x"}`), CreatedAt: at(0)},
		{Key: "CreateRuntime/token-2", RequestHash: "h2", Result: nil, CreatedAt: at(1)},
	}
	update(t, s, func(tx store.Tx) error {
		for _, rec := range recs {
			if err := tx.PutIdempotency(ctx, rec); err != nil {
				return err
			}
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error {
		taken := recs[0]
		taken.RequestHash = "other"
		wantErr(t, "put taken key", tx.PutIdempotency(ctx, taken), store.ErrExists)
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		for _, want := range recs {
			got, err := tx.GetIdempotency(ctx, want.Key)
			if err != nil {
				return err
			}
			checkIdempotency(t, got, want)
		}
		_, err := tx.GetIdempotency(ctx, "missing")
		wantErr(t, "get missing key", err, store.ErrNotFound)
		return nil
	})
}

func testIdempotencyExpiry(t *testing.T, s store.Store) {
	ctx := t.Context()
	cut := at(10)
	update(t, s, func(tx store.Tx) error {
		// Deleting from an empty store is no error.
		if err := tx.DeleteIdempotencyBefore(ctx, cut); err != nil {
			return err
		}
		for key, created := range map[string]time.Time{
			"old":    cut.Add(-time.Microsecond),
			"at":     cut,
			"recent": cut.Add(time.Microsecond),
		} {
			if err := tx.PutIdempotency(ctx, store.Idempotency{Key: key, RequestHash: "h", CreatedAt: created}); err != nil {
				return err
			}
		}
		return nil
	})
	// The cut-off given in another zone is the same instant.
	update(t, s, func(tx store.Tx) error {
		return tx.DeleteIdempotencyBefore(ctx, cut.In(time.FixedZone("UTC-7", -7*3600)))
	})
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetIdempotency(ctx, "old")
		wantErr(t, "get record created before the cut-off", err, store.ErrNotFound)
		for _, key := range []string{"at", "recent"} {
			if _, err := tx.GetIdempotency(ctx, key); err != nil {
				t.Errorf("record created at or after the cut-off: %v", err)
			}
		}
		return nil
	})
}

func testTimes(t *testing.T, s store.Store) {
	ctx := t.Context()
	for i, tc := range []struct {
		name string
		in   time.Time
	}{
		{"UTC", at(0)},
		{"other zone", time.Date(2024, 12, 31, 23, 59, 59, 999999000, time.FixedZone("UTC+5:30", 5*3600+1800))},
		{"zero", time.Time{}},
		{"before 1970", time.Date(1969, 7, 20, 20, 17, 40, 123456000, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(fmt.Sprintf("rt-%d", i))
			r.CreatedAt, r.UpdatedAt = tc.in, tc.in
			update(t, s, func(tx store.Tx) error { return tx.CreateRuntime(ctx, r) })
			view(t, s, func(tx store.Tx) error {
				got, err := tx.GetRuntime(ctx, r.ID)
				if err != nil {
					return err
				}
				if !got.CreatedAt.Equal(tc.in) || got.CreatedAt.Location() != time.UTC {
					t.Errorf("stored %s, got back %s; want the same instant in UTC", tc.in, got.CreatedAt)
				}
				if got.CreatedAt.IsZero() != tc.in.IsZero() {
					t.Errorf("stored %s, got back %s: zero-ness changed", tc.in, got.CreatedAt)
				}
				return nil
			})
		})
	}
}

// testInvalidRecords checks that records with an empty key are refused, so
// that a caller's bug does not become a row nobody can address.
func testInvalidRecords(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error { return tx.CreateRuntime(ctx, newRuntime("rt")) })
	noName := newRuntime("x")
	noName.Name = ""
	for _, tc := range []struct {
		name  string
		write func(tx store.Tx) error
	}{
		{"runtime without ID", func(tx store.Tx) error { return tx.CreateRuntime(ctx, newRuntime("")) }},
		{"runtime without name", func(tx store.Tx) error { return tx.CreateRuntime(ctx, noName) }},
		{"version 0", func(tx store.Tx) error { return tx.CreateVersion(ctx, newVersion("rt", 0)) }},
		{"negative version", func(tx store.Tx) error { return tx.CreateVersion(ctx, newVersion("rt", -1)) }},
		{"endpoint without name", func(tx store.Tx) error { return tx.CreateEndpoint(ctx, newEndpoint("rt", "")) }},
		{"idempotency record without key", func(tx store.Tx) error {
			return tx.PutIdempotency(ctx, store.Idempotency{RequestHash: "h", CreatedAt: at(0)})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Update(ctx, tc.write)
			if err == nil || errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrNotFound) {
				t.Errorf("got error %v, want one naming the bad field", err)
			}
		})
	}
	view(t, s, func(tx store.Tx) error {
		rs, err := tx.ListRuntimes(ctx, "", 0)
		if err != nil {
			return err
		}
		vs, err := tx.ListVersions(ctx, "rt", 0, 0)
		if err != nil {
			return err
		}
		es, err := tx.ListEndpoints(ctx, "rt", "", 0)
		if err != nil {
			return err
		}
		if len(rs) != 1 || len(vs) != 0 || len(es) != 0 {
			t.Errorf("after refused writes: %d runtimes, %d versions, %d endpoints; want 1, 0, 0", len(rs), len(vs), len(es))
		}
		return nil
	})
}

// pageLimits returns the page sizes tried on 6 records: every page full,
// the last page short, one page, all in one page, no limit.
func pageLimits() []int { return []int{1, 2, 3, 4, 5, 6, 7, 100, 0, -1} }

// checkPages reads every record through page in pages of limit and checks
// that the pages together hold want, in order, every page but the last full
// and the last one short (empty when want is a multiple of limit). page is
// given the last record of the previous page, or nil for the first page.
func checkPages[T any](t *testing.T, want []string, limit int, key func(T) string, page func(last *T, limit int) ([]T, error)) {
	t.Helper()
	var (
		got  []string
		last *T
	)
	for calls := 0; ; calls++ {
		if calls > len(want)+1 {
			t.Fatalf("limit %d: still paging after %d pages; got %q so far", limit, calls, got)
		}
		p, err := page(last, limit)
		if err != nil {
			t.Fatalf("limit %d: page %d: %v", limit, calls, err)
		}
		got = append(got, keys(p, key)...)
		if limit > 0 && len(p) > limit {
			t.Fatalf("limit %d: page %d has %d records", limit, calls, len(p))
		}
		if limit <= 0 || len(p) < limit {
			if limit > 0 && len(p) != len(want)%limit {
				t.Errorf("limit %d: last page has %d records, want %d", limit, len(p), len(want)%limit)
			}
			break
		}
		last = &p[len(p)-1]
	}
	if !slices.Equal(got, want) {
		t.Errorf("limit %d: pages hold %q, want %q", limit, got, want)
	}
}

func testListRuntimesPages(t *testing.T, s store.Store) {
	ctx := t.Context()
	view(t, s, func(tx store.Tx) error {
		rs, err := tx.ListRuntimes(ctx, "", 10)
		if err != nil {
			return err
		}
		if len(rs) != 0 {
			t.Errorf("empty store lists %d runtimes", len(rs))
		}
		return nil
	})
	want := []string{"rt-0", "rt-1", "rt-2", "rt-3", "rt-4", "rt-5"}
	update(t, s, func(tx store.Tx) error {
		for _, i := range []int{3, 0, 5, 1, 4, 2} { // out of order
			if err := tx.CreateRuntime(ctx, newRuntime(want[i])); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx store.Tx) error {
		for _, limit := range pageLimits() {
			checkPages(t, want, limit, runtimeKey, func(last *store.Runtime, limit int) ([]store.Runtime, error) {
				after := ""
				if last != nil {
					after = last.ID
				}
				return tx.ListRuntimes(ctx, after, limit)
			})
		}
		for _, tc := range []struct {
			after string
			want  []string
		}{
			{"rt-2", want[3:]},
			{"rt-2x", want[3:]}, // a cursor that is no ID still works
			{"rt-5", nil},
			{"zzz", nil},
		} {
			rs, err := tx.ListRuntimes(ctx, tc.after, 0)
			if err != nil {
				return err
			}
			if got := keys(rs, runtimeKey); !slices.Equal(got, tc.want) {
				t.Errorf("runtimes after %q: %q, want %q", tc.after, got, tc.want)
			}
		}
		return nil
	})
}

func testListVersionsPages(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		for _, id := range []string{"a", "b", "c"} {
			if err := tx.CreateRuntime(ctx, newRuntime(id)); err != nil {
				return err
			}
		}
		// b's versions around a's must not show in a's list.
		for _, v := range []store.Version{newVersion("b", 1), newVersion("b", 9)} {
			if err := tx.CreateVersion(ctx, v); err != nil {
				return err
			}
		}
		for _, n := range []int{4, 1, 6, 2, 5, 3} {
			if err := tx.CreateVersion(ctx, newVersion("a", n)); err != nil {
				return err
			}
		}
		return nil
	})
	want := []string{"a/6", "a/5", "a/4", "a/3", "a/2", "a/1"}
	view(t, s, func(tx store.Tx) error {
		for _, limit := range pageLimits() {
			checkPages(t, want, limit, versionKey, func(last *store.Version, limit int) ([]store.Version, error) {
				before := 0
				if last != nil {
					before = last.Number
				}
				return tx.ListVersions(ctx, "a", before, limit)
			})
		}
		for _, tc := range []struct {
			runtime string
			before  int
			want    []string
		}{
			{"a", 4, want[3:]},
			{"a", 100, want},
			{"a", 1, nil},
			{"c", 0, nil},       // no versions
			{"missing", 0, nil}, // no runtime
		} {
			vs, err := tx.ListVersions(ctx, tc.runtime, tc.before, 0)
			if err != nil {
				return err
			}
			if got := keys(vs, versionKey); !slices.Equal(got, tc.want) {
				t.Errorf("versions of %s before %d: %q, want %q", tc.runtime, tc.before, got, tc.want)
			}
		}
		return nil
	})
}

func testListEndpointsPages(t *testing.T, s store.Store) {
	ctx := t.Context()
	names := []string{"DEFAULT", "alpha", "beta", "gamma", "prod", "staging"} // sorted bytewise
	update(t, s, func(tx store.Tx) error {
		for _, id := range []string{"a", "b", "c"} {
			if err := tx.CreateRuntime(ctx, newRuntime(id)); err != nil {
				return err
			}
		}
		for _, e := range []store.Endpoint{newEndpoint("b", "DEFAULT"), newEndpoint("b", "zeta")} {
			if err := tx.CreateEndpoint(ctx, e); err != nil {
				return err
			}
		}
		for _, i := range []int{4, 1, 0, 5, 2, 3} {
			if err := tx.CreateEndpoint(ctx, newEndpoint("a", names[i])); err != nil {
				return err
			}
		}
		return nil
	})
	var want []string
	for _, n := range names {
		want = append(want, "a/"+n)
	}
	view(t, s, func(tx store.Tx) error {
		for _, limit := range pageLimits() {
			checkPages(t, want, limit, endpointKey, func(last *store.Endpoint, limit int) ([]store.Endpoint, error) {
				after := ""
				if last != nil {
					after = last.Name
				}
				return tx.ListEndpoints(ctx, "a", after, limit)
			})
		}
		for _, tc := range []struct {
			runtime, after string
			want           []string
		}{
			{"a", "beta", want[3:]},
			{"a", "staging", nil},
			{"c", "", nil},       // no endpoints
			{"missing", "", nil}, // no runtime
		} {
			es, err := tx.ListEndpoints(ctx, tc.runtime, tc.after, 0)
			if err != nil {
				return err
			}
			if got := keys(es, endpointKey); !slices.Equal(got, tc.want) {
				t.Errorf("endpoints of %s after %q: %q, want %q", tc.runtime, tc.after, got, tc.want)
			}
		}
		return nil
	})
}

func testCascadeDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	update(t, s, func(tx store.Tx) error {
		for _, id := range []string{"doomed", "kept"} {
			if err := tx.CreateRuntime(ctx, newRuntime(id)); err != nil {
				return err
			}
			for n := 1; n <= 3; n++ {
				v := newVersion(id, n)
				v.Artifact = "shared"
				if err := tx.CreateVersion(ctx, v); err != nil {
					return err
				}
			}
			for _, name := range []string{"DEFAULT", "prod"} {
				if err := tx.CreateEndpoint(ctx, newEndpoint(id, name)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	update(t, s, func(tx store.Tx) error { return tx.DeleteRuntime(ctx, "doomed") })
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetVersion(ctx, "doomed", 1)
		wantErr(t, "get version of deleted runtime", err, store.ErrNotFound)
		_, err = tx.GetEndpoint(ctx, "doomed", "DEFAULT")
		wantErr(t, "get endpoint of deleted runtime", err, store.ErrNotFound)
		vs, err := tx.ListVersionsByArtifact(ctx, "shared")
		if err != nil {
			return err
		}
		got := keys(vs, versionKey)
		slices.Sort(got)
		if want := []string{"kept/1", "kept/2", "kept/3"}; !slices.Equal(got, want) {
			t.Errorf("versions left: %q, want %q", got, want)
		}
		es, err := tx.ListEndpoints(ctx, "kept", "", 0)
		if err != nil {
			return err
		}
		if got, want := keys(es, endpointKey), []string{"kept/DEFAULT", "kept/prod"}; !slices.Equal(got, want) {
			t.Errorf("endpoints left: %q, want %q", got, want)
		}
		return nil
	})
	// A new runtime with the old ID starts empty.
	update(t, s, func(tx store.Tx) error { return tx.CreateRuntime(ctx, newRuntime("doomed")) })
	view(t, s, func(tx store.Tx) error {
		vs, err := tx.ListVersions(ctx, "doomed", 0, 0)
		if err != nil {
			return err
		}
		es, err := tx.ListEndpoints(ctx, "doomed", "", 0)
		if err != nil {
			return err
		}
		if len(vs) != 0 || len(es) != 0 {
			t.Errorf("recreated runtime has %d versions and %d endpoints, want none", len(vs), len(es))
		}
		return nil
	})
}

// writeAll creates a runtime with its version 1 and DEFAULT endpoint.
func writeAll(ctx context.Context, tx store.Tx, id string) error {
	if err := tx.CreateRuntime(ctx, newRuntime(id)); err != nil {
		return err
	}
	if err := tx.CreateVersion(ctx, newVersion(id, 1)); err != nil {
		return err
	}
	return tx.CreateEndpoint(ctx, newEndpoint(id, "DEFAULT"))
}

// checkAbsent fails the test if anything of runtime id is stored.
func checkAbsent(t *testing.T, s store.Store, id string) {
	t.Helper()
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetRuntime(t.Context(), id)
		wantErr(t, "get runtime of a rolled back transaction", err, store.ErrNotFound)
		_, err = tx.GetVersion(t.Context(), id, 1)
		wantErr(t, "get version of a rolled back transaction", err, store.ErrNotFound)
		_, err = tx.GetEndpoint(t.Context(), id, "DEFAULT")
		wantErr(t, "get endpoint of a rolled back transaction", err, store.ErrNotFound)
		return nil
	})
}

// afterFailure checks that the store still takes writes, with a deadline in
// case the failed transaction left the store locked.
func afterFailure(t *testing.T, s store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.Update(ctx, func(tx store.Tx) error { return writeAll(ctx, tx, "after") }); err != nil {
		t.Fatalf("update after a failed transaction: %v", err)
	}
}

func testUpdateError(t *testing.T, s store.Store) {
	ctx := t.Context()
	errFn := errors.New("fn failed")
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := writeAll(ctx, tx, "rt"); err != nil {
			return err
		}
		return errFn
	})
	wantErr(t, "update whose fn fails", err, errFn)
	checkAbsent(t, s, "rt")
	afterFailure(t, s)

	err = s.View(ctx, func(tx store.Tx) error { return errFn })
	wantErr(t, "view whose fn fails", err, errFn)
}

func testUpdatePanic(t *testing.T, s store.Store) {
	ctx := t.Context()
	type boom struct{}
	func() {
		defer func() {
			if v := recover(); v != (boom{}) {
				t.Errorf("update recovered %v, want the panic to go on to the caller", v)
			}
		}()
		_ = s.Update(ctx, func(tx store.Tx) error {
			if err := writeAll(ctx, tx, "rt"); err != nil {
				return err
			}
			panic(boom{})
		})
	}()
	checkAbsent(t, s, "rt")
	afterFailure(t, s)
}

func testUpdateCanceled(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Update(ctx, func(tx store.Tx) error { return writeAll(ctx, tx, "rt") })
	wantErr(t, "update with a canceled context", err, context.Canceled)
	checkAbsent(t, s, "rt")

	// Canceled while fn runs: nothing may commit.
	ctx, cancel = context.WithCancel(t.Context())
	err = s.Update(ctx, func(tx store.Tx) error {
		if err := writeAll(ctx, tx, "rt"); err != nil {
			return err
		}
		cancel()
		return nil
	})
	if err == nil {
		t.Errorf("update canceled before commit: no error")
	}
	checkAbsent(t, s, "rt")
	afterFailure(t, s)
}

func testViewReadOnly(t *testing.T, s store.Store) {
	ctx := t.Context()
	err := s.View(ctx, func(tx store.Tx) error { return writeAll(ctx, tx, "rt") })
	if err == nil {
		t.Errorf("write in View: no error")
	}
	checkAbsent(t, s, "rt")
}

// testViewIsolation checks that a View neither waits for nor sees the
// writes of an Update that has not committed, and sees them once it has.
func testViewIsolation(t *testing.T, s store.Store) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	written := make(chan struct{})
	viewed := make(chan error, 1)
	go func() {
		select {
		case <-written:
		case <-ctx.Done():
			viewed <- ctx.Err()
			return
		}
		viewed <- s.View(ctx, func(tx store.Tx) error {
			if _, err := tx.GetRuntime(ctx, "rt"); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("get uncommitted runtime: got error %v, want %v", err, store.ErrNotFound)
			}
			return nil
		})
	}()
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := writeAll(ctx, tx, "rt"); err != nil {
			return err
		}
		close(written)
		select {
		case err := <-viewed:
			if err != nil {
				return fmt.Errorf("view during update: %w", err)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("view blocked by an open update: %w", ctx.Err())
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	view(t, s, func(tx store.Tx) error {
		_, err := tx.GetEndpoint(ctx, "rt", "DEFAULT")
		return err
	})
}

// testConcurrentUpdates increments a counter by read-modify-write from many
// goroutines at once: serialized transactions lose no increment. Readers
// run alongside and must never see the counter go back.
func testConcurrentUpdates(t *testing.T, s store.Store) {
	ctx := t.Context()
	r := newRuntime("rt")
	r.LatestVersion = 0
	update(t, s, func(tx store.Tx) error { return tx.CreateRuntime(ctx, r) })

	const writers, readers = 50, 4
	var (
		wg, rg sync.WaitGroup
		stop   = make(chan struct{})
	)
	for range readers {
		rg.Go(func() {
			seen := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := s.View(ctx, func(tx store.Tx) error {
					got, err := tx.GetRuntime(ctx, r.ID)
					if err != nil {
						return err
					}
					if got.LatestVersion < seen {
						return fmt.Errorf("counter went back from %d to %d", seen, got.LatestVersion)
					}
					seen = got.LatestVersion
					return nil
				})
				if err != nil {
					t.Errorf("reader: %v", err)
					return
				}
			}
		})
	}
	for range writers {
		wg.Go(func() {
			err := s.Update(ctx, func(tx store.Tx) error {
				got, err := tx.GetRuntime(ctx, r.ID)
				if err != nil {
					return err
				}
				got.LatestVersion++
				return tx.UpdateRuntime(ctx, got)
			})
			if err != nil {
				t.Errorf("writer: %v", err)
			}
		})
	}
	wg.Wait()
	close(stop)
	rg.Wait()
	view(t, s, func(tx store.Tx) error {
		got, err := tx.GetRuntime(ctx, r.ID)
		if err != nil {
			return err
		}
		if got.LatestVersion != writers {
			t.Errorf("counter is %d after %d increments", got.LatestVersion, writers)
		}
		return nil
	})
}
