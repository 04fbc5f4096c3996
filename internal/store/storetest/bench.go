package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/berthrun/berth/internal/store"
)

// Bench measures the transactions the control plane runs most: a read of a
// runtime and its version, alone and from parallel goroutines, a
// read-modify-write of a runtime, the creation of a runtime with its first
// version and DEFAULT endpoint, and a page of a runtime list. open is as
// for Run; Bench closes the stores it opens.
func Bench(b *testing.B, open func(b *testing.B) store.Store) {
	b.Run("View", func(b *testing.B) {
		s := seeded(b, open)
		ctx := b.Context()
		for b.Loop() {
			if err := s.View(ctx, readRuntime(ctx)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ViewParallel", func(b *testing.B) {
		s := seeded(b, open)
		ctx := b.Context()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.View(ctx, readRuntime(ctx)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("Update", func(b *testing.B) {
		s := seeded(b, open)
		ctx := b.Context()
		for b.Loop() {
			err := s.Update(ctx, func(tx store.Tx) error {
				r, err := tx.GetRuntime(ctx, "rt")
				if err != nil {
					return err
				}
				r.LatestVersion++
				return tx.UpdateRuntime(ctx, r)
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ListRuntimes", func(b *testing.B) {
		s := seeded(b, open)
		ctx := b.Context()
		err := s.Update(ctx, func(tx store.Tx) error {
			for i := range listSeed {
				if err := tx.CreateRuntime(ctx, newRuntime(fmt.Sprintf("list-%04d", i))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			err := s.View(ctx, func(tx store.Tx) error {
				rs, err := tx.ListRuntimes(ctx, "list-0100", listPage)
				if err == nil && len(rs) != listPage {
					err = fmt.Errorf("listed %d runtimes, want %d", len(rs), listPage)
				}
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("CreateRuntime", func(b *testing.B) {
		s := seeded(b, open)
		ctx := b.Context()
		i := 0
		for b.Loop() {
			i++
			id := fmt.Sprintf("bench-%d", i)
			if err := s.Update(ctx, func(tx store.Tx) error { return writeAll(ctx, tx, id) }); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The ListRuntimes benchmark lists a page of listPage from listSeed
// runtimes: the API's default page size, from a store of some size.
const (
	listSeed = 1000
	listPage = 100
)

// seeded opens a store holding runtime "rt" with its version 1.
func seeded(b *testing.B, open func(b *testing.B) store.Store) store.Store {
	s := open(b)
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Errorf("close: %v", err)
		}
	})
	err := s.Update(b.Context(), func(tx store.Tx) error {
		if err := tx.CreateRuntime(b.Context(), newRuntime("rt")); err != nil {
			return err
		}
		return tx.CreateVersion(b.Context(), newVersion("rt", 1))
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// readRuntime returns a transaction that reads runtime "rt" and its latest
// version.
func readRuntime(ctx context.Context) func(store.Tx) error {
	return func(tx store.Tx) error {
		r, err := tx.GetRuntime(ctx, "rt")
		if err != nil {
			return err
		}
		_, err = tx.GetVersion(ctx, r.ID, r.LatestVersion)
		return err
	}
}
