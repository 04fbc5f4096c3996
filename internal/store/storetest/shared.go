package storetest

import (
	"sync"
	"testing"

	"github.com/berthrun/berth/internal/store"
)

// TwoStores runs read-modify-write transactions from two stores over the
// same data at once, as two Berth processes would, and checks that no write
// is lost and none fails. open returns a new store over that data each time
// it is called; TwoStores closes them.
func TwoStores(t *testing.T, open func(t *testing.T) store.Store) {
	ctx := t.Context()
	stores := []store.Store{open(t), open(t)}
	for _, s := range stores {
		t.Cleanup(func() { s.Close() })
	}
	if err := stores[0].Update(ctx, func(tx store.Tx) error {
		return tx.CreateRuntime(ctx, store.Runtime{ID: "rt", Name: "rt"})
	}); err != nil {
		t.Fatal(err)
	}
	const perStore = 25
	var wg sync.WaitGroup
	for _, s := range stores {
		for range perStore {
			wg.Go(func() {
				err := s.Update(ctx, func(tx store.Tx) error {
					r, err := tx.GetRuntime(ctx, "rt")
					if err != nil {
						return err
					}
					r.LatestVersion++
					return tx.UpdateRuntime(ctx, r)
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	err := stores[1].View(ctx, func(tx store.Tx) error {
		r, err := tx.GetRuntime(ctx, "rt")
		if err != nil {
			return err
		}
		if want := len(stores) * perStore; r.LatestVersion != want {
			t.Errorf("counter is %d after %d increments", r.LatestVersion, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
