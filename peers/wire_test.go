package peers

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/sticktable"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func mustTable(tb testing.TB, cfg sticktable.Config) *sticktable.Table {
	tb.Helper()
	t, err := sticktable.NewWithOptions(cfg, sticktable.Options{ReapInterval: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(t.Close)
	return t
}

// shapeFor is the shape of a table with fixed-size keys of that size (0:
// the default string table).
func shapeFor(fixed int) tableShape {
	switch fixed {
	case 4:
		return tableShape{typ: sticktable.KeyIP}
	case 8:
		return tableShape{typ: sticktable.KeyInteger}
	case 16:
		return tableShape{typ: sticktable.KeyIPv6}
	}
	return tableShape{typ: sticktable.KeyString, keyLen: sticktable.DefaultLen}
}

// memberGroup is a Group without memberlist that takes names as current
// members, for exercising the receive path.
func memberGroup(name string, members ...string) *Group {
	g := &Group{cfg: Config{Name: name, MaxClockOffset: caddyDuration(DefaultMaxClockOffset)}, log: zap.NewNop(),
		tables: map[string]*attachment{}, peers: map[string]*peerState{}}
	for _, m := range members {
		g.peers[m] = &peerState{name: m, state: "alive"}
	}
	return g
}

func sampleChanges(tb testing.TB, tbl *sticktable.Table, keys []string) []sticktable.Change {
	var out []sticktable.Change
	ops := []sticktable.Op{sticktable.OpStore, sticktable.OpRefresh, sticktable.OpPin, sticktable.OpDelete}
	base := uint64(time.Now().UnixMilli()) << sticktable.LogicalBits
	for i, k := range keys {
		key, err := tbl.ParseKey(k)
		if err != nil {
			tb.Fatal(err)
		}
		c := sticktable.Change{Op: ops[i%len(ops)], Key: key, Version: base + uint64(i*7919) - 5000,
			Node: fmt.Sprintf("node-%d", i%3), TTL: time.Duration(i) * time.Second}
		if c.Op != sticktable.OpDelete {
			c.Server = fmt.Sprintf("10.0.0.%d:8080", i%5)
			c.Origin = []uint32{sticktable.OriginExplicit, sticktable.OriginFirst, uint32(i)}[i%3]
		}
		out = append(out, c)
	}
	out = append(out, sticktable.Change{Op: sticktable.OpClear, Version: base + 1, Node: "node-9"})
	return out
}

// roundTrip encodes changes into as many batches as the limit needs,
// decodes them back and checks every field survived.
func roundTrip(t *testing.T, tbl *sticktable.Table, fixed int, limit int, in []sticktable.Change) int {
	enc := newBatchEncoder("sessions", "me", shapeFor(fixed), flagSync, limit)
	var msgs [][]byte
	for i := range in {
		if !enc.add(&in[i]) {
			msgs = append(msgs, enc.finish(nil))
			if !enc.add(&in[i]) {
				t.Fatal("change does not fit an empty batch")
			}
		}
	}
	msgs = append(msgs, enc.finish(nil))
	var out []sticktable.Change
	for _, m := range msgs {
		if len(m) > limit && limit >= packetLimit {
			t.Fatalf("message of %d bytes over limit %d", len(m), limit)
		}
		b, err := decodeBatch(m)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if b.table != "sessions" || b.sender() != "me" || b.flags != flagSync || b.fixed != fixed {
			t.Fatalf("header: %+v", b)
		}
		for _, r := range b.changes {
			c := sticktable.Change{Op: r.op, Version: r.version, Node: b.names[r.node], TTL: r.ttl, Origin: r.origin}
			if r.server >= 0 {
				c.Server = b.names[r.server]
			}
			if r.op != sticktable.OpClear {
				if c.Key, err = tbl.KeyFromBytes(r.key); err != nil {
					t.Fatal(err)
				}
			}
			out = append(out, c)
		}
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip differs:\n in %+v\nout %+v", in[:3], out[:min(3, len(out))])
	}
	return len(msgs)
}

func TestBatchRoundTrip(t *testing.T) {
	var ips, ints, strs []string
	for i := range 500 {
		ips = append(ips, fmt.Sprintf("192.168.%d.%d", i/256, i%256))
		ints = append(ints, fmt.Sprint(i*1000003-250000))
		strs = append(strs, fmt.Sprintf("session-%x", i*7777))
	}
	cases := []struct {
		name  string
		cfg   sticktable.Config
		fixed int
		keys  []string
	}{
		{"ip", sticktable.Config{Type: sticktable.KeyIP}, 4, ips},
		{"integer", sticktable.Config{Type: sticktable.KeyInteger}, 8, ints},
		{"string", sticktable.Config{Type: sticktable.KeyString}, 0, strs},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tbl := mustTable(t, tc.cfg)
			in := sampleChanges(t, tbl, tc.keys)
			if n := roundTrip(t, tbl, tc.fixed, packetLimit, in); n < 2 {
				t.Fatalf("%d changes fit one packet?", len(in))
			}
			roundTrip(t, tbl, tc.fixed, syncLimit, in)
			roundTrip(t, tbl, tc.fixed, 1, in) // one change per message
		})
	}
}

// TestBatchSize checks the per-update cost the design aims at.
func TestBatchSize(t *testing.T) {
	tbl := mustTable(t, sticktable.Config{Type: sticktable.KeyIP})
	enc := newBatchEncoder("sessions", "node1", shapeFor(4), 0, packetLimit)
	v := uint64(time.Now().UnixMilli()) << sticktable.LogicalBits
	n := 0
	for i := 0; ; i++ {
		k, _ := tbl.ParseKey(fmt.Sprintf("10.1.%d.%d", i/256, i%256))
		c := sticktable.Change{Op: sticktable.OpStore, Key: k, Server: fmt.Sprintf("10.0.0.%d:8080", i%3),
			Node: "node1", Version: v + uint64(i)<<10, TTL: 30 * time.Minute}
		if !enc.add(&c) {
			break
		}
		n++
	}
	msg := enc.finish(nil)
	per := float64(len(msg)) / float64(n)
	t.Logf("%d ip updates in %d bytes: %.1f bytes/update", n, len(msg), per)
	if per > 20 {
		t.Fatalf("%.1f bytes per update", per)
	}
}

func TestDigestRoundTrip(t *testing.T) {
	d := digest{flags: flagReply, sender: "node1", addr: "127.0.0.1:7946"}
	for i := range 3 {
		bits := uint8(MinBucketBits + 2*i)
		td := tableDigest{name: fmt.Sprint("t", i), shape: shapeFor(4 * i), markVersion: uint64(i) << 20, markNode: "n", bits: bits, buckets: make([]uint64, 1<<bits)}
		for j := range td.buckets {
			td.buckets[j] = uint64(i*1000 + j)
		}
		d.tables = append(d.tables, td)
	}
	msg := d.encode(nil)
	got, err := decodeDigest(msg)
	if err != nil {
		t.Fatal(err)
	}
	// Buckets travel folded with the digest's salt: the receiver finds
	// every bucket equal to its own (the same sums) and none differing.
	if len(got.tables) != len(d.tables) || got.sender != d.sender || got.addr != d.addr || got.flags != d.flags {
		t.Fatalf("digest header differs: %+v", got)
	}
	for i := range d.tables {
		ours, theirs := &d.tables[i], &got.tables[i]
		if theirs.name != ours.name || theirs.shape != ours.shape || theirs.markVersion != ours.markVersion ||
			theirs.markNode != ours.markNode || theirs.bits != ours.bits || !theirs.folded {
			t.Fatalf("table %d differs: %+v", i, theirs)
		}
		for j := range ours.buckets {
			if ours.bucketDiffers(j, theirs) {
				t.Fatalf("table %d bucket %d differs after the round trip", i, j)
			}
		}
		ours.buckets[3]++
		if !ours.bucketDiffers(3, theirs) {
			t.Fatal("a changed bucket compares equal")
		}
	}
	if again, err := decodeDigest(got.encode(nil)); err != nil || !reflect.DeepEqual(got, again) {
		t.Fatalf("re-encoding a received digest: %v", err)
	}
	for i := range len(msg) {
		if _, err := decodeDigest(msg[:i]); err == nil {
			t.Fatalf("truncated digest (%d of %d bytes) accepted", i, len(msg))
		}
	}
}

func TestDecodeRefusesTruncated(t *testing.T) {
	tbl := mustTable(t, sticktable.Config{Type: sticktable.KeyString})
	in := sampleChanges(t, tbl, []string{"a", "bb", "ccc", "dddd", "eeeee"})
	enc := newBatchEncoder("sessions", "me", shapeFor(0), 0, syncLimit)
	for i := range in {
		enc.add(&in[i])
	}
	msg := enc.finish(nil)
	for i := range len(msg) {
		if _, err := decodeBatch(msg[:i]); err == nil {
			t.Fatalf("truncated batch (%d of %d bytes) accepted", i, len(msg))
		}
	}
	if _, err := decodeBatch(append(msg, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

func seedBatches(f *testing.F) {
	for _, typ := range []sticktable.KeyType{sticktable.KeyString, sticktable.KeyIP} {
		tbl := mustTable(f, sticktable.Config{Type: typ})
		keys := []string{"a", "b", "c"}
		fixed := 0
		if typ == sticktable.KeyIP {
			keys, fixed = []string{"1.2.3.4", "5.6.7.8", "9.9.9.9"}, 4
		}
		in := sampleChanges(f, tbl, keys)
		enc := newBatchEncoder("sessions", "me", shapeFor(fixed), 0, syncLimit)
		for i := range in {
			enc.add(&in[i])
		}
		f.Add(enc.finish(nil))
	}
	f.Add([]byte{msgBatch, 0, 1, 's', 1, 0, 1, 0, 1, 1})
	f.Add([]byte{msgBatch, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
}

func FuzzDecodeBatch(f *testing.F) {
	seedBatches(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		b, err := decodeBatch(msg)
		if err != nil {
			return
		}
		if len(b.names) == 0 || len(b.changes) == 0 || len(b.changes) > len(msg) {
			t.Fatalf("accepted bad batch: %d names, %d changes", len(b.names), len(b.changes))
		}
		for _, c := range b.changes {
			if c.node < 0 || c.node >= len(b.names) || c.server >= len(b.names) || c.version == 0 {
				t.Fatalf("bad change accepted: %+v", c)
			}
			if c.op != sticktable.OpClear && (len(c.key) == 0 || (b.fixed != 0 && len(c.key) != b.fixed)) {
				t.Fatalf("bad key accepted: %+v", c)
			}
		}
	})
}

func FuzzDecodeDigest(f *testing.F) {
	d := digest{flags: flagReply, sender: "a", addr: "127.0.0.1:1", tables: []tableDigest{{name: "t", shape: shapeFor(0), markVersion: 9, markNode: "b", bits: MinBucketBits, buckets: make([]uint64, 1<<MinBucketBits)}}}
	f.Add(d.encode(nil))
	f.Add([]byte{msgDigest, 0, 1, 'a', 0, 0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, msg []byte) {
		d, err := decodeDigest(msg)
		if err != nil {
			return
		}
		again, err := decodeDigest(d.encode(nil))
		if err != nil || !reflect.DeepEqual(d, again) {
			t.Fatalf("re-encoding an accepted digest: %v", err)
		}
	})
}

// FuzzHandleBatch feeds arbitrary bytes through the receive path, table
// Apply included, for every key type.
func FuzzHandleBatch(f *testing.F) {
	seedBatches(f)
	f.Fuzz(func(t *testing.T, msg []byte) {
		g := memberGroup("fuzz", "me")
		for _, typ := range []sticktable.KeyType{sticktable.KeyString, sticktable.KeyIP} {
			tbl := mustTable(t, sticktable.Config{Type: typ, Size: 64})
			g.tables["sessions"] = newAttachment(g, "sessions", tbl)
			if len(msg) > 0 && msg[0] == msgDigest {
				return // digests need a live memberlist; FuzzDecodeDigest covers them
			}
			g.handleMessage(msg)
		}
	})
}

func TestBadMessagesCounted(t *testing.T) {
	g := memberGroup("me", "peer")
	tbl := mustTable(t, sticktable.Config{Type: sticktable.KeyIP})
	g.tables["sessions"] = newAttachment(g, "sessions", tbl)
	for _, m := range [][]byte{nil, {0}, {9, 1, 2}, {msgBatch}, {msgDigest, 0}, make([]byte, maxBatchLen+1)} {
		if len(m) > 0 && m[0] == 0 && len(m) > 1 {
			m[0] = msgBatch
		}
		g.handleMessage(m)
	}
	if n := g.st.decodeErrors.Load(); n != 6 {
		t.Fatalf("%d decode errors counted, want 6", n)
	}
	// A well-formed batch for a table of another key type is refused
	// whole, and counted.
	str := mustTable(t, sticktable.Config{Type: sticktable.KeyString})
	k, _ := str.ParseKey("not-an-ip")
	enc := newBatchEncoder("sessions", "peer", shapeOf(str), 0, packetLimit)
	enc.add(&sticktable.Change{Op: sticktable.OpStore, Key: k, Server: "s", Node: "peer", Version: 1 << 30, TTL: time.Minute})
	g.handleMessage(enc.finish(nil))
	if g.st.shapeRefused.Load() != 1 || tbl.Len() != 0 {
		t.Fatalf("other key type: %d refused, %d entries", g.st.shapeRefused.Load(), tbl.Len())
	}
}

func TestBucketBitsFor(t *testing.T) {
	for n, want := range map[int]uint8{0: MinBucketBits, 10000: 8, 100000: 10, 1 << 20: 11, 1 << 30: MaxBucketBits} {
		if got := bucketBitsFor(n); got != want {
			t.Errorf("bucketBitsFor(%d) = %d, want %d", n, got, want)
		}
	}
}

func FuzzDecodeLeave(f *testing.F) {
	f.Add(encodeLeave("node1"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		name, err := decodeLeave(msg)
		if err != nil {
			return
		}
		again, err := decodeLeave(encodeLeave(name))
		if name == "" || err != nil || again != name {
			t.Fatalf("accepted %q as %q", msg, name)
		}
	})
}

func caddyDuration(d time.Duration) caddy.Duration { return caddy.Duration(d) }
