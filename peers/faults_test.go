package peers

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/caddy-sticky/sticky/sticktable"
)

// faults is a fault injector around one node's transport: it cuts the
// node off from chosen addresses (a partition, both ways when both sides
// block each other) and loses, duplicates and reorders its outgoing
// packets. Streams (anti-entropy, large batches) are only cut, as TCP
// itself repairs loss.
type faults struct {
	mu      sync.Mutex
	r       *rand.Rand
	blocked map[string]bool
	// muted drops only packets (UDP) to these addresses: gossip and
	// live batches, not push/pulls and anti-entropy streams.
	muted map[string]bool
	// lastCut is when a packet to a blocked or muted address was last
	// dropped.
	lastCut time.Time
	lose    float64
	dup     float64
	reorder bool
	held    *heldPacket
}

type heldPacket struct {
	b []byte
	a memberlist.Address
}

func newFaults(seed uint64) *faults {
	return &faults{r: rand.New(rand.NewPCG(seed, seed+1)), blocked: map[string]bool{}, muted: map[string]bool{}}
}

func (f *faults) block(addrs ...string) {
	f.mu.Lock()
	for _, a := range addrs {
		f.blocked[a] = true
	}
	f.mu.Unlock()
}

func (f *faults) unblock(addrs ...string) {
	f.mu.Lock()
	for _, a := range addrs {
		delete(f.blocked, a)
	}
	f.mu.Unlock()
}

func (f *faults) mute(addrs ...string) {
	f.mu.Lock()
	for _, a := range addrs {
		f.muted[a] = true
	}
	f.mu.Unlock()
}

func (f *faults) unmute(addrs ...string) {
	f.mu.Lock()
	for _, a := range addrs {
		delete(f.muted, a)
	}
	f.mu.Unlock()
}

// quietFor reports whether no packet to a blocked or muted address was
// dropped for d: with probes off, memberlist sends packets only while it
// has gossip to spread, so its queue of broadcasts has drained.
func (f *faults) quietFor(d time.Duration) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return time.Since(f.lastCut) >= d
}

func (f *faults) set(lose, dup float64, reorder bool) {
	f.mu.Lock()
	f.lose, f.dup, f.reorder = lose, dup, reorder
	f.mu.Unlock()
}

func (f *faults) wrap(inner memberlist.Transport) memberlist.Transport {
	return &faultTransport{NodeAwareTransport: inner.(memberlist.NodeAwareTransport), f: f}
}

type faultTransport struct {
	memberlist.NodeAwareTransport
	f *faults
}

func (t *faultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *faultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	f := t.f
	f.mu.Lock()
	if f.blocked[a.Addr] || f.muted[a.Addr] {
		f.lastCut = time.Now()
		f.mu.Unlock()
		return time.Now(), nil
	}
	if f.r.Float64() < f.lose {
		f.mu.Unlock()
		return time.Now(), nil
	}
	dup := f.r.Float64() < f.dup
	if f.reorder && f.held == nil && f.r.IntN(4) == 0 {
		f.held = &heldPacket{b: slices.Clone(b), a: a}
		f.mu.Unlock()
		return time.Now(), nil
	}
	release := f.held
	f.held = nil
	f.mu.Unlock()
	at, err := t.NodeAwareTransport.WriteToAddress(b, a)
	if dup {
		t.NodeAwareTransport.WriteToAddress(b, a)
	}
	if release != nil {
		t.NodeAwareTransport.WriteToAddress(release.b, release.a)
	}
	return at, err
}

func (t *faultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *faultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	t.f.mu.Lock()
	cut := t.f.blocked[a.Addr]
	t.f.mu.Unlock()
	if cut {
		return nil, errIsolated
	}
	return t.NodeAwareTransport.DialAddressTimeout(a, timeout)
}

// faultNode is a cluster node with a fault injector.
type faultNode struct {
	*testNode
	f *faults
}

func faultCluster(tb testing.TB, n int, o options, mkTable func(i int) *sticktable.Table) []*faultNode {
	tb.Helper()
	nodes := make([]*faultNode, n)
	for i := range nodes {
		f := newFaults(uint64(i + 1))
		oi := o
		oi.wrap = f.wrap
		var join []string
		if i > 0 {
			join = []string{nodes[0].g.Addr()}
		}
		g := startNode(tb, fmt.Sprintf("node%d", i+1), join, oi, testSecret)
		t := mkTable(i)
		g.Attach("sessions", t)
		nodes[i] = &faultNode{testNode: &testNode{g: g, t: t}, f: f}
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

// cut partitions a from b, both ways.
func cut(a, b *faultNode) {
	a.f.block(b.g.Addr())
	b.f.block(a.g.Addr())
}

func heal(a, b *faultNode) {
	a.f.unblock(b.g.Addr())
	b.f.unblock(a.g.Addr())
}

// state renders a table's replicable state without TTLs, for comparing
// nodes.
func state(t *sticktable.Table) string {
	var lines []string
	t.RangeChanges(func(c sticktable.Change) bool {
		lines = append(lines, fmt.Sprintf("%v %v %q %q %d %d", c.Op, c.Key, c.Server, c.Node, c.Version, c.Origin))
		return true
	})
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// writeLog records every write made on any node, for the checker.
type writeLog struct {
	mu     sync.Mutex
	writes map[string][]sticktable.Write // by key text
}

func (l *writeLog) add(key string, e sticktable.Entry) {
	l.mu.Lock()
	if l.writes == nil {
		l.writes = map[string][]sticktable.Write{}
	}
	l.writes[key] = append(l.writes[key], sticktable.Write{Version: e.Version, Node: e.Node, Origin: e.Origin, Deleted: e.Deleted, Server: e.Server})
	l.mu.Unlock()
}

func (l *writeLog) store(tb testing.TB, t *sticktable.Table, key, server string) {
	tb.Helper()
	e, err := t.Store(key, server)
	if err != nil {
		tb.Fatal(err)
	}
	l.add(key, e)
}

func (l *writeLog) pin(tb testing.TB, t *sticktable.Table, key, server string) sticktable.Entry {
	tb.Helper()
	e, err := t.Pin(key, server)
	if err != nil {
		tb.Fatal(err)
	}
	l.add(key, e)
	return e
}

func (l *writeLog) del(tb testing.TB, t *sticktable.Table, key string) {
	tb.Helper()
	if ok, err := t.Delete(key); !ok || err != nil {
		return
	}
	t.RangeChanges(func(c sticktable.Change) bool {
		if c.Op == sticktable.OpDelete && c.Key.String() == key {
			l.add(key, sticktable.Entry{Version: c.Version, Node: c.Node, Deleted: true})
			return false
		}
		return true
	})
}

// check asserts, after quiescence, that every node holds the same table,
// that each key holds the greatest of the writes made to it by the
// placement rule, and that no value appears that nobody wrote.
func (l *writeLog) check(tb testing.TB, tables ...*sticktable.Table) {
	tb.Helper()
	first := state(tables[0])
	for i, t := range tables[1:] {
		if s := state(t); s != first {
			tb.Fatalf("node %d's table differs from node 1's", i+2)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := 0
	tables[0].RangeChanges(func(c sticktable.Change) bool {
		if c.Op == sticktable.OpClear {
			return true
		}
		key := c.Key.String()
		got := sticktable.Write{Version: c.Version, Node: c.Node, Origin: c.Origin, Deleted: c.Op == sticktable.OpDelete, Server: c.Server}
		ws := l.writes[key]
		if !slices.Contains(ws, got) {
			tb.Fatalf("key %s holds %+v, which nobody wrote (writes: %+v)", key, got, ws)
		}
		for _, w := range ws {
			if sticktable.CompareWrites(w, got) > 0 {
				tb.Fatalf("key %s holds %+v, but %+v wins by the placement rule", key, got, w)
			}
		}
		seen++
		return true
	})
	if seen != len(l.writes) {
		tb.Fatalf("%d keys in the tables, %d written", seen, len(l.writes))
	}
}

// TestHealSpreadsToEveryone: node3 is cut off; users are placed and pinned
// on both sides; then only node1 and node3 see each other again, with no
// periodic anti-entropy. node2, still cut off from node3 and receiving
// node3's users' requests at once (placing them afresh), must learn them
// through what node1 passes on, and nobody may be moved for good.
func TestHealSpreadsToEveryone(t *testing.T) {
	o := testOpts()
	o.pushPull = time.Hour // only membership-triggered exchanges
	nodes := faultCluster(t, 3, o, func(int) *sticktable.Table { return newTable(t, sticktable.KeyString, 10000) })
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	var log writeLog
	log.store(t, n1.t, "before", "s1")
	waitFor(t, 10*time.Second, "replication", func() bool { return serverOf(n3.t, "before") == "s1" })

	cut(n1, n3)
	cut(n2, n3)
	waitFor(t, 30*time.Second, "failure detection", func() bool {
		return n1.g.ml.NumMembers() == 2 && n2.g.ml.NumMembers() == 2 && n3.g.ml.NumMembers() == 1
	})
	for i := range 100 {
		log.store(t, n1.t, fmt.Sprint("a-user-", i), "s1")
		log.store(t, n3.t, fmt.Sprint("c-user-", i), "s3")
	}
	pins := map[string]string{}
	for i := range 20 {
		k := fmt.Sprint("pinned-", i)
		e1 := log.pin(t, n1.t, k, "p1")
		time.Sleep(time.Millisecond)
		e3 := log.pin(t, n3.t, k, "p3")
		pins[k] = e3.Server
		if i%2 == 0 { // node1 pins again, later: its pin has the higher version
			time.Sleep(time.Millisecond)
			pins[k] = log.pin(t, n1.t, k, "p1-again").Server
		}
		_ = e1
	}
	waitFor(t, 10*time.Second, "node2 has node1's side", func() bool { return serverOf(n2.t, "a-user-99") == "s1" })

	heal(n1, n3)
	healed := time.Now()
	waitFor(t, 30*time.Second, "node1 and node3 see each other", func() bool {
		return n1.g.ml.NumMembers() == 3 && n3.g.ml.NumMembers() >= 2
	})
	back := time.Now()
	// node2 gets node3's users' requests before it heard of them.
	for i := range 100 {
		k := fmt.Sprint("c-user-", i)
		if e, placed, _ := n2.t.Place(k, "s2"); placed {
			log.add(k, e)
		}
	}
	waitFor(t, 20*time.Second, "node2 learns node3's users through node1", func() bool {
		for i := range 100 {
			if serverOf(n2.t, fmt.Sprint("c-user-", i)) != "s3" {
				return false
			}
		}
		return true
	})
	t.Logf("node2 converged %v after membership was back (%v after the heal), without ever reaching node3",
		time.Since(back).Round(time.Millisecond), time.Since(healed).Round(time.Millisecond))
	heal(n2, n3)
	waitFor(t, 30*time.Second, "all tables equal", func() bool {
		s := state(n1.t)
		return s == state(n2.t) && s == state(n3.t)
	})
	for _, n := range nodes {
		for i := range 100 {
			if a, c := serverOf(n.t, fmt.Sprint("a-user-", i)), serverOf(n.t, fmt.Sprint("c-user-", i)); a != "s1" || c != "s3" {
				t.Fatalf("%s: a user moved: %q, %q", n.g.Name(), a, c)
			}
		}
		for k, want := range pins {
			if got := serverOf(n.t, k); got != want {
				t.Fatalf("%s: %s pinned to %q, want %q (the higher version)", n.g.Name(), k, got, want)
			}
		}
	}
	log.check(t, n1.t, n2.t, n3.t)
}

// TestLossDuplicationReordering: with a fifth of every node's packets lost,
// a fifth duplicated and some reordered, concurrent placements, re-sticks,
// pins and deletes on all nodes end, once quiet, in one table everywhere
// that follows the placement rule.
func TestLossDuplicationReordering(t *testing.T) {
	o := testOpts()
	o.pushPull = time.Second
	nodes := faultCluster(t, 3, o, func(int) *sticktable.Table { return newTable(t, sticktable.KeyString, 10000) })
	for _, n := range nodes {
		n.f.set(0.2, 0.2, true)
	}
	var log writeLog
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), 99))
			for j := range 300 {
				k := fmt.Sprint("user-", r.IntN(150))
				switch r.IntN(10) {
				case 0:
					log.pin(t, n.t, k, fmt.Sprint("pin-", i))
				case 1:
					log.del(t, n.t, k)
				default:
					log.store(t, n.t, k, fmt.Sprint("s", i, "-", j%3))
				}
				if j%50 == 0 {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 60*time.Second, "all tables equal", func() bool {
		s := state(nodes[0].t)
		return s == state(nodes[1].t) && s == state(nodes[2].t)
	})
	log.check(t, nodes[0].t, nodes[1].t, nodes[2].t)
}

// TestClockSkew: a version more than max_clock_offset (default 1m) ahead
// of the receiver's clock is refused and counted, so a node whose clock
// runs 2 minutes ahead has its writes refused by the others (which keep
// their clocks), and one running 2 minutes behind refuses theirs while its
// own are accepted; within the bound both directions replicate.
func TestClockSkew(t *testing.T) {
	for _, tc := range []struct {
		skew                   time.Duration
		goodRefuses, itRefuses bool
	}{
		{2 * time.Minute, true, false},
		{20 * time.Second, false, false},
		{-20 * time.Second, false, false},
		{-2 * time.Minute, false, true},
	} {
		t.Run(tc.skew.String(), func(t *testing.T) {
			skewed := func() time.Time { return time.Now().Add(tc.skew) }
			nodes := make([]*testNode, 2)
			for i := range nodes {
				o := testOpts()
				var now func() time.Time
				if i == 1 {
					o.now, now = skewed, skewed
				}
				var join []string
				if i > 0 {
					join = []string{nodes[0].g.Addr()}
				}
				g := startNode(t, fmt.Sprint("node", i+1), join, o, testSecret)
				tbl, err := sticktable.NewWithOptions(sticktable.Config{Size: 1000, Expire: 10 * time.Minute}, sticktable.Options{Now: now})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(tbl.Close)
				g.Attach("sessions", tbl)
				nodes[i] = &testNode{g: g, t: tbl}
			}
			good, bad := nodes[0], nodes[1]
			waitFor(t, 20*time.Second, "membership", func() bool { return good.g.ml.NumMembers() == 2 && bad.g.ml.NumMembers() == 2 })
			good.t.Store("from-good-clock", "s1")
			bad.t.Store("from-skewed-clock", "s2")
			arrives := func(to *testNode, key, server string, refused bool) {
				t.Helper()
				if refused {
					waitFor(t, 10*time.Second, "refusal counted", func() bool { return to.g.Stats().ClockRefused > 0 })
					if serverOf(to.t, key) != "" {
						t.Fatalf("%s: a version over 1m ahead was applied", to.g.Name())
					}
					if e, _ := to.t.Store("later", "s1"); e.UpdatedAt().After(to.t.Now().Add(time.Second)) {
						t.Fatalf("%s's clock was dragged to %v", to.g.Name(), e.UpdatedAt())
					}
					return
				}
				waitFor(t, 10*time.Second, key+" arrives at "+to.g.Name(), func() bool { return serverOf(to.t, key) == server })
			}
			arrives(good, "from-skewed-clock", "s2", tc.goodRefuses)
			arrives(bad, "from-good-clock", "s1", tc.itRefuses)
			if !tc.goodRefuses && !tc.itRefuses && good.g.Stats().ClockRefused+bad.g.Stats().ClockRefused != 0 {
				t.Fatal("a version within the bound was refused")
			}
		})
	}
}

// TestFullTablesConvergeAndStop: two nodes whose tables are full learn
// different users while partitioned, in alternating bursts (100 ms apart,
// far more than the error of a node's estimate of how recently a peer's
// entry was used). After the heal they must end with the
// same entries, the most recently used of both, and anti-entropy must stop
// sending once they agree (it once resent forever: each apply made the
// resent keys the most recently used and evicted others, which the next
// round sent back).
func TestFullTablesConvergeAndStop(t *testing.T) {
	o := testOpts()
	o.pushPull = 500 * time.Millisecond
	const size, burst = 2000, 500
	mk := func(int) *sticktable.Table {
		tbl, err := sticktable.New(sticktable.Config{Type: sticktable.KeyInteger, Size: size, Expire: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tbl.Close)
		return tbl
	}
	nodes := faultCluster(t, 2, o, mk)
	a, b := nodes[0], nodes[1]
	cut(a, b)
	waitFor(t, 30*time.Second, "partition", func() bool { return a.g.ml.NumMembers() == 1 && b.g.ml.NumMembers() == 1 })
	for i := range 12 { // 6000 users, the last 4 bursts fit
		n, server := a, "sa"
		if i%2 == 1 {
			n, server = b, "sb"
		}
		for j := range burst {
			n.t.Store(fmt.Sprint(i*burst+j), server)
		}
		time.Sleep(100 * time.Millisecond)
	}
	heal(a, b)
	waitFor(t, 60*time.Second, "full tables agree", func() bool { return state(a.t) == state(b.t) })
	// Transfers started before they agreed are counted when they end.
	time.Sleep(3 * o.pushPull)
	if state(a.t) != state(b.t) {
		t.Fatal("full tables agreed, then diverged")
	}
	for j := 8 * burst; j < 12*burst; j++ {
		if serverOf(a.t, fmt.Sprint(j)) == "" {
			t.Fatalf("user %d, among the %d most recent, was evicted", j, size)
		}
	}
	sent := a.g.Stats().SyncEntriesSent + b.g.Stats().SyncEntriesSent
	time.Sleep(5 * o.pushPull) // several rounds
	if more := a.g.Stats().SyncEntriesSent + b.g.Stats().SyncEntriesSent - sent; more != 0 {
		t.Fatalf("anti-entropy sent %d more entries after the tables agreed", more)
	}
}
