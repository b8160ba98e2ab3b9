package peers

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/caddy-sticky/sticky/sticktable"
)

// quietOpts are testOpts without probes and periodic push/pull: memberlist
// then sends nothing but gossip of membership changes (and our batches),
// so a test controls who learns of whom.
func quietOpts(f *faults) options {
	o := testOpts()
	o.pushPull = time.Hour
	o.probe = time.Hour
	o.wrap = f.wrap
	return o
}

// knows reports whether g has name as a current member, in its own view
// and in memberlist's.
func knows(g *Group, name string) bool {
	if g.member(name) == nil {
		return false
	}
	return slices.ContainsFunc(g.ml.Members(), func(n *memberlist.Node) bool { return n.Name == name })
}

// TestUnknownSenderLearned reproduces a member that gossip missed, as in a
// burst of joins: the receiver does not know the sender, the sender knows
// the receiver, and no periodic push/pull runs. The receiver must learn
// the sender from the changes it refuses, receive what it refused, and
// accept the sender's next change, without waiting for a periodic round.
// Both name orders: the pair's digest exchange is started by the node with
// the smaller name.
func TestUnknownSenderLearned(t *testing.T) {
	for _, tc := range []struct{ receiver, sender string }{{"node2", "node3"}, {"node3", "node2"}} {
		t.Run(tc.sender+"-to-"+tc.receiver, func(t *testing.T) {
			// the idle-fleet offer is TestMissedMemberLearnedInAnIdleFleet's
			recv, send, recvT, sendT := missedMember(t, tc.receiver, tc.sender, time.Hour)

			// The sender's first change reaches the receiver, which refuses
			// it (the sender is no member there).
			before := recv.Stats()
			if _, err := sendT.Store("first", "s1"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the first change refused", func() bool {
				return recv.Stats().NonMembers > before.NonMembers
			})
			// Without the repair, the receiver would stay ignorant until
			// a periodic push/pull (off here; 30-60 s in production).
			waitFor(t, 15*time.Second, "the receiver to learn of the sender", func() bool { return knows(recv, send.Name()) })
			waitFor(t, 15*time.Second, "the refused change, by anti-entropy", func() bool { return serverOf(recvT, "first") == "s1" })
			if _, err := sendT.Store("second", "s2"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the next change, live", func() bool { return serverOf(recvT, "second") == "s2" })
			if n := recv.Stats().MembershipRepairs; n != 1 {
				t.Fatalf("%d membership repairs, want 1", n)
			}
		})
	}
}

// missedMember builds a member that gossip missed, as in a burst of
// joins: the sender joins through a seed while no gossip reaches the
// receiver (the seed's packets to it are dropped) and the sender cannot
// reach it at all; then both wait until their gossip has drained. The
// sender knows the receiver, the receiver does not know the sender, and no
// periodic push/pull runs. unasked is the sender's wait before offering
// its digests unasked (0: the default).
func missedMember(t *testing.T, receiver, sender string, unasked time.Duration) (recv, send *Group, recvT, sendT *sticktable.Table) {
	t.Helper()
	fSeed, fRecv, fSend := newFaults(1), newFaults(2), newFaults(3)
	seed := startNode(t, "node1", nil, quietOpts(fSeed), testSecret)
	recv = startNode(t, receiver, []string{seed.Addr()}, quietOpts(fRecv), testSecret)
	recvT = newTable(t, sticktable.KeyString, 1000)
	recv.Attach("sessions", recvT)
	seed.Attach("sessions", newTable(t, sticktable.KeyString, 1000))
	waitFor(t, 20*time.Second, "seed and receiver", func() bool { return knows(seed, recv.Name()) && knows(recv, seed.Name()) })

	fSeed.mute(recv.Addr())
	fSend.block(recv.Addr())
	sendOpts := quietOpts(fSend)
	sendOpts.unasked = unasked
	send = startNode(t, sender, []string{seed.Addr()}, sendOpts, testSecret)
	sendT = newTable(t, sticktable.KeyString, 1000)
	send.Attach("sessions", sendT)
	waitFor(t, 20*time.Second, "the sender's join", func() bool {
		return knows(seed, send.Name()) && knows(send, recv.Name()) && knows(send, seed.Name())
	})
	// the join's follow-up digest exchange (which may pick the receiver)
	// has run too
	time.Sleep(followUpDelay + 500*time.Millisecond)
	waitFor(t, 20*time.Second, "gossip drained", func() bool {
		return fSeed.quietFor(time.Second) && fSend.quietFor(time.Second)
	})
	fSeed.unmute(recv.Addr())
	fSend.unblock(recv.Addr())
	if knows(recv, send.Name()) {
		t.Fatal("setup: the receiver learned of the sender by gossip")
	}
	return recv, send, recvT, sendT
}

// TestMembershipRepairRateLimited: however many messages from non-members
// arrive, and under however many invented names, a group runs one repair
// at a time and at most one per repairEvery; a digest from a non-member
// counts like a batch, a digest from a member at another address (a
// forged address, not a missed member) does not; a repair whose sender
// became a member meanwhile (the gossip arrived) does not run; nor does
// one for a member seen failing (the reconnect loop dials those), or with
// no live member to ask.
func TestMembershipRepairRateLimited(t *testing.T) {
	log, logs := observed()
	g := memberGroup("me", "friend")
	g.log = log
	g.peers["friend"].addr = "127.0.0.1:7001"
	g.peers["friend"].node = &memberlist.Node{Name: "friend", Addr: net.IPv4(127, 0, 0, 1), Port: 7001}
	tbl := mustTable(t, sticktable.Config{Size: 1000})
	g.tables["sessions"] = newAttachment(g, "sessions", tbl)
	var calls atomic.Int32
	var mu sync.Mutex
	var via []string
	release := make(chan struct{})
	g.opts.repairJoin = func(addr string) (int, error) {
		calls.Add(1)
		mu.Lock()
		via = append(via, addr)
		mu.Unlock()
		<-release
		return 1, nil
	}
	pending := func() bool {
		g.repair.mu.Lock()
		defer g.repair.mu.Unlock()
		return g.repair.pending
	}
	burst := func(n int) {
		now := versionAt(time.Now())
		for i := range n {
			g.handleMessage(batchFrom(t, tbl, fmt.Sprint("stranger-", i), "k", now))
		}
	}

	burst(1000)
	waitFor(t, 10*time.Second, "the first repair", func() bool { return calls.Load() == 1 })
	burst(1000) // while it runs
	close(release)
	waitFor(t, 10*time.Second, "the repair to end", func() bool { return !pending() })
	burst(1000) // within repairEvery of it
	if pending() || calls.Load() != 1 || g.st.repairs.Load() != 1 {
		t.Fatalf("after 3000 refused batches: %d repairs run, %d counted, another pending %v", calls.Load(), g.st.repairs.Load(), pending())
	}
	if g.st.nonMembers.Load() != 3000 || len(g.peers) != 1 || tbl.Len() != 0 {
		t.Fatalf("%d refused, %d peers tracked, %d entries", g.st.nonMembers.Load(), len(g.peers), tbl.Len())
	}
	mu.Lock()
	if len(via) != 1 || via[0] != "127.0.0.1:7001" {
		t.Fatalf("push/pull went to %v, want the live member", via)
	}
	mu.Unlock()

	// Later, a digest from a member at another address: refused, no repair.
	g.repair.mu.Lock()
	g.repair.last = time.Now().Add(-2 * repairEvery)
	g.repair.mu.Unlock()
	digestFrom := func(sender, addr string) *digest {
		return &digest{sender: sender, addr: addr, tables: []tableDigest{{name: "sessions", shape: shapeOf(tbl),
			bits: MinBucketBits, buckets: make([]uint64, 1<<MinBucketBits)}}}
	}
	noSync := func(*memberlist.Node, *attachment, []bool, uint8, bool) {}
	g.handleDigestWith(digestFrom("friend", "10.9.9.9:80"), noSync)
	if pending() {
		t.Fatal("a digest from a member at a forged address started a repair")
	}
	// A digest from a non-member: one repair.
	g.handleDigestWith(digestFrom("stranger", "127.0.0.1:7002"), noSync)
	g.handleDigestWith(digestFrom("stranger", "127.0.0.1:7002"), noSync)
	waitFor(t, 10*time.Second, "the second repair", func() bool { return calls.Load() == 2 && !pending() })

	// A repair whose sender became a member before it ran is skipped.
	g.repair.mu.Lock()
	g.repair.last = time.Now().Add(-2 * repairEvery)
	g.repair.mu.Unlock()
	burst(1)
	g.mu.Lock()
	g.peers["stranger-0"] = &peerState{name: "stranger-0", state: "alive"}
	g.mu.Unlock()
	waitFor(t, 10*time.Second, "the skipped repair to end", func() bool { return !pending() })
	if calls.Load() != 2 || g.st.repairs.Load() != 2 {
		t.Fatalf("%d repairs run, %d counted, want 2", calls.Load(), g.st.repairs.Load())
	}
	if n := logs.FilterMessageSnippet("to learn a sender").Len(); n != 1 {
		t.Fatalf("%d debug lines for 2 repairs within %v, want 1", n, warnEvery)
	}

	// A sender this node saw fail: the reconnect loop dials it; no repair.
	g.repair.mu.Lock()
	g.repair.last = time.Time{}
	g.repair.mu.Unlock()
	g.mu.Lock()
	g.peers["stranger-0"].state = "dead"
	g.mu.Unlock()
	burst(1)
	if pending() {
		t.Fatal("a repair was scheduled for a member seen failing")
	}

	// Alone (no live member to ask): nothing is scheduled.
	g.repair.mu.Lock()
	g.repair.last = time.Time{}
	g.repair.mu.Unlock()
	g.mu.Lock()
	for _, p := range g.peers {
		p.state = "dead"
	}
	g.mu.Unlock()
	burst(10)
	if pending() {
		t.Fatal("a repair was scheduled with no live member to ask")
	}
}

// TestRepairKeepsLeavesFinal: a member that left on purpose stays gone
// when a late message of its own makes a node run a repair through a
// member that has not heard of the leave yet: memberlist's merge keeps the
// leave (same incarnation), the late change is refused, and the member
// asked learns of the leave from the push/pull.
func TestRepairKeepsLeavesFinal(t *testing.T) {
	fOld, fRecv, fLeave := newFaults(1), newFaults(2), newFaults(3)
	old := startNode(t, "node1", nil, quietOpts(fOld), testSecret)
	recv := startNode(t, "node2", []string{old.Addr()}, quietOpts(fRecv), testSecret)
	leaver := startNode(t, "node3", []string{old.Addr()}, quietOpts(fLeave), testSecret)
	recvT := newTable(t, sticktable.KeyString, 1000)
	recv.Attach("sessions", recvT)
	all := []*Group{old, recv, leaver}
	waitFor(t, 20*time.Second, "membership", func() bool {
		for _, a := range all {
			for _, b := range all {
				if a != b && !knows(a, b.Name()) {
					return false
				}
			}
		}
		return true
	})

	// node3 leaves; neither it nor node2 can tell node1 by packet.
	fLeave.block(old.Addr())
	fRecv.mute(old.Addr())
	leaver.Close()
	waitFor(t, 20*time.Second, "node2 to see the leave", func() bool {
		return slices.ContainsFunc(recv.Members(), func(m MemberStatus) bool { return m.Name == "node3" && m.State == "left" })
	})
	waitFor(t, 20*time.Second, "node2's gossip drained", func() bool { return fRecv.quietFor(time.Second) })
	fRecv.unmute(old.Addr())
	if !knows(old, "node3") {
		t.Fatal("setup: node1 heard of the leave")
	}

	// A late batch from node3 reaches node2.
	before := recv.Stats()
	recv.handleMessage(batchFrom(t, recvT, "node3", "late", versionAt(time.Now())))
	waitFor(t, 10*time.Second, "the repair", func() bool {
		recv.repair.mu.Lock()
		defer recv.repair.mu.Unlock()
		return recv.Stats().MembershipRepairs == before.MembershipRepairs+1 && !recv.repair.pending
	})
	if knows(recv, "node3") {
		t.Fatal("the repair re-added a member that left")
	}
	if !slices.ContainsFunc(recv.Members(), func(m MemberStatus) bool { return m.Name == "node3" && m.State == "left" }) {
		t.Fatalf("node2 lists node3 as %+v", recv.Members())
	}
	recv.handleMessage(batchFrom(t, recvT, "node3", "later", versionAt(time.Now())))
	if recvT.Len() != 0 || recv.Stats().NonMembers != before.NonMembers+2 {
		t.Fatalf("late changes of a member that left: %d entries, %d refused", recvT.Len(), recv.Stats().NonMembers-before.NonMembers)
	}
	// node1 learned the leave from the repair's push/pull (it labels
	// node3 failed, not left: memberlist's leave callback does not say
	// which, and node3's own leave message never reached it).
	waitFor(t, 10*time.Second, "node1 to learn the leave", func() bool { return !knows(old, "node3") })
}

// TestMissedMemberLearnedInAnIdleFleet: when the node that missed a member
// has the smaller name, the member waits for it to start their exchange,
// which it never does; with no traffic on the member, nothing else would
// reach it before memberlist's periodic push/pull (off here, 30-60 s in
// production), and the changes it makes itself would not reach the member
// either. The member offers its digests when nothing came, so both learn
// each other with no writes on the member.
func TestMissedMemberLearnedInAnIdleFleet(t *testing.T) {
	recv, send, recvT, sendT := missedMember(t, "node2", "node3", 0)
	// The receiver's own change cannot reach a member it does not know.
	if _, err := recvT.Store("from-receiver", "r1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the receiver to learn of the idle sender", func() bool { return knows(recv, send.Name()) })
	waitFor(t, 15*time.Second, "the receiver's change at the sender", func() bool { return serverOf(sendT, "from-receiver") == "r1" })
}
