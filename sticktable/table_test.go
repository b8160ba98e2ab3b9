package sticktable

import (
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func TestStoreAndMatchEachType(t *testing.T) {
	cases := []struct {
		typ       KeyType
		key, same string // same: another spelling of key
		canonical string
		invalid   string
	}{
		{KeyIP, "192.0.2.7", "::ffff:192.0.2.7", "192.0.2.7", "2001:db8::7"},
		{KeyIPv6, "2001:db8::7", "2001:DB8:0::7", "2001:db8::7", "2001:db8::z"},
		{KeyIPv6, "192.0.2.7", "::ffff:192.0.2.7", "::ffff:192.0.2.7", "192.0.2"},
		{KeyInteger, "-42", "-042", "-42", "forty-two"},
		{KeyString, "session-1", "session-1", "session-1", ""},
		{KeyBinary, "C0FFEE", "c0ffee", "c0ffee", "c0ffe"},
	}
	for _, c := range cases {
		t.Run(c.typ.String()+"/"+c.key, func(t *testing.T) {
			tab, _ := newTestTable(t, Config{Type: c.typ}, Options{})
			e := mustStore(t, tab, c.key, "10.0.0.11:8080")
			if e.Key.String() != c.canonical || e.Server != "10.0.0.11:8080" || e.Version == 0 {
				t.Fatalf("stored %+v", e)
			}
			got, ok := tab.Lookup(c.same)
			if !ok || got.Server != "10.0.0.11:8080" || got.Key.String() != c.canonical {
				t.Fatalf("Lookup(%q) = %+v, %v", c.same, got, ok)
			}
			if tab.Len() != 1 {
				t.Fatalf("Len = %d", tab.Len())
			}
			if c.invalid != "" {
				if _, err := tab.Store(c.invalid, "x"); !errors.Is(err, ErrInvalidKey) {
					t.Fatalf("Store(%q) = %v, want ErrInvalidKey", c.invalid, err)
				}
				if _, o := tab.Match(c.invalid); o != OutcomeInvalid {
					t.Fatalf("Match(%q) = %v", c.invalid, o)
				}
				if tab.Len() != 1 || tab.Stats().Invalid != 2 {
					t.Fatalf("invalid key changed the table: len %d, stats %+v", tab.Len(), tab.Stats())
				}
			}
			if _, err := tab.Store("", "x"); err != ErrEmptyKey {
				t.Fatalf("empty key store: %v", err)
			}
			if _, o := tab.Match(""); o != OutcomeEmpty {
				t.Fatalf("empty key match: %v", o)
			}
			if _, err := tab.Store(c.key, ""); err != ErrEmptyServer {
				t.Fatalf("empty server: %v", err)
			}
			if tab.Len() != 1 || tab.Stats().Empty != 2 {
				t.Fatalf("after refusals: len %d stats %+v", tab.Len(), tab.Stats())
			}
		})
	}
}

func TestStringTruncation(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyString, Len: 8}, Options{})
	mustStore(t, tab, "abcdefgh-first", "a")
	e, ok := tab.Lookup("abcdefgh-second")
	if !ok || e.Server != "a" || e.Key.String() != "abcdefgh" {
		t.Fatalf("truncated keys should collide: %+v %v", e, ok)
	}
	bin, _ := newTestTable(t, Config{Type: KeyBinary, Len: 2}, Options{})
	mustStore(t, bin, "aabbcc", "a")
	if e, ok := bin.Lookup("AABBdd"); !ok || e.Key.String() != "aabb" {
		t.Fatalf("binary truncation: %+v %v", e, ok)
	}
}

func TestKeyTypeMismatch(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyIP}, Options{})
	k, _ := ParseKey(KeyInteger, 0, "1")
	if _, err := tab.StoreKey(k, "a"); !errors.Is(err, ErrKeyType) {
		t.Fatalf("StoreKey with integer key: %v", err)
	}
	if _, ok := tab.LookupKey(k); ok {
		t.Fatal("LookupKey with integer key hit")
	}
	if _, err := tab.StoreKey(Key{}, "a"); err != ErrEmptyKey {
		t.Fatalf("zero key: %v", err)
	}
	// A string key parsed for a longer table is cut to this one's Len.
	short, _ := newTestTable(t, Config{Type: KeyString, Len: 3}, Options{})
	long, _ := ParseKey(KeyString, 10, "abcdefgh")
	if e, err := short.StoreKey(long, "a"); err != nil || e.Key.String() != "abc" {
		t.Fatalf("StoreKey truncation: %+v %v", e, err)
	}
}

func TestExpiry(t *testing.T) {
	const expire = time.Minute
	tab, clk := newTestTable(t, Config{Type: KeyIP, Expire: expire}, Options{})
	e := mustStore(t, tab, "10.0.0.1", "a")
	if !e.ExpiresAt.Equal(clk.Now().Add(expire)) {
		t.Fatalf("ExpiresAt %v, want %v", e.ExpiresAt, clk.Now().Add(expire))
	}

	// Stops matching at the deadline, with no reaper involved.
	clk.Add(expire)
	if _, o := tab.Match("10.0.0.1"); o != OutcomeExpired {
		t.Fatalf("at deadline: %v", o)
	}
	if tab.Len() != 0 || tab.Stats().Reaped != 1 {
		t.Fatalf("expired entry not reclaimed by the lookup: len %d %+v", tab.Len(), tab.Stats())
	}
	if _, o := tab.Match("10.0.0.1"); o != OutcomeMiss {
		t.Fatalf("after reclaim: %v", o)
	}

	// Match refreshes: keep touching it every 40s and it lives on.
	mustStore(t, tab, "10.0.0.2", "a")
	for range 5 {
		clk.Add(40 * time.Second)
		if _, ok := tab.Lookup("10.0.0.2"); !ok {
			t.Fatal("refreshed entry expired")
		}
	}
	// Store refreshes as well.
	for range 5 {
		clk.Add(40 * time.Second)
		mustStore(t, tab, "10.0.0.2", "a")
	}
	// Get does not refresh.
	clk.Add(40 * time.Second)
	if _, ok := tab.Get("10.0.0.2"); !ok {
		t.Fatal("Get missed a live entry")
	}
	clk.Add(20 * time.Second)
	if _, ok := tab.Get("10.0.0.2"); ok {
		t.Fatal("Get refreshed the entry, or expiry is late")
	}
	if s := tab.Stats(); s.Hits != 5 || s.Expired != 1 || s.Misses != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRefreshGranularity(t *testing.T) {
	const expire = time.Hour // granularity: 1s
	tab, clk := newTestTable(t, Config{Type: KeyInteger, Expire: expire}, Options{})
	first := mustStore(t, tab, "1", "a")
	clk.Add(500 * time.Millisecond)
	e, _ := tab.Lookup("1")
	if !e.ExpiresAt.Equal(first.ExpiresAt) {
		t.Fatal("hit within the granularity rewrote the expiry")
	}
	clk.Add(600 * time.Millisecond)
	e, _ = tab.Lookup("1")
	if !e.ExpiresAt.Equal(clk.Now().Add(expire)) {
		t.Fatalf("hit after the granularity did not refresh: %v", e.ExpiresAt)
	}
}

func TestLRUEviction(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyString, Size: 3}, Options{})
	for _, k := range []string{"a", "b", "c"} {
		mustStore(t, tab, k, "s")
		clk.Add(2 * time.Second) // past the refresh granularity
	}
	tab.Lookup("a") // b is now the least recently used
	clk.Add(2 * time.Second)
	mustStore(t, tab, "d", "s")
	if server(tab, "b") != "" || server(tab, "a") == "" || server(tab, "c") == "" || server(tab, "d") == "" {
		t.Fatal("evicted the wrong entry")
	}
	clk.Add(2 * time.Second)
	mustStore(t, tab, "c", "s2") // a store counts as use too
	clk.Add(2 * time.Second)
	mustStore(t, tab, "e", "s")
	if server(tab, "a") != "" || server(tab, "c") != "s2" {
		t.Fatal("second eviction picked the wrong entry")
	}
	if tab.Len() != 3 || tab.Stats().Evictions != 2 {
		t.Fatalf("len %d stats %+v", tab.Len(), tab.Stats())
	}
}

func TestEvictionPrefersExpiredAndTombstones(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyString, Size: 3, Expire: time.Minute}, Options{})
	mustStore(t, tab, "old", "s")
	clk.Add(50 * time.Second)
	mustStore(t, tab, "b", "s")
	mustStore(t, tab, "c", "s")
	clk.Add(20 * time.Second) // "old" has expired, b and c have not
	mustStore(t, tab, "d", "s")
	if st := tab.Stats(); st.Evictions != 0 || st.Reaped != 1 {
		t.Fatalf("expired entry should be recycled first: %+v", st)
	}
	tab.Delete("b")
	mustStore(t, tab, "e", "s")
	if st := tab.Stats(); st.Evictions != 0 || st.Tombstones != 0 || server(tab, "c") == "" {
		t.Fatalf("tombstone should be dropped before a live entry: %+v", st)
	}
}

func TestNoPurge(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyString, Size: 2, NoPurge: true}, Options{})
	mustStore(t, tab, "a", "s1")
	mustStore(t, tab, "b", "s1")
	if _, err := tab.Store("c", "s1"); err != ErrFull {
		t.Fatalf("store into full nopurge table: %v", err)
	}
	if server(tab, "c") != "" || tab.Len() != 2 || tab.Stats().Refused != 1 {
		t.Fatal("refused key was stored")
	}
	if e, err := tab.Store("a", "s2"); err != nil || e.Server != "s2" {
		t.Fatalf("existing key must still update: %+v %v", e, err)
	}
	if _, err := tab.Pin("b", "s3"); err != nil {
		t.Fatalf("pin existing: %v", err)
	}
	// Deleting makes room (the tombstone yields to a new key).
	tab.Delete("a")
	if _, err := tab.Store("c", "s1"); err != nil {
		t.Fatalf("store after delete: %v", err)
	}
	if tab.Stats().Evictions != 0 {
		t.Fatal("nopurge table evicted")
	}
}

func TestReconfigure(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyInteger, Size: 10, Expire: time.Hour}, Options{})
	for i := range 10 {
		mustStore(t, tab, strconv.Itoa(i), "s")
		clk.Add(2 * time.Second)
	}
	if err := tab.Reconfigure(4, 0); err != nil {
		t.Fatal(err)
	}
	if tab.Len() != 4 {
		t.Fatalf("Len after shrink = %d", tab.Len())
	}
	for i := range 10 {
		if got, want := server(tab, strconv.Itoa(i)) != "", i >= 6; got != want {
			t.Fatalf("key %d present=%v after shrink, want %v (most recent kept)", i, got, want)
		}
	}
	if c := tab.Config(); c.Size != 4 || c.Expire != DefaultExpire || c.Retention != 2*DefaultExpire {
		t.Fatalf("config after reconfigure: %+v", c)
	}
	// Shorter expiry caps existing deadlines.
	if err := tab.Reconfigure(8, time.Minute); err != nil {
		t.Fatal(err)
	}
	if e, _ := tab.Get("9"); e.ExpiresAt.After(clk.Now().Add(time.Minute)) {
		t.Fatalf("deadline not capped: %v", e.ExpiresAt)
	}
	for i := 10; i < 14; i++ {
		mustStore(t, tab, strconv.Itoa(i), "s")
	}
	if tab.Len() != 8 || tab.Stats().Evictions != 6 {
		t.Fatalf("grown table: len %d stats %+v", tab.Len(), tab.Stats())
	}
	if err := tab.Reconfigure(-1, 0); err == nil {
		t.Fatal("negative size accepted")
	}
	multi, _ := newTestTable(t, Config{Type: KeyIP, Size: 1000}, Options{Shards: 8})
	if err := multi.Reconfigure(4, 0); err == nil {
		t.Fatal("size below shard count accepted")
	}
}

func TestDeleteClearClearServer(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyInteger}, Options{})
	for i := range 30 {
		mustStore(t, tab, strconv.Itoa(i), fmt.Sprintf("s%d", i%3))
	}
	if ok, err := tab.Delete("0"); !ok || err != nil {
		t.Fatalf("Delete live: %v %v", ok, err)
	}
	if ok, _ := tab.Delete("0"); ok {
		t.Fatal("Delete of a deleted key reported true")
	}
	if ok, _ := tab.Delete("1000"); ok {
		t.Fatal("Delete of an unknown key reported true")
	}
	if _, err := tab.Delete("x"); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("Delete invalid: %v", err)
	}
	if _, ok := tab.Lookup("0"); ok {
		t.Fatal("deleted key still matches")
	}
	if st := tab.Stats(); st.Entries != 29 || st.Tombstones != 1 {
		t.Fatalf("after delete: %+v", st)
	}
	if n := tab.ClearServer("s1"); n != 10 {
		t.Fatalf("ClearServer removed %d, want 10", n)
	}
	if n := tab.ClearServer("nobody"); n != 0 {
		t.Fatalf("ClearServer(nobody) = %d", n)
	}
	got := tab.Servers()
	want := []ServerEntries{{"s0", 9}, {"s2", 10}}
	if !slices.Equal(got, want) {
		t.Fatalf("Servers = %v, want %v", got, want)
	}
	if server(tab, "1") != "" || server(tab, "2") != "s2" {
		t.Fatal("ClearServer hit the wrong keys")
	}
	if n := tab.Clear(); n != 19 {
		t.Fatalf("Clear removed %d, want 19", n)
	}
	if st := tab.Stats(); st.Entries != 0 || st.Tombstones != 0 || len(tab.Servers()) != 0 {
		t.Fatalf("after Clear: %+v", st)
	}
	// The table works after Clear, with versions above the watermark.
	e := mustStore(t, tab, "5", "s9")
	if v, _ := tab.ClearMark(); e.Version <= v {
		t.Fatalf("post-clear version %d not above watermark %d", e.Version, v)
	}
}

func TestEntriesPaging(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyInteger}, Options{Shards: 4})
	perm := []int{7, -3, 12, 0, -10, 5, 3, 9, 1, -1, 14, 2}
	for i, k := range perm {
		mustStore(t, tab, strconv.Itoa(k), fmt.Sprintf("s%d", i%2))
	}
	sorted := slices.Clone(perm)
	slices.Sort(sorted)
	var seen []int
	after := ""
	for pages := 0; ; pages++ {
		es, more, err := tab.Entries(Query{After: after, Limit: 5})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			n, _ := strconv.Atoi(e.Key.String())
			seen = append(seen, n)
		}
		if !more {
			if len(es) > 5 || pages != 2 {
				t.Fatalf("paging ended after %d pages", pages+1)
			}
			break
		}
		after = es[len(es)-1].Key.String()
	}
	if !slices.Equal(seen, sorted) {
		t.Fatalf("pages gave %v, want %v", seen, sorted)
	}
	all, more, _ := tab.Entries(Query{Server: "s1"})
	if more || len(all) != 6 {
		t.Fatalf("server filter: %d entries, more=%v", len(all), more)
	}
	for _, e := range all {
		if e.Server != "s1" {
			t.Fatalf("server filter let through %+v", e)
		}
	}
	one, _, _ := tab.Entries(Query{Key: "+12"})
	if len(one) != 1 || one[0].Key.String() != "12" {
		t.Fatalf("key filter: %+v", one)
	}
	none, _, _ := tab.Entries(Query{Key: "12", Server: "s1"})
	if len(none) != 0 {
		t.Fatalf("key+server filter: %+v", none)
	}
	if _, _, err := tab.Entries(Query{After: "x"}); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("bad after: %v", err)
	}
	exact, more, _ := tab.Entries(Query{Limit: len(perm)})
	if more || len(exact) != len(perm) {
		t.Fatalf("limit == count: %d more=%v", len(exact), more)
	}

	ips, _ := newTestTable(t, Config{Type: KeyIP}, Options{Shards: 4})
	for _, k := range []string{"10.0.0.10", "9.1.1.1", "10.0.0.9", "192.168.0.1"} {
		mustStore(t, ips, k, "s")
	}
	es, _, _ := ips.Entries(Query{After: "9.1.1.1"})
	var keys []string
	for _, e := range es {
		keys = append(keys, e.Key.String())
	}
	if want := []string{"10.0.0.9", "10.0.0.10", "192.168.0.1"}; !slices.Equal(keys, want) {
		t.Fatalf("ip order %v, want %v", keys, want)
	}
}

func TestRangeStopsAndSkipsExpired(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyInteger, Expire: time.Minute}, Options{Shards: 4})
	for i := range 500 {
		mustStore(t, tab, strconv.Itoa(i), "s")
	}
	clk.Add(30 * time.Second)
	for i := 500; i < 600; i++ {
		mustStore(t, tab, strconv.Itoa(i), "s")
	}
	clk.Add(40 * time.Second)
	n := 0
	tab.Range(func(e Entry) bool {
		if e.ExpiresAt.Before(clk.Now()) {
			t.Fatalf("Range returned expired %+v", e)
		}
		n++
		return true
	})
	if n != 100 {
		t.Fatalf("Range saw %d live entries, want 100", n)
	}
	n = 0
	tab.Range(func(Entry) bool { n++; return n < 7 })
	if n != 7 {
		t.Fatalf("Range did not stop: %d", n)
	}
	// The stopped walk must not leave compaction blocked.
	shards := tab.eng.(*engine[uint64]).shards
	for i := range shards {
		if shards[i].scanners != 0 {
			t.Fatal("scanner count leaked")
		}
	}
}

func TestReapAndCompact(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyString, Expire: time.Minute}, Options{})
	for i := range 5000 {
		mustStore(t, tab, "key-"+strconv.Itoa(i), "s"+strconv.Itoa(i%7))
	}
	for i := range 100 {
		tab.Delete("key-" + strconv.Itoa(i))
	}
	sh := &tab.eng.(*engine[string]).shards[0]
	cellsBefore := len(sh.cells)
	clk.Add(2 * time.Minute) // entries expired, tombstones (retention 2m) at the deadline
	if n := tab.Reap(); n != 5000 {
		t.Fatalf("Reap freed %d, want 5000", n)
	}
	if st := tab.Stats(); st.Entries != 0 || st.Tombstones != 0 || st.Reaped != 4900 {
		t.Fatalf("after reap: %+v", st)
	}
	if len(sh.cells) >= cellsBefore || len(tab.Servers()) != 0 {
		t.Fatalf("memory not given back: %d cells before, %d after", cellsBefore, len(sh.cells))
	}
	mustCheck(t, tab)
	mustStore(t, tab, "again", "s")
	if server(tab, "again") != "s" {
		t.Fatal("table unusable after compaction")
	}
}

func TestSweepCatchesOutOfOrderExpiry(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyInteger, Expire: time.Hour}, Options{})
	mustStore(t, tab, "1", "s") // LRU tail, expires in an hour
	// A replicated entry with little life left lands at the LRU front.
	k, _ := tab.ParseKey("2")
	if ok, err := tab.Apply(Change{Op: OpStore, Key: k, Server: "s", Version: 1 << 20, Node: "n2", TTL: time.Second}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	clk.Add(2 * time.Second)
	if n := tab.Reap(); n != 1 || tab.Len() != 1 {
		t.Fatalf("sweep freed %d, len %d", n, tab.Len())
	}
}

func TestBackgroundReaper(t *testing.T) {
	clk := newFakeClock()
	tab, err := NewWithOptions(Config{Type: KeyIP, Expire: time.Minute}, Options{Now: clk.Now, ReapInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	for i := range 1000 {
		mustStore(t, tab, fmt.Sprintf("10.0.%d.%d", i/256, i%256), "s")
	}
	clk.Add(time.Hour)
	deadline := time.Now().Add(20 * time.Second)
	for tab.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("reaper left %d entries", tab.Len())
		}
		time.Sleep(time.Millisecond)
	}
	mustCheck(t, tab)
}

func TestServerNamesAreReused(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyInteger, Size: 10}, Options{})
	// Far more distinct servers over time than fit in 16 bits, but few at once.
	for i := range 70000 {
		mustStore(t, tab, strconv.Itoa(i%10), "10.1."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256)+":80")
	}
	if len(tab.Servers()) != 10 {
		t.Fatalf("servers: %d", len(tab.Servers()))
	}
}

func TestZeroAllocHotPath(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, c := range []struct {
		typ KeyType
		key string
	}{{KeyIP, "10.1.2.3"}, {KeyIPv6, "2001:db8::5"}, {KeyInteger, "123456"}, {KeyString, "a-session-id-of-some-length"}} {
		tab, _ := newTestTable(t, Config{Type: c.typ}, Options{})
		tab.SetOnChange(func(Change) {})
		mustStore(t, tab, c.key, "10.0.0.1:80")
		if n := testing.AllocsPerRun(1000, func() { tab.Lookup(c.key) }); n != 0 {
			t.Errorf("%s: Lookup hit allocates %.1f", c.typ, n)
		}
		if n := testing.AllocsPerRun(1000, func() { tab.Lookup("99") }); n != 0 && c.typ != KeyIP && c.typ != KeyIPv6 {
			t.Errorf("%s: Lookup miss allocates %.1f", c.typ, n)
		}
		if n := testing.AllocsPerRun(1000, func() { tab.Store(c.key, "10.0.0.1:80") }); n != 0 {
			t.Errorf("%s: Store refresh allocates %.1f", c.typ, n)
		}
	}
}

// A table dropped without Close must not leak its reaper goroutine.
func TestReaperStopsWhenTableIsCollected(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		tab, err := NewWithOptions(Config{Type: KeyIP}, Options{ReapInterval: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		tab.Store("10.0.0.1", "s")
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("reaper still running: %d goroutines, %d before", runtime.NumGoroutine(), before)
		}
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
}

// The memory targets depend on these sizes; keep them from creeping.
func TestSlotSizes(t *testing.T) {
	sizes := map[string][2]uintptr{
		"ip":      {unsafe.Sizeof(slot[uint32]{}), 40},
		"integer": {unsafe.Sizeof(slot[uint64]{}), 40},
		"ipv6":    {unsafe.Sizeof(slot[[16]byte]{}), 48},
		"string":  {unsafe.Sizeof(slot[string]{}), 48},
	}
	for name, s := range sizes {
		if s[0] != s[1] {
			t.Errorf("%s slot is %d bytes, want %d", name, s[0], s[1])
		}
	}
}

func TestSetNoPurgeInPlace(t *testing.T) {
	tb, err := NewWithOptions(Config{Type: KeyInteger, Size: 2}, Options{ReapInterval: -1, Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	for _, k := range []string{"1", "2"} {
		if _, err := tb.Store(k, "s:1"); err != nil {
			t.Fatal(err)
		}
	}
	tb.SetNoPurge(true)
	if !tb.Config().NoPurge {
		t.Fatal("Config does not report nopurge")
	}
	if _, err := tb.Store("3", "s:1"); err != ErrFull {
		t.Fatalf("full nopurge table took a new key: %v", err)
	}
	tb.SetNoPurge(false)
	if _, err := tb.Store("3", "s:1"); err != nil {
		t.Fatalf("purging table refused a new key: %v", err)
	}
	if _, ok := tb.Get("1"); ok {
		t.Error("the least recently used key should have been evicted")
	}
}

func TestServerIdentityCap(t *testing.T) {
	tbl, _ := newTestTable(t, Config{Type: KeyString}, Options{})
	ok := strings.Repeat("s", MaxServerLen)
	if _, err := tbl.Store("a", ok); err != nil {
		t.Fatalf("the longest allowed identity was refused: %v", err)
	}
	long := ok + "x"
	if _, err := tbl.Store("b", long); !errors.Is(err, ErrServerTooLong) {
		t.Errorf("Store: %v", err)
	}
	if _, err := tbl.Pin("b", long); !errors.Is(err, ErrServerTooLong) {
		t.Errorf("Pin: %v", err)
	}
	k, _ := tbl.ParseKey("b")
	if _, err := tbl.Apply(Change{Op: OpStore, Key: k, Server: long, Version: 1 << 40, Node: "n", TTL: time.Minute}); !errors.Is(err, ErrServerTooLong) {
		t.Errorf("Apply: %v", err)
	}
	if _, found := tbl.Get("b"); found {
		t.Error("an over-long identity was stored")
	}
	mustCheck(t, tbl)
}
