package sticktable

import (
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

const (
	// Positions 0 and 1 of a shard's cells are the sentinels of its two
	// circular lists; sentinels make link and unlink branch-free. Keys
	// live at positions from firstSlot on.
	lruHead   = 0
	tombHead  = 1
	firstSlot = 2

	// Control bytes, one per cell: empty (ends a probe), deleted (a probe
	// goes on past it; an insert may take it), or full, with seven bits of
	// the key's hash as a tag so probing rejects almost every other key
	// without reading its cell.
	cellEmpty   = 0
	cellDeleted = 1
	cellFull    = 0x80

	// workBatch bounds the slots that background and bulk work (reaping,
	// clearing, scanning, shrinking) touches per lock hold, so concurrent
	// lookups on the shard wait at most a few microseconds.
	workBatch = 128
	// reapBatch is smaller: reclaiming touches cold cells, their list
	// neighbours, the cells a backward shift moves and key bytes, several
	// cache misses each, and a lookup that lands on
	// the shard being reaped waits for the whole batch.
	reapBatch = 16
	// sweepBatch is how many slots per shard the reaper's clock hand
	// checks per tick, catching expired entries that are not at the tail
	// of their list (remote entries with a short remaining life).
	sweepBatch = 64

	maxNames = 1 << 16 // server and node indices are uint16

	// insertWalk bounds the slots insertByExpiry visits.
	insertWalk = 1024

	minCells = 16 // smallest number of key cells of a shard
	// compactFloor: shards with fewer key cells are not shrunk.
	compactFloor = 1024
)

// slot is one cell of a shard: an entry, a tombstone, or nothing. It is
// 40 bytes for ip and integer keys and 48 for ipv6, string and binary
// keys: the key, two list links, the write's origin (placement or explicit
// change, see merge.go), a 16-bit server index (0 = tombstone), a 16-bit
// origin node index, the expiry and the version.
type slot[K comparable] struct {
	expires int64  // Unix nanoseconds; for tombstones, the end of retention
	version uint64 // hybrid logical clock value of the last write
	key     K
	prev    uint32
	next    uint32
	origin  uint32 // how the write relates to explicit changes; see merge.go
	server  uint16
	node    uint16
}

// names interns the few distinct server or node names a shard references,
// so entries carry a 16-bit index instead of a string header. Indices are
// reference counted and reused once unreferenced, so upstreams that come
// and go (dynamic upstreams) never exhaust them. Index 0 is reserved: for
// servers it marks a tombstone, for nodes it is the empty node name.
type names struct {
	byName map[string]uint16
	list   []string
	refs   []int32
	free   []uint16
	// For server names only: the table's per-server record, told when a
	// name is interned and forgotten, and per index the newest new user;
	// see servercount.go.
	tally   *serverTally
	lastNew []int64
}

func newNames(zeroIsEmptyName bool) names {
	n := names{byName: map[string]uint16{}, list: []string{""}, refs: []int32{0}}
	if zeroIsEmptyName {
		n.byName[""] = 0
	}
	return n
}

// acquire returns name's index with one more reference.
func (n *names) acquire(name string) (uint16, bool) {
	if i, ok := n.byName[name]; ok {
		n.hold(i)
		return i, true
	}
	var i uint16
	if k := len(n.free); k > 0 {
		i, n.free = n.free[k-1], n.free[:k-1]
	} else {
		if len(n.list) >= maxNames {
			return 0, false
		}
		i = uint16(len(n.list))
		n.list = append(n.list, "")
		n.refs = append(n.refs, 0)
	}
	name = strings.Clone(name) // callers' strings may be views of request buffers
	n.byName[name], n.list[i], n.refs[i] = i, name, 1
	n.interned(i)
	return i, true
}

func (n *names) hold(i uint16) {
	if i != 0 {
		n.refs[i]++
	}
}

func (n *names) release(i uint16) {
	if i == 0 {
		return
	}
	if n.refs[i]--; n.refs[i] == 0 {
		n.forgotten(i)
		delete(n.byName, n.list[i])
		n.list[i] = ""
		n.free = append(n.free, i)
	}
}

// shardCounters are the per-shard metric counters. They are atomics, so
// Stats reads them without taking shard locks; they sit beside the shard
// mutex, in lines the writer already owns because it holds the mutex, so
// the increments are uncontended. The padding keeps the rest of the shard,
// read by every lookup and written only by stores, off these lines.
type shardCounters struct {
	hits, misses, expired atomic.Uint64
	stores, evictions     atomic.Uint64
	refused, reaped       atomic.Uint64
	applied, stale        atomic.Uint64
	entries, tombstones   atomic.Int64 // mirrors of live and tombs for lock-free Len
	compactions           atomic.Uint64
	_                     [8]uint64
}

type shard[K comparable] struct {
	// The lock and the lookup counters share a cache line: a lookup
	// writes both, and when the other core used the shard last, one line
	// moves between the cores instead of two.
	mu sync.Mutex
	c  shardCounters
	// cells is an open-addressing hash table (linear probing) that holds
	// the entries themselves, each at the position its key hashes to: a
	// hit reads its entry where it looks for it, one cache miss for the
	// cell at any table size, where a separate index costs a second,
	// dependent one. ctrl has a control byte per cell, a dense array the
	// probe reads instead of the cells. Positions are slot numbers: the
	// LRU and tombstone lists link them, and they change only when the
	// shard is rebuilt (grown, shrunk or cleaned of deleted cells), which
	// renumbers every slot at once.
	cells   []slot[K]
	ctrl    []uint8
	deleted uint32         // cells marked deleted
	hash    func(K) uint64 // the table's key hash, for rebuilds
	live    uint32         // entries, including expired ones not yet reclaimed
	tombs   uint32
	limit   uint32 // this shard's share of Size
	hand    uint32 // the reaper's sweep position
	// gen counts rebuilds, so a bulk walk can tell its positions went
	// stale and start the shard over.
	gen uint32
	// view is cells, published for prefetch, which reads it without the
	// lock (a stale view only prefetches a line in vain).
	view atomic.Pointer[[]slot[K]]
	// scanners counts bulk walks in progress. Rebuilds, which renumber
	// slots, wait until none is, so a walk never misses or repeats a
	// slot, unless inserts fill the cells to the hard limit first; the
	// walk then starts the shard over (see walk).
	scanners int32
	// Each shard has its own clock: last-writer-wins only needs a write to
	// a key to be versioned above every version that key has had, and all
	// writes to a key go through its shard, which observes every version it
	// installs. A shared clock would put a contended atomic on every store.
	clock   Clock
	servers names
	nodes   names
	local   string // node name localIx was interned for
	localIx uint16 // this shard's index of the local node; the shard holds a reference
	// finger is, per list, the slot insertByExpiry linked last
	finger [2]uint32
	// searches counts insertByExpiry calls that searched the list from
	// its ends (tests check that restores do not)
	searches uint64
	// pad rounds the shard to whole cache lines, so the lock of every
	// shard of the array starts a line (TestShardLayout)
	_ [24]byte
}

func (s *shard[K]) init(limit uint32, hash func(K) uint64, tally *serverTally) {
	s.hash = hash
	s.cells, s.ctrl = newCells[K](minCells)
	s.publish()
	s.hand, s.limit = firstSlot, limit
	s.servers, s.nodes = newNames(false), newNames(true)
	s.servers.tally = tally
}

// newCells returns n key cells, all empty, plus the two list sentinels,
// both lists empty.
func newCells[K comparable](n uint32) ([]slot[K], []uint8) {
	cells := make([]slot[K], firstSlot+n)
	cells[lruHead] = slot[K]{prev: lruHead, next: lruHead}
	cells[tombHead] = slot[K]{prev: tombHead, next: tombHead}
	ctrl := make([]uint8, firstSlot+n)
	ctrl[lruHead], ctrl[tombHead] = cellFull, cellFull // never probed; marked so no scan takes them for free cells
	return cells, ctrl
}

func (s *shard[K]) at(i uint32) *slot[K] { return &s.cells[i] }

func (s *shard[K]) publish() {
	cells := s.cells
	s.view.Store(&cells)
}

// prefetchHome starts loading the cell where the probe for hash h will
// start, before the caller takes the lock and reads the clock, so the
// cache miss a lookup at size costs overlaps that work instead of
// following it. Most keys sit in their home cell or the next one.
func (s *shard[K]) prefetchHome(h uint64) {
	if v := s.view.Load(); v != nil {
		cells := *v
		p := homeIn(h, len(cells))
		e := uintptr(unsafe.Pointer(&cells[p]))
		size := unsafe.Sizeof(cells[p])
		prefetch(e, e+size-1, e+size) // the cell's lines, and the next cell's start
	}
}

// home is where the probe for hash h starts: the high 32 bits scaled onto
// the key cells, which lets the cell count be any number (growth in small
// steps keeps the table dense, see capacityFor) at the cost of one
// multiplication.
func (s *shard[K]) home(h uint64) uint32 { return homeIn(h, len(s.cells)) }

// homeIn is home for a shard of cells cells, sentinels included.
func homeIn(h uint64, cells int) uint32 {
	return firstSlot + uint32((h>>32)*uint64(cells-firstSlot)>>32)
}

func tagOf(h uint64) uint8 { return cellFull | uint8(h&0x7f) }

func (s *shard[K]) unlink(i uint32) {
	e := s.at(i)
	s.at(e.prev).next = e.next
	s.at(e.next).prev = e.prev
}

func (s *shard[K]) pushFront(head, i uint32) {
	h, e := s.at(head), s.at(i)
	e.prev, e.next = head, h.next
	s.at(h.next).prev = i
	h.next = i
}

func (s *shard[K]) toFront(head, i uint32) {
	if s.at(head).next != i {
		s.unlink(i)
		s.pushFront(head, i)
	}
}

// drop removes slot i entirely: list links, name references, its cell.
func (s *shard[K]) drop(i uint32) {
	e := s.at(i)
	s.unlink(i)
	if e.server != 0 {
		s.servers.release(e.server)
		s.setLive(s.live - 1)
	} else {
		s.setTombs(s.tombs - 1)
	}
	s.nodes.release(e.node)
	*e = slot[K]{} // zeroing the key lets string keys be collected
	s.vacate(i)
}

// vacate marks cell i no longer full. Unless a bulk walk is running
// (which needs slots to stay put), it first fills the hole with entries
// displaced past it (backward shift, bounded: see shiftBack). The hole can
// then be empty, if the probe ends close after it, or must be marked
// deleted so probes go on past it; under steady churn in a full table,
// deleted cells would otherwise pile up and force a rebuild every few
// thousand evictions.
func (s *shard[K]) vacate(i uint32) {
	ends := false
	if s.scanners == 0 {
		i, ends = s.shiftBack(i)
	} else {
		ends = s.ctrl[s.next(i)] == cellEmpty
	}
	if !ends {
		s.ctrl[i] = cellDeleted
		s.deleted++
		return
	}
	// no probe needs cell i any more, nor a run of deleted cells before it
	s.ctrl[i] = cellEmpty
	last := uint32(len(s.ctrl) - 1)
	for {
		if i == firstSlot {
			i = last
		} else {
			i--
		}
		if s.ctrl[i] != cellDeleted {
			return
		}
		s.ctrl[i] = cellEmpty
		s.deleted--
	}
}

// vacant reports whether cell i holds no entry (empty or deleted).
func (s *shard[K]) vacant(i uint32) bool { return s.ctrl[i] < cellFull }

// next is the cell after i along a probe, wrapping past the last.
func (s *shard[K]) next(i uint32) uint32 {
	if i++; i == uint32(len(s.ctrl)) {
		return firstSlot
	}
	return i
}

// shiftScan bounds the cells shiftBack examines: each costs a hash of its
// key (for string keys a read of the key's bytes).
const shiftScan = 8

// shiftBack moves into the hole at i the entries after it whose probe
// passes it, each into the hole the one before left, looking at most
// shiftScan cells ahead. It returns the last hole and whether the probe
// run ended (an empty cell) within the cells examined: then no entry
// beyond needs the hole, and it can be empty.
func (s *shard[K]) shiftBack(hole uint32) (uint32, bool) {
	n := uint64(len(s.cells) - firstSlot)
	dist := func(from, to uint32) uint64 { return (uint64(to) + n - uint64(from)) % n } // cyclic, along the probe
	q := hole
	for range shiftScan {
		q = s.next(q)
		switch {
		case s.ctrl[q] == cellEmpty:
			return hole, true
		case s.vacant(q): // deleted: a hole too, which the entries beyond may pass
			continue
		}
		if home := s.home(s.hash(s.cells[q].key)); dist(home, q) >= dist(hole, q) {
			s.move(q, hole)
			hole = q
		}
	}
	return hole, false
}

// move puts the entry of slot from into the free slot to and relinks its
// list neighbours; from is left free (its control byte is the caller's).
func (s *shard[K]) move(from, to uint32) {
	s.cells[to], s.ctrl[to] = s.cells[from], s.ctrl[from]
	e := &s.cells[to]
	s.cells[e.prev].next = to
	s.cells[e.next].prev = to
	s.cells[from], s.ctrl[from] = slot[K]{}, cellDeleted
	for l, f := range s.finger {
		if f == from {
			s.finger[l] = to
		}
	}
}

// insert claims a cell for a key with hash h that the shard does not
// hold (the caller has just failed to find it) and returns its slot
// number; the caller fills the slot and links it. It may rebuild the
// shard first, which renumbers every slot: the caller must not hold slot
// numbers or pointers from before the call.
func (s *shard[K]) insert(h uint64) uint32 {
	n := uint64(len(s.cells) - firstSlot)
	used := s.live + s.tombs + 1
	if over := uint64(used+s.deleted) * 16; over > n*14 && (s.scanners == 0 || over > n*15) {
		c := capacityFor(used, s.limit)
		if s.scanners > 0 {
			// A walk holds shifts off, so churn at the limit leaves a
			// deleted cell per eviction, and the walk restarts after
			// each forced rebuild: doubling the cells makes the next
			// one wait for twice the churn, so a walk finishes however
			// slow it is; maybeCompact gives the room back afterwards.
			c = uint32(min(max(uint64(c), 2*n), math.MaxUint32/2))
		}
		s.rebuild(c)
	}
	p := s.home(h)
	for !s.vacant(p) {
		p = s.next(p)
	}
	if s.ctrl[p] == cellDeleted {
		s.deleted--
	}
	s.ctrl[p] = tagOf(h)
	return p
}

// reserve makes room for n more keys at once, so a bulk load (a snapshot
// restore) rebuilds the shard once instead of growing it step by step.
func (s *shard[K]) reserve(n uint32) {
	used := s.live + s.tombs + n
	if used > s.limit {
		used = s.limit
	}
	if s.scanners == 0 && uint64(used+s.deleted)*8 > uint64(len(s.cells)-firstSlot)*7 {
		s.rebuild(capacityFor(used, s.limit))
	}
}

// capacityFor returns the key cells for a shard of used keys (and room
// for one more): seven tenths full after the rebuild, so growth comes in
// steps of a quarter and the cells stay between 7/10 and 7/8 full, which
// keeps memory per entry near the slot size while probes stay short (a
// hit at 7/8 reads about five control bytes and one cell).
// A shard at its limit is 4/5 full, leaving room for deleted cells
// between rebuilds.
func capacityFor(used, limit uint32) uint32 {
	u, l := uint64(used), uint64(limit)
	c := min(u+u*3/7, l+l/4)
	return uint32(min(max(c, u+u/7+2, minCells), math.MaxUint32-firstSlot))
}

// rebuild moves every entry into n new key cells and renumbers the slots,
// keeping both lists in order.
func (s *shard[K]) rebuild(n uint32) {
	old, oldCtrl := s.cells, s.ctrl
	s.cells, s.ctrl = newCells[K](n)
	moved := make([]uint32, len(old))
	moved[lruHead], moved[tombHead] = lruHead, tombHead
	for i := uint32(firstSlot); i < uint32(len(old)); i++ {
		if oldCtrl[i] < cellFull {
			continue
		}
		h := s.hash(old[i].key)
		p := s.home(h)
		for s.ctrl[p] != cellEmpty {
			p = s.next(p)
		}
		s.ctrl[p] = tagOf(h)
		s.cells[p] = old[i]
		moved[i] = p
	}
	for _, i := range [...]uint32{lruHead, tombHead} {
		s.cells[i] = old[i]
	}
	for p := range s.cells {
		if !s.vacant(uint32(p)) {
			e := &s.cells[p]
			e.prev, e.next = moved[e.prev], moved[e.next]
		}
	}
	for l, f := range s.finger {
		if f >= uint32(len(old)) || oldCtrl[f] < cellFull {
			f = 0
		}
		s.finger[l] = moved[f] // the finger stays on its entry, or none
	}
	s.deleted, s.hand = 0, firstSlot
	s.gen++
	s.publish()
}

func (s *shard[K]) setLive(n uint32) {
	s.live = n
	s.c.entries.Store(int64(n))
}

func (s *shard[K]) setTombs(n uint32) {
	s.tombs = n
	s.c.tombstones.Store(int64(n))
}

// dead reports whether a clear watermark covers the slot's version.
func (s *shard[K]) dead(e *slot[K], m *clearMark) bool {
	return m != nil && e.version <= m.version &&
		CompareVersions(e.version, s.nodes.list[e.node], m.version, m.node) <= 0
}

func (s *shard[K]) alive(e *slot[K], now int64, m *clearMark) bool {
	return e.expires > now && !s.dead(e, m)
}

// makeRoom makes sure one more slot fits under the shard's limit.
func (s *shard[K]) makeRoom(now int64, evictLive bool) bool {
	return s.live+s.tombs < s.limit || s.evictOne(now, evictLive)
}

// evictOne frees a slot, cheapest loss first: an expired entry, then the
// oldest tombstone (it only guards against stale replicated writes), then,
// if allowed, the least recently used entry.
func (s *shard[K]) evictOne(now int64, evictLive bool) bool {
	if t := s.at(lruHead).prev; t != lruHead && s.at(t).expires <= now {
		s.drop(t)
		s.c.reaped.Add(1)
		return true
	}
	if t := s.at(tombHead).prev; t != tombHead {
		s.drop(t)
		return true
	}
	if t := s.at(lruHead).prev; evictLive && t != lruHead {
		s.drop(t)
		s.c.evictions.Add(1)
		return true
	}
	return false
}

// localNode returns this shard's index for the table's node name, which
// SetNode may change at any time.
func (s *shard[K]) localNode(t *Table) uint16 {
	if name := *t.node.Load(); name != s.local {
		i, ok := s.nodes.acquire(name)
		if !ok {
			return s.localIx
		}
		s.nodes.release(s.localIx)
		s.local, s.localIx = name, i
	}
	return s.localIx
}

func (s *shard[K]) entry(e *slot[K], k Key, out *Entry) {
	*out = Entry{
		Key:       k,
		Server:    s.servers.list[e.server],
		ExpiresAt: time.Unix(0, e.expires),
		Version:   e.version,
		Node:      s.nodes.list[e.node],
		Origin:    e.origin,
		Deleted:   e.server == 0,
	}
}

func (s *shard[K]) change(op Op, e *slot[K], k Key, ttl int64) Change {
	return Change{
		Op:      op,
		Key:     k,
		Server:  s.servers.list[e.server],
		Version: e.version,
		Node:    s.nodes.list[e.node],
		Origin:  e.origin,
		TTL:     time.Duration(ttl),
	}
}

// explicitVersion versions an explicit change to slot e (present when
// found). Besides exceeding every version the shard has seen, it lies in
// a later millisecond than the base of the write it replaces, which bases
// compare in: an explicit change must outrank what its node had seen even
// when that was a placement made in the same millisecond.
func (s *shard[K]) explicitVersion(now int64, e *slot[K], found bool) uint64 {
	ms := now / int64(time.Millisecond)
	if found {
		if b := baseMS(e.version, e.origin); b < 1<<(64-LogicalBits)-1 {
			ms = max(ms, int64(b)+1)
		}
	}
	return s.clock.next(ms)
}

// write describes slot e for CompareWrites.
func (s *shard[K]) write(e *slot[K]) Write {
	return Write{Version: e.version, Node: s.nodes.list[e.node], Origin: e.origin,
		Deleted: e.server == 0, Server: s.servers.list[e.server]}
}

// insertByExpiry links slot i into the list at head ordered by expiry,
// newest first, as local use orders the LRU list: a replicated entry keeps
// the recency its sender gave it instead of becoming the most recently
// used here (which would evict entries used more recently, which
// anti-entropy would send back, and full tables would never agree). The
// common case, an entry newer than every other (live replication, a
// snapshot's records in order), is O(1). Next it searches from the slot
// it linked last (the finger): records that arrive in ascending runs (a
// snapshot of a table with other shards: one run per shard of the
// writer) each land next to the one before, so a run costs its length
// plus the entries it passes. Otherwise the position is searched from
// both ends at once, so an entry near either end costs little. Both
// searches are bounded: past the bound the entry goes where the search
// from the cold end stopped (a little too recent, never evicted too
// early).
func (s *shard[K]) insertByExpiry(head, i uint32) {
	exp := s.at(i).expires
	defer func() { s.finger[head] = i }()
	if first := s.at(head).next; first == head || s.at(first).expires <= exp {
		s.pushFront(head, i)
		return
	}
	if f := s.finger[head]; f >= firstSlot && f < uint32(len(s.cells)) && !s.vacant(f) &&
		(s.at(f).server == 0) == (head == tombHead) && f != i {
		// f is linked in this list: search from it toward the
		// position, which lies after the last entry newer than exp
		after, ok := f, false
		if s.at(f).expires > exp {
			for n := 0; n < insertWalk; n++ {
				nx := s.at(after).next
				if nx == head || s.at(nx).expires <= exp {
					ok = true
					break
				}
				after = nx
			}
		} else {
			for n := 0; n < insertWalk; n++ {
				after = s.at(after).prev
				if after == head || s.at(after).expires > exp {
					ok = true
					break
				}
			}
		}
		if ok {
			s.linkAfter(after, i)
			return
		}
	}
	s.searches++
	// Invariant: hot is newer than exp (or head), cold is not newer
	// (or head); the entry goes right after the last newer one.
	hot, cold := s.at(head).next, s.at(head).prev
	after := hot
	for n := 0; n < insertWalk; n++ {
		if nx := s.at(hot).next; nx != head && s.at(nx).expires > exp {
			hot = nx
		} else {
			after = hot
			break
		}
		if cold != head && s.at(cold).expires > exp {
			after = cold
			break
		}
		cold = s.at(cold).prev
		after = cold
	}
	s.linkAfter(after, i)
}

// linkAfter links slot i into a list right after slot after.
func (s *shard[K]) linkAfter(after, i uint32) {
	e, p := s.at(i), s.at(after)
	e.prev, e.next = after, p.next
	s.at(p.next).prev = i
	p.next = i
}

// roomForRemote makes room for a replicated entry that would expire at
// deadline. Unlike a local store, it does not evict a live entry that
// would outlive the newcomer: the receiver would evict the newcomer first,
// so installing it would only evict some other entry, which anti-entropy
// would then send back, round after round, and full tables would never
// converge. Tombstones never evict live entries.
func (s *shard[K]) roomForRemote(now, deadline int64, evictLive bool) bool {
	if s.live+s.tombs < s.limit {
		return true
	}
	if t := s.at(lruHead).prev; t != lruHead && s.at(t).expires <= now {
		s.drop(t)
		s.c.reaped.Add(1)
		return true
	}
	if t := s.at(tombHead).prev; t != tombHead {
		s.drop(t)
		return true
	}
	t := s.at(lruHead).prev
	if !evictLive || t == lruHead || s.at(t).expires >= deadline {
		return false
	}
	s.drop(t)
	s.c.evictions.Add(1)
	return true
}

// reapBatch frees up to budget expired slots from the cold ends of both
// lists, reporting whether it stopped because of the budget.
func (s *shard[K]) reapBatch(now int64, budget int) (n int, more bool) {
	for n < budget {
		t := s.at(lruHead).prev
		if t == lruHead || s.at(t).expires > now {
			break
		}
		s.drop(t)
		s.c.reaped.Add(1)
		n++
	}
	for n < budget {
		t := s.at(tombHead).prev
		if t == tombHead || s.at(t).expires > now {
			break
		}
		s.drop(t)
		n++
	}
	return n, n == budget
}

// sweep advances the clock hand over up to budget slots, freeing expired or
// cleared ones wherever they sit in their list.
func (s *shard[K]) sweep(now int64, m *clearMark, budget int) (n int) {
	for range budget {
		if s.hand < firstSlot || s.hand >= uint32(len(s.cells)) {
			s.hand = firstSlot
		}
		i := s.hand
		s.hand++
		e := s.at(i)
		if s.vacant(i) || s.alive(e, now, m) {
			continue
		}
		if e.server != 0 {
			s.c.reaped.Add(1)
		}
		s.drop(i)
		n++
	}
	return n
}

// maybeCompact gives memory back after a shard has shrunk to a quarter of
// its cells (mass expiry, Clear, Reconfigure), or grew to over twice what
// its entries need while a walk held shifts off (see insert): cells only
// grow on their own. Rebuilding costs time proportional to the surviving entries, at
// most a quarter of the cells, and the hysteresis keeps a shard that
// oscillates in size from rebuilding over and over.
func (s *shard[K]) maybeCompact() {
	n := uint32(len(s.cells) - firstSlot)
	used := s.live + s.tombs
	c := capacityFor(used, s.limit)
	oversized := uint64(n) > 2*uint64(c) // grown during a walk
	if s.scanners > 0 || n < compactFloor || (uint64(used)*4 > uint64(n) && !oversized) {
		return
	}
	s.rebuild(c)
	s.c.compactions.Add(1)
}

// find returns the slot holding k, whose hash is h.
func (s *shard[K]) find(h uint64, k K) (uint32, bool) {
	tag := tagOf(h)
	for p := s.home(h); ; p = s.next(p) {
		c := s.ctrl[p]
		if c == cellEmpty {
			return 0, false
		}
		if c == tag && s.cells[p].key == k {
			return p, true
		}
	}
}
