package peers

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-sticky/sticky/sticktable"
	"github.com/cespare/xxhash/v2"
)

// attachment is one table replicated through a group.
type attachment struct {
	g        *Group
	name     string
	t        *sticktable.Table
	shape    tableShape
	detached atomic.Bool
	// exchanged is set once the table's digest has gone to a member (in
	// a push/pull or a request). A table attached while the join was in
	// flight may have missed both; the join loop then asks for it.
	exchanged atomic.Bool
	// synced is set once an anti-entropy transfer for the table arrived.
	synced atomic.Bool
	// spreading is set while a spread round is scheduled.
	spreading atomic.Bool
	// lastSyncRecv is when an anti-entropy batch for the table last
	// arrived (unix nanoseconds).
	lastSyncRecv atomic.Int64

	mu      sync.Mutex
	pending []sticktable.Change
	spare   []sticktable.Change

	enc *batchEncoder // used by the flush loop only

	// Refresh throttle: a lossy table of (key fingerprint, last sent)
	// slots. A refresh is sent only if the key's slot shows no send
	// within refreshEvery. A collision can only cause an extra send,
	// never a missed one, and memory stays fixed whatever the key count.
	refreshEvery uint32 // milliseconds
	slots        []atomic.Uint64

	// generation counts changes to the table (local and applied), so a
	// cached digest is reused only while it is still exact.
	generation atomic.Uint64
	digestMu   sync.Mutex
	cached     *tableDigest
	cachedAt   time.Time
	cachedGen  uint64
}

func newAttachment(g *Group, name string, t *sticktable.Table) *attachment {
	cfg := t.Config()
	shape := shapeOf(t)
	// expire/4 keeps a peer's copy of an idle-but-used entry from
	// expiring (it is refreshed at least 3 times per lifetime) while
	// sending a hot key's refresh at most 4 times per expire period.
	every := min(max(cfg.Expire/4, 10*time.Millisecond), time.Hour)
	n := 1 << min(max(bits.Len(uint(cfg.Size)), 10), 16)
	return &attachment{
		g: g, name: name, t: t, shape: shape,
		enc:          newBatchEncoder(name, g.cfg.Name, shape, 0, packetLimit),
		refreshEvery: uint32(every / time.Millisecond),
		slots:        make([]atomic.Uint64, n),
	}
}

// catchingUp reports whether anti-entropy batches for the table arrived in
// the last catchUpQuiet. A node catching up through one member leaves the
// table out of the digests it offers others meanwhile: each would send it
// the same entries (a node joining empty would get the whole table from
// every member). Once the transfer is over, spread offers it again.
func (a *attachment) catchingUp() bool {
	last := a.lastSyncRecv.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < catchUpQuiet
}

// owners maps each table to the attachment whose hook it carries. A
// table has one change feed; when a reload moves it to another group, the
// new group attaches before the old one closes, and the old one must not
// then unhook the new one.
var owners = struct {
	sync.Mutex
	m map[*sticktable.Table]*attachment
}{m: map[*sticktable.Table]*attachment{}}

// hook makes a the table's change feed subscriber.
func (a *attachment) hook() {
	owners.Lock()
	owners.m[a.t] = a
	a.t.SetNode(a.g.cfg.Name)
	a.t.SetOnChange(a.onChange)
	owners.Unlock()
}

func (a *attachment) detach() {
	if a.detached.Swap(true) {
		return
	}
	owners.Lock()
	if owners.m[a.t] == a {
		delete(owners.m, a.t)
		a.t.SetOnChange(nil)
	}
	owners.Unlock()
}

// onChange is the table's change feed. It runs on request goroutines, so
// it only queues.
func (a *attachment) onChange(c sticktable.Change) {
	if a.detached.Load() {
		return
	}
	if c.Op != sticktable.OpRefresh {
		a.generation.Add(1)
	}
	switch c.Op {
	case sticktable.OpRefresh:
		if !a.refreshDue(c.Key, true) {
			a.g.st.refreshSuppressed.Add(1)
			return
		}
	case sticktable.OpStore, sticktable.OpPin:
		// A store carries the full TTL, so it counts as a refresh sent.
		a.refreshDue(c.Key, false)
	}
	a.mu.Lock()
	if len(a.pending) >= maxPending {
		a.mu.Unlock()
		a.g.st.dropped.Add(1)
		return
	}
	a.pending = append(a.pending, c)
	n := len(a.pending)
	a.mu.Unlock()
	if n == flushAt {
		select {
		case a.g.wake <- struct{}{}:
		default:
		}
	}
}

// refreshDue reports whether a refresh of k should be sent, recording
// the send when it is (or when check is false).
func (a *attachment) refreshDue(k sticktable.Key, check bool) bool {
	var kb [64]byte
	h := xxhash.Sum64(k.AppendBytes(kb[:0]))
	slot := &a.slots[h&uint64(len(a.slots)-1)]
	fp := uint32(h >> 32)
	now := uint32(time.Now().UnixMilli())
	if check {
		v := slot.Load()
		if uint32(v>>32) == fp && now-uint32(v) < a.refreshEvery {
			return false
		}
	}
	slot.Store(uint64(fp)<<32 | uint64(now))
	return true
}

// take hands the queued changes to the flush loop (double buffered, so
// steady state allocates nothing).
func (a *attachment) take() []sticktable.Change {
	a.mu.Lock()
	out := a.pending
	a.pending = a.spare[:0]
	a.spare = nil
	a.mu.Unlock()
	return out
}

func (a *attachment) recycle(s []sticktable.Change) {
	a.mu.Lock()
	if a.spare == nil && cap(s) <= 4*flushAt*4 {
		a.spare = s[:0]
	}
	a.mu.Unlock()
}

// recentDigest returns the last digest if it has the wanted bucket bits
// (0: whatever suits the table), the table has not changed since (no
// local change, no applied remote one) and it is younger than maxAge;
// else a fresh one. In a push/pull memberlist asks for our state
// (LocalState) and hands us theirs (MergeRemoteState) moments later;
// reusing the first walk halves the cost of a round on a big table (a
// million entries take ~100 ms). Only expiries can make the reused
// digest differ from a fresh one, and they only make a round send a few
// entries that are gone (nothing, then).
func (a *attachment) recentDigest(bits uint8, maxAge time.Duration) tableDigest {
	a.digestMu.Lock()
	if c := a.cached; c != nil && (bits == 0 || c.bits == bits) &&
		a.cachedGen == a.generation.Load() && time.Since(a.cachedAt) < maxAge {
		d := *c
		a.digestMu.Unlock()
		return d
	}
	a.digestMu.Unlock()
	return a.digest(bits)
}

// digest summarizes the table for anti-entropy, with 2^bits buckets (0:
// chosen from the table's size).
func (a *attachment) digest(bits uint8) tableDigest {
	if bits == 0 {
		st := a.t.Stats()
		bits = bucketBitsFor(st.Entries + st.Tombstones)
	}
	gen := a.generation.Load() // before the walk: a change during it invalidates
	td := a.walkDigest(bits)
	a.digestMu.Lock()
	a.cached, a.cachedAt, a.cachedGen = &td, time.Now(), gen
	a.digestMu.Unlock()
	return td
}

func (a *attachment) walkDigest(bits uint8) tableDigest {
	td := tableDigest{name: a.name, shape: a.shape, bits: bits, buckets: make([]uint64, 1<<bits)}
	var kb []byte
	a.t.RangeChanges(func(c sticktable.Change) bool {
		if c.Op == sticktable.OpClear {
			td.markVersion, td.markNode = c.Version, c.Node
			return true
		}
		kb = c.Key.AppendBytes(kb[:0])
		kh := xxhash.Sum64(kb)
		td.buckets[bucketOf(kh, bits)] += entryHash(kh, &c)
		return true
	})
	return td
}
