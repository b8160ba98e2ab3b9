package sticktable

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// Slots live in fixed-size pages so growing a shard never copies (or
	// pauses on) the slots it already has, and pointers into a page stay
	// valid while the shard grows.
	pageBits = 8
	pageSize = 1 << pageBits
	pageMask = pageSize - 1

	// Slots 0 and 1 are the sentinels of the shard's two circular lists;
	// sentinels make link and unlink branch-free, and index 0 doubles as
	// "none" for the free list.
	lruHead   = 0
	tombHead  = 1
	firstSlot = 2
	freeMark  = ^uint32(0) // in prev: the slot is on the free list

	// workBatch bounds the slots that background and bulk work (reaping,
	// clearing, scanning, shrinking) touches per lock hold, so concurrent
	// lookups on the shard wait at most a few microseconds.
	workBatch = 128
	// reapBatch is smaller: reclaiming touches cold slots, index cells
	// and key bytes, several cache misses each, and a lookup that lands on
	// the shard being reaped waits for the whole batch.
	reapBatch = 16
	// sweepBatch is how many slots per shard the reaper's clock hand
	// checks per tick, catching expired entries that are not at the tail
	// of their list (remote entries with a short remaining life).
	sweepBatch = 64

	maxNames = 1 << 16 // server and node indices are uint16

	minIndex = 16 // smallest key index, in cells
)

// slot is one entry or tombstone. It is 32 bytes for ip keys, 40 for
// integer and 48 for ipv6, string and binary keys: the key, two list links, a 16-bit server index
// (0 = tombstone), a 16-bit origin node index, the expiry and the version.
type slot[K comparable] struct {
	expires int64  // Unix nanoseconds; for tombstones, the end of retention
	version uint64 // hybrid logical clock value of the last write
	key     K
	prev    uint32
	next    uint32
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
// Stats reads them without taking shard locks; they sit in the shard's own
// cache lines, which the writer already owns because it holds the shard
// mutex, so the increments are uncontended.
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
	mu sync.Mutex
	// idx is the key index: open addressing with linear probing over
	// 8-byte cells, each the low 32 bits of the key's hash (where probing
	// starts, and a tag that rejects almost every non-matching cell
	// without touching its slot) and the slot number; 0 is an empty cell.
	// It costs 11-21 bytes per entry where a Go map[string]uint32 costs
	// 30-60, and it reuses the hash that picked the shard instead of
	// hashing the key a second time.
	idx   []uint64
	nidx  uint32         // cells in use
	hash  func(K) uint64 // the table's key hash, for drops and rebuilds
	pages []*[pageSize]slot[K]
	top   uint32 // slots below top have been handed out at least once
	free  uint32 // head of the free list, linked through next; 0 = empty
	live  uint32 // entries, including expired ones not yet reclaimed
	tombs uint32
	limit uint32 // this shard's share of Size
	hand  uint32 // the reaper's sweep position
	// scanners counts bulk walks in progress; compaction, which renumbers
	// slots, waits until none is, so a walk never misses or repeats a slot.
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
	c       shardCounters
}

func (s *shard[K]) init(limit uint32, hash func(K) uint64, tally *serverTally) {
	s.hash = hash
	s.idx = make([]uint64, minIndex)
	s.pages = []*[pageSize]slot[K]{new([pageSize]slot[K])}
	s.initSentinels()
	s.top, s.hand, s.limit = firstSlot, firstSlot, limit
	s.servers, s.nodes = newNames(false), newNames(true)
	s.servers.tally = tally
}

func (s *shard[K]) initSentinels() {
	*s.at(lruHead) = slot[K]{prev: lruHead, next: lruHead}
	*s.at(tombHead) = slot[K]{prev: tombHead, next: tombHead}
}

func (s *shard[K]) at(i uint32) *slot[K] { return &s.pages[i>>pageBits][i&pageMask] }

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

func (s *shard[K]) alloc() uint32 {
	if i := s.free; i != 0 {
		s.free = s.at(i).next
		return i
	}
	if s.top == uint32(len(s.pages))<<pageBits {
		s.pages = append(s.pages, new([pageSize]slot[K]))
	}
	s.top++
	return s.top - 1
}

// drop removes slot i entirely: map entry, list links, name references.
func (s *shard[K]) drop(i uint32) {
	e := s.at(i)
	s.unindex(s.hash(e.key), i)
	s.unlink(i)
	if e.server != 0 {
		s.servers.release(e.server)
		s.setLive(s.live - 1)
	} else {
		s.setTombs(s.tombs - 1)
	}
	s.nodes.release(e.node)
	*e = slot[K]{prev: freeMark, next: s.free} // zeroing the key lets string keys be collected
	s.free = i
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
		TTL:     time.Duration(ttl),
	}
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
		if s.top <= firstSlot {
			return n
		}
		if s.hand < firstSlot || s.hand >= s.top {
			s.hand = firstSlot
		}
		i := s.hand
		s.hand++
		e := s.at(i)
		if e.prev == freeMark || s.alive(e, now, m) {
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
// its high-water mark (mass expiry, Clear, Reconfigure): the key index
// only grows on its own, and pages cannot be freed while live slots are
// scattered over them. Rebuilding costs time proportional to the surviving entries, at
// most a quarter of the shard's capacity, and the hysteresis keeps a
// shard that oscillates in size from rebuilding over and over.
func (s *shard[K]) maybeCompact() {
	used := s.live + s.tombs + firstSlot
	if s.scanners > 0 || len(s.pages) < 4 || used*4 > uint32(len(s.pages))<<pageBits {
		return
	}
	pages := make([]*[pageSize]slot[K], (used+pageMask)>>pageBits)
	for i := range pages {
		pages[i] = new([pageSize]slot[K])
	}
	old := s.pages
	oldAt := func(i uint32) *slot[K] { return &old[i>>pageBits][i&pageMask] }
	s.pages = pages
	s.idx, s.nidx = make([]uint64, indexSizeFor(used)), 0
	s.initSentinels()
	n := uint32(firstSlot)
	for _, head := range [...]uint32{lruHead, tombHead} {
		tail := uint32(head)
		for oi := oldAt(head).next; oi != head; oi = oldAt(oi).next {
			e := s.at(n)
			*e = *oldAt(oi)
			e.prev = tail
			s.at(tail).next = n
			s.reindex(s.hash(e.key), n)
			tail = n
			n++
		}
		s.at(tail).next = head
		s.at(head).prev = tail
	}
	s.top, s.free, s.hand = n, 0, firstSlot
	s.c.compactions.Add(1)
}

// find returns the slot holding k, whose hash is h.
func (s *shard[K]) find(h uint64, k K) (uint32, bool) {
	tag := uint32(h)
	mask := uint32(len(s.idx) - 1)
	for p := tag & mask; ; p = (p + 1) & mask {
		c := s.idx[p]
		if c == 0 {
			return 0, false
		}
		if uint32(c>>32) == tag && s.at(uint32(c)).key == k {
			return uint32(c), true
		}
	}
}

// index records that slot i holds a key with hash h, growing the index to
// keep it at most three quarters full so probe sequences stay short.
func (s *shard[K]) index(h uint64, i uint32) {
	if (s.nidx+1)*4 > uint32(len(s.idx))*3 {
		old := s.idx
		s.idx, s.nidx = make([]uint64, 2*len(old)), 0
		for _, c := range old {
			if c != 0 {
				s.reindex(uint64(c>>32), uint32(c))
			}
		}
	}
	s.reindex(h, i)
}

// reindex inserts without the growth check, for rebuilding.
func (s *shard[K]) reindex(h uint64, i uint32) {
	mask := uint32(len(s.idx) - 1)
	p := uint32(h) & mask
	for s.idx[p] != 0 {
		p = (p + 1) & mask
	}
	s.idx[p] = uint64(uint32(h))<<32 | uint64(i)
	s.nidx++
}

// unindex removes slot i (key hash h) and closes the gap by shifting later
// cells of the probe run back, so lookups never need tombstone cells.
func (s *shard[K]) unindex(h uint64, i uint32) {
	mask := uint32(len(s.idx) - 1)
	p := uint32(h) & mask
	for uint32(s.idx[p]) != i {
		p = (p + 1) & mask
	}
	s.nidx--
	for {
		s.idx[p] = 0
		q := p
		for {
			q = (q + 1) & mask
			c := s.idx[q]
			if c == 0 {
				return
			}
			// The cell at q may fill the hole at p unless its home lies
			// cyclically within (p, q].
			if home := uint32(c>>32) & mask; (q-home)&mask >= (q-p)&mask {
				s.idx[p] = c
				p = q
				break
			}
		}
	}
}

// indexSizeFor returns an index size that holds n keys half full.
func indexSizeFor(n uint32) int {
	size := minIndex
	for uint32(size) < 2*n {
		size *= 2
	}
	return size
}
