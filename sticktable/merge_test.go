package sticktable

import (
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// randomWrite draws writes that collide often: few versions, nodes,
// servers and origins, so ties and every branch of CompareWrites occur.
func randomWrite(r *rand.Rand) Write {
	w := Write{
		Version: v0 + uint64(r.IntN(4))<<LogicalBits + uint64(r.IntN(3)),
		Node:    string(rune('a' + r.IntN(3))),
	}
	switch r.IntN(4) {
	case 0:
		w.Origin = OriginExplicit
	case 1:
		w.Origin = OriginFirst
	default:
		w.Origin = 1 + uint32(r.IntN(3))
	}
	if r.IntN(5) == 0 {
		w.Deleted, w.Origin = true, OriginExplicit
	} else {
		w.Server = "s" + strconv.Itoa(r.IntN(3))
	}
	return w
}

func maxWrite(a, b Write) Write {
	if CompareWrites(a, b) >= 0 {
		return a
	}
	return b
}

// TestMergeIsASemilattice: CompareWrites is a total order (antisymmetric,
// transitive, 0 only for identical writes), so merging by maximum is
// commutative, associative and idempotent.
func TestMergeIsASemilattice(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 9))
	for range 20000 {
		a, b, c := randomWrite(r), randomWrite(r), randomWrite(r)
		ab, ba := CompareWrites(a, b), CompareWrites(b, a)
		if ab != -ba {
			t.Fatalf("not antisymmetric: %+v %+v: %d %d", a, b, ab, ba)
		}
		if (ab == 0) != (a == b) {
			t.Fatalf("distinct writes compare equal (or equal ones not): %+v %+v", a, b)
		}
		if ab >= 0 && CompareWrites(b, c) >= 0 && CompareWrites(a, c) < 0 {
			t.Fatalf("not transitive: %+v >= %+v >= %+v but a < c", a, b, c)
		}
		if maxWrite(a, b) != maxWrite(b, a) {
			t.Fatalf("merge not commutative: %+v %+v", a, b)
		}
		if maxWrite(maxWrite(a, b), c) != maxWrite(a, maxWrite(b, c)) {
			t.Fatalf("merge not associative: %+v %+v %+v", a, b, c)
		}
		if maxWrite(a, a) != a {
			t.Fatalf("merge not idempotent: %+v", a)
		}
	}
}

// TestPlacementRule checks the rule's four statements on tables.
func TestPlacementRule(t *testing.T) {
	var cur *testing.T // the running subtest
	mk := func(node string) (*Table, *fakeClock) {
		return newTestTable(cur, Config{Type: KeyString, Expire: time.Hour}, Options{Node: node})
	}
	sync := func(dst, src *Table) {
		src.RangeChanges(func(c Change) bool {
			if _, err := dst.Apply(c); err != nil {
				cur.Fatal(err)
			}
			return true
		})
	}
	both := func(a, b *Table, want string) {
		cur.Helper()
		sync(a, b)
		sync(b, a)
		if sa, sb := server(a, "u"), server(b, "u"); sa != want || sb != want {
			cur.Fatalf("a has %q, b has %q, want %q on both", sa, sb, want)
		}
	}
	run := func(name string, fn func(t *testing.T)) {
		t.Run(name, func(t *testing.T) { cur = t; fn(t) })
	}

	run("independent placements: the earlier wins", func(t *testing.T) {
		a, ca := mk("a")
		b, cb := mk("b")
		cb.Add(time.Second) // b's placement is later (b lagged, or its request came later)
		ca.Add(time.Second)
		mustStore(t, a, "u", "early")
		cb.Add(time.Second)
		mustStore(t, b, "u", "late")
		both(a, b, "early")
	})
	run("a placement by a node with the newer clock still loses", func(t *testing.T) {
		a, ca := mk("z") // a greater node name must not matter either
		b, _ := mk("b")
		mustStore(t, b, "u", "early")
		ca.Add(time.Millisecond)
		mustStore(t, a, "u", "late") // a's clock reads 1 ms later than b's
		both(a, b, "early")
	})
	run("a re-stick wins over the placement it replaced and over independent ones", func(t *testing.T) {
		a, ca := mk("a")
		b, cb := mk("b")
		c, _ := mk("c")
		mustStore(t, c, "u", "first") // the earliest placement of all
		ca.Add(time.Second)
		cb.Add(time.Second)
		mustStore(t, a, "u", "s1")
		sync(b, a)
		cb.Add(time.Second)
		mustStore(t, b, "u", "s2") // s1 failed: b re-sticks u
		both(a, b, "s2")
		both(a, c, "s2")
		both(b, c, "s2")
	})
	run("explicit changes within the millisecond of what they replace still win", func(t *testing.T) {
		a, _ := mk("a") // the fake clock stands still: every write shares one millisecond
		b, _ := mk("b")
		mustStore(t, a, "u", "s1")
		sync(b, a)
		mustStore(t, a, "u", "s2") // a re-stick
		both(a, b, "s2")
		a.Delete("u")
		mustStore(t, a, "u", "s3") // placed again after the delete
		both(a, b, "s3")
		mustStore(t, a, "u", "s4") // re-stuck: the placement it replaces has a base in this millisecond
		both(a, b, "s4")
		if n := a.ClearServer("s4"); n != 1 {
			t.Fatalf("ClearServer removed %d", n)
		}
		both(a, b, "")
	})
	run("a placement after a delete wins over the delete", func(t *testing.T) {
		a, ca := mk("a")
		b, _ := mk("b")
		mustStore(t, a, "u", "s1")
		sync(b, a)
		if ok, _ := b.Delete("u"); !ok {
			t.Fatal("delete")
		}
		sync(a, b)
		ca.Add(time.Second)
		mustStore(t, a, "u", "s3")
		both(a, b, "s3")
	})
	run("concurrent explicit changes: the higher version wins", func(t *testing.T) {
		a, ca := mk("a")
		b, cb := mk("b")
		mustStore(t, a, "u", "s0")
		sync(b, a)
		ca.Add(time.Second)
		cb.Add(2 * time.Second)
		a.Pin("u", "pin-a")
		b.Pin("u", "pin-b")
		both(a, b, "pin-b")
	})
	run("a pin wins over a placement its node had not seen", func(t *testing.T) {
		a, ca := mk("a")
		b, _ := mk("b")
		a.Pin("u", "pinned")
		ca.Add(-time.Hour) // whatever the clocks say
		mustStore(t, b, "u", "placed")
		both(a, b, "pinned")
	})
	run("Place keeps a live entry; a redispatch store overwrites", func(t *testing.T) {
		a, _ := mk("a")
		if _, placed, _ := a.Place("u", "s1"); !placed {
			t.Fatal("first Place did not place")
		}
		e, placed, _ := a.Place("u", "s2")
		if placed || e.Server != "s1" || server(a, "u") != "s1" {
			t.Fatalf("second Place: %v %+v", placed, e)
		}
		mustStore(t, a, "u", "s2")
		if e, _ := a.Get("u"); e.Server != "s2" || IsPlacement(e.Origin) {
			t.Fatalf("redispatch store: %+v", e)
		}
	})
}

// TestApplyConvergesWithOrigins applies random writes of the placement
// rule's every kind in random orders, with duplicates, to fresh tables:
// every table ends in the same state, each key holding the greatest write.
func TestApplyConvergesWithOrigins(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	probe, _ := newTestTable(t, Config{Type: KeyInteger}, Options{})
	var changes []Change
	for range 600 {
		w := randomWrite(r)
		c := Change{Op: OpStore, Key: key(t, probe, strconv.Itoa(r.IntN(40))), Server: w.Server,
			Version: w.Version, Node: w.Node, Origin: w.Origin, TTL: time.Minute}
		if w.Deleted {
			c.Op = OpDelete
		}
		changes = append(changes, c)
	}
	want := map[Key]Write{}
	for _, c := range changes {
		w := Write{Version: c.Version, Node: c.Node, Origin: c.Origin, Deleted: c.Op == OpDelete, Server: c.Server}
		if old, ok := want[c.Key]; !ok || CompareWrites(w, old) > 0 {
			want[c.Key] = w
		}
	}
	var first string
	for round := range 20 {
		tab := applyShuffled(t, r, changes, round%2 == 1)
		got := dump(tab)
		if round == 0 {
			first = got
		} else if got != first {
			t.Fatalf("round %d diverged", round)
		}
		tab.RangeChanges(func(c Change) bool {
			w := want[c.Key]
			if c.Version != w.Version || c.Node != w.Node || c.Origin != w.Origin || (c.Op == OpDelete) != w.Deleted || c.Server != w.Server {
				t.Fatalf("key %v holds %+v, want the greatest write %+v", c.Key, c, w)
			}
			return true
		})
	}
}

// FuzzMerge applies fuzzer-chosen writes to two tables in opposite orders,
// the second with every write twice: both must end equal, consistent, and
// holding per key the greatest write (never a value nobody wrote).
func FuzzMerge(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17})
	f.Add([]byte("\x01\x00\x00\x00\x00\x00\xff\x02\x01\x00\x00\x00\x00\x00\x01\x03"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const rec = 8
		if len(data) > 64*rec {
			data = data[:64*rec]
		}
		probe, _ := newTestTable(t, Config{Type: KeyInteger}, Options{})
		var changes []Change
		want := map[Key]Write{}
		for ; len(data) >= rec; data = data[rec:] {
			b := data[:rec]
			c := Change{
				Op:      OpStore,
				Key:     key(t, probe, strconv.Itoa(int(b[0]%8))),
				Version: v0 + uint64(binary.LittleEndian.Uint16(b[1:3]))<<8,
				Node:    string(rune('a' + b[3]%4)),
				Server:  "s" + strconv.Itoa(int(b[4]%4)),
				TTL:     (time.Duration(b[5]) + 1) * time.Second,
			}
			switch o := b[6]; {
			case o < 64:
				c.Origin = OriginExplicit
			case o < 128:
				c.Origin = OriginFirst
			default:
				c.Origin = uint32(binary.LittleEndian.Uint16(b[6:8]))
			}
			if b[7]%7 == 0 {
				c.Op, c.Server, c.Origin = OpDelete, "", OriginExplicit
			}
			changes = append(changes, c)
			w := Write{Version: c.Version, Node: c.Node, Origin: c.Origin, Deleted: c.Op == OpDelete, Server: c.Server}
			if old, ok := want[c.Key]; !ok || CompareWrites(w, old) > 0 {
				want[c.Key] = w
			}
		}
		x, _ := newTestTable(t, Config{Type: KeyInteger, Expire: time.Hour}, Options{})
		y, _ := newTestTable(t, Config{Type: KeyInteger, Expire: time.Hour}, Options{Shards: 2})
		for _, c := range changes {
			if _, err := x.Apply(c); err != nil {
				t.Fatal(err)
			}
		}
		for i := len(changes) - 1; i >= 0; i-- {
			y.Apply(changes[i])
			y.Apply(changes[i])
		}
		mustCheck(t, x)
		mustCheck(t, y)
		for _, tab := range []*Table{x, y} {
			n := 0
			tab.RangeChanges(func(c Change) bool {
				n++
				w := want[c.Key]
				if c.Version != w.Version || c.Node != w.Node || c.Origin != w.Origin || (c.Op == OpDelete) != w.Deleted || c.Server != w.Server {
					t.Fatalf("key %v holds %+v, want %+v", c.Key, c, w)
				}
				return true
			})
			if n != len(want) {
				t.Fatalf("%d keys, want %d", n, len(want))
			}
		}
	})
}

// TestFullTablesConverge: two full tables that learned different keys
// exchange their whole state until nothing changes. Each must end with the
// same keys (the most recently used of the union, shard by shard) and a
// further exchange must apply nothing: an applied entry keeps the recency
// its sender gave it, and one older than all a full table holds is not
// installed, so no exchange evicts what the next one sends back.
func TestFullTablesConverge(t *testing.T) {
	const size = 4096 // two shards
	a, ca := newTestTable(t, Config{Type: KeyInteger, Size: size, Expire: time.Hour}, Options{Node: "a", Shards: -1})
	b, cb := newTestTable(t, Config{Type: KeyInteger, Size: size, Expire: time.Hour}, Options{Node: "b", Shards: -1})
	if a.eng.shardCount() < 2 {
		t.Fatalf("want a sharded table, got %d shard", a.eng.shardCount())
	}
	cb.Add(time.Millisecond / 2) // no two writes expire at the same instant
	for i := range 6000 {
		ca.Add(time.Millisecond)
		cb.Add(time.Millisecond)
		mustStore(t, a, strconv.Itoa(i), "sa")
		mustStore(t, b, strconv.Itoa(i+3000), "sb")
	}
	// One anti-entropy step: src sends what dst lacks or holds otherwise
	// (as digests find it), and reports how many entries it sent.
	exchange := func(dst, src *Table) int {
		n := 0
		src.RangeChanges(func(c Change) bool {
			if e, ok := dst.GetKey(c.Key); ok && e.Version == c.Version && e.Node == c.Node && e.Origin == c.Origin {
				return true
			}
			n++
			dst.Apply(c)
			return true
		})
		return n
	}
	rounds := 0
	for ; rounds < 10; rounds++ {
		if exchange(a, b)+exchange(b, a) == 0 {
			break
		}
	}
	if rounds == 10 {
		t.Fatal("full tables never stopped exchanging entries")
	}
	keys := func(tab *Table) map[Key]string {
		m := map[Key]string{}
		tab.Range(func(e Entry) bool { m[e.Key] = e.Server; return true })
		return m
	}
	ka, kb := keys(a), keys(b)
	if len(ka) != len(kb) || len(ka) < size*9/10 {
		t.Fatalf("a holds %d keys, b %d (size %d)", len(ka), len(kb), size)
	}
	for k, s := range ka {
		if kb[k] != s {
			t.Fatalf("key %v: a has %q, b %q", k, s, kb[k])
		}
	}
	t.Logf("converged after %d exchange rounds on %d keys", rounds, len(ka))
}

// TestApplyKeepsSenderRecency: a replicated entry takes the place its
// remaining life gives it in the LRU order, and a full table does not
// install one it would evict before everything it holds.
func TestApplyKeepsSenderRecency(t *testing.T) {
	tab, clk := newTestTable(t, Config{Type: KeyString, Size: 2, Expire: time.Hour}, Options{})
	mustStore(t, tab, "old", "s")
	clk.Add(10 * time.Minute)
	mustStore(t, tab, "recent", "s")
	remote := func(key string, ttl time.Duration) Change {
		return Change{Op: OpStore, Key: mustKey(t, tab, key), Server: "r", Version: v0, Node: "peer", Origin: OriginFirst, TTL: ttl}
	}
	// used 55 minutes ago on the sender: older than both, not installed
	if ok, err := tab.Apply(remote("stale", 5*time.Minute)); ok || err != nil {
		t.Fatalf("a full table installed an entry older than all it holds: %v %v", ok, err)
	}
	if server(tab, "old") != "s" || server(tab, "recent") != "s" {
		t.Fatal("an entry was evicted for an older one")
	}
	// used 5 minutes ago: evicts "old" (50 minutes left), sits behind "recent"
	if ok, _ := tab.Apply(remote("mid", 55*time.Minute)); !ok || server(tab, "old") != "" {
		t.Fatal("a more recent remote entry did not replace the least recent")
	}
	mustStore(t, tab, "new", "s") // evicts the least recently used: mid, not recent
	if server(tab, "recent") != "s" || server(tab, "mid") != "" {
		t.Fatalf("eviction order ignored the sender's recency: recent=%q mid=%q", server(tab, "recent"), server(tab, "mid"))
	}
}

func mustKey(tb testing.TB, t *Table, text string) Key { return key(tb, t, text) }
