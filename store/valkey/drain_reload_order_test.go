package valkey

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/internal/redistest"
)

// Drain reloads run on any of the store's four workers: two reloads
// triggered by two quick changes can finish out of order, and the older
// set is then what the OnDrainChange functions saw last, with nothing to
// correct it until the next change.
func TestDrainReloadsApplyInOrder(t *testing.T) {
	r := redistest.Start(t)
	cfg := Config{Addresses: []string{r.URL()}}.Resolved(nil)
	watcher, err := New("s", cfg, Options{Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	var mu sync.Mutex
	var last []string
	watcher.OnDrainChange(func(s []string) { mu.Lock(); last = s; mu.Unlock() })
	other, err := New("s", cfg, Options{Node: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for other.Drain(ctx, "warm") != nil {
		if time.Now().After(deadline) {
			t.Fatal("store not reachable")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = other.Undrain(ctx, "warm")
	for round := 0; round < 30; round++ {
		for i := 0; i < 20; i++ {
			_ = other.Drain(ctx, "x:1")
			_ = other.Undrain(ctx, "x:1")
		}
		time.Sleep(300 * time.Millisecond)
		mu.Lock()
		got := slices.Clone(last)
		mu.Unlock()
		if len(got) != 0 {
			t.Fatalf("round %d: the store holds no drained server, this instance last heard %v", round, got)
		}
	}
}
