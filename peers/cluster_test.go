package peers

import (
	"encoding/base64"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/sticktable"
	"go.uber.org/zap"
)

var (
	testSecret  = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	otherSecret = base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
)

// testOpts speeds memberlist up so failures and repairs happen within a
// test's time, without changing what happens.
func testOpts() options {
	return options{
		pushPull:    2 * time.Second,
		probe:       200 * time.Millisecond,
		reclaim:     time.Second,
		joinBackoff: 100 * time.Millisecond,
	}
}

func testLogger(tb testing.TB) *zap.Logger {
	if os.Getenv("PEERS_DEBUG") != "" {
		l, _ := zap.NewDevelopment()
		return l
	}
	return zap.NewNop()
}

// startNode starts a group on a free 127.0.0.1 port; Cleanup closes it.
func startNode(tb testing.TB, name string, join []string, o options, secret string) *Group {
	tb.Helper()
	var joins []string
	joins = append(joins, join...)
	g, err := newGroup(Config{Name: name, Bind: "127.0.0.1:0", Join: joins, Secrets: []string{secret}}, testLogger(tb), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { g.Close() })
	return g
}

func newTable(tb testing.TB, typ sticktable.KeyType, size int) *sticktable.Table {
	tb.Helper()
	t, err := sticktable.New(sticktable.Config{Type: typ, Size: size, Expire: 10 * time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(t.Close)
	return t
}

// waitFor polls cond until it holds or a generous deadline passes: the
// machine may be loaded, so tests wait for outcomes, never for times.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type testNode struct {
	g *Group
	t *sticktable.Table
}

// cluster starts n connected nodes, each with a "sessions" table.
func cluster(tb testing.TB, n int, typ sticktable.KeyType, size int, o options) []*testNode {
	return clusterWith(tb, n, typ, size, func(string) options { return o })
}

// clusterWith is cluster with options per node name.
func clusterWith(tb testing.TB, n int, typ sticktable.KeyType, size int, opts func(name string) options) []*testNode {
	tb.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		var join []string
		if i > 0 {
			join = []string{nodes[0].g.Addr()}
		}
		name := fmt.Sprintf("node%d", i+1)
		g := startNode(tb, name, join, opts(name), testSecret)
		t := newTable(tb, typ, size)
		g.Attach("sessions", t)
		nodes[i] = &testNode{g: g, t: t}
	}
	waitFor(tb, 20*time.Second, "membership", func() bool {
		for _, nd := range nodes {
			if nd.g.ml.NumMembers() != n {
				return false
			}
		}
		return true
	})
	return nodes
}

func serverOf(t *sticktable.Table, key string) string {
	e, ok := t.Get(key)
	if !ok {
		return ""
	}
	return e.Server
}

func TestReplicateStoreDeleteClear(t *testing.T) {
	nodes := cluster(t, 3, sticktable.KeyString, 1000, testOpts())
	a, b, c := nodes[0], nodes[1], nodes[2]
	everywhere := func(key, server string) func() bool {
		return func() bool {
			for _, n := range nodes {
				if serverOf(n.t, key) != server {
					return false
				}
			}
			return true
		}
	}
	if _, err := a.t.Store("alice", "s1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "store from a", everywhere("alice", "s1"))
	if e, _ := c.t.Get("alice"); e.Node != "node1" {
		t.Fatalf("replicated entry says it was written by %q", e.Node)
	}
	b.t.Store("bob", "s2")
	b.t.Store("alice", "s3") // a server change
	waitFor(t, 10*time.Second, "store from b", everywhere("bob", "s2"))
	waitFor(t, 10*time.Second, "server change from b", everywhere("alice", "s3"))
	c.t.Delete("alice")
	waitFor(t, 10*time.Second, "delete from c", everywhere("alice", ""))
	a.t.Pin("carol", "s9")
	waitFor(t, 10*time.Second, "pin from a", everywhere("carol", "s9"))
	b.t.Clear()
	waitFor(t, 10*time.Second, "clear from b", func() bool {
		for _, n := range nodes {
			if n.t.Len() != 0 {
				return false
			}
		}
		return true
	})
	// A write after seeing the clear is versioned above it and survives.
	c.t.Store("dave", "s4")
	waitFor(t, 10*time.Second, "store after clear", everywhere("dave", "s4"))

	st := a.g.Stats()
	if st.UpdatesSent == 0 || st.UpdatesReceived == 0 || st.WireBytesSent == 0 || st.Members != 3 {
		t.Fatalf("stats: %+v", st)
	}
	ms := a.g.Members()
	if len(ms) != 2 || ms[0].Name != "node2" || ms[0].State != "alive" || ms[0].UpdatesReceived == 0 || ms[0].LastContact.IsZero() {
		t.Fatalf("members: %+v", ms)
	}
}

func TestConcurrentWritesConverge(t *testing.T) {
	nodes := cluster(t, 3, sticktable.KeyString, 10000, testOpts())
	const keys = 300
	var wg sync.WaitGroup
	for i, n := range nodes[:2] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				n.t.Store(fmt.Sprint("user", k), fmt.Sprintf("server-of-node%d", i+1))
			}
		}()
	}
	wg.Wait()
	waitFor(t, 20*time.Second, "convergence", func() bool {
		for k := range keys {
			key := fmt.Sprint("user", k)
			e0, ok := nodes[0].t.Get(key)
			if !ok {
				return false
			}
			for _, n := range nodes[1:] {
				e, ok := n.t.Get(key)
				if !ok || e.Server != e0.Server || e.Version != e0.Version || e.Node != e0.Node {
					return false
				}
			}
		}
		return true
	})
	// The winner is the higher version: the winning node's server.
	for k := range keys {
		e, _ := nodes[2].t.Get(fmt.Sprint("user", k))
		if e.Server != "server-of-"+e.Node {
			t.Fatalf("key %d: server %s written by %s", k, e.Server, e.Node)
		}
	}
}

// TestExpiryCapped: TTL travels as time remaining and the receiver caps
// it by its own expire.
func TestExpiryCapped(t *testing.T) {
	a := startNode(t, "a", nil, testOpts(), testSecret)
	b := startNode(t, "b", []string{a.Addr()}, testOpts(), testSecret)
	ta := newTable(t, sticktable.KeyString, 100)
	tb, err := sticktable.New(sticktable.Config{Size: 100, Expire: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	a.Attach("s", ta)
	b.Attach("s", tb)
	waitFor(t, 10*time.Second, "membership", func() bool { return a.ml.NumMembers() == 2 && b.ml.NumMembers() == 2 })
	ta.Store("k", "srv")
	waitFor(t, 10*time.Second, "replication", func() bool { return serverOf(tb, "k") == "srv" })
	e, _ := tb.Get("k")
	if left := time.Until(e.ExpiresAt); left > time.Minute+time.Second || left < 30*time.Second {
		t.Fatalf("replicated entry expires in %v, want about 1m", left)
	}
	ea, _ := ta.Get("k")
	if left := time.Until(ea.ExpiresAt); left < 9*time.Minute {
		t.Fatalf("local entry expires in %v", left)
	}
}

func TestRefreshThrottle(t *testing.T) {
	g := &Group{cfg: Config{Name: "x"}}
	tbl := mustTable(t, sticktable.Config{Expire: time.Hour})
	a := newAttachment(g, "s", tbl)
	k, _ := tbl.ParseKey("k")
	k2, _ := tbl.ParseKey("k2")
	if !a.refreshDue(k, true) || a.refreshDue(k, true) || !a.refreshDue(k2, true) || a.refreshDue(k2, true) {
		t.Fatal("refresh throttle: want one send per key per interval")
	}
	a.refreshEvery = 0
	if !a.refreshDue(k, true) {
		t.Fatal("refresh not due after the interval")
	}
}

// fill stores n keys on t, in a deterministic way.
func fill(t *sticktable.Table, from, n int) {
	for i := from; i < from+n; i++ {
		t.Store(fmt.Sprintf("key-%06d", i), fmt.Sprintf("10.0.0.%d:80", i%7))
	}
}

func wireBytes(nodes ...*Group) uint64 {
	var n uint64
	for _, g := range nodes {
		n += g.tr.bytesSent.Load() + g.tr.bytesRecv.Load()
	}
	return n
}

// TestRestartCatchUp: a node restarted with an empty table catches up
// through digests; one restarted with its old table (a few entries
// missing) catches up with a small fraction of the bytes.
func TestRestartCatchUp(t *testing.T) {
	o := testOpts()
	o.pushPull = time.Minute // only join and attach exchanges: measure those
	nodes := cluster(t, 3, sticktable.KeyString, 20000, o)
	a, b := nodes[0], nodes[1]
	const n = 10000
	fill(a.t, 0, n)
	waitFor(t, 30*time.Second, "initial replication", func() bool {
		return b.t.Len() == n && nodes[2].t.Len() == n
	})
	nodes[2].g.Close()
	waitFor(t, 10*time.Second, "leave", func() bool { return a.g.ml.NumMembers() == 2 })
	waitFor(t, 10*time.Second, "node3 listed as left", func() bool {
		for _, m := range a.g.Members() {
			if m.Name == "node3" {
				return m.State == "left"
			}
		}
		return false
	})

	restart := func(tbl *sticktable.Table, want int) uint64 {
		before := wireBytes(a.g, b.g)
		g := startNode(t, "node3", []string{a.g.Addr()}, o, testSecret)
		g.Attach("sessions", tbl)
		waitFor(t, 30*time.Second, "catch-up", func() bool { return tbl.Len() == want })
		// Let the exchange finish (both peers answer) before measuring.
		waitFor(t, 30*time.Second, "sync settles", func() bool {
			s1 := a.g.Stats().SyncEntriesSent + b.g.Stats().SyncEntriesSent
			time.Sleep(300 * time.Millisecond)
			return s1 == a.g.Stats().SyncEntriesSent+b.g.Stats().SyncEntriesSent
		})
		used := wireBytes(a.g, b.g) - before
		g.Close()
		waitFor(t, 10*time.Second, "leave", func() bool { return a.g.ml.NumMembers() == 2 })
		return used
	}
	fresh := newTable(t, sticktable.KeyString, 20000)
	full := restart(fresh, n)
	// fresh now holds all n. Add a few entries elsewhere while it is down.
	fill(a.t, n, 5)
	waitFor(t, 10*time.Second, "b has new", func() bool { return b.t.Len() == n+5 })
	few := restart(fresh, n+5)
	t.Logf("catch-up of %d entries: %d bytes; of 5 entries: %d bytes (ratio %.1f)", n, full, few, float64(full)/float64(few))
	if few*5 > full {
		t.Fatalf("catching up 5 entries cost %d bytes, a full table %d", few, full)
	}
}

func TestPartitionHeal(t *testing.T) {
	nodes := cluster(t, 3, sticktable.KeyString, 10000, testOpts())
	a, c := nodes[0], nodes[2]
	a.t.Store("before", "s1")
	waitFor(t, 10*time.Second, "replication", func() bool { return serverOf(c.t, "before") == "s1" })

	c.g.tr.isolated.Store(true)
	// Wait until the others have declared c failed, so healing needs
	// reconnection, not just delivery.
	waitFor(t, 30*time.Second, "failure detection", func() bool { return a.g.ml.NumMembers() == 2 })
	for _, m := range a.g.Members() {
		if m.Name == "node3" && m.State != "dead" {
			t.Fatalf("partitioned node listed as %q", m.State)
		}
	}
	fill(a.t, 0, 200)   // c misses these
	fill(c.t, 1000, 50) // the others miss these
	a.t.Store("both", "from-a")
	// Two independent placements of one key: the earlier one must win
	// everywhere (the user has been using it).
	time.Sleep(5 * time.Millisecond)
	c.t.Store("both", "from-c")
	time.Sleep(200 * time.Millisecond)
	if serverOf(c.t, "key-000000") != "" || serverOf(a.t, "key-001000") != "" {
		t.Fatal("traffic crossed the partition")
	}
	c.g.tr.isolated.Store(false)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok := true
		for _, n := range nodes {
			if n.t.Len() != 252 || serverOf(n.t, "both") != "from-a" {
				ok = false
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			for _, n := range nodes {
				t.Logf("%s: %d entries, both=%q, members=%d, %+v", n.g.Name(), n.t.Len(), serverOf(n.t, "both"), n.g.ml.NumMembers(), n.g.Stats())
			}
			t.Fatal("partition did not heal")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWrongSecretIsolated(t *testing.T) {
	nodes := cluster(t, 2, sticktable.KeyString, 1000, testOpts())
	a := nodes[0]
	w := startNode(t, "intruder", []string{a.g.Addr()}, testOpts(), otherSecret)
	wt := newTable(t, sticktable.KeyString, 1000)
	w.Attach("sessions", wt)
	wt.Store("evil", "attacker:80")
	a.t.Store("good", "s1")
	waitFor(t, 10*time.Second, "replication", func() bool { return serverOf(nodes[1].t, "good") == "s1" })
	// Give the intruder several join attempts and anti-entropy rounds.
	time.Sleep(3 * time.Second)
	for _, n := range nodes {
		if serverOf(n.t, "evil") != "" || n.g.ml.NumMembers() != 2 {
			t.Fatalf("intruder got in: %d members", n.g.ml.NumMembers())
		}
		for _, m := range n.g.Members() {
			if m.Name == "intruder" {
				t.Fatal("intruder listed as a member")
			}
		}
	}
	if wt.Len() != 1 || w.ml.NumMembers() != 1 {
		t.Fatalf("intruder received data: %d entries, %d members", wt.Len(), w.ml.NumMembers())
	}
	if a.g.Stats().UpdatesApplied != 0 && serverOf(a.t, "evil") != "" {
		t.Fatal("intruder's update applied")
	}
}

func TestReattachKeepsMembership(t *testing.T) {
	nodes := cluster(t, 3, sticktable.KeyString, 1000, testOpts())
	a := nodes[0]
	time.Sleep(300 * time.Millisecond)
	before := make([]Stats, len(nodes))
	for i, n := range nodes {
		before[i] = n.g.Stats()
	}
	// A reload: the same tables attached again, one detached and
	// re-attached.
	for _, n := range nodes {
		n.g.Attach("sessions", n.t)
	}
	a.g.Detach("sessions")
	a.g.Attach("sessions", a.t)
	a.t.Store("after-reload", "s1")
	waitFor(t, 10*time.Second, "replication after reload", func() bool {
		return serverOf(nodes[1].t, "after-reload") == "s1" && serverOf(nodes[2].t, "after-reload") == "s1"
	})
	for i, n := range nodes {
		st := n.g.Stats()
		if st.Joins != before[i].Joins || st.Leaves != before[i].Leaves || st.Members != 3 {
			t.Fatalf("node %d saw membership change across reload: %+v -> %+v", i, before[i], st)
		}
	}
	// A replaced table (a new config with a different table object)
	// takes over replication.
	t2 := newTable(t, sticktable.KeyString, 1000)
	a.g.Attach("sessions", t2)
	waitFor(t, 10*time.Second, "new table synced", func() bool { return serverOf(t2, "after-reload") == "s1" })
}

// TestRefreshKeepsRemoteAlive: an entry used on one node stays alive on
// the others past its idle expiry, because refreshes replicate (at most
// once per key per expire/4).
func TestRefreshKeepsRemoteAlive(t *testing.T) {
	a := startNode(t, "a", nil, testOpts(), testSecret)
	b := startNode(t, "b", []string{a.Addr()}, testOpts(), testSecret)
	mk := func() *sticktable.Table {
		tbl, err := sticktable.New(sticktable.Config{Size: 100, Expire: 4 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tbl.Close)
		return tbl
	}
	ta, tb := mk(), mk()
	a.Attach("s", ta)
	b.Attach("s", tb)
	waitFor(t, 20*time.Second, "membership", func() bool { return a.ml.NumMembers() == 2 && b.ml.NumMembers() == 2 })
	ta.Store("busy", "srv")
	ta.Store("idle", "srv")
	waitFor(t, 10*time.Second, "replication", func() bool { return serverOf(tb, "busy") == "srv" && serverOf(tb, "idle") == "srv" })
	for end := time.Now().Add(9 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		ta.Match("busy")
	}
	if serverOf(tb, "busy") != "srv" {
		t.Fatal("entry in use on a expired on b")
	}
	if serverOf(tb, "idle") != "" {
		t.Fatal("idle entry outlived its expiry on b")
	}
	if st := a.Stats(); st.RefreshesSuppressed == 0 {
		t.Fatalf("no refresh was throttled: %+v", st)
	}
}

// TestMoveTableBetweenGroups: a reload that changes the peers block
// attaches the table to a new group before closing the old one; closing
// the old group must not unhook the table from the new one.
func TestMoveTableBetweenGroups(t *testing.T) {
	a := startNode(t, "a", nil, testOpts(), testSecret)
	b := startNode(t, "b", []string{a.Addr()}, testOpts(), testSecret)
	ta, tb := newTable(t, sticktable.KeyString, 100), newTable(t, sticktable.KeyString, 100)
	b.Attach("s", tb)
	old, err := newGroup(Config{Name: "a-old", Bind: "127.0.0.1:0", Secrets: []string{testSecret}}, zap.NewNop(), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	old.Attach("s", ta)
	a.Attach("s", ta) // the new config's group
	old.Close()
	waitFor(t, 20*time.Second, "membership", func() bool { return a.ml.NumMembers() == 2 && b.ml.NumMembers() == 2 })
	ta.Store("k", "srv")
	waitFor(t, 10*time.Second, "replication through the new group", func() bool { return serverOf(tb, "k") == "srv" })
	if e, _ := ta.Get("k"); e.Node != "a" {
		t.Fatalf("entry stamped by %q, want the new group's node name", e.Node)
	}
}
