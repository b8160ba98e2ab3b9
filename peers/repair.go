package peers

import (
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Membership repair. memberlist spreads a new member by gossip, which can
// miss a node during a burst of joins; only its periodic push/pull (every
// 30 s, stretched to 60 s in a large group) repairs that, and meanwhile the
// node refuses the member's changes and digests as coming from a
// non-member. A node that refuses one therefore runs one push/pull (a
// memberlist Join) with a live member chosen at random: the member answers
// with every node it knows, the sender among them when gossip reached it,
// so this node learns the sender about half a second after its first
// refused message instead of half a minute. If the chosen member did not
// know the sender either, the next refused message, repairEvery later,
// asks another. A sender this node saw fail is left to the reconnect loop,
// which dials it directly every few seconds.
//
// Why a member and not the sender: a batch names its sender but carries no
// address, and a digest's address is a claim this node only compares with
// memberlist's view, never dials, so a peer cannot make nodes dial
// addresses of its choosing.
//
// Leaves stay final: the push/pull goes through memberlist's own merge,
// which takes a member's alive record only with a higher incarnation than
// the leave's, and only a node that rejoined produces one. A refused
// message never creates state here; membership still comes only from
// memberlist's events.
//
// Bounded against a misbehaving peer (one holding the secret: traffic
// without it is refused by memberlist before this point): one repair in
// flight and at most one per repairEvery per group, whatever the number of
// refused messages or invented sender names; each is counted
// (Stats.MembershipRepairs) and logged at debug, rate-limited.

const (
	// repairDelay lets gossip already on its way land before a repair:
	// during a burst of joins a member's first batch can overtake the
	// gossip that announces it.
	repairDelay = 300 * time.Millisecond
	// repairEvery is the least time between two repairs of a group.
	repairEvery = 3 * time.Second
)

// repairState is the rate limit of membership repairs.
type repairState struct {
	mu      sync.Mutex
	pending bool      // a repair is scheduled or running
	last    time.Time // when the last repair started
}

var errNoMemberlist = errors.New("peers: no memberlist")

// repairMembership is called for every message refused because its sender
// is not a current member. It schedules one push/pull with a live member,
// unless one is scheduled or running, or ran less than repairEvery ago.
func (g *Group) repairMembership(sender string) {
	r := &g.repair
	limited := func() bool { return r.pending || (!r.last.IsZero() && time.Since(r.last) < repairEvery) }
	// The cheap check first: a flood of refused messages stops here.
	r.mu.Lock()
	skip := limited()
	r.mu.Unlock()
	if skip || sender == g.cfg.Name || g.failed(sender) || len(g.targets()) == 0 {
		// Alone: nobody to ask (the reconnect loop dials the seeds).
		return
	}
	r.mu.Lock()
	if limited() {
		r.mu.Unlock()
		return
	}
	r.pending = true
	r.mu.Unlock()
	g.spawn(func() {
		defer func() {
			r.mu.Lock()
			r.pending = false
			r.mu.Unlock()
		}()
		select {
		case <-g.stop:
			return
		case <-time.After(repairDelay):
		}
		if g.member(sender) != nil {
			return // the gossip arrived meanwhile
		}
		targets := g.targets()
		if len(targets) == 0 {
			return
		}
		via := targets[rand.IntN(len(targets))]
		r.mu.Lock()
		r.last = time.Now()
		r.mu.Unlock()
		g.st.repairs.Add(1)
		_, err := g.pushPullWith(via.Address())
		learned := g.member(sender) != nil
		g.repairDebug.logAt(g.log, zapcore.DebugLevel, "push/pull with a member to learn a sender that is not a member",
			zap.String("sender", sender), zap.String("via", via.Name), zap.Bool("learned", learned), zap.Error(err))
		if learned && sender < g.cfg.Name {
			// What this node refused, the sender still has: compare now.
			// (With the smaller name, the join event this push/pull
			// caused here already asks; see NotifyJoin.)
			g.exchangeWith(sender, g.attachments())
		}
	})
}

// failed reports whether name is a member this node saw fail (not one that
// left on purpose).
func (g *Group) failed(name string) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	p := g.peers[name]
	return p != nil && p.state == "dead"
}

// pushPullWith runs one memberlist push/pull with the member at addr.
func (g *Group) pushPullWith(addr string) (int, error) {
	if g.opts.repairJoin != nil {
		return g.opts.repairJoin(addr)
	}
	if g.ml == nil {
		return 0, errNoMemberlist
	}
	return g.ml.Join([]string{addr})
}
