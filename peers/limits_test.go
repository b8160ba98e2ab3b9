package peers

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-sticky/sticky/sticktable"
)

// observed returns a logger that records what it logs.
func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// batchFrom encodes one store of key -> server by sender for table
// "sessions" of shape.
func batchFrom(tb testing.TB, tbl *sticktable.Table, sender, key string, version uint64) []byte {
	tb.Helper()
	k, err := tbl.ParseKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	enc := newBatchEncoder("sessions", sender, shapeOf(tbl), 0, packetLimit)
	enc.add(&sticktable.Change{Op: sticktable.OpStore, Key: k, Server: "s1", Node: sender, Version: version,
		Origin: sticktable.OriginFirst, TTL: time.Minute})
	return enc.finish(nil)
}

func versionAt(t time.Time) uint64 { return uint64(t.UnixMilli()) << sticktable.LogicalBits }

// TestChangesOnlyFromMembers: changes named after a node that is not a
// current member are refused and counted, and inventing names costs no
// memory (it once created an "alive" member per name).
func TestChangesOnlyFromMembers(t *testing.T) {
	g := memberGroup("me", "friend")
	tbl := mustTable(t, sticktable.Config{Size: 100000})
	g.tables["sessions"] = newAttachment(g, "sessions", tbl)
	now := versionAt(time.Now())
	for i := range 10000 {
		g.handleMessage(batchFrom(t, tbl, fmt.Sprint("forged-", i), fmt.Sprint("k", i), now))
	}
	if tbl.Len() != 0 || g.st.nonMembers.Load() != 10000 || len(g.peers) != 1 {
		t.Fatalf("forged senders: %d entries, %d refused, %d peers tracked", tbl.Len(), g.st.nonMembers.Load(), len(g.peers))
	}
	g.peers["friend"].state = "dead"
	g.handleMessage(batchFrom(t, tbl, "friend", "k", now))
	if tbl.Len() != 0 {
		t.Fatal("accepted a change from a member that failed")
	}
	g.peers["friend"].state = "alive"
	g.handleMessage(batchFrom(t, tbl, "friend", "k", now))
	if tbl.Len() != 1 {
		t.Fatal("refused a change from a current member")
	}
}

// TestPeerStateCapped: memberlist events past maxPeers distinct names
// forget departed members first and never grow beyond the cap.
func TestPeerStateCapped(t *testing.T) {
	g := memberGroup("me")
	ev := (*events)(g)
	for i := range maxPeers + 500 {
		n := &memberlist.Node{Name: fmt.Sprint("n", i), Addr: net.IPv4(127, 0, 0, 1), Port: uint16(i)}
		ev.NotifyJoin(n)
		if i%2 == 0 {
			ev.NotifyLeave(n)
		}
	}
	if len(g.peers) > maxPeers {
		t.Fatalf("%d peers tracked, cap %d", len(g.peers), maxPeers)
	}
	alive := 0
	for _, p := range g.peers {
		if p.state == "alive" {
			alive++
		}
	}
	if alive < (maxPeers+500)/2-1 {
		t.Fatalf("live members were forgotten to make room: %d alive", alive)
	}
}

// TestClockOffsetBound: a change versioned more than max_clock_offset
// ahead of this node's clock is refused and counted, and does not move
// the table's clock; within the bound it is applied.
func TestClockOffsetBound(t *testing.T) {
	g := memberGroup("me", "peer")
	tbl := mustTable(t, sticktable.Config{})
	g.tables["sessions"] = newAttachment(g, "sessions", tbl)
	now := time.Now()
	g.handleMessage(batchFrom(t, tbl, "peer", "from-3246", versionAt(time.Date(3246, 1, 1, 0, 0, 0, 0, time.UTC))))
	g.handleMessage(batchFrom(t, tbl, "peer", "2m-ahead", versionAt(now.Add(2*time.Minute))))
	if tbl.Len() != 0 || g.st.clockRefused.Load() != 2 {
		t.Fatalf("far-future versions: %d entries, %d refused", tbl.Len(), g.st.clockRefused.Load())
	}
	e, err := tbl.Store("local", "s")
	if err != nil || e.UpdatedAt().After(time.Now().Add(time.Second)) {
		t.Fatalf("the table's clock was dragged forward: %v %v", e.UpdatedAt(), err)
	}
	g.handleMessage(batchFrom(t, tbl, "peer", "30s-ahead", versionAt(now.Add(30*time.Second))))
	if serverOf(tbl, "30s-ahead") != "s1" {
		t.Fatal("a version within max_clock_offset was refused")
	}
	// A clear mark from too far ahead is ignored too.
	d := &digest{sender: "peer", addr: "", tables: []tableDigest{{name: "sessions", shape: shapeOf(tbl),
		markVersion: versionAt(now.Add(time.Hour)), markNode: "peer", bits: MinBucketBits, buckets: make([]uint64, 1<<MinBucketBits)}}}
	g.peers["peer"].addr = "127.0.0.1:1"
	g.peers["peer"].node = &memberlist.Node{Name: "peer", Addr: net.IPv4(127, 0, 0, 1), Port: 1}
	d.addr = "127.0.0.1:1"
	before := g.st.clockRefused.Load()
	g.handleDigestWith(d, func(*memberlist.Node, *attachment, []bool, uint8, bool) {})
	if g.st.clockRefused.Load() != before+1 {
		t.Fatal("a clear mark from the future was not refused")
	}
}

// TestShapeMismatchRefused: batches and digests for a table whose key type
// or length differs are refused, counted, and logged once.
func TestShapeMismatchRefused(t *testing.T) {
	g := memberGroup("me", "peer")
	log, logs := observed()
	g.log = log
	ours := mustTable(t, sticktable.Config{Type: sticktable.KeyString, Len: 32})
	theirs := mustTable(t, sticktable.Config{Type: sticktable.KeyString, Len: 64})
	g.tables["sessions"] = newAttachment(g, "sessions", ours)
	for i := range 5 {
		g.handleMessage(batchFrom(t, theirs, "peer", fmt.Sprint("k", i), versionAt(time.Now())))
	}
	g.peers["peer"].addr = "127.0.0.1:1"
	g.peers["peer"].node = &memberlist.Node{Name: "peer", Addr: net.IPv4(127, 0, 0, 1), Port: 1}
	synced := 0
	for range 3 {
		d := &digest{sender: "peer", addr: "127.0.0.1:1", tables: []tableDigest{{name: "sessions", shape: shapeOf(theirs),
			bits: MinBucketBits, buckets: make([]uint64, 1<<MinBucketBits)}}}
		d.tables[0].buckets[0] = 42 // differs: a matching shape would sync
		g.handleDigestWith(d, func(*memberlist.Node, *attachment, []bool, uint8, bool) { synced++ })
	}
	if ours.Len() != 0 || g.st.shapeRefused.Load() != 8 || synced != 0 {
		t.Fatalf("%d entries, %d refused, %d syncs", ours.Len(), g.st.shapeRefused.Load(), synced)
	}
	if n := logs.FilterMessageSnippet("another key type or length").Len(); n != 2 {
		t.Fatalf("%d warnings, want one for batches and one for digests", n)
	}
}

// TestDigestsAnsweredOnlyToMembersAtTheirAddress: a digest naming an
// address other than the member's, or from a non-member, gets nothing
// streamed anywhere.
func TestDigestsAnsweredOnlyToMembersAtTheirAddress(t *testing.T) {
	g := memberGroup("me", "peer")
	tbl := mustTable(t, sticktable.Config{})
	tbl.Store("secret-user", "s1")
	g.tables["sessions"] = newAttachment(g, "sessions", tbl)
	g.peers["peer"].addr = "127.0.0.1:7001"
	g.peers["peer"].node = &memberlist.Node{Name: "peer", Addr: net.IPv4(127, 0, 0, 1), Port: 7001}
	var sentTo []string
	record := func(n *memberlist.Node, _ *attachment, _ []bool, _ uint8, _ bool) {
		sentTo = append(sentTo, n.Address())
	}
	empty := func(sender, addr string) *digest {
		return &digest{sender: sender, addr: addr, tables: []tableDigest{{name: "sessions", shape: shapeOf(tbl),
			bits: MinBucketBits, buckets: make([]uint64, 1<<MinBucketBits)}}}
	}
	g.handleDigestWith(empty("peer", "10.9.9.9:80"), record)
	g.handleDigestWith(empty("stranger", "127.0.0.1:7002"), record)
	if len(sentTo) != 0 || g.st.nonMembers.Load() != 2 {
		t.Fatalf("streamed to %v, %d refused", sentTo, g.st.nonMembers.Load())
	}
	g.handleDigestWith(empty("peer", "127.0.0.1:7001"), record)
	if len(sentTo) != 1 || sentTo[0] != "127.0.0.1:7001" {
		t.Fatalf("the member at its address got %v", sentTo)
	}
}

// TestBadPacketWarningsRateLimited: junk on the peer port makes
// memberlist log a line per packet; we write one line per interval with
// the count of the others.
func TestBadPacketWarningsRateLimited(t *testing.T) {
	log, logs := observed()
	w := &zapWriter{l: log}
	for range 1000 {
		fmt.Fprintln(w, "2026/01/01 00:00:00 [ERR] memberlist: failed to decrypt packet from=127.0.0.1:5555")
	}
	if n := logs.FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
		t.Fatalf("%d warnings for 1000 bad packets, want 1", n)
	}
	w.warn.mu.Lock()
	w.warn.last = time.Now().Add(-2 * warnEvery)
	w.warn.mu.Unlock()
	fmt.Fprintln(w, "2026/01/01 00:00:11 [ERR] memberlist: failed to decrypt packet")
	all := logs.FilterLevelExact(zapcore.WarnLevel).All()
	if len(all) != 2 || all[1].ContextMap()["suppressed_since_last"] != int64(999) {
		t.Fatalf("after the interval: %+v", all)
	}
	// Refused messages: one debug line per interval too.
	g := memberGroup("me")
	g.log = log
	for range 500 {
		g.handleMessage([]byte{0xee, 1, 2})
	}
	if n := logs.FilterMessage("refused bad peer message").Len(); n != 1 || g.st.decodeErrors.Load() != 500 {
		t.Fatalf("%d lines for 500 bad messages (%d counted)", n, g.st.decodeErrors.Load())
	}
}
