package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/berthrun/berth/internal/store"
)

// Bench measures the transactions the control plane runs most: a read of a
// runtime and its version, alone and from parallel goroutines, a
// read-modify-write of a runtime, and the creation of a runtime with its
// first version and DEFAULT endpoint. open is as for Run; Bench closes the
// stores it opens.
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
