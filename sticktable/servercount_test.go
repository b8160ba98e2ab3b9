package sticktable

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scanCounts counts live entries per server the slow way, through Range.
func scanCounts(t *Table) map[string]int {
	out := map[string]int{}
	t.Range(func(e Entry) bool {
		out[e.Server]++
		return true
	})
	return out
}

// counted returns ServerCounts as a map, leaving out servers at zero.
func counted(t *Table) map[string]int {
	out := map[string]int{}
	for _, c := range t.ServerCounts() {
		if c.Stuck != 0 {
			out[c.Server] = c.Stuck
		}
	}
	return out
}

// expectCounts checks the invariants (counters equal a walk of every
// shard), then that the public counts equal a Range over live entries and
// the expected numbers.
func expectCounts(tb testing.TB, t *Table, step string, want map[string]int) {
	tb.Helper()
	if err := t.check(); err != nil {
		tb.Fatalf("after %s: %v", step, err)
	}
	got, scan := counted(t), scanCounts(t)
	if fmt.Sprint(got) != fmt.Sprint(scan) {
		tb.Fatalf("after %s: counts %v, a scan finds %v", step, got, scan)
	}
	if want != nil && fmt.Sprint(got) != fmt.Sprint(want) {
		tb.Fatalf("after %s: counts %v, want %v", step, got, want)
	}
	for s, n := range want {
		if t.Stuck(s) != n {
			tb.Fatalf("after %s: Stuck(%q) = %d, want %d", step, s, t.Stuck(s), n)
		}
	}
}

func TestServerCountsFollowEveryChange(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyString, Size: 6, Expire: time.Minute}, Options{Node: "a", Shards: 2})
	m := map[string]int{}
	expectCounts(t, tab, "nothing", m)

	mustStore(t, tab, "u1", "web1")
	mustStore(t, tab, "u2", "web1")
	mustStore(t, tab, "u3", "web2")
	expectCounts(t, tab, "three stores", map[string]int{"web1": 2, "web2": 1})

	mustStore(t, tab, "u1", "web1") // a refresh
	expectCounts(t, tab, "a refresh", map[string]int{"web1": 2, "web2": 1})

	mustStore(t, tab, "u1", "web2") // replaced: the user moved
	expectCounts(t, tab, "a replace", map[string]int{"web1": 1, "web2": 2})

	if _, err := tab.Pin("u2", "web3"); err != nil {
		t.Fatal(err)
	}
	expectCounts(t, tab, "a pin", map[string]int{"web2": 2, "web3": 1})

	if ok, _ := tab.Delete("u3"); !ok {
		t.Fatal("delete found nothing")
	}
	expectCounts(t, tab, "a delete", map[string]int{"web2": 1, "web3": 1})

	// Expiry: the count drops when the entry is reclaimed, by whichever path.
	clk.Add(2 * time.Minute)
	tab.Reap()
	expectCounts(t, tab, "expiry", m)

	// Eviction: a full table drops its least recently used entries.
	for i := range 10 {
		mustStore(t, tab, "e"+strconv.Itoa(i), "web"+strconv.Itoa(i%2))
		expectCounts(t, tab, "store "+strconv.Itoa(i), nil)
	}
	if st := tab.Stats(); st.Evictions == 0 {
		t.Fatalf("no evictions in a table of 6 after 10 stores: %+v", st)
	}
	if n := tab.Stuck("web0") + tab.Stuck("web1"); n != tab.Len() {
		t.Fatalf("counts add up to %d, table holds %d", n, tab.Len())
	}

	// Changes from peers: a new key, a replace, a delete.
	k := key(t, tab, "remote")
	v := tab.lastVersionForTest() + 1<<LogicalBits
	if ok, err := tab.Apply(Change{Op: OpStore, Key: k, Server: "web9", Version: v, Node: "b", TTL: time.Minute}); !ok || err != nil {
		t.Fatalf("apply: %v %v", ok, err)
	}
	expectCounts(t, tab, "apply new", nil)
	if tab.Stuck("web9") != 1 {
		t.Fatalf("applied entry not counted: %v", counted(tab))
	}
	if ok, _ := tab.Apply(Change{Op: OpStore, Key: k, Server: "web8", Version: v + 1, Node: "b", TTL: time.Minute}); !ok {
		t.Fatal("newer apply refused")
	}
	expectCounts(t, tab, "apply replace", nil)
	if tab.Stuck("web9") != 0 || tab.Stuck("web8") != 1 {
		t.Fatalf("after a replace from a peer: %v", counted(tab))
	}
	if ok, _ := tab.Apply(Change{Op: OpDelete, Key: k, Version: v + 2, Node: "b", TTL: time.Minute}); !ok {
		t.Fatal("delete from a peer refused")
	}
	expectCounts(t, tab, "apply delete", nil)
	if tab.Stuck("web8") != 0 {
		t.Fatalf("after a delete from a peer: %v", counted(tab))
	}

	// ClearServer, Clear, shrinking.
	before := tab.Stuck("web0")
	if n := tab.ClearServer("web0"); n != before {
		t.Fatalf("ClearServer removed %d, counter said %d", n, before)
	}
	expectCounts(t, tab, "clear server", nil)
	if tab.Stuck("web0") != 0 {
		t.Fatal("web0 still counted after ClearServer")
	}
	for i := range 4 {
		mustStore(t, tab, "c"+strconv.Itoa(i), "web5")
	}
	if err := tab.Reconfigure(2, 0); err != nil {
		t.Fatal(err)
	}
	expectCounts(t, tab, "shrink", nil)
	tab.Clear()
	expectCounts(t, tab, "clear", m)
}

// lastVersionForTest returns a version above everything the table holds.
func (t *Table) lastVersionForTest() uint64 { return t.eng.lastVersion() }

func TestServerCountsLastNewUser(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyString, Expire: time.Hour}, Options{Node: "a"})
	t0 := clk.Now()
	mustStore(t, tab, "u1", "web1")
	clk.Add(time.Minute)
	mustStore(t, tab, "u1", "web1") // refresh: not a new user
	mustStore(t, tab, "u1", "web2") // moved: not a new user of web2
	last := func(server string) time.Time {
		for _, c := range tab.ServerCounts() {
			if c.Server == server {
				return c.LastNewUser
			}
		}
		return time.Time{}
	}
	if got := last("web1"); !got.Equal(t0.Truncate(time.Millisecond)) {
		t.Fatalf("web1 last new user %v, want %v", got, t0)
	}
	if got := last("web2"); !got.IsZero() {
		t.Fatalf("web2 got a moved user counted as new: %v", got)
	}
	t1 := clk.Now()
	mustStore(t, tab, "u2", "web2")
	if got := last("web2"); !got.Equal(t1) {
		t.Fatalf("web2 last new user %v, want %v", got, t1)
	}
	// web1 has no entries left but keeps its last new user.
	if tab.Stuck("web1") != 0 || !last("web1").Equal(t0) {
		t.Fatalf("web1: stuck %d, last %v", tab.Stuck("web1"), last("web1"))
	}
	// A peer's new entry counts at its version's time, not at arrival.
	t2 := t1.Add(30 * time.Second)
	v := uint64(t2.UnixMilli()) << LogicalBits
	if ok, err := tab.Apply(Change{Op: OpStore, Key: key(t, tab, "u3"), Server: "web3", Version: v, Node: "b", TTL: time.Minute}); !ok || err != nil {
		t.Fatalf("apply: %v %v", ok, err)
	}
	if got := last("web3"); !got.Equal(t2) {
		t.Fatalf("web3 last new user %v, want %v", got, t2)
	}
	// A key whose entry expired is a new user again.
	clk.Add(2 * time.Hour)
	t3 := clk.Now()
	mustStore(t, tab, "u2", "web2")
	if got := last("web2"); !got.Equal(t3) {
		t.Fatalf("web2 after expiry: %v, want %v", got, t3)
	}
}

// TestServerCountsCheckDetectsDrift proves the invariant checker compares
// the counters with the table: a counter off by one must fail it.
func TestServerCountsCheckDetectsDrift(t *testing.T) {
	tab, _ := NewWithOptions(Config{Type: KeyString}, Options{ReapInterval: -1})
	defer tab.Close()
	mustStore(t, tab, "u1", "web1")
	mustCheck(t, tab)
	var s *shard[string]
	for si := range tab.strEng.shards {
		if _, ok := tab.strEng.shards[si].servers.byName["web1"]; ok {
			s = &tab.strEng.shards[si]
		}
	}
	i := s.servers.byName["web1"]
	s.servers.refs[i]++
	if err := tab.check(); err == nil {
		t.Fatal("check accepted a count that disagrees with the entries")
	}
	s.servers.refs[i]--
	mustCheck(t, tab)
	tab.tally.byName["web1"].holders++
	if err := tab.check(); err == nil {
		t.Fatal("check accepted a server record held by more shards than intern it")
	}
	tab.tally.byName["web1"].holders--
	mustCheck(t, tab)
}

// TestServerCountsIdleBounded: servers that lose their last entry are
// remembered (for their last new user) up to a bound, then forgotten.
func TestServerCountsIdleBounded(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyString, Size: 4096}, Options{Shards: 4})
	for i := range maxIdleServers + 50 {
		k := "k" + strconv.Itoa(i)
		mustStore(t, tab, k, "srv"+strconv.Itoa(i))
		if _, err := tab.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
	mustCheck(t, tab)
	if n := len(tab.ServerCounts()); n > maxIdleServers {
		t.Fatalf("%d idle servers remembered, bound %d", n, maxIdleServers)
	}
	mustStore(t, tab, "live", "srvlive")
	mustCheck(t, tab)
	if tab.Stuck("srvlive") != 1 {
		t.Fatal("a live server is missing after the idle bound was hit")
	}
}

// TestServerCountsConcurrent runs stores, replaces, deletes, expiry,
// eviction, server clears, whole clears and peer changes at once on a
// small sharded table, checking the counters against a full walk while the
// writers run and after they stop. Run under -race.
func TestServerCountsConcurrent(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	tab, err := NewWithOptions(Config{Type: KeyInteger, Size: 2048, Expire: time.Minute},
		Options{Now: now, Node: "a", Shards: 8, ReapInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	ops := 20000
	if testing.Short() {
		ops = 3000
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 12))
			for i := range ops {
				k := strconv.Itoa(r.IntN(8192)) // four times the size: evictions
				srv := "web" + strconv.Itoa(r.IntN(5))
				switch p := r.IntN(100); {
				case p < 75:
					_, _ = tab.Store(k, srv)
				case p < 80:
					_, _ = tab.Delete(k)
				case p < 95:
					kk, _ := tab.ParseKey(k)
					v := uint64(now().UnixMilli()+int64(r.IntN(2000)-1000))<<LogicalBits | uint64(i&0xff)
					op := OpStore
					if r.IntN(4) == 0 {
						op = OpDelete
						srv = ""
					}
					_, _ = tab.Apply(Change{Op: op, Key: kk, Server: srv, Version: v, Node: "b", TTL: time.Duration(r.IntN(60)+1) * time.Second})
				case p < 96:
					clock.Add(int64(time.Duration(r.IntN(200)) * time.Millisecond)) // entries expire
				case p < 97 && r.IntN(10) == 0:
					tab.ClearServer(srv)
				case p < 97 && r.IntN(200) == 0:
					tab.Clear()
				default:
					tab.Reap()
				}
			}
		})
	}
	stop := make(chan struct{})
	var checks atomic.Int64
	var checker sync.WaitGroup
	checker.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := tab.check(); err != nil {
				t.Error(err)
				return
			}
			checks.Add(1)
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	close(stop)
	checker.Wait()
	mustCheck(t, tab)
	if checks.Load() == 0 {
		t.Fatal("the checker never ran during the writes")
	}
	st := tab.Stats()
	if st.Evictions == 0 || st.Reaped == 0 || st.Applied == 0 {
		t.Fatalf("the run did not evict, expire and apply: %+v", st)
	}
	clock.Add(int64(time.Hour))
	tab.Reap()
	expectCounts(t, tab, "everything expired", map[string]int{})
}
