package sticktable

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"time"
)

// backend is the key-type-specific half of a Table, for everything but
// the hot paths (match and store), which Table calls on the concrete
// engine so escape analysis can see through them. Each key type gets an
// engine with its own Go map key type (uint32 for ip, [16]byte for ipv6,
// uint64 for integer, string otherwise) so ip entries do not pay for
// 16-byte keys and string keys do not pay for fixed arrays.
type backend interface {
	remove(k Key, now int64) bool
	apply(k Key, c *Change, now int64) (bool, error)
	applyBatch(cs []Change, now int64, scratch *[]bulkItem) int
	clearServer(server string, now int64) int
	sweepMark(m *clearMark, now int64) int
	observe(v uint64)
	lastVersion() uint64
	reap(now int64, from int, budget time.Duration) (n, next int, done bool)
	scan(now int64, tombs, wholeShards bool, fn func([]Entry) bool)
	resize(size int, now int64)
	capExpiry(entryDeadline, tombDeadline int64)
	sumStats(st *Stats)
	servers(counts map[string]int)
	shardCount() int
	check() error
}

type engine[K comparable] struct {
	t       *Table
	shards  []shard[K]
	shift   uint // 64 - log2(len(shards)): shard = hash >> shift
	fromKey func(Key) K
	toKey   func(K) Key
	own     func(K) K // copies caller memory out of a key about to be stored
}

// newEngine builds an engine for keys stored as K: fromKey and toKey
// convert, own copies caller memory out of a key about to be stored, and
// hash must equal t.hashKey of the converted key (TestEngineHashMatches).
func newEngine[K comparable](t *Table, shards, size int, fromKey func(Key) K, toKey func(K) Key, own func(K) K, hash func(K) uint64) *engine[K] {
	g := &engine[K]{t: t, shards: make([]shard[K], shards), fromKey: fromKey, toKey: toKey, own: own}
	g.shift = 64
	for n := shards; n > 1; n >>= 1 {
		g.shift--
	}
	for i, l := range splitSize(size, shards) {
		g.shards[i].init(l, hash, &t.tally)
	}
	return g
}

// splitSize divides size exactly so the shard limits add up to it.
func splitSize(size, shards int) []uint32 {
	out := make([]uint32, shards)
	for i := range out {
		out[i] = uint32(size / shards)
		if i < size%shards {
			out[i]++
		}
	}
	return out
}

// shardFor returns the key's shard and its hash within the shard. The shard is chosen
// by an unseeded hash, the same on every node, so tables of one size split
// their keys alike and a full table evicts the same keys as its peers
// (with per-node shards, full tables could never agree); the hash within
// the shard stays seeded against crafted collisions.
func (g *engine[K]) shardFor(k *Key) (*shard[K], uint64) {
	h := g.t.hashKey(k)
	if len(g.shards) == 1 {
		return &g.shards[0], h
	}
	return &g.shards[shardHash(k)>>g.shift], h
}

func (g *engine[K]) shardCount() int { return len(g.shards) }

// match fills out (on a hit) and returns the outcome; out is a pointer so
// the entry is built once, in the caller's frame.
func (g *engine[K]) match(k Key, touch bool, out *Entry) Outcome {
	t := g.t
	kk := g.fromKey(k)
	s, h := g.shardFor(&k)
	s.prefetchHome(h)
	now := t.now()
	s.mu.Lock()
	i, ok := s.find(h, kk)
	if !ok {
		if touch {
			s.c.misses.Add(1)
		}
		s.mu.Unlock()
		return OutcomeMiss
	}
	e := s.at(i)
	if e.server == 0 {
		if touch {
			s.c.misses.Add(1)
		}
		s.mu.Unlock()
		return OutcomeMiss
	}
	if !s.alive(e, now, t.mark.Load()) {
		if !touch {
			s.mu.Unlock()
			return OutcomeMiss
		}
		s.drop(i) // we hold the lock and the slot is hot: reclaim it now
		s.c.expired.Add(1)
		s.c.reaped.Add(1)
		s.mu.Unlock()
		return OutcomeExpired
	}
	if !touch {
		s.entry(e, k, out)
		s.mu.Unlock()
		return OutcomeHit
	}
	s.c.hits.Add(1)
	expire := t.expire.Load()
	if now+expire-e.expires < t.gran.Load() {
		// the common hit: refreshed recently, nothing to write (inline,
		// as a call here costs a visible share of an in-cache lookup)
		s.entry(e, k, out)
		s.mu.Unlock()
		return OutcomeHit
	}
	g.refreshUnlock(s, e, i, k, now, expire, out)
	return OutcomeHit
}

// refreshUnlock pushes a live entry's expiry out and moves it to the front
// of the LRU list, then unlocks the shard and reports the refresh. An entry
// refreshed less than the granularity ago is left untouched (no write, no
// relink); see the package documentation on granularity. The caller holds
// s.mu; it is released here, before the change is emitted.
func (g *engine[K]) refreshUnlock(s *shard[K], e *slot[K], i uint32, k Key, now, expire int64, out *Entry) {
	t := g.t
	if now+expire-e.expires < t.gran.Load() {
		s.entry(e, k, out)
		s.mu.Unlock()
		return
	}
	e.expires = now + expire
	s.toFront(lruHead, i)
	s.entry(e, k, out)
	emit := t.onChange.Load() != nil
	var ch Change
	if emit {
		ch = s.change(OpRefresh, e, g.toKey(e.key), expire)
	}
	s.mu.Unlock()
	if emit {
		t.emit(ch)
	}
}

// storeMode says how a store treats a live entry for another server.
type storeMode uint8

const (
	// storeOverwrite replaces it: a re-stick, an explicit change.
	storeOverwrite storeMode = iota
	// storePlace keeps it: insert if absent (a reservation, or the
	// confirmation of one), which makes the store a placement.
	storePlace
	// storePin writes a new explicit version whatever the entry holds.
	storePin
)

// store writes k -> server. It reports whether it wrote (false: a
// storePlace found a live entry, returned in out and refreshed).
func (g *engine[K]) store(k Key, server string, mode storeMode, now int64, out *Entry) (bool, error) {
	t := g.t
	kk := g.fromKey(k)
	s, h := g.shardFor(&k)
	expire := t.expire.Load()
	s.mu.Lock()
	m := t.mark.Load()
	i, found := s.find(h, kk)
	var e *slot[K]
	alive := false
	if found {
		e = s.at(i)
		alive = e.server != 0 && s.alive(e, now, m)
		if alive && mode != storePin && (mode == storePlace || s.servers.list[e.server] == server) {
			// Same server, or a placement that finds the key placed: a
			// refresh, which keeps the version (nothing a peer has to
			// arbitrate changed) but pushes the expiry out.
			s.c.stores.Add(1)
			g.refreshUnlock(s, e, i, k, now, expire, out)
			return false, nil
		}
	}
	srv, ok := s.servers.acquire(server)
	if !ok {
		s.mu.Unlock()
		return false, fmt.Errorf("%w: cannot add %q", ErrTooManyServers, server)
	}
	node := s.localNode(t)
	origin := OriginExplicit
	op := OpStore
	var version uint64
	switch {
	case alive || mode == storePin:
		version = s.explicitVersion(now, e, found)
		if mode == storePin {
			op = OpPin
		}
	default:
		version = s.clock.next(now / int64(time.Millisecond))
		// Nothing live here: a placement, based on whatever the slot
		// still holds (a tombstone, an expired entry).
		var pv uint64
		var po uint32
		if found {
			pv, po = e.version, e.origin
		}
		origin = placementOrigin(version, found, pv, po)
	}
	if found {
		switch {
		case e.server == 0:
			s.setTombs(s.tombs - 1)
			s.setLive(s.live + 1)
		case !alive:
			s.c.reaped.Add(1)
			fallthrough
		default:
			s.servers.release(e.server)
		}
		s.nodes.release(e.node)
		s.unlink(i)
	} else {
		if !s.makeRoom(now, !t.nopurge.Load()) {
			s.servers.release(srv)
			s.c.refused.Add(1)
			s.mu.Unlock()
			return false, ErrFull
		}
		i = s.insert(h)
		e = s.at(i)
		e.key = g.own(kk)
		s.setLive(s.live + 1)
	}
	s.nodes.hold(node)
	e.server, e.node, e.origin = srv, node, origin
	e.version = version
	if !alive {
		s.servers.sawNewUser(srv, e.version) // a key with no live entry: a new user
	}
	e.expires = now + expire
	s.pushFront(lruHead, i)
	s.c.stores.Add(1)
	s.entry(e, k, out)
	emit := t.onChange.Load() != nil
	var ch Change
	if emit {
		ch = s.change(op, e, g.toKey(e.key), expire)
	}
	s.mu.Unlock()
	if emit {
		t.emit(ch)
	}
	return true, nil
}

func (g *engine[K]) remove(k Key, now int64) bool {
	t := g.t
	kk := g.fromKey(k)
	s, h := g.shardFor(&k)
	retention := t.retention.Load()
	s.mu.Lock()
	i, found := s.find(h, kk)
	if !found {
		s.mu.Unlock()
		return false
	}
	e := s.at(i)
	if e.server == 0 {
		s.mu.Unlock()
		return false
	}
	if !s.alive(e, now, t.mark.Load()) {
		s.drop(i)
		s.c.reaped.Add(1)
		s.mu.Unlock()
		return false
	}
	node := s.localNode(t)
	version := s.explicitVersion(now, e, true)
	s.servers.release(e.server)
	s.nodes.release(e.node)
	s.nodes.hold(node)
	e.server, e.node, e.origin = 0, node, OriginExplicit
	e.version = version
	e.expires = now + retention
	s.unlink(i)
	s.pushFront(tombHead, i)
	s.setLive(s.live - 1)
	s.setTombs(s.tombs + 1)
	emit := t.onChange.Load() != nil
	var ch Change
	if emit {
		ch = s.change(OpDelete, e, g.toKey(e.key), retention)
	}
	s.mu.Unlock()
	if emit {
		t.emit(ch)
	}
	return true
}

// remoteWrite works out what a replicated change would install: the life
// it gets here (capped by this table's Expire or Retention; 0 or less
// means it is dead on arrival) and its origin.
func (t *Table) remoteWrite(c *Change) (life int64, origin uint32, tomb bool) {
	tomb = c.Op == OpDelete
	if tomb {
		life = t.retention.Load()
		if c.TTL > 0 {
			life = min(life, int64(c.TTL))
		}
		return life, OriginExplicit, true
	}
	return min(int64(c.TTL), t.expire.Load()), c.Origin, false
}

// staleRemote reports whether a replicated change can be dropped without
// looking at the table: dead on arrival, or covered by the Clear watermark.
func staleRemote(life int64, c *Change, m *clearMark) bool {
	return life <= 0 || (m != nil && CompareVersions(c.Version, c.Node, m.version, m.node) <= 0)
}

func (g *engine[K]) apply(k Key, c *Change, now int64) (bool, error) {
	t := g.t
	life, origin, tomb := t.remoteWrite(c)
	kk := g.fromKey(k)
	s, h := g.shardFor(&k)
	m := t.mark.Load()
	if staleRemote(life, c, m) {
		s.c.stale.Add(1)
		return false, nil
	}
	s.mu.Lock()
	ok, err := g.applyLocked(s, h, kk, false, c, life, origin, tomb, now, m)
	s.mu.Unlock()
	return ok, err
}

// applyLocked is apply's body, with s.mu held. owned says kk is already
// the table's own copy (a key decoded from a snapshot), so it is not
// copied again.
func (g *engine[K]) applyLocked(s *shard[K], h uint64, kk K, owned bool, c *Change, life int64, origin uint32, tomb bool, now int64, m *clearMark) (bool, error) {
	t := g.t
	remote := Write{Version: c.Version, Node: c.Node, Origin: origin, Deleted: tomb, Server: c.Server}
	deadline := now + life
	s.clock.Observe(c.Version)
	i, found := s.find(h, kk)
	var e *slot[K]
	if found {
		e = s.at(i)
		if s.alive(e, now, m) {
			switch cmp := CompareWrites(s.write(e), remote); {
			case cmp == 0:
				// The same write again (a refresh travels this way):
				// keep the later deadline, which is what makes
				// repeated and reordered deliveries harmless.
				grew := deadline - e.expires
				if grew > 0 {
					e.expires = deadline
					if grew >= t.gran.Load() {
						head := uint32(lruHead)
						if e.server == 0 {
							head = tombHead
						}
						s.unlink(i)
						s.insertByExpiry(head, i)
					}
					s.c.applied.Add(1)
				} else {
					s.c.stale.Add(1)
				}
				return grew > 0, nil
			case cmp > 0:
				s.c.stale.Add(1)
				return false, nil
			}
		}
	}
	if !found && !s.roomForRemote(now, deadline, !tomb && !t.nopurge.Load()) {
		if tomb || !t.nopurge.Load() {
			// A tombstone for a key we do not have only guards against
			// stale writes; an entry older than everything a full table
			// holds is what it would evict next: neither is worth
			// evicting anything for.
			s.c.stale.Add(1)
			return false, nil
		}
		s.c.refused.Add(1)
		return false, ErrFull
	}
	var srv uint16
	if !tomb {
		var ok bool
		if srv, ok = s.servers.acquire(c.Server); !ok {
			return false, fmt.Errorf("%w: cannot add %q", ErrTooManyServers, c.Server)
		}
	}
	node, ok := s.nodes.acquire(c.Node)
	if !ok {
		s.servers.release(srv)
		return false, fmt.Errorf("%w: cannot add node %q", ErrTooManyServers, c.Node)
	}
	newUser := !tomb && (!found || e.server == 0 || !s.alive(e, now, m))
	if found {
		if e.server != 0 {
			s.servers.release(e.server)
			s.setLive(s.live - 1)
		} else {
			s.setTombs(s.tombs - 1)
		}
		s.nodes.release(e.node)
		s.unlink(i)
	} else {
		i = s.insert(h)
		e = s.at(i)
		if owned {
			e.key = kk
		} else {
			e.key = g.own(kk)
		}
	}
	e.server, e.node, e.version, e.expires, e.origin = srv, node, c.Version, deadline, origin
	if newUser {
		s.servers.sawNewUser(srv, c.Version)
	}
	if tomb {
		s.insertByExpiry(tombHead, i)
		s.setTombs(s.tombs + 1)
	} else {
		s.insertByExpiry(lruHead, i)
		s.setLive(s.live + 1)
	}
	s.c.applied.Add(1)
	return true, nil
}

// bulkItem is one change of an applyBatch, placed.
type bulkItem struct {
	shard    uint32
	change   uint32 // index into the batch
	hash     uint64
	deadline int64
}

// applyBatch applies many replicated changes (from a snapshot) with
// Apply's rules, and returns how many changed the table. Instead of a
// lock round trip and a shard lookup per change, it places every change
// first, then takes each shard's lock once per run of at most workBatch
// of its changes (so lookups on the shard still wait only for a small
// batch), applying them in ascending order of deadline: each is then
// usually the newest its list has seen, which insertByExpiry links in
// O(1) where an unsorted stream could make it search. Apply is a maximum
// under a total order, so the order changes nothing but that cost. Keys
// must be ones the table decoded itself (they are stored without a copy).
func (g *engine[K]) applyBatch(cs []Change, now int64, scratch *[]bulkItem) int {
	t := g.t
	m := t.mark.Load()
	all := (*scratch)[:0]
	items := all
	for ci := range cs {
		c := &cs[ci]
		life, _, _ := t.remoteWrite(c)
		s, h := g.shardFor(&c.Key)
		if staleRemote(life, c, m) {
			s.c.stale.Add(1)
			continue
		}
		si := uint32(0)
		if len(g.shards) > 1 {
			si = uint32(shardHash(&c.Key) >> g.shift)
		}
		all = append(all, bulkItem{shard: si, change: uint32(ci), hash: h, deadline: now + life})
	}
	items = all
	slices.SortStableFunc(items, func(a, b bulkItem) int {
		if a.shard != b.shard {
			return cmp.Compare(a.shard, b.shard)
		}
		return cmp.Compare(a.deadline, b.deadline)
	})
	n := 0
	reserved := -1
	for len(items) > 0 {
		si := items[0].shard
		run := 1
		for run < len(items) && run < workBatch && items[run].shard == si {
			run++
		}
		s := &g.shards[si]
		s.mu.Lock()
		if int(si) != reserved {
			// the shard's first run: make room for all its records at
			// once, so the restore rebuilds the shard once, not at
			// every quarter of growth
			reserved = int(si)
			all := run
			for all < len(items) && items[all].shard == si {
				all++
			}
			s.reserve(uint32(all))
		}
		for _, it := range items[:run] {
			c := &cs[it.change]
			life, origin, tomb := t.remoteWrite(c)
			if ok, _ := g.applyLocked(s, it.hash, g.fromKey(c.Key), true, c, life, origin, tomb, now, m); ok {
				n++
			}
		}
		s.mu.Unlock()
		items = items[run:]
		if len(items) > 0 && items[0].shard == si {
			yieldLock()
		}
	}
	*scratch = all[:0]
	return n
}

// walk calls batch for consecutive ranges of at most workBatch slot
// numbers of s with the lock held (batch may drop or rewrite those slots)
// and after each with the lock released; either returning false ends the
// walk. Rebuilds are held off meanwhile, so every slot that is not freed
// and reused during the walk is visited exactly once; if inserts between
// batches fill the shard to its hard limit and force a rebuild anyway
// (see insert), the walk starts the shard over and may visit some entries
// twice, which every walk tolerates (its changes are idempotent, and a
// scan's consumers keep the later of two copies of an entry).
func walk[K comparable](s *shard[K], batch func(from, to uint32) bool, after func() bool) {
	s.mu.Lock()
	s.scanners++
	pos, gen := uint32(firstSlot), s.gen
	for {
		if s.gen != gen {
			pos, gen = firstSlot, s.gen
		}
		top := uint32(len(s.cells))
		end := top
		if top-pos > workBatch {
			end = pos + workBatch
		}
		more := batch(pos, end) && end < top
		pos = end
		if !more {
			s.scanners--
		}
		s.mu.Unlock()
		if !after() || !more {
			if more {
				s.mu.Lock()
				s.scanners--
				s.mu.Unlock()
			}
			return
		}
		yieldLock()
		s.mu.Lock()
	}
}

// yieldLock lets goroutines that queued on a shard lock during a batch of
// bulk work take it before the bulk work takes it again. Unlocking alone
// is not enough: the woken waiter is queued on this goroutine's P and
// would wait for it to block, while sync.Mutex lets us re-acquire first;
// waiters would only get in after a millisecond, when the mutex switches
// to starvation mode. That millisecond showed up as lookup p99.9 latency
// while a million entries expired.
func yieldLock() { runtime.Gosched() }

func (g *engine[K]) clearServer(server string, now int64) int {
	t := g.t
	retention := t.retention.Load()
	emit := t.onChange.Load() != nil
	n := 0
	var chs []Change
	for si := range g.shards {
		s := &g.shards[si]
		s.mu.Lock()
		_, ok := s.servers.byName[server]
		var v uint64
		var node uint16
		if ok {
			// One version for the whole shard; entries written after it
			// (between batches) carry higher versions and are left alone.
			// It starts a new millisecond, so its base is above that of
			// every write it deletes (see explicitVersion).
			v = s.clock.next(now / int64(time.Millisecond))
			v = ((v >> LogicalBits) + 1) << LogicalBits
			s.clock.Observe(v)
			node = s.localNode(t)
		}
		s.mu.Unlock()
		if !ok {
			continue
		}
		walk(s, func(from, to uint32) bool {
			chs = chs[:0]
			j, ok := s.servers.byName[server]
			if !ok {
				return false
			}
			m := t.mark.Load()
			for i := from; i < to; i++ {
				e := s.at(i)
				if s.vacant(i) || e.server != j || e.version >= v {
					continue
				}
				if !s.alive(e, now, m) {
					s.drop(i)
					s.c.reaped.Add(1)
					continue
				}
				s.servers.release(e.server)
				s.nodes.release(e.node)
				s.nodes.hold(node)
				e.server, e.node, e.version, e.expires, e.origin = 0, node, v, now+retention, OriginExplicit
				s.unlink(i)
				s.pushFront(tombHead, i)
				s.setLive(s.live - 1)
				s.setTombs(s.tombs + 1)
				n++
				if emit {
					chs = append(chs, s.change(OpDelete, e, g.toKey(e.key), retention))
				}
			}
			return true
		}, func() bool {
			for _, c := range chs {
				t.emit(c)
			}
			return true
		})
	}
	return n
}

func (g *engine[K]) sweepMark(m *clearMark, now int64) int {
	n := 0
	for si := range g.shards {
		s := &g.shards[si]
		walk(s, func(from, to uint32) bool {
			for i := from; i < to; i++ {
				e := s.at(i)
				if s.vacant(i) || !s.dead(e, m) {
					continue
				}
				if e.server != 0 {
					n++
				}
				s.drop(i)
			}
			return true
		}, func() bool { return true })
	}
	return n
}

func (g *engine[K]) observe(v uint64) {
	for si := range g.shards {
		g.shards[si].clock.Observe(v)
	}
}

func (g *engine[K]) lastVersion() uint64 {
	var v uint64
	for si := range g.shards {
		v = max(v, g.shards[si].clock.Last())
	}
	return v
}

// reap frees expired slots shard by shard, starting at shard from and
// going round once. With a budget above zero it stops once that much time
// has gone by, returning done false and the shard to resume at.
func (g *engine[K]) reap(now int64, from int, budget time.Duration) (n, next int, done bool) {
	var start time.Time
	if budget > 0 {
		start = time.Now()
	}
	for k := range len(g.shards) {
		si := (from + k) % len(g.shards)
		s := &g.shards[si]
		for {
			s.mu.Lock()
			freed, more := s.reapBatch(now, reapBatch)
			if !more {
				freed += s.sweep(now, g.t.mark.Load(), sweepBatch)
				s.maybeCompact()
			}
			s.mu.Unlock()
			n += freed
			if !more && k == len(g.shards)-1 {
				return n, from, true
			}
			if budget > 0 && time.Since(start) >= budget {
				if more {
					return n, si, false
				}
				return n, (si + 1) % len(g.shards), false
			}
			if !more {
				break
			}
			yieldLock()
		}
	}
	return n, from, true
}

// scan calls fn with batches of the live entries (and tombstones, with
// tombs), or with wholeShards once per shard with all of its entries (in
// parts of at least wholeShardMax entries for a shard bigger than that,
// so a scan holds at most about that many at once).
// wholeShardMax bounds the entries a whole-shard scan holds at once
// (about 7 MiB of them); shards chosen by autoShards never reach it.
const wholeShardMax = 1 << 16

func (g *engine[K]) scan(now int64, tombs, wholeShards bool, fn func([]Entry) bool) {
	buf := make([]Entry, 0, workBatch)
	for si := range g.shards {
		s := &g.shards[si]
		stop := false
		if wholeShards {
			buf = buf[:0]
		}
		walk(s, func(from, to uint32) bool {
			if !wholeShards || from == firstSlot {
				// with wholeShards, a walk that starts the shard over
				// (after a forced rebuild) starts its entries over too
				buf = buf[:0]
			}
			m := g.t.mark.Load()
			for i := from; i < to; i++ {
				e := s.at(i)
				if s.vacant(i) || !s.alive(e, now, m) || (e.server == 0 && !tombs) {
					continue
				}
				buf = append(buf, Entry{})
				s.entry(e, g.toKey(e.key), &buf[len(buf)-1])
			}
			return true
		}, func() bool {
			if wholeShards && len(buf) < wholeShardMax {
				return true
			}
			// a shard too big to hold at once goes in parts, each
			// whole in itself
			stop = len(buf) > 0 && !fn(buf)
			buf = buf[:0]
			return !stop
		})
		if wholeShards && len(buf) > 0 {
			stop = !fn(buf)
		}
		if stop {
			return
		}
	}
}

func (g *engine[K]) resize(size int, now int64) {
	for si, limit := range splitSize(size, len(g.shards)) {
		s := &g.shards[si]
		s.mu.Lock()
		s.limit = limit
		for s.live+s.tombs > s.limit {
			for k := 0; k < workBatch && s.live+s.tombs > s.limit; k++ {
				s.evictOne(now, true)
			}
			s.mu.Unlock()
			yieldLock()
			s.mu.Lock()
		}
		s.maybeCompact()
		s.mu.Unlock()
	}
}

func (g *engine[K]) capExpiry(entryDeadline, tombDeadline int64) {
	for si := range g.shards {
		s := &g.shards[si]
		walk(s, func(from, to uint32) bool {
			for i := from; i < to; i++ {
				e := s.at(i)
				switch {
				case s.vacant(i):
				case e.server != 0:
					e.expires = min(e.expires, entryDeadline)
				default:
					e.expires = min(e.expires, tombDeadline)
				}
			}
			return true
		}, func() bool { return true })
	}
}

func (g *engine[K]) sumStats(st *Stats) {
	for si := range g.shards {
		c := &g.shards[si].c
		st.Hits += c.hits.Load()
		st.Misses += c.misses.Load()
		st.Expired += c.expired.Load()
		st.Stores += c.stores.Load()
		st.Evictions += c.evictions.Load()
		st.Refused += c.refused.Load()
		st.Reaped += c.reaped.Load()
		st.Applied += c.applied.Load()
		st.Stale += c.stale.Load()
		st.Entries += int(c.entries.Load())
		st.Tombstones += int(c.tombstones.Load())
	}
}

func (g *engine[K]) servers(counts map[string]int) {
	for si := range g.shards {
		s := &g.shards[si]
		s.mu.Lock()
		for i, name := range s.servers.list {
			if i > 0 && s.servers.refs[i] > 0 {
				counts[name] += int(s.servers.refs[i])
			}
		}
		s.mu.Unlock()
	}
}

// check verifies the shard invariants; tests and fuzzers call it through
// Table.check after every kind of operation.
func (g *engine[K]) check() error {
	for si := range g.shards {
		s := &g.shards[si]
		s.mu.Lock()
		err := g.checkShard(si, s)
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return g.checkCounts()
}

func (g *engine[K]) checkShard(si int, s *shard[K]) error {
	if s.live+s.tombs > s.limit {
		return fmt.Errorf("shard %d: %d entries + %d tombstones over limit %d", si, s.live, s.tombs, s.limit)
	}
	last := uint32(len(s.cells))
	if len(s.ctrl) != len(s.cells) || last < firstSlot+minCells {
		return fmt.Errorf("shard %d: %d cells, %d control bytes", si, len(s.cells), len(s.ctrl))
	}
	full, deleted, empty := uint32(0), uint32(0), uint32(0)
	for i := uint32(firstSlot); i < last; i++ {
		e := s.at(i)
		switch c := s.ctrl[i]; {
		case c >= cellFull:
			full++
			h := s.hash(e.key)
			if c != tagOf(h) {
				return fmt.Errorf("shard %d: cell %d control %x, its key's tag %x", si, i, c, tagOf(h))
			}
			if j, ok := s.find(h, e.key); !ok || j != i {
				return fmt.Errorf("shard %d: cell %d key not found at it", si, i)
			}
		case *e != (slot[K]{}):
			return fmt.Errorf("shard %d: free cell %d not cleared", si, i)
		case c == cellDeleted:
			deleted++
		case c == cellEmpty:
			empty++
		default:
			return fmt.Errorf("shard %d: cell %d control %x", si, i, c)
		}
	}
	if full != s.live+s.tombs || deleted != s.deleted || empty == 0 {
		return fmt.Errorf("shard %d: %d full cells (counts say %d), %d deleted (%d), %d empty",
			si, full, s.live+s.tombs, deleted, s.deleted, empty)
	}
	if uint64(full+deleted)*16 > uint64(last-firstSlot)*15 {
		return fmt.Errorf("shard %d: %d of %d cells in use, over the hard limit", si, full+deleted, last-firstSlot)
	}
	if int64(s.live) != s.c.entries.Load() || int64(s.tombs) != s.c.tombstones.Load() {
		return fmt.Errorf("shard %d: counter mirrors out of date", si)
	}
	refs := make([]int32, len(s.servers.refs))
	nodeRefs := make([]int32, len(s.nodes.refs))
	if s.localIx != 0 {
		nodeRefs[s.localIx]++
	}
	for _, head := range [...]uint32{lruHead, tombHead} {
		n := uint32(0)
		prev := head
		for i := s.at(head).next; i != head; i = s.at(i).next {
			if i < firstSlot || i >= last || s.vacant(i) {
				return fmt.Errorf("shard %d: list link %d out of range or to a free cell", si, i)
			}
			e := s.at(i)
			if e.prev != prev {
				return fmt.Errorf("shard %d: slot %d prev %d, want %d", si, i, e.prev, prev)
			}
			if (e.server == 0) != (head == tombHead) {
				return fmt.Errorf("shard %d: slot %d on the wrong list", si, i)
			}
			if j, ok := s.find(s.hash(e.key), e.key); !ok || j != i {
				return fmt.Errorf("shard %d: slot %d key not indexed to it", si, i)
			}
			if e.version == 0 {
				return fmt.Errorf("shard %d: slot %d has version 0", si, i)
			}
			refs[e.server]++
			nodeRefs[e.node]++
			prev = i
			if n++; n > last {
				return fmt.Errorf("shard %d: list cycle", si)
			}
		}
		want := s.live
		if head == tombHead {
			want = s.tombs
		}
		if n != want {
			return fmt.Errorf("shard %d: list %d has %d slots, count %d", si, head, n, want)
		}
	}
	for i := 1; i < len(refs); i++ {
		if refs[i] != s.servers.refs[i] {
			return fmt.Errorf("shard %d: server %d (%q) has %d refs, counted %d", si, i, s.servers.list[i], s.servers.refs[i], refs[i])
		}
	}
	for i := 1; i < len(nodeRefs); i++ {
		if nodeRefs[i] != s.nodes.refs[i] {
			return fmt.Errorf("shard %d: node %d has %d refs, counted %d", si, i, s.nodes.refs[i], nodeRefs[i])
		}
	}
	return nil
}
