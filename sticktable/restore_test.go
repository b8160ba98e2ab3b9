package sticktable

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

// lruOrder lists a one-shard table's keys, most recently used first, then
// its tombstones, newest first.
func lruOrder(t *Table) string {
	g := t.strEng
	s := &g.shards[0]
	s.mu.Lock()
	defer s.mu.Unlock()
	var b bytes.Buffer
	for _, head := range [...]uint32{lruHead, tombHead} {
		for i := s.at(head).next; i != head; i = s.at(i).next {
			fmt.Fprintf(&b, "%s@%d ", s.at(i).key, s.at(i).expires)
		}
		b.WriteString("| ")
	}
	return b.String()
}

// TestReadSnapshotMatchesApply checks that the bulk restore path gives
// exactly the table that applying the snapshot's records one by one
// through Apply gives: entries, versions, origins, tombstones, TTLs, LRU
// order by remaining life, per-server counts and the size cap (evicting
// and, with NoPurge, refusing), into a table that already holds some of
// the keys with older and newer writes. Into a table with room, Apply's
// order does not matter; into a full one it does (a newcomer evicts only
// entries that expire before it), and the bulk path applies in ascending
// order of deadline, which keeps the longest-lived entries: there the
// reference applies in that order too.
func TestReadSnapshotMatchesApply(t *testing.T) {
	type tcase struct {
		size    int
		nopurge bool
	}
	for _, tc := range []tcase{{4000, false}, {200, false}, {200, true}} {
		nopurge := tc.nopurge
		t.Run(fmt.Sprintf("size=%d/nopurge=%v", tc.size, nopurge), func(t *testing.T) {
			src, clk := newTestTable(t, Config{Type: KeyString, Expire: time.Hour}, Options{Node: "node-a", Shards: 4})
			mustStore(t, src, "cleared", "gone")
			src.Clear()
			r := rand.New(rand.NewPCG(1, 2))
			const n = 400
			for _, i := range r.Perm(n) {
				// Stores at shuffled times: the snapshot's order is not
				// the order of remaining life.
				clk.Add(time.Duration(1+r.IntN(5)) * time.Second)
				mustStore(t, src, "k"+strconv.Itoa(i), "10.0.0."+strconv.Itoa(i%5)+":8080")
			}
			for i := 0; i < n; i += 7 {
				mustStore(t, src, "k"+strconv.Itoa(i), "10.0.0.9:8080") // a re-stick: explicit
			}
			for i := 3; i < n; i += 11 {
				src.Delete("k" + strconv.Itoa(i))
			}
			for i := 5; i < n; i += 13 {
				src.Apply(Change{Op: OpStore, Key: key(t, src, "k"+strconv.Itoa(i)), Server: "remote",
					Version: src.eng.lastVersion() + 5, Node: "node-b", Origin: OriginFirst, TTL: time.Duration(1+i%40) * time.Minute})
			}
			var snap bytes.Buffer
			if err := src.WriteSnapshot(&snap); err != nil {
				t.Fatal(err)
			}
			var changes []Change
			src.RangeChanges(func(c Change) bool { changes = append(changes, c); return true })

			mk := func() *Table {
				dst, _ := newTestTable(t, Config{Type: KeyString, Expire: time.Hour, Size: tc.size, NoPurge: nopurge},
					Options{Node: "node-c", Now: clk.Now})
				// Some keys already here: older local placements (which
				// the snapshot's earlier placements beat only when
				// earlier) and newer explicit changes (which win).
				for i := 0; i < n; i += 9 {
					mustStore(t, dst, "k"+strconv.Itoa(i), "local")
				}
				for i := 0; i < n; i += 27 {
					mustStore(t, dst, "k"+strconv.Itoa(i), "local-2")
				}
				return dst
			}
			bulk, each := mk(), mk()
			got, err := bulk.ReadSnapshot(bytes.NewReader(snap.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			if tc.size < n {
				// Stable, like the bulk path; the Clear mark (TTL 0)
				// stays first.
				now := clk.Now().UnixNano()
				deadline := func(c Change) int64 {
					if c.Op == OpClear {
						return 0
					}
					life, _, _ := bulk.remoteWrite(&c)
					return now + life
				}
				slices.SortStableFunc(changes, func(a, b Change) int { return cmp.Compare(deadline(a), deadline(b)) })
			}
			want := 0
			for _, c := range changes {
				if ok, _ := each.Apply(c); ok && c.Op != OpClear {
					want++
				}
			}
			mustCheck(t, bulk)
			if got != want {
				t.Errorf("ReadSnapshot installed %d, Apply one by one %d", got, want)
			}
			if d1, d2 := dump(bulk), dump(each); d1 != d2 {
				t.Errorf("tables differ:\nbulk:\n%s\napply:\n%s", d1, d2)
			}
			if o1, o2 := lruOrder(bulk), lruOrder(each); o1 != o2 {
				t.Errorf("LRU orders differ:\nbulk:  %s\napply: %s", o1, o2)
			}
			if c1, c2 := fmt.Sprint(bulk.ServerCounts()), fmt.Sprint(each.ServerCounts()); c1 != c2 {
				t.Errorf("server counts differ:\nbulk:  %s\napply: %s", c1, c2)
			}
			s1, s2 := bulk.Stats(), each.Stats()
			if s1.Entries != s2.Entries || s1.Tombstones != s2.Tombstones || s1.Applied != s2.Applied ||
				s1.Stale != s2.Stale || s1.Refused != s2.Refused || s1.Evictions != s2.Evictions {
				t.Errorf("stats differ:\nbulk:  %+v\napply: %+v", s1, s2)
			}
			if full := s1.Entries+s1.Tombstones == tc.size; full != (tc.size < n) {
				t.Errorf("table full: %v, want %v: %+v", full, tc.size < n, s1)
			}
		})
	}
}
