package sticktable

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
	"unsafe"
)

// TestCellsFollowAModel drives one shard through growth, churn at its
// limit (deleted cells and the rebuilds that clean them), deletes, mass
// expiry and shrinking, comparing every key with a plain map and checking
// the shard's invariants (control bytes, probe reachability, lists,
// counts, the hard fill limit) as it goes.
func TestCellsFollowAModel(t *testing.T) {
	for _, typ := range []KeyType{KeyInteger, KeyString} {
		t.Run(typ.String(), func(t *testing.T) {
			const size, keys = 3000, 5000
			tab, clk := newTestTable(t, Config{Type: typ, Size: size, Expire: time.Hour, Retention: time.Minute}, Options{Shards: 1})
			tab.SetNoPurge(true) // a full table refuses instead of evicting, so the model stays exact
			model := map[string]string{}
			r := rand.New(rand.NewPCG(1, uint64(typ)))
			key := func() string { return strconv.Itoa(r.IntN(keys)) }
			var rebuilds uint32
			vacated := 0
			gen := func() uint32 { return cellsOf(tab).gen }
			last := gen()
			prevUsed := uint32(0)
			for op := range 60000 {
				switch p := r.IntN(100); {
				case p < 55:
					k, srv := key(), "s"+strconv.Itoa(r.IntN(5))
					_, err := tab.Store(k, srv)
					switch {
					case err == nil:
						model[k] = srv
					case err == ErrFull && len(model) >= size && model[k] == "":
					default:
						t.Fatalf("op %d: Store(%s): %v with %d in the model", op, k, err, len(model))
					}
				case p < 85:
					k := key()
					if ok, _ := tab.Delete(k); ok != (model[k] != "") {
						t.Fatalf("op %d: Delete(%s) = %v, model has %q", op, k, ok, model[k])
					}
					delete(model, k)
				case p < 99:
					k := key()
					if e, ok := tab.Get(k); ok != (model[k] != "") || (ok && e.Server != model[k]) {
						t.Fatalf("op %d: Get(%s) = %v %q, model has %q", op, k, ok, e.Server, model[k])
					}
				default:
					// tombstones (what Delete leaves) outlive their
					// retention and are reaped, which frees cells
					clk.Add(20 * time.Second)
					tab.Reap()
					if r.IntN(20) == 0 { // now and then everything expires at once
						clk.Add(3 * time.Hour)
						tab.Reap()
						clear(model)
					}
				}
				if c := cellsOf(tab); c.used < prevUsed {
					vacated += int(prevUsed - c.used)
				}
				prevUsed = cellsOf(tab).used
				if g := gen(); g != last {
					rebuilds += g - last
					last = g
				}
				if op%997 == 0 {
					mustCheck(t, tab)
				}
			}
			mustCheck(t, tab)
			if tab.Len() != len(model) {
				t.Fatalf("Len %d, model %d", tab.Len(), len(model))
			}
			if rebuilds < 10 || vacated < 10000 {
				t.Fatalf("%d rebuilds, %d cells freed: the test no longer exercises growth and cleaning", rebuilds, vacated)
			}
		})
	}
}

// TestCellsStayDense checks the memory side of the layout: at every size
// a shard's cells are at least seven tenths full after growth, so memory
// per entry stays near the slot size, and never over the hard limit.
func TestCellsStayDense(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyInteger, Size: 1 << 20, Expire: time.Hour}, Options{Shards: 1})
	for i := range 200000 {
		mustStore(t, tab, strconv.Itoa(i), "a")
		c := cellsOf(tab)
		if n, used := uint64(c.cells), uint64(c.used); n > minCells*2 && (used*10 < n*7-10 || used*8 > n*7) {
			t.Fatalf("%d entries in %d cells", used, n)
		}
	}
	mustCheck(t, tab)
}

// TestWalkRestartsAfterForcedRebuild: a walk holds rebuilds off, but if
// inserts between its batches fill the shard to the hard limit, the shard
// is rebuilt anyway and renumbered. The walk must then start over rather
// than go on with stale positions, which would skip entries: a scan must
// still see every entry present throughout, and ClearServer must still
// clear every entry of the server.
func TestWalkRestartsAfterForcedRebuild(t *testing.T) {
	const before = 2000
	fill := func(t *testing.T, tab *Table) {
		for i := range before {
			mustStore(t, tab, "old-"+strconv.Itoa(i), "a")
		}
		for c := cellsOf(tab); (c.used+c.deleted)*8 <= c.cells*7-8; c = cellsOf(tab) {
			mustStore(t, tab, "pad-"+strconv.Itoa(int(c.used)), "b") // up to the normal rebuild point
		}
	}
	insertBurst := func(t *testing.T, tab *Table, tag string) {
		for i := range 2000 {
			mustStore(t, tab, tag+strconv.Itoa(i), "b")
		}
	}

	t.Run("scan", func(t *testing.T) {
		tab, _ := newTestTable(t, Config{Type: KeyString, Size: 1 << 20, Expire: time.Hour}, Options{Shards: 1})
		fill(t, tab)
		gen := cellsOf(tab).gen
		seen := map[string]bool{}
		burst := false
		tab.Range(func(e Entry) bool {
			seen[e.Key.String()] = true
			if !burst {
				burst = true
				insertBurst(t, tab, "new-")
			}
			return true
		})
		if cellsOf(tab).gen == gen {
			t.Fatal("no rebuild during the walk: the test does not exercise the restart")
		}
		t.Logf("gen %d -> %d, seen %d, %+v", gen, cellsOf(tab).gen, len(seen), cellsOf(tab))
		for i := range before {
			if k := "old-" + strconv.Itoa(i); !seen[k] {
				t.Fatalf("the walk missed %s", k)
			}
		}
		mustCheck(t, tab)
	})

	t.Run("renumbered into fewer cells", func(t *testing.T) {
		// Growth keeps positions roughly in order (a key's home scales
		// with the cell count), so a walk that went on with stale
		// positions would miss little after growth; a rebuild into
		// fewer cells moves entries from after the walk's position to
		// before it, and every one of them would be missed.
		tab, _ := newTestTable(t, Config{Type: KeyString, Size: 1 << 20, Expire: time.Hour}, Options{Shards: 1})
		for i := range before {
			mustStore(t, tab, "old-"+strconv.Itoa(i), "a")
		}
		s := &tab.eng.(*engine[string]).shards[0]
		s.mu.Lock()
		s.rebuild(4 * before)
		s.mu.Unlock()
		seen := map[string]bool{}
		shrunk := false
		tab.Range(func(e Entry) bool {
			seen[e.Key.String()] = true
			if !shrunk {
				shrunk = true
				s.mu.Lock()
				s.rebuild(capacityFor(s.live+s.tombs, s.limit))
				s.mu.Unlock()
			}
			return true
		})
		for i := range before {
			if k := "old-" + strconv.Itoa(i); !seen[k] {
				t.Fatalf("the walk missed %s (saw %d of %d)", k, len(seen), before)
			}
		}
		mustCheck(t, tab)
	})

	t.Run("clear server", func(t *testing.T) {
		tab, _ := newTestTable(t, Config{Type: KeyString, Size: 1 << 20, Expire: time.Hour}, Options{Shards: 1})
		fill(t, tab)
		gen := cellsOf(tab).gen
		burst := false
		tab.SetOnChange(func(c Change) {
			if c.Op == OpDelete && !burst {
				burst = true
				insertBurst(t, tab, "new-")
			}
		})
		if n := tab.ClearServer("a"); n != before {
			t.Fatalf("ClearServer cleared %d, want %d", n, before)
		}
		tab.SetOnChange(nil)
		if cellsOf(tab).gen == gen {
			t.Fatal("no rebuild during the walk: the test does not exercise the restart")
		}
		for i := range before {
			if k := "old-" + strconv.Itoa(i); server(tab, k) != "" {
				t.Fatalf("%s still stuck after ClearServer", k)
			}
		}
		mustCheck(t, tab)
	})
}

// cellState is what the tests read of a one-shard table's cells.
type cellState struct{ gen, cells, used, deleted uint32 }

func cellsOf(tab *Table) cellState {
	read := func(s interface {
		state() cellState
	}) cellState {
		return s.state()
	}
	switch e := tab.eng.(type) {
	case *engine[uint64]:
		return read(&e.shards[0])
	case *engine[string]:
		return read(&e.shards[0])
	}
	panic("unexpected engine")
}

func (s *shard[K]) state() cellState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cellState{s.gen, uint32(len(s.cells) - firstSlot), s.live + s.tombs, s.deleted}
}

// TestCellsChurnAtTheLimit replaces entries of a full shard one by one
// (new users pushing old ones out), which frees cells in the middle of
// probe runs: the deleted cells this leaves must be cleaned by rebuilds
// before they fill the shard, or probes for absent keys would never end.
func TestCellsChurnAtTheLimit(t *testing.T) {
	const size = 1000
	tab, _ := newTestTable(t, Config{Type: KeyInteger, Size: size, Expire: time.Hour}, Options{Shards: 1})
	r := rand.New(rand.NewPCG(3, 4))
	sawDeleted := false
	for i := range 100000 {
		mustStore(t, tab, strconv.Itoa(r.IntN(1<<30)), "a") // a full table evicts its LRU entry
		if i%500 == 0 {
			mustCheck(t, tab)
			c := cellsOf(tab)
			sawDeleted = sawDeleted || c.deleted > 20
			if _, ok := tab.Get("-1"); ok { // a probe for an absent key ends
				t.Fatal("found a key never stored")
			}
		}
	}
	if !sawDeleted {
		t.Fatal("no deleted cells built up: the test no longer exercises cleaning")
	}
}

// TestShardLayout pins the layout the hot path relies on: shards are whole
// cache lines, and the counters a lookup writes share the lock's line.
func TestShardLayout(t *testing.T) {
	var s shard[uint32]
	if size := unsafe.Sizeof(s); size%64 != 0 {
		t.Fatalf("shard is %d bytes, not whole cache lines: adjust its final padding", size)
	}
	if off := unsafe.Offsetof(s.c) + unsafe.Offsetof(s.c.misses) + unsafe.Sizeof(s.c.misses); off > 64 {
		t.Fatalf("hit and miss counters end at byte %d, off the lock's line", off)
	}
	if unsafe.Sizeof(shard[string]{}) != unsafe.Sizeof(s) {
		t.Fatal("shard size depends on the key type")
	}
}

// TestShardsBoundRebuilds: a rebuild holds its shard's lock for a time
// proportional to the shard's entries, so shard limits stay bounded at
// every size, while tables up to 2M keep 64 shards.
func TestShardsBoundRebuilds(t *testing.T) {
	for _, c := range []struct{ size, shards int }{
		{1000, 1}, {4096, 4}, {1 << 17, 64}, {1 << 20, 64}, {2 << 20, 64}, {4 << 20, 128},
		{10_000_000, 512}, {32 << 20, 1024}, {100_000_000, 1024},
	} {
		if got := autoShards(c.size); got != c.shards {
			t.Errorf("autoShards(%d) = %d, want %d", c.size, got, c.shards)
		}
		if c.size <= 32<<20 && c.size/autoShards(c.size) > 32768 {
			t.Errorf("size %d: %d entries per shard", c.size, c.size/autoShards(c.size))
		}
	}
}

// TestEngineHashMatches: rebuilds and backward shifts hash a stored key
// with the engine's own function, which must give exactly the hash its
// lookups use (Table.hashKey of the key), or entries would become
// unreachable after a rebuild.
func TestEngineHashMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, typ := range []KeyType{KeyIP, KeyIPv6, KeyInteger, KeyString, KeyBinary} {
		cfg := Config{Type: typ}
		if typ == KeyBinary {
			cfg.Len = 16
		}
		tab, _ := newTestTable(t, cfg, Options{})
		for range 1000 {
			var k Key
			switch typ {
			case KeyIP:
				k, _ = tab.ParseKey(fmt.Sprintf("%d.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256)))
			case KeyIPv6:
				k, _ = tab.ParseKey(fmt.Sprintf("2001:db8::%x:%x", r.IntN(1<<16), r.IntN(1<<16)))
			case KeyInteger:
				k, _ = tab.ParseKey(strconv.FormatInt(r.Int64()-r.Int64(), 10))
			case KeyBinary:
				raw := make([]byte, 16)
				for i := range raw {
					raw[i] = byte(r.IntN(256))
				}
				k, _ = tab.KeyFromBytes(raw)
			default:
				k, _ = tab.ParseKey(strconv.FormatUint(r.Uint64(), 16))
			}
			want := tab.hashKey(&k)
			var got uint64
			switch {
			case tab.ipEng != nil:
				got = tab.ipEng.shards[0].hash(tab.ipEng.fromKey(k))
			case tab.v6Eng != nil:
				got = tab.v6Eng.shards[0].hash(tab.v6Eng.fromKey(k))
			case tab.intEng != nil:
				got = tab.intEng.shards[0].hash(tab.intEng.fromKey(k))
			default:
				got = tab.strEng.shards[0].hash(tab.strEng.fromKey(k))
			}
			if got != want || k.IsZero() {
				t.Fatalf("%s key %s: engine hash %x, lookup hash %x", typ, k, got, want)
			}
		}
	}
}

// TestWalksUnderChurn: stable keys must be seen by every Range and
// survive ClearServer of another server, while other goroutines churn the
// shard (inserts to the hard limit, deletes, expiry, reaping, compaction).
func TestWalksUnderChurn(t *testing.T) {
	for _, typ := range []KeyType{KeyInteger, KeyString} {
		t.Run(typ.String(), func(t *testing.T) {
			tab, clk := newTestTable(t, Config{Type: typ, Size: 20000, Expire: time.Hour, Retention: time.Minute}, Options{Shards: 1})
			const stable = 2000
			for i := range stable {
				mustStore(t, tab, strconv.Itoa(i), "keep")
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				n := 0
				for {
					select {
					case <-stop:
						return
					default:
					}
					for j := range 500 {
						k := strconv.Itoa(1000000 + n*500 + j)
						if _, err := tab.Store(k, "churn"+strconv.Itoa(j%3)); err != nil && err != ErrFull {
							t.Error(err)
							return
						}
					}
					for j := range 400 {
						tab.Delete(strconv.Itoa(1000000 + n*500 + j))
					}
					if n%5 == 0 {
						tab.ClearServer("churn1")
					}
					if n%7 == 0 && n < 70 {
						clk.Add(2 * time.Minute)
						tab.Reap()
					}
					n++
				}
			}()
			for round := range 40 {
				seen := map[string]bool{}
				tab.Range(func(e Entry) bool {
					if e.Server == "keep" {
						seen[e.Key.String()] = true
					}
					return true
				})
				if len(seen) != stable {
					close(stop)
					<-done
					t.Fatalf("round %d: Range saw %d of %d stable keys", round, len(seen), stable)
				}
				tab.ClearServer("churn2")
			}
			close(stop)
			<-done
			mustCheck(t, tab)
			for i := range stable {
				if _, ok := tab.Get(strconv.Itoa(i)); !ok {
					t.Fatalf("stable key %d lost", i)
				}
			}
		})
	}
}

// TestRangeFinishesUnderChurn: a Range whose callback is slow relative to
// the churn of a full shard (one store of a new key, evicting the LRU
// tail, per entry visited) must still finish, though every rebuild forced
// at the hard limit during the walk restarts it.
func TestRangeFinishesUnderChurn(t *testing.T) {
	const size = 4000
	tab, _ := newTestTable(t, Config{Type: KeyInteger, Size: size, Expire: time.Hour, Retention: time.Minute}, Options{Shards: 1})
	for i := range size {
		mustStore(t, tab, strconv.Itoa(i), "s")
	}
	next := size
	calls := 0
	g0 := cellsOf(tab).gen
	tab.Range(func(e Entry) bool {
		calls++
		for range 1 {
			if _, err := tab.Store(strconv.Itoa(next), "s"); err != nil {
				t.Fatal(err)
			}
			next++
		}
		return calls < 50*size
	})
	if calls >= 50*size {
		t.Fatalf("Range over a %d-entry table made %d calls and was still going (%d restarts)", size, calls, cellsOf(tab).gen-g0)
	}
	mustCheck(t, tab)
}

// TestWholeShardScanRestartsItsEntries: a whole-shard scan (what
// WriteSnapshot uses) that restarts after a forced rebuild must start its
// entries over, not hand out those it saw before the rebuild twice.
func TestWholeShardScanRestartsItsEntries(t *testing.T) {
	const size = 20000
	tab, _ := newTestTable(t, Config{Type: KeyInteger, Size: size, Expire: time.Hour}, Options{Shards: 1})
	for i := range size {
		mustStore(t, tab, strconv.Itoa(i), "s")
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := size; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			tab.Store(strconv.Itoa(n), "s")
		}
	}()
	defer func() { close(stop); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	rebuildScans := 0
	for try := 0; time.Now().Before(deadline); try++ {
		g0 := cellsOf(tab).gen
		dups, total := 0, 0
		tab.intEng.scan(tab.now(), true, true, func(b []Entry) bool {
			seen := map[string]bool{}
			for _, e := range b {
				if seen[e.Key.String()] {
					dups++
				}
				seen[e.Key.String()] = true
			}
			total = len(b)
			return true
		})
		if cellsOf(tab).gen == g0 {
			continue // no rebuild during this scan
		}
		if rebuildScans++; dups > 0 {
			t.Fatalf("try %d: whole-shard scan of a %d-entry shard returned %d entries, %d duplicates (%d rebuilds during the scan)",
				try, size, total, dups, cellsOf(tab).gen-g0)
		}
		if rebuildScans >= 5 {
			return
		}
	}
	t.Skipf("only %d scans saw a rebuild; inconclusive", rebuildScans)
}

// TestByExpiryFallback: entries that do not pack (more than the index
// bits can number) come back in index order, every one of them once.
func TestByExpiryFallback(t *testing.T) {
	entries := make([]Entry, 10)
	for i := range entries {
		entries[i].ExpiresAt = time.Unix(1_800_000_000-int64(i), 0)
	}
	for _, bits := range []uint{3, 24} {
		order := byExpiryPacked(nil, entries, bits)
		seen := map[uint64]bool{}
		for _, o := range order {
			if o >= uint64(len(entries)) || seen[o] {
				t.Fatalf("bits %d: index %d out of range or repeated: %v", bits, o, order)
			}
			seen[o] = true
		}
		if len(seen) != len(entries) {
			t.Fatalf("bits %d: %d of %d entries", bits, len(seen), len(entries))
		}
		if bits == 24 && order[0] != 9 { // packed: ascending expiry
			t.Fatalf("packed order %v", order)
		}
	}
}
