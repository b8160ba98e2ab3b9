package sticktable

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

func key(tb testing.TB, t *Table, text string) Key {
	tb.Helper()
	k, err := t.ParseKey(text)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

const v0 = uint64(1_700_000_000_000) << LogicalBits // a plausible HLC value

// Among explicit changes (here pins and re-sticks), the higher version wins.
func TestApplyHigherVersionWins(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyString}, Options{Node: "a"})
	local, err := tab.Pin("k", "s1")
	if err != nil {
		t.Fatal(err)
	}
	k := key(t, tab, "k")
	older := Change{Op: OpStore, Key: k, Server: "s2", Version: local.Version - 1, Node: "z", TTL: time.Minute}
	if ok, err := tab.Apply(older); ok || err != nil {
		t.Fatalf("older version applied: %v %v", ok, err)
	}
	if server(tab, "k") != "s1" {
		t.Fatal("older version changed the entry")
	}
	// Same version: the node name breaks the tie ("b" > "a").
	tie := Change{Op: OpStore, Key: k, Server: "s3", Version: local.Version, Node: "b", TTL: time.Minute}
	if ok, _ := tab.Apply(tie); !ok || server(tab, "k") != "s3" {
		t.Fatal("tie with a greater node name should win")
	}
	tieLow := Change{Op: OpStore, Key: k, Server: "s4", Version: local.Version, Node: "a0", TTL: time.Minute}
	if ok, _ := tab.Apply(tieLow); ok || server(tab, "k") != "s3" {
		t.Fatal("tie with a smaller node name should lose")
	}
	newer := Change{Op: OpStore, Key: k, Server: "s5", Version: local.Version + 1, Node: "a", TTL: time.Minute}
	if ok, _ := tab.Apply(newer); !ok || server(tab, "k") != "s5" {
		t.Fatal("newer version should win")
	}
	e, _ := tab.Get("k")
	if e.Version != newer.Version || e.Node != "a" {
		t.Fatalf("entry version %d node %q", e.Version, e.Node)
	}
	// A later local write is versioned above what was applied.
	if e2 := mustStore(t, tab, "k", "s6"); e2.Version <= newer.Version {
		t.Fatal("local clock did not observe the applied version")
	}
	if st := tab.Stats(); st.Applied != 2 || st.Stale != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestApplyTTL(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyInteger, Expire: time.Minute}, Options{})
	k := key(t, tab, "1")
	tab.Apply(Change{Op: OpStore, Key: k, Server: "s", Version: v0, Node: "n", TTL: time.Hour})
	e, _ := tab.Get("1")
	if !e.ExpiresAt.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("TTL not capped by expire: %v", e.ExpiresAt.Sub(clk.Now()))
	}
	// The same write again with more life extends it; with less, nothing.
	clk.Add(30 * time.Second)
	if ok, _ := tab.Apply(Change{Op: OpRefresh, Key: k, Server: "s", Version: v0, Node: "n", TTL: 45 * time.Second}); !ok {
		t.Fatal("refresh not applied")
	}
	e, _ = tab.Get("1")
	if !e.ExpiresAt.Equal(clk.Now().Add(45 * time.Second)) {
		t.Fatalf("refresh deadline %v", e.ExpiresAt.Sub(clk.Now()))
	}
	if ok, _ := tab.Apply(Change{Op: OpRefresh, Key: k, Server: "s", Version: v0, Node: "n", TTL: time.Second}); ok {
		t.Fatal("shorter refresh shortened the entry")
	}
	// Expired on arrival: ignored.
	k2 := key(t, tab, "2")
	if ok, _ := tab.Apply(Change{Op: OpStore, Key: k2, Server: "s", Version: v0, Node: "n", TTL: 0}); ok || tab.Len() != 1 {
		t.Fatal("change without remaining life applied")
	}
	// Malformed changes.
	for _, c := range []Change{
		{Op: OpStore, Key: k2, Server: "s", TTL: time.Second},
		{Op: OpStore, Key: k2, Version: v0, TTL: time.Second},
		{Op: 99, Key: k2, Server: "s", Version: v0, TTL: time.Second},
		{Op: OpStore, Key: Key{}, Server: "s", Version: v0, TTL: time.Second},
	} {
		if ok, err := tab.Apply(c); ok || err == nil {
			t.Errorf("Apply(%+v) = %v, %v", c, ok, err)
		}
	}
	ipKey, _ := ParseKey(KeyIP, 0, "10.0.0.1")
	if _, err := tab.Apply(Change{Op: OpStore, Key: ipKey, Server: "s", Version: v0, TTL: time.Second}); !errors.Is(err, ErrKeyType) {
		t.Fatalf("wrong key type: %v", err)
	}
}

func TestTombstones(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyString, Expire: time.Minute, Retention: 5 * time.Minute}, Options{Node: "a"})
	k := key(t, tab, "k")
	tab.Apply(Change{Op: OpStore, Key: k, Server: "s1", Version: v0 + 10, Node: "b", TTL: time.Minute})

	// An older tombstone loses to the entry.
	if ok, _ := tab.Apply(Change{Op: OpDelete, Key: k, Version: v0 + 5, Node: "b"}); ok || server(tab, "k") != "s1" {
		t.Fatal("older tombstone won")
	}
	// A newer one beats it.
	if ok, _ := tab.Apply(Change{Op: OpDelete, Key: k, Version: v0 + 20, Node: "b", TTL: time.Hour}); !ok || server(tab, "k") != "" {
		t.Fatal("newer tombstone lost")
	}
	if st := tab.Stats(); st.Entries != 0 || st.Tombstones != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Stores older than the tombstone stay dead; newer ones resurrect.
	if ok, _ := tab.Apply(Change{Op: OpStore, Key: k, Server: "s2", Version: v0 + 15, Node: "c", TTL: time.Minute}); ok {
		t.Fatal("store older than the tombstone applied")
	}
	if ok, _ := tab.Apply(Change{Op: OpStore, Key: k, Server: "s3", Version: v0 + 30, Node: "c", TTL: time.Minute}); !ok || server(tab, "k") != "s3" {
		t.Fatal("store newer than the tombstone did not apply")
	}

	// Retention: a local delete's tombstone guards for Retention (the
	// remote TTL of an hour above was capped to it), then is reclaimed.
	if ok, _ := tab.Delete("k"); !ok {
		t.Fatal("delete")
	}
	var del Change
	tab.RangeChanges(func(c Change) bool { del = c; return true })
	if del.Op != OpDelete || del.TTL != 5*time.Minute || del.Node != "a" || del.Version <= v0+30 {
		t.Fatalf("tombstone as change: %+v", del)
	}
	clk.Add(5*time.Minute - time.Second)
	tab.Reap()
	if ok, _ := tab.Apply(Change{Op: OpStore, Key: k, Server: "old", Version: v0 + 40, Node: "c", TTL: time.Minute}); ok {
		t.Fatal("tombstone expired early")
	}
	clk.Add(time.Second)
	if n := tab.Reap(); n != 1 || tab.Stats().Tombstones != 0 {
		t.Fatalf("tombstone not reclaimed after retention: %d", n)
	}
	// Once forgotten, a stale write can come back: that is what the
	// retention bounds.
	if ok, _ := tab.Apply(Change{Op: OpStore, Key: k, Server: "old", Version: v0 + 40, Node: "c", TTL: time.Minute}); !ok {
		t.Fatal("write after retention refused")
	}
}

func TestApplyClear(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyInteger}, Options{})
	for i := range 10 {
		tab.Apply(Change{Op: OpStore, Key: key(t, tab, strconv.Itoa(i)), Server: "s", Version: v0 + uint64(i), Node: "n", TTL: time.Minute})
	}
	if ok, _ := tab.Apply(Change{Op: OpClear, Version: v0 + 4, Node: "n"}); !ok {
		t.Fatal("clear not applied")
	}
	if tab.Len() != 5 || server(tab, "4") != "" || server(tab, "5") != "s" {
		t.Fatalf("clear at v0+4 left %d entries", tab.Len())
	}
	if ok, _ := tab.Apply(Change{Op: OpClear, Version: v0 + 2, Node: "n"}); ok {
		t.Fatal("older clear applied")
	}
	// Writes at or below the watermark are refused forever after.
	if ok, _ := tab.Apply(Change{Op: OpStore, Key: key(t, tab, "1"), Server: "s", Version: v0 + 3, Node: "z", TTL: time.Minute}); ok {
		t.Fatal("write below the watermark applied")
	}
	if v, n := tab.ClearMark(); v != v0+4 || n != "n" {
		t.Fatalf("ClearMark = %d %q", v, n)
	}
	// A local store afterwards is above the watermark.
	if e := mustStore(t, tab, "1", "s"); e.Version <= v0+4 {
		t.Fatal("local write below the watermark")
	}
}

// TestApplyConverges applies the same changes in every order, with
// duplicates, to fresh tables: every table must end in the same state,
// which is the per-key maximum by (version, node).
func TestApplyConverges(t *testing.T) {
	base := func() *Table {
		tab, _ := newTestTable(t, Config{Type: KeyString, Expire: time.Hour}, Options{})
		return tab
	}
	k := func(s string) Key { return key(t, base(), s) }
	changes := []Change{
		{Op: OpStore, Key: k("x"), Server: "s1", Version: v0 + 1, Node: "a", TTL: time.Minute},
		{Op: OpStore, Key: k("x"), Server: "s2", Version: v0 + 2, Node: "a", TTL: time.Minute},
		{Op: OpStore, Key: k("x"), Server: "s3", Version: v0 + 2, Node: "b", TTL: time.Minute}, // tie, b wins
		{Op: OpDelete, Key: k("y"), Version: v0 + 5, Node: "a", TTL: time.Minute},
		{Op: OpStore, Key: k("y"), Server: "s1", Version: v0 + 4, Node: "c", TTL: time.Minute}, // loses to the tombstone
		{Op: OpStore, Key: k("z"), Server: "s1", Version: v0 + 1, Node: "c", TTL: time.Minute},
		{Op: OpRefresh, Key: k("z"), Server: "s1", Version: v0 + 1, Node: "c", TTL: 2 * time.Minute}, // extends
	}
	var want string
	perms := 0
	permute(len(changes), func(order []int) {
		perms++
		tab := base()
		for _, i := range order {
			tab.Apply(changes[i])
		}
		// Idempotent: everything again changes nothing.
		before := dump(tab)
		for _, i := range order {
			if ok, _ := tab.Apply(changes[i]); ok {
				t.Fatalf("re-applying %+v changed the table", changes[i])
			}
		}
		got := dump(tab)
		if got != before {
			t.Fatalf("duplicates changed the state:\n%s\nvs\n%s", before, got)
		}
		if want == "" {
			want = got
			return
		}
		if got != want {
			t.Fatalf("order %v gave\n%s\nwant\n%s", order, got, want)
		}
	})
	tab := base()
	for _, c := range changes {
		tab.Apply(c)
	}
	if server(tab, "x") != "s3" || server(tab, "y") != "" || server(tab, "z") != "s1" || tab.Stats().Tombstones != 1 {
		t.Fatalf("converged to the wrong state:\n%s", dump(tab))
	}
	if e, _ := tab.Get("z"); e.ExpiresAt.Sub(tab.Now()) != 2*time.Minute {
		t.Fatalf("refresh lost: %v", e.ExpiresAt.Sub(tab.Now()))
	}
	if perms != 5040 {
		t.Fatalf("%d permutations", perms)
	}
}

// TestApplyConvergesRandom does the same at a larger scale with random
// orders, including tombstones, Clear watermarks and ties.
func TestApplyConvergesRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var changes []Change
	probe, _ := newTestTable(t, Config{Type: KeyInteger}, Options{})
	for range 400 {
		c := Change{
			Key:     key(t, probe, strconv.Itoa(r.IntN(40))),
			Version: v0 + uint64(r.IntN(50)),
			Node:    string(rune('a' + r.IntN(3))),
			TTL:     time.Minute,
		}
		switch r.IntN(10) {
		case 0, 1:
			c.Op = OpDelete
		case 2:
			c = Change{Op: OpClear, Version: v0 + uint64(r.IntN(20)), Node: "a"}
		default:
			c.Op = OpStore
			c.Server = "s" + strconv.Itoa(r.IntN(4))
		}
		changes = append(changes, c)
	}
	var want string
	for round := range 20 {
		tab := applyShuffled(t, r, changes, round%2 == 1)
		got := dump(tab)
		if round == 0 {
			want = got
		} else if got != want {
			t.Fatalf("round %d diverged:\n%s\nwant\n%s", round, got, want)
		}
	}
}

// applyShuffled applies changes to a fresh table of four shards in a
// random order, with dups also applying a random one again after each.
func applyShuffled(t *testing.T, r *rand.Rand, changes []Change, dups bool) *Table {
	t.Helper()
	tab, _ := newTestTable(t, Config{Type: KeyInteger}, Options{Shards: 4})
	order := r.Perm(len(changes))
	for _, i := range order {
		tab.Apply(changes[i])
		if dups {
			tab.Apply(changes[order[r.IntN(len(order))]])
		}
	}
	return tab
}

func permute(n int, fn func([]int)) {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	var rec func(int)
	rec = func(k int) {
		if k == n {
			fn(p)
			return
		}
		for i := k; i < n; i++ {
			p[k], p[i] = p[i], p[k]
			rec(k + 1)
			p[k], p[i] = p[i], p[k]
		}
	}
	rec(0)
}

func TestApplyFullNoPurge(t *testing.T) {
	tab, _ := newTestTable(t, Config{Type: KeyInteger, Size: 2, NoPurge: true}, Options{})
	mustStore(t, tab, "1", "s")
	mustStore(t, tab, "2", "s")
	c := Change{Op: OpStore, Key: key(t, tab, "3"), Server: "s", Version: v0, Node: "n", TTL: time.Minute}
	if ok, err := tab.Apply(c); ok || err != ErrFull {
		t.Fatalf("apply into full nopurge table: %v %v", ok, err)
	}
	// A tombstone for an unknown key is dropped silently when full.
	c.Op, c.Server = OpDelete, ""
	if ok, err := tab.Apply(c); ok || err != nil {
		t.Fatalf("tombstone into full table: %v %v", ok, err)
	}
}

func TestRangeChangesRoundTrip(t *testing.T) {
	src, clk := newTestTable(t, Config{Type: KeyIPv6}, Options{Node: "src"})
	for i := range 50 {
		mustStore(t, src, fmt.Sprintf("2001:db8::%x", i), "s"+strconv.Itoa(i%3))
		clk.Add(time.Second)
	}
	src.Delete("2001:db8::7")
	src.Clear()
	for i := range 20 {
		mustStore(t, src, fmt.Sprintf("2001:db8::1:%x", i), "s"+strconv.Itoa(i%3))
	}
	src.Delete("2001:db8::1:3")
	dst, _ := newTestTable(t, Config{Type: KeyIPv6}, Options{Node: "dst", Now: clk.Now})
	src.RangeChanges(func(c Change) bool {
		if _, err := dst.Apply(c); err != nil {
			t.Fatal(err)
		}
		return true
	})
	if dump(src) != dump(dst) {
		t.Fatalf("replica differs:\n%s\nvs\n%s", dump(src), dump(dst))
	}
}
