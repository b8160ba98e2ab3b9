package sticktable

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

var snapKeys = map[KeyType]func(i int) string{
	KeyIP:      func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) },
	KeyIPv6:    func(i int) string { return fmt.Sprintf("2001:db8::%x", i) },
	KeyInteger: func(i int) string { return strconv.Itoa(i*7919 - 5000) },
	KeyString:  func(i int) string { return "session-" + strconv.Itoa(i) },
	KeyBinary:  func(i int) string { return fmt.Sprintf("%016x", uint64(i)*2654435761) },
}

// snapshotSource builds a table with entries of several servers and ages,
// a tombstone and a Clear watermark, and returns it with its snapshot.
func snapshotSource(tb testing.TB, typ KeyType, n int) (*Table, *fakeClock, []byte) {
	tb.Helper()
	src, clk := newTestTable(tb, Config{Type: typ, Expire: time.Hour}, Options{Node: "node-a", Shards: 4})
	mustStore(tb, src, snapKeys[typ](n+1), "gone")
	src.Clear()
	for i := range n {
		mustStore(tb, src, snapKeys[typ](i), "10.0.0."+strconv.Itoa(i%5)+":8080")
		if n <= 1000 {
			clk.Add(time.Second)
		}
	}
	if n > 3 {
		src.Delete(snapKeys[typ](3))
		k := key(tb, src, snapKeys[typ](2))
		src.Apply(Change{Op: OpStore, Key: k, Server: "remote", Version: src.eng.lastVersion() + 5, Node: "node-b", TTL: 10 * time.Minute})
	}
	var buf bytes.Buffer
	if err := src.WriteSnapshot(&buf); err != nil {
		tb.Fatal(err)
	}
	return src, clk, buf.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	for typ := KeyString; typ <= KeyBinary; typ++ {
		t.Run(typ.String(), func(t *testing.T) {
			src, clk, snap := snapshotSource(t, typ, 300)
			// Restore ten minutes later: remaining TTLs shrink by that much.
			clk.Add(10 * time.Minute)
			dst, _ := newTestTable(t, Config{Type: typ, Expire: time.Hour}, Options{Node: "node-c", Now: clk.Now, Shards: 2})
			n, err := dst.ReadSnapshot(bytes.NewReader(snap))
			if err != nil {
				t.Fatal(err)
			}
			if n != 299 { // 300 stored, 1 deleted, 1 replicated one expired on the way; + 1 tombstone
				t.Fatalf("restored %d records", n)
			}
			if got, want := dump(dst), dump(src); got != want {
				t.Fatalf("restored state differs:\n%s\nwant\n%s", got, want)
			}
			e, _ := dst.Get(snapKeys[typ](0))
			if want := clk.Now().Add(-10*time.Minute - 300*time.Second + time.Hour); !e.ExpiresAt.Equal(want) {
				t.Fatalf("remaining TTL not kept: %v, want %v", e.ExpiresAt, want)
			}
			if e.Node != "node-a" || e.Version == 0 {
				t.Fatalf("version lost: %+v", e)
			}
			if mv, mn := dst.ClearMark(); mv == 0 || mn != "node-a" {
				t.Fatal("clear watermark lost")
			}
			if dst.Stats().Tombstones != 1 {
				t.Fatal("tombstone lost")
			}
			// Restoring again is a no-op (merge, not append).
			if n, err := dst.ReadSnapshot(bytes.NewReader(snap)); err != nil || n != 0 {
				t.Fatalf("second restore: %d, %v", n, err)
			}
			// Later local writes are versioned above everything restored.
			if e2 := mustStore(t, dst, snapKeys[typ](1), "new"); e2.Version <= src.eng.lastVersion() {
				t.Fatal("restored versions not observed by the clock")
			}
		})
	}
}

func TestSnapshotEmptyAndLarge(t *testing.T) {
	empty, _ := newTestTable(t, Config{Type: KeyIP}, Options{})
	var buf bytes.Buffer
	if err := empty.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if n, err := empty.ReadSnapshot(&buf); n != 0 || err != nil {
		t.Fatalf("empty snapshot: %d %v", n, err)
	}
	// Enough entries to span several frames.
	_, _, snap := snapshotSource(t, KeyString, 20000)
	dst, _ := newTestTable(t, Config{Type: KeyString, Expire: time.Hour}, Options{})
	if n, err := dst.ReadSnapshot(bytes.NewReader(snap)); err != nil || n != 20000 || dst.Len() != 19999 {
		t.Fatalf("large snapshot: %d %v", n, err)
	}
}

func TestSnapshotKeyTypeAndLen(t *testing.T) {
	_, _, snap := snapshotSource(t, KeyIP, 10)
	other, _ := newTestTable(t, Config{Type: KeyIPv6}, Options{})
	if n, err := other.ReadSnapshot(bytes.NewReader(snap)); !errors.Is(err, ErrKeyType) || n != 0 || other.Len() != 0 {
		t.Fatalf("restore into another key type: %d %v", n, err)
	}
	// A shorter string Len truncates restored keys.
	_, _, snap = snapshotSource(t, KeyString, 10)
	short, _ := newTestTable(t, Config{Type: KeyString, Len: 7, Expire: time.Hour}, Options{})
	if _, err := short.ReadSnapshot(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if e, ok := short.Get("session-"); !ok || e.Key.String() != "session" {
		t.Fatalf("truncated restore: %+v", e)
	}
}

// TestSnapshotDamage truncates the snapshot at every length and flips
// bytes throughout: every damaged snapshot must be refused with
// ErrCorrupt, without panicking, leaving a consistent table that holds
// nothing but entries of the original.
func TestSnapshotDamage(t *testing.T) {
	src, clk, snap := snapshotSource(t, KeyString, 40)
	want := map[string]string{}
	src.Range(func(e Entry) bool { want[e.Key.String()] = e.Server; return true })

	try := func(what string, data []byte) {
		t.Helper()
		dst, _ := newTestTable(t, Config{Type: KeyString, Expire: time.Hour}, Options{Now: clk.Now})
		_, err := dst.ReadSnapshot(bytes.NewReader(data))
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: got %v, want ErrCorrupt", what, err)
		}
		mustCheck(t, dst)
		dst.Range(func(e Entry) bool {
			if want[e.Key.String()] != e.Server {
				t.Fatalf("%s: restored an entry that was never there: %+v", what, e)
			}
			return true
		})
	}
	for n := range len(snap) {
		try(fmt.Sprintf("truncated to %d", n), snap[:n])
	}
	for i := range snap {
		bad := bytes.Clone(snap)
		bad[i] ^= 0x20
		try(fmt.Sprintf("byte %d flipped", i), bad)
	}
}

func TestSnapshotReaderError(t *testing.T) {
	_, _, snap := snapshotSource(t, KeyInteger, 10)
	dst, _ := newTestTable(t, Config{Type: KeyInteger}, Options{})
	boom := errors.New("disk on fire")
	_, err := dst.ReadSnapshot(io.MultiReader(bytes.NewReader(snap[:20]), errReader{boom}))
	if !errors.Is(err, boom) {
		t.Fatalf("reader error not passed on: %v", err)
	}
	if err := dst.WriteSnapshot(errWriter{boom}); !errors.Is(err, boom) {
		t.Fatalf("writer error not passed on: %v", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

// TestSnapshotKeepsOrigins: placements and explicit changes survive a
// snapshot as what they were, so a restarted node merges by the same rule.
func TestSnapshotKeepsOrigins(t *testing.T) {
	src, clk := newTestTable(t, Config{Type: KeyString, Expire: time.Hour}, Options{Node: "n"})
	mustStore(t, src, "placed", "s1")
	src.Pin("pinned", "s2")
	mustStore(t, src, "restuck", "s1")
	clk.Add(time.Millisecond)
	mustStore(t, src, "restuck", "s3")
	src.Delete("gone")
	mustStore(t, src, "gone", "s4")
	src.Delete("gone")
	mustStore(t, src, "gone", "s5") // placed after a delete: a placement with a base
	var buf bytes.Buffer
	if err := src.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	dst, _ := newTestTable(t, Config{Type: KeyString, Expire: time.Hour}, Options{})
	if _, err := dst.ReadSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	src.Range(func(e Entry) bool {
		got, ok := dst.Get(e.Key.String())
		if !ok || got.Server != e.Server || got.Version != e.Version || got.Node != e.Node || got.Origin != e.Origin {
			t.Errorf("%v: %+v after the snapshot, was %+v", e.Key, got, e)
		}
		return true
	})
	for key, placement := range map[string]bool{"placed": true, "pinned": false, "restuck": false, "gone": true} {
		if e, _ := dst.Get(key); IsPlacement(e.Origin) != placement {
			t.Errorf("%s: origin %d after the snapshot", key, e.Origin)
		}
	}
}

// TestSnapshotWritesByExpiry: a snapshot lists each shard's entries in
// ascending order of expiry (ties in scan order), which a restore links
// into the LRU list at O(1) each; the table's own order, by hash, is
// random in expiry and made a 1M-entry restore search the list for every
// record (4.3 s instead of 0.2 s).
func TestSnapshotWritesByExpiry(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	at := func(ms ...int64) []Entry {
		var es []Entry
		for _, m := range ms {
			es = append(es, Entry{ExpiresAt: base.Add(time.Duration(m) * time.Millisecond)})
		}
		return es
	}
	got := byExpiry(nil, at(30, 10, 20, 10, 0))
	var idx []uint64
	for _, o := range got {
		idx = append(idx, o)
	}
	if want := []uint64{4, 1, 3, 2, 0}; !slices.Equal(idx, want) {
		t.Fatalf("order %v, want %v", idx, want)
	}
	// expiries too far apart to pack: the given order, still complete
	far := at(5, 0)
	far[1].ExpiresAt = base.AddDate(-600, 0, 0)
	if got := byExpiry(got, far); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("fallback order %v", got)
	}

	tab, clk := newTestTable(t, Config{Type: KeyString, Expire: time.Hour}, Options{Shards: 4})
	r := rand.New(rand.NewPCG(5, 6))
	const n = 3 * restoreBatch // a restore applies restoreBatch records at a time, sorted; the order across batches is the writer's
	for _, i := range r.Perm(n) {
		clk.Add(time.Duration(1+r.IntN(3)) * time.Millisecond)
		mustStore(t, tab, "k"+strconv.Itoa(i), "a")
	}
	var snap bytes.Buffer
	if err := tab.WriteSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	// Restored into a table of the same shape, each shard's records
	// arrive newest last, and each is linked at the front of its list.
	// Restored into a table of one shard, the four shards' runs merge:
	// the first record of each later run is searched for from the ends of
	// the list, every other one linked next to the one before it.
	raw := snap.Bytes()
	for _, shards := range []int{4, 1} {
		dst, _ := newTestTable(t, Config{Type: KeyString, Expire: time.Hour}, Options{Shards: shards, Now: clk.Now})
		if got, err := dst.ReadSnapshot(bytes.NewReader(raw)); err != nil || got != n {
			t.Fatalf("restored %d: %v", got, err)
		}
		mustCheck(t, dst)
		for i := range dst.strEng.shards {
			s := &dst.strEng.shards[i]
			s.mu.Lock()
			searches, sorted := s.searches, true
			for p := s.at(lruHead).next; p != lruHead && s.at(p).next != lruHead; p = s.at(p).next {
				sorted = sorted && s.at(p).expires >= s.at(s.at(p).next).expires
			}
			s.mu.Unlock()
			if searches > uint64(3*(4/shards-1)) || !sorted {
				t.Fatalf("%d shards: shard %d searched its list %d times, LRU list by expiry %v", shards, i, searches, sorted)
			}
		}
	}
}

// clockReader advances the table's clock once the reader has handed out
// more than at bytes: a slow stream (a peer's snapshot over the network).
type clockReader struct {
	r    io.Reader
	n    int
	at   int
	clk  *fakeClock
	by   time.Duration
	done bool
}

func (c *clockReader) Read(p []byte) (int, error) {
	if len(p) > 512 {
		p = p[:512]
	}
	n, err := c.r.Read(p)
	c.n += n
	if !c.done && c.n > c.at {
		c.done = true
		c.clk.Add(c.by)
	}
	return n, err
}

// TestRestoreKeepsRemainingLife: records wait to be applied (up to 32768,
// across many frame reads); their remaining life must be taken when they
// are applied, not when their frame was decoded, or time spent reading
// later frames would extend it. An entry with 1h left, installed after
// the stream took 2h, must already be expired.
func TestRestoreKeepsRemainingLife(t *testing.T) {
	cfg := Config{Type: KeyInteger, Size: 40000, Expire: time.Hour, Retention: time.Minute}
	src, _ := newTestTable(t, cfg, Options{Shards: 4})
	for i := range 20000 {
		mustStore(t, src, strconv.Itoa(i), "s1")
	}
	var buf bytes.Buffer
	if err := src.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	dst, clk := newTestTable(t, cfg, Options{Shards: 4})
	data := buf.Bytes()
	cr := &clockReader{r: bytes.NewReader(data), at: len(data) / 2, clk: clk, by: 2 * time.Hour}
	if _, err := dst.ReadSnapshot(cr); err != nil {
		t.Fatal(err)
	}
	alive := 0
	for i := range 20000 {
		if _, ok := dst.Get(strconv.Itoa(i)); ok {
			alive++
		}
	}
	if alive != 0 {
		t.Fatalf("%d entries alive although their 1h of remaining life ended while the stream was read (2h)", alive)
	}
}
