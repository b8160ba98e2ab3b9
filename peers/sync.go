package peers

import (
	"math/rand/v2"
	"time"

	"github.com/caddy-sticky/sticky/sticktable"
	"github.com/cespare/xxhash/v2"
	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// Anti-entropy. A digest exchange (memberlist push/pull, or a direct
// request after Attach) gives each side the other's bucket sums; each
// side then sends the other the entries of the buckets that differ. Apply
// keeps the higher version on both sides, so after one exchange both
// hold the union, newest version per key, whichever side was behind.

// requestDigests starts a digest exchange for a newly attached table
// with one random member, sending ours with flagReply. One is enough: the
// members agree with each other, and asking all of them would have each
// send the same entries. Periodic anti-entropy covers the rest.
func (g *Group) requestDigests(a *attachment) {
	targets := g.targets()
	if len(targets) == 0 {
		return
	}
	t := targets[rand.IntN(len(targets))]
	d := digest{flags: flagReply, sender: g.cfg.Name, addr: g.addr, tables: []tableDigest{a.digest(0)}}
	if err := g.ml.SendReliable(t, d.encode(nil)); err != nil {
		g.st.sendErrors.Add(1)
		g.log.Debug("digest request failed", zap.String("to", t.Name), zap.Error(err))
		return
	}
	a.exchanged.Store(true)
}

// exchangeWith sends the named member our digests of tables (flagReply),
// so each side then sends the other what it lacks. Membership changes
// call it for every pair of members.
func (g *Group) exchangeWith(name string, tables []*attachment) {
	if len(tables) == 0 {
		return
	}
	var target *memberlist.Node
	for _, n := range g.targets() {
		if n.Name == name {
			target = n
		}
	}
	if target == nil {
		return
	}
	d := digest{flags: flagReply, sender: g.cfg.Name, addr: g.addr}
	for _, a := range tables {
		if a.catchingUp() {
			continue
		}
		d.tables = append(d.tables, a.recentDigest(0, time.Second))
		a.exchanged.Store(true)
	}
	if len(d.tables) == 0 {
		return
	}
	if err := g.ml.SendReliable(target, d.encode(nil)); err != nil {
		g.st.sendErrors.Add(1)
		g.log.Debug("digest exchange failed", zap.String("to", name), zap.Error(err))
	}
}

// spread runs, shortly after anti-entropy changed table a here, one digest
// exchange with every other member: a node that heals a partition through
// one member passes what it learned on, instead of leaving the others to
// the next periodic round. Transfers that arrive meanwhile join the same
// round. It stops by itself: an exchange that changes nothing spreads
// nothing.
func (g *Group) spread(a *attachment) {
	if !a.spreading.CompareAndSwap(false, true) {
		return
	}
	g.spawn(func() {
		for first := true; first || a.catchingUp(); first = false {
			select {
			case <-g.stop:
				a.spreading.Store(false)
				return
			case <-time.After(spreadDelay):
			}
		}
		a.spreading.Store(false)
		for _, n := range g.targets() {
			g.exchangeWith(n.Name, []*attachment{a})
		}
	})
}

// handleDigest compares a member's digest with ours and sends it the
// entries of every bucket that differs, and answers with our digest if
// asked (flagReply), so the asker can send us what we lack.
func (g *Group) handleDigest(d *digest) { g.handleDigestWith(d, g.startSync) }

// handleDigestWith is handleDigest with the transfer starter given, for
// tests.
func (g *Group) handleDigestWith(d *digest, startSync func(*memberlist.Node, *attachment, []bool, uint8, bool)) {
	if d.sender == g.cfg.Name {
		return
	}
	target := g.resolve(d.sender, d.addr)
	if target == nil {
		// Entries go only to members, at the address memberlist knows
		// them by: a digest cannot have a table streamed elsewhere.
		g.st.nonMembers.Add(1)
		g.badWarn.log(g.log, "refused a digest from a node that is not a member at that address",
			zap.String("sender", d.sender), zap.String("addr", d.addr))
		if g.member(d.sender) == nil {
			// Not a member at all (rather than one at another
			// address): maybe gossip missed it.
			g.repairMembership(d.sender)
		}
		return
	}
	if p := g.member(d.sender); p != nil {
		p.lastContact.Store(g.now().UnixNano())
	}
	limit := g.versionLimit(g.now())
	var reply digest
	if d.flags&flagReply != 0 {
		reply = digest{sender: g.cfg.Name, addr: g.addr}
	}
	for i := range d.tables {
		rd := &d.tables[i]
		a := g.attachment(rd.name)
		if a == nil {
			continue
		}
		if rd.shape != a.shape {
			g.st.shapeRefused.Add(1)
			g.warnOnce(rd.name, "refused a digest for a table of another key type or length (every node must configure the table alike)",
				zap.String("peer", d.sender), zap.Stringer("theirs", rd.shape), zap.Stringer("ours", a.shape))
			continue
		}
		if rd.markVersion > limit {
			// A clear mark from too far ahead is ignored, not compared: we
			// would answer it with our own mark, which it outranks.
			g.st.clockRefused.Add(1)
			rd.markVersion, rd.markNode = 0, ""
		}
		if d.flags&flagReply != 0 && !a.catchingUp() {
			reply.tables = append(reply.tables, a.recentDigest(0, time.Second))
		}
		// Compare at the sender's bucket count, whatever ours would be
		// (one side may be empty, the other full).
		ld := a.recentDigest(rd.bits, time.Second)
		diff := make([]bool, len(ld.buckets))
		n := 0
		for j := range ld.buckets {
			if ld.bucketDiffers(j, rd) {
				diff[j] = true
				n++
			}
		}
		mark := ld.markVersion != 0 &&
			sticktable.CompareVersions(ld.markVersion, ld.markNode, rd.markVersion, rd.markNode) > 0
		if n > 0 || mark {
			startSync(target, a, diff, rd.bits, mark)
		}
	}
	if d.flags&flagReply != 0 && len(reply.tables) > 0 {
		if err := g.ml.SendReliable(target, reply.encode(nil)); err != nil {
			g.st.sendErrors.Add(1)
			g.log.Debug("digest reply failed", zap.String("to", target.Name), zap.Error(err))
		}
	}
}

// resolve finds a current member by name, and only if addr is the address
// memberlist knows it by (its advertised address).
func (g *Group) resolve(name, addr string) *memberlist.Node {
	g.mu.RLock()
	defer g.mu.RUnlock()
	p := g.peers[name]
	if p == nil || p.state != "alive" || p.addr != addr || p.node == nil {
		return nil
	}
	return p.node
}

// startSync streams the entries of the differing buckets to target in
// the background, so memberlist's push/pull handler is not held up.
func (g *Group) startSync(target *memberlist.Node, a *attachment, diff []bool, bits uint8, mark bool) {
	// One transfer per member and table at a time: a second digest
	// arriving while the first transfer runs (join plus attach, or a slow
	// transfer overlapping the next round) would mostly resend the same
	// entries; whatever it alone would have sent, the next round sends.
	key := target.Name + "\x00" + a.name
	g.mu.Lock()
	if g.syncing[key] {
		g.mu.Unlock()
		return
	}
	g.syncing[key] = true
	g.mu.Unlock()
	g.spawn(func() {
		defer func() {
			g.mu.Lock()
			delete(g.syncing, key)
			g.mu.Unlock()
		}()
		select {
		case g.syncSem <- struct{}{}:
		case <-g.stop:
			return
		}
		defer func() { <-g.syncSem }()
		g.st.syncRounds.Add(1)
		g.sendBuckets(target, a, diff, bits, mark)
	})
}

func (g *Group) sendBuckets(target *memberlist.Node, a *attachment, diff []bool, bits uint8, mark bool) {
	enc := newBatchEncoder(a.name, g.cfg.Name, a.shape, flagSync, syncLimit)
	var buf, kb []byte
	total := 0
	ok := true
	send := func() {
		n := enc.count
		buf = enc.finish(buf[:0])
		// A transient failure (a busy peer, a timeout) should not leave
		// the rest of the transfer to the next round, seconds away.
		for try := 0; ; try++ {
			if g.sendTo(target, buf, n, true) {
				total += n
				return
			}
			if try == 2 {
				ok = false
				return
			}
			select {
			case <-g.stop:
				ok = false
				return
			case <-time.After(time.Duration(try+1) * 200 * time.Millisecond):
			}
		}
	}
	a.t.RangeChanges(func(c sticktable.Change) bool {
		select {
		case <-g.stop:
			return false
		default:
		}
		if c.Op == sticktable.OpClear {
			if !mark {
				return true
			}
		} else {
			kb = c.Key.AppendBytes(kb[:0])
			if !diff[bucketOf(xxhash.Sum64(kb), bits)] {
				return true
			}
		}
		if !enc.add(&c) {
			send()
			enc.add(&c)
		}
		return ok
	})
	if ok && enc.count > 0 {
		send()
	}
	g.st.syncEntries.Add(uint64(total))
	log := g.log.Debug
	if total >= 1000 {
		log = g.log.Info // a node catching up: worth seeing in the log
	}
	log("anti-entropy sent", zap.String("table", a.name), zap.String("to", target.Name), zap.Int("entries", total))
}
