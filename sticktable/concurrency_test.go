package sticktable

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentMixed runs every kind of operation from many goroutines
// on a small, full table (so eviction, reaping and compaction all happen)
// while a watcher checks that Len never exceeds Size. Run under -race.
func TestConcurrentMixed(t *testing.T) {
	const size = 16384
	var clock atomic.Int64
	clock.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	var changes atomic.Int64
	tab, err := NewWithOptions(Config{Type: KeyInteger, Size: size, Expire: time.Minute},
		Options{Now: now, Shards: 4, ReapInterval: time.Millisecond, OnChange: func(Change) { changes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()

	ops := 40000
	if testing.Short() {
		ops = 5000
	}
	stop := make(chan struct{})
	var watchers sync.WaitGroup
	watchers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := tab.Len(); n > size {
				t.Errorf("Len %d > size %d", n, size)
				return
			}
		}
	})
	// Bulk operations run beside the workers: clears empty shards so the
	// reaper compacts them while lookups, stores and walks go on.
	watchers.Go(func() {
		r := rand.New(rand.NewPCG(99, 7))
		var snap bytes.Buffer
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 7 {
			case 0:
				tab.Clear()
			case 1:
				tab.ClearServer("s" + strconv.Itoa(r.IntN(5)))
			case 2:
				tab.Entries(Query{Limit: 10, After: strconv.Itoa(r.IntN(size))})
			case 3:
				tab.Reconfigure(size/2+r.IntN(size/2), 0)
			case 4:
				tab.Reap()
			case 5:
				snap.Reset()
				tab.WriteSnapshot(&snap)
			case 6:
				if _, err := tab.ReadSnapshot(bytes.NewReader(snap.Bytes())); err != nil && snap.Len() > 0 {
					t.Errorf("restoring own snapshot: %v", err)
				}
			}
			time.Sleep(time.Millisecond)
		}
	})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for range ops {
				k := strconv.Itoa(r.IntN(2 * size))
				switch x := r.IntN(100); {
				case x < 50:
					tab.Lookup(k)
				case x < 80:
					tab.Store(k, "s"+strconv.Itoa(r.IntN(5)))
				case x < 85:
					tab.Delete(k)
				case x < 90:
					kk, _ := tab.ParseKey(k)
					tab.Apply(Change{Op: OpStore, Key: kk, Server: "r" + strconv.Itoa(r.IntN(3)), Version: r.Uint64N(1 << 60), Node: "peer", TTL: time.Duration(r.IntN(60)) * time.Second})
				case x < 92:
					clock.Add(int64(time.Second))
				case x < 95:
					tab.Get(k)
				default:
					tab.Pin(k, "pinned")
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	watchers.Wait()
	mustCheck(t, tab)
	if changes.Load() == 0 {
		t.Fatal("no changes observed")
	}
	var compactions uint64
	for i := range tab.intEng.shards {
		compactions += tab.intEng.shards[i].c.compactions.Load()
	}
	t.Logf("%d compactions, stats %+v", compactions, tab.Stats())
}

// TestConcurrentNoLostUpdates: goroutines storing disjoint keys into a
// table large enough for all of them must find every last write.
func TestConcurrentNoLostUpdates(t *testing.T) {
	const workers, perWorker = 8, 2000
	tab, err := NewWithOptions(Config{Type: KeyString, Size: 64 * 1024}, Options{Shards: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for round := range 3 {
				for i := range perWorker {
					k := fmt.Sprintf("w%d-k%d", w, i)
					if _, err := tab.Store(k, fmt.Sprintf("s%d-%d", w, round)); err != nil {
						t.Error(err)
						return
					}
					if e, ok := tab.Lookup(k); !ok || e.Server != fmt.Sprintf("s%d-%d", w, round) {
						t.Errorf("read-your-write failed for %s: %+v", k, e)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if tab.Len() != workers*perWorker {
		t.Fatalf("Len %d, want %d", tab.Len(), workers*perWorker)
	}
	for w := range workers {
		for i := range perWorker {
			k := fmt.Sprintf("w%d-k%d", w, i)
			if got, want := server(tab, k), fmt.Sprintf("s%d-2", w); got != want {
				t.Fatalf("%s: %q, want %q", k, got, want)
			}
		}
	}
	mustCheck(t, tab)
}
