package sticktable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math/bits"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/caddy-sticky/sticky/internal/hashmix"
)

// Options are the parts of a table's setup that are not user
// configuration: injection points for tests and for the layers above.
type Options struct {
	// Now is the table's clock; nil means time.Now. Expiry, versions and
	// snapshots all read it, so tests can move time by hand.
	Now func() time.Time
	// Node names this instance in versions; see SetNode.
	Node string
	// OnChange receives local changes; see SetOnChange.
	OnChange func(Change)
	// ReapInterval is how often the background reaper runs. 0 means
	// min(1s, max(Expire/64, 10ms)); negative means no background reaper
	// (expired entries are then reclaimed only by lookups, stores and
	// explicit Reap calls), which tests use for determinism.
	ReapInterval time.Duration
	// Shards overrides the shard count (rounded down to a power of two,
	// at most 1024, at most Size); 0 chooses from Size (autoShards). Tests
	// use 1 for an exact LRU order.
	Shards int
}

// Table is a stick table. It is safe for concurrent use.
type Table struct {
	typ     KeyType
	keyLen  int
	nopurge atomic.Bool
	nowFn   func() time.Time
	seed    maphash.Seed
	fseed   uint64

	size      atomic.Int64
	expire    atomic.Int64 // nanoseconds
	gran      atomic.Int64 // nanoseconds; see granularity
	retention atomic.Int64 // nanoseconds
	autoRet   atomic.Bool  // Retention follows Expire

	cfgMu sync.Mutex // serializes Reconfigure and Clear
	clock Clock      // versions of Clear watermarks

	eng backend
	// The same engine as eng, concretely typed, for the hot paths.
	ipEng    *engine[uint32]
	v6Eng    *engine[[16]byte]
	intEng   *engine[uint64]
	strEng   *engine[string]
	node     atomic.Pointer[string]
	onChange atomic.Pointer[func(Change)]
	mark     atomic.Pointer[clearMark]
	invalid  atomic.Uint64
	empty    atomic.Uint64
	tally    serverTally // per-server counts; see servercount.go

	// base anchors the default clock: wall time is read once per reaper
	// tick and advanced with the monotonic clock in between, because
	// time.Since costs one clock read where time.Now costs two, and the
	// clock is read on every lookup.
	base atomic.Pointer[clockBase]

	stopOnce sync.Once
	stop     chan struct{}
}

type clockBase struct {
	wall int64 // Unix nanoseconds at mono
	mono time.Time
}

// clearMark is a Clear watermark: every entry or tombstone whose version
// is at or below it is gone, on every node that has seen it.
type clearMark struct {
	version uint64
	node    string
}

// maxShards caps the shard count.
const maxShards = 1024

// autoShards chooses the shard count for a table of size entries: 64 once
// shards hold at least 1024 entries each (enough to spread two cores'
// lookups, few enough that eviction starts only when the table is nearly
// full, see the package documentation), and beyond 2M entries as many
// more as keep each shard's limit under 32768, because growing, shrinking
// or cleaning a shard rebuilds it with its lock held, for a time
// proportional to its entries (under a millisecond at that size).
func autoShards(size int) int {
	shards := 1
	for shards < 64 && size/(2*shards) >= 1024 {
		shards *= 2
	}
	for shards < maxShards && size/shards > 32768 {
		shards *= 2
	}
	return shards
}

// New creates a table with default Options.
func New(cfg Config) (*Table, error) { return NewWithOptions(cfg, Options{}) }

// NewWithOptions creates a table. Unless opts.ReapInterval is negative it
// starts a background reaper, which stops on Close or once the table is
// garbage collected.
func NewWithOptions(cfg Config, opts Options) (*Table, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	t := &Table{
		typ:    cfg.Type,
		keyLen: cfg.Len,
		nowFn:  opts.Now,
		seed:   maphash.MakeSeed(),
		fseed:  rand.Uint64(),
		stop:   make(chan struct{}),
	}
	t.clock.now = opts.Now
	t.reanchor()
	t.setExpiry(cfg.Expire, cfg.Retention)
	t.size.Store(int64(cfg.Size))
	t.nopurge.Store(cfg.NoPurge)
	node := opts.Node
	t.node.Store(&node)
	t.SetOnChange(opts.OnChange)

	shards := opts.Shards
	if shards <= 0 {
		shards = autoShards(cfg.Size)
	}
	shards = min(shards, maxShards, cfg.Size)
	for shards&(shards-1) != 0 {
		shards &= shards - 1
	}
	own := func(k string) string { return k }
	if cfg.Type == KeyString {
		// String keys are views of the caller's text (often a whole
		// header); binary keys are freshly decoded and already ours.
		own = strings.Clone
	}
	switch cfg.Type {
	case KeyIP:
		t.ipEng = newEngine(t, shards, cfg.Size,
			func(k Key) uint32 { return binary.BigEndian.Uint32(k.fix[:4]) },
			func(v uint32) Key { k := Key{typ: KeyIP}; binary.BigEndian.PutUint32(k.fix[:4], v); return k },
			func(v uint32) uint32 { return v },
			func(v uint32) uint64 { return t.hashFixed(uint64(bits.ReverseBytes32(v)), 0) })
	case KeyIPv6:
		t.v6Eng = newEngine(t, shards, cfg.Size,
			func(k Key) [16]byte { return k.fix },
			func(v [16]byte) Key { return Key{typ: KeyIPv6, fix: v} },
			func(v [16]byte) [16]byte { return v },
			func(v [16]byte) uint64 {
				return t.hashFixed(binary.LittleEndian.Uint64(v[:8]), binary.LittleEndian.Uint64(v[8:]))
			})
	case KeyInteger:
		t.intEng = newEngine(t, shards, cfg.Size,
			func(k Key) uint64 { return binary.BigEndian.Uint64(k.fix[:8]) },
			func(v uint64) Key { k := Key{typ: KeyInteger}; binary.BigEndian.PutUint64(k.fix[:8], v); return k },
			func(v uint64) uint64 { return v },
			func(v uint64) uint64 { return t.hashFixed(bits.ReverseBytes64(v), 0) })
	default:
		typ := cfg.Type
		t.strEng = newEngine(t, shards, cfg.Size,
			func(k Key) string { return k.str },
			func(v string) Key { return Key{typ: typ, str: v} },
			own,
			func(v string) uint64 { return maphash.String(t.seed, v) })
	}
	switch {
	case t.ipEng != nil:
		t.eng = t.ipEng
	case t.v6Eng != nil:
		t.eng = t.v6Eng
	case t.intEng != nil:
		t.eng = t.intEng
	default:
		t.eng = t.strEng
	}

	if every := opts.ReapInterval; every >= 0 {
		if every == 0 {
			every = min(time.Second, max(cfg.Expire/64, 10*time.Millisecond))
		}
		startReaper(t, every)
	}
	return t, nil
}

// reaperDuty is the share of each reaper interval the background reaper
// may spend reclaiming (1/reaperDuty). A reaper that ran until done took
// a shard lock, one after another, for as long as a mass expiry lasted,
// and a lookup landing on the shard it held waited for its batch: with 64
// shards one lookup in 64 did, which doubled lookup p99 while a million
// entries expired. Paced, it holds a lock a tenth of the time, and the
// rest of the backlog waits for the next tick. Nothing depends on the
// reaper being prompt: an expired entry stops matching at once, lookups
// that find one and stores that need its slot reclaim it inline, and the
// size cap bounds what the backlog can hold.
const reaperDuty = 10

// startReaper runs a paced Reap every interval. The goroutine holds the
// table only weakly, so a table dropped without Close does not leak it.
func startReaper(t *Table, every time.Duration) {
	wp, stop := weak.Make(t), t.stop
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		next := 0 // the shard to resume at
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			t := wp.Value()
			if t == nil {
				return
			}
			t.reanchor()
			_, next, _ = t.eng.reap(t.now(), next, every/reaperDuty)
		}
	}()
}

// Close stops the background reaper. The table stays usable; it just no
// longer reclaims expired entries in the background.
func (t *Table) Close() {
	t.stopOnce.Do(func() { close(t.stop) })
}

func (t *Table) setExpiry(expire, retention time.Duration) {
	t.expire.Store(int64(expire))
	t.gran.Store(int64(granularity(expire)))
	if retention == 0 {
		t.autoRet.Store(true)
		retention = defaultRetention(expire)
	} else {
		t.autoRet.Store(false)
	}
	t.retention.Store(int64(retention))
}

func (t *Table) now() int64 {
	if t.nowFn == nil {
		b := t.base.Load()
		return b.wall + int64(time.Since(b.mono))
	}
	return t.nowFn().UnixNano()
}

// reanchor rereads the wall clock so the table's time follows steps and
// slews of the system clock within a reaper tick.
func (t *Table) reanchor() {
	m := time.Now()
	t.base.Store(&clockBase{wall: m.UnixNano(), mono: m})
}

// Now returns the table's current time (its injected clock), against
// which Entry.ExpiresAt should be read.
func (t *Table) Now() time.Time { return time.Unix(0, t.now()) }

func (t *Table) hashKey(k *Key) uint64 {
	if k.str != "" {
		return maphash.String(t.seed, k.str)
	}
	return t.hashFixed(binary.LittleEndian.Uint64(k.fix[:8]), binary.LittleEndian.Uint64(k.fix[8:]))
}

// hashFixed is hashKey of a fixed-size key, from its two words; engines
// call it directly, without building a Key, when they rebuild or shift.
func (t *Table) hashFixed(lo, hi uint64) uint64 {
	return hashmix.Fmix64(lo ^ t.fseed ^ hashmix.Fmix64(hi+t.fseed))
}

// shardHash is the node-independent hash that picks a key's shard.
func shardHash(k *Key) uint64 {
	if s := k.str; s != "" {
		h := uint64(len(s)) * 0x9e3779b97f4a7c15
		for len(s) >= 8 {
			w := hashmix.Word(s)
			h = hashmix.Fmix64(h ^ w)
			s = s[8:]
		}
		var w uint64
		for i := 0; i < len(s); i++ {
			w |= uint64(s[i]) << (8 * i)
		}
		return hashmix.Fmix64(h ^ w ^ 0xff)
	}
	lo := binary.LittleEndian.Uint64(k.fix[:8])
	hi := binary.LittleEndian.Uint64(k.fix[8:])
	return hashmix.Fmix64(lo ^ hashmix.Fmix64(hi^0x9e3779b97f4a7c15))
}

func (t *Table) emit(c Change) {
	if f := t.onChange.Load(); f != nil {
		(*f)(c)
	}
}

// SetOnChange sets the change feed (nil to remove it). fn is called after
// every local change: a store of a new key or a different server, a
// refresh (at most once per refresh granularity per key), a pin, a delete
// (one call per key, also for ClearServer) and a clear. It is not called
// for Apply or ReadSnapshot, so replicated changes do not echo back.
//
// fn runs on the goroutine that made the change, after the shard lock is
// released, so it may call back into the table; but it delays that caller
// (a request), so it must be cheap: enqueue and return. Calls for
// different keys, or racing changes to one key, may arrive in any order;
// compare versions rather than relying on call order.
func (t *Table) SetOnChange(fn func(Change)) {
	if fn == nil {
		t.onChange.Store(nil)
		return
	}
	t.onChange.Store(&fn)
}

// SetNode sets the name stamped into versions of local writes. The peers
// layer sets it to the member name; it may change at any time and only
// affects later writes.
func (t *Table) SetNode(name string) { t.node.Store(&name) }

// Node returns the name set by SetNode.
func (t *Table) Node() string { return *t.node.Load() }

// Config returns the table's current configuration, defaults filled in.
func (t *Table) Config() Config {
	c := Config{
		Type:      t.typ,
		Size:      int(t.size.Load()),
		Expire:    time.Duration(t.expire.Load()),
		NoPurge:   t.nopurge.Load(),
		Retention: time.Duration(t.retention.Load()),
	}
	if t.typ.HasLen() {
		c.Len = t.keyLen
	}
	return c
}

// Reconfigure changes size and expiry in place (0 keeps the default, as in
// Config). Shrinking evicts least recently used entries down to the new
// size, shard by shard in small batches; a shorter expiry caps existing
// deadlines. The shard count stays as chosen at creation, so growing a
// small table a lot keeps its few shards (more lock contention, same
// behaviour); recreating it through a snapshot rebalances. A size below
// the shard count is refused. While a shrink is in progress Len may still
// exceed the new size (never the old one).
func (t *Table) Reconfigure(size int, expire time.Duration) error {
	if err := t.CheckReconfigure(size, expire); err != nil {
		return err
	}
	size, expire, _ = checkSizeExpire(size, expire)
	t.cfgMu.Lock()
	defer t.cfgMu.Unlock()
	oldExpire, oldRet := t.expire.Load(), t.retention.Load()
	ret := time.Duration(0)
	if !t.autoRet.Load() {
		ret = time.Duration(oldRet)
	}
	t.setExpiry(expire, ret)
	t.size.Store(int64(size))
	now := t.now()
	if int64(expire) < oldExpire || t.retention.Load() < oldRet {
		t.eng.capExpiry(now+int64(expire), now+t.retention.Load())
	}
	t.eng.resize(size, now)
	return nil
}

// CheckReconfigure reports whether Reconfigure(size, expire) would be
// accepted, without changing anything: a config reload validates every
// change before it applies any.
func (t *Table) CheckReconfigure(size int, expire time.Duration) error {
	size, _, err := checkSizeExpire(size, expire)
	if err != nil {
		return err
	}
	if n := t.eng.shardCount(); size < n {
		return fmt.Errorf("sticktable: size %d is below this table's %d shards; recreate the table", size, n)
	}
	return nil
}

// SetNoPurge switches between evicting the least recently used entries
// when full and refusing new keys, in place: a reload that only changes
// nopurge keeps every entry.
func (t *Table) SetNoPurge(on bool) { t.nopurge.Store(on) }

// Len returns the number of entries (not tombstones), read without
// locking; it never exceeds Size.
func (t *Table) Len() int {
	var st Stats
	t.eng.sumStats(&st)
	return st.Entries
}

// Stats returns the counters, read without locking.
func (t *Table) Stats() Stats {
	var st Stats
	t.eng.sumStats(&st)
	st.Invalid = t.invalid.Load()
	st.Empty = t.empty.Load()
	return st
}

// ParseKey parses key text as this table's key type and length, so a
// caller can parse once and then match and store with the result.
func (t *Table) ParseKey(text string) (Key, error) { return parseKey(t.typ, t.keyLen, text) }

// KeyFromBytes rebuilds a key from the bytes Key.AppendBytes produced
// (for example on a peer); string and binary keys are truncated to Len.
func (t *Table) KeyFromBytes(raw []byte) (Key, error) { return keyFromBytes(t.typ, t.keyLen, raw) }

// NoteInvalid counts one lookup refused for its key in Stats.Invalid, for
// callers that parse key text once with ParseKey and then match the Key:
// Match counts its own refusals, ParseKey does not (the admin API uses it
// too, and typos there are not traffic).
func (t *Table) NoteInvalid() { t.invalid.Add(1) }

func (t *Table) refuse(err error) Outcome {
	if err == ErrEmptyKey {
		t.empty.Add(1)
		return OutcomeEmpty
	}
	t.invalid.Add(1)
	return OutcomeInvalid
}

// ownKey checks a caller-supplied Key against the table: type, and length
// for string and binary keys (a Key parsed for another table may be longer).
func (t *Table) ownKey(k Key) (Key, error) {
	if k.IsZero() {
		return k, ErrEmptyKey
	}
	if k.typ != t.typ {
		return k, fmt.Errorf("%w: %s key for a %s table", ErrKeyType, k.typ, t.typ)
	}
	if len(k.str) > t.keyLen {
		k.str = k.str[:t.keyLen]
	}
	return k, nil
}

// Match looks a key up: on a hit it refreshes the entry's expiry and LRU
// position (see granularity in the package documentation); an expired
// entry is removed. It does not allocate for ip, ipv6, integer and string
// keys.
func (t *Table) Match(key string) (e Entry, o Outcome) {
	k, err := parseKey(t.typ, t.keyLen, key)
	if err != nil {
		return Entry{}, t.refuse(err)
	}
	return e, t.match(k, true, &e)
}

func (t *Table) match(k Key, touch bool, out *Entry) Outcome {
	switch {
	case t.ipEng != nil:
		return t.ipEng.match(k, touch, out)
	case t.v6Eng != nil:
		return t.v6Eng.match(k, touch, out)
	case t.intEng != nil:
		return t.intEng.match(k, touch, out)
	}
	return t.strEng.match(k, touch, out)
}

// MatchKey is Match for a parsed key.
func (t *Table) MatchKey(k Key) (e Entry, o Outcome) {
	k, err := t.ownKey(k)
	if err != nil {
		return Entry{}, t.refuse(err)
	}
	return e, t.match(k, true, &e)
}

// Lookup is Match reduced to found or not.
func (t *Table) Lookup(key string) (e Entry, ok bool) {
	k, err := parseKey(t.typ, t.keyLen, key)
	if err != nil {
		t.refuse(err)
		return Entry{}, false
	}
	return e, t.match(k, true, &e) == OutcomeHit
}

// LookupKey is Lookup for a parsed key.
func (t *Table) LookupKey(k Key) (Entry, bool) {
	e, o := t.MatchKey(k)
	return e, o == OutcomeHit
}

// Get reads an entry without refreshing it or counting a lookup, for
// admin reads that must not keep entries alive.
func (t *Table) Get(key string) (Entry, bool) {
	k, err := parseKey(t.typ, t.keyLen, key)
	if err != nil {
		return Entry{}, false
	}
	return t.GetKey(k)
}

// GetKey is Get for a parsed key.
func (t *Table) GetKey(k Key) (Entry, bool) {
	k, err := t.ownKey(k)
	if err != nil {
		return Entry{}, false
	}
	var e Entry
	return e, t.match(k, false, &e) == OutcomeHit
}

// Store sticks key to server, adding the key or overwriting its server,
// and refreshes its expiry. A store of the server the key already has is a
// refresh and keeps the entry's version. Adding a key is a placement;
// overwriting a live entry's server is an explicit change (a re-stick),
// which wins over the entry it replaced everywhere (see CompareWrites). When the key's shard is full the
// least recently used entry is evicted, or with NoPurge ErrFull is
// returned (existing keys still update).
func (t *Table) Store(key, server string) (Entry, error) {
	k, err := parseKey(t.typ, t.keyLen, key)
	if err != nil {
		t.refuse(err)
		return Entry{}, err
	}
	e, _, err := t.storeKey(k, server, storeOverwrite)
	return e, err
}

// StoreKey is Store for a parsed key.
func (t *Table) StoreKey(k Key, server string) (Entry, error) {
	k, err := t.ownKey(k)
	if err != nil {
		t.refuse(err)
		return Entry{}, err
	}
	e, _, err := t.storeKey(k, server, storeOverwrite)
	return e, err
}

// PlaceKey sticks k to server only if k has no live entry (insert if
// absent): a placement, which loses to an earlier independent placement
// of the key on another node (see CompareWrites). When k already has a
// live entry, that entry is refreshed and returned with placed false, so
// concurrent first requests of one user all learn the first one's server.
// It does not allocate when the key is present.
func (t *Table) PlaceKey(k Key, server string) (e Entry, placed bool, err error) {
	k, err = t.ownKey(k)
	if err != nil {
		t.refuse(err)
		return Entry{}, false, err
	}
	return t.storeKey(k, server, storePlace)
}

// Place is PlaceKey for key text.
func (t *Table) Place(key, server string) (Entry, bool, error) {
	k, err := parseKey(t.typ, t.keyLen, key)
	if err != nil {
		t.refuse(err)
		return Entry{}, false, err
	}
	return t.storeKey(k, server, storePlace)
}

// Pin is an explicit admin store: like Store, but it always writes a new
// version (and reports OpPin to the change feed) even when the server is
// unchanged, so the admin's decision wins over concurrent writes on peers.
func (t *Table) Pin(key, server string) (Entry, error) {
	k, err := parseKey(t.typ, t.keyLen, key)
	if err != nil {
		t.refuse(err)
		return Entry{}, err
	}
	e, _, err := t.storeKey(k, server, storePin)
	return e, err
}

// MaxServerLen bounds a server identity (a dial address or a configured
// name), the same bound peers put on the wire.
const MaxServerLen = 1024

func checkServer(server string) error {
	if server == "" {
		return ErrEmptyServer
	}
	if len(server) > MaxServerLen {
		return ErrServerTooLong
	}
	return nil
}

func (t *Table) storeKey(k Key, server string, mode storeMode) (e Entry, wrote bool, err error) {
	if err := checkServer(server); err != nil {
		return Entry{}, false, err
	}
	now := t.now()
	switch {
	case t.ipEng != nil:
		wrote, err = t.ipEng.store(k, server, mode, now, &e)
	case t.v6Eng != nil:
		wrote, err = t.v6Eng.store(k, server, mode, now, &e)
	case t.intEng != nil:
		wrote, err = t.intEng.store(k, server, mode, now, &e)
	default:
		wrote, err = t.strEng.store(k, server, mode, now, &e)
	}
	return e, wrote, err
}

// Delete forgets a key, leaving a tombstone for Retention so the delete
// replicates. It reports whether a live entry was removed.
func (t *Table) Delete(key string) (bool, error) {
	k, err := parseKey(t.typ, t.keyLen, key)
	if err != nil {
		return false, err
	}
	return t.eng.remove(k, t.now()), nil
}

// DeleteKey is Delete for a parsed key.
func (t *Table) DeleteKey(k Key) (bool, error) {
	k, err := t.ownKey(k)
	if err != nil {
		return false, err
	}
	return t.eng.remove(k, t.now()), nil
}

// ClearServer deletes every entry stuck to server (tombstones, one change
// per key), shard by shard in small batches, and returns how many it
// deleted. Entries stored to the server while it runs survive.
func (t *Table) ClearServer(server string) int {
	if server == "" {
		return 0
	}
	return t.eng.clearServer(server, t.now())
}

// Clear removes every entry and tombstone. It leaves a single watermark
// instead of a tombstone per key: everything versioned at or below it is
// gone at once (reads check the watermark) and memory is reclaimed shard
// by shard. Entries stored while it runs survive. It returns the number
// of entries removed.
func (t *Table) Clear() int {
	t.cfgMu.Lock()
	now := t.now()
	t.clock.Observe(t.eng.lastVersion())
	m := &clearMark{version: t.clock.next(now / int64(time.Millisecond)), node: t.Node()}
	// Shard clocks learn the watermark before it is published, so a store
	// racing with Clear is versioned either below it (and cleared) or
	// above it (and kept), never lost after reporting success.
	t.eng.observe(m.version)
	t.raiseMark(m)
	t.cfgMu.Unlock()
	n := t.eng.sweepMark(m, now)
	t.emit(Change{Op: OpClear, Version: m.version, Node: m.node})
	return n
}

// raiseMark installs m if it is above the current watermark.
func (t *Table) raiseMark(m *clearMark) bool {
	for {
		old := t.mark.Load()
		if old != nil && CompareVersions(m.version, m.node, old.version, old.node) <= 0 {
			return false
		}
		if t.mark.CompareAndSwap(old, m) {
			return true
		}
	}
}

// ClearMark returns the Clear watermark (0, "" if never cleared), which
// anti-entropy exchanges along with entries.
func (t *Table) ClearMark() (version uint64, node string) {
	if m := t.mark.Load(); m != nil {
		return m.version, m.node
	}
	return 0, ""
}

// Apply merges a change made on another node: an entry or tombstone is
// installed only if it wins over what the table has by the placement rule
// (CompareWrites), or the key is absent or expired here, so applying a
// set of changes in any order, any number of times, gives the same table.
// A new key keeps the recency its remaining TTL gives it, and a full
// table does not install one it would evict before any entry it holds. A change with the
// same version as the entry only extends its expiry (that is how refreshes
// replicate). Entry TTLs are capped by this table's Expire and tombstone
// TTLs by its Retention (0 means the full Retention). It reports whether
// the table changed; ErrFull comes from a full NoPurge table.
//
// Apply never calls OnChange.
func (t *Table) Apply(c Change) (bool, error) {
	if c.Version == 0 {
		return false, errors.New("sticktable: change without a version")
	}
	switch c.Op {
	case OpClear:
		m := &clearMark{version: c.Version, node: c.Node}
		t.cfgMu.Lock()
		t.eng.observe(c.Version)
		raised := t.raiseMark(m)
		t.cfgMu.Unlock()
		if raised {
			t.eng.sweepMark(m, t.now())
		}
		return raised, nil
	case OpStore, OpRefresh, OpPin:
		if err := checkServer(c.Server); err != nil {
			return false, err
		}
	case OpDelete:
	default:
		return false, fmt.Errorf("sticktable: unknown change op %d", c.Op)
	}
	k, err := t.ownKey(c.Key)
	if err != nil {
		return false, err
	}
	return t.eng.apply(k, &c, t.now())
}

// Reap reclaims expired entries and tombstones now, in small batches per
// shard, and returns how many it freed. The background reaper does the
// same work paced (see reaperDuty); tables without one
// (Options.ReapInterval < 0) may call Reap themselves.
func (t *Table) Reap() int {
	n, _, _ := t.eng.reap(t.now(), 0, 0)
	return n
}

// check verifies internal invariants (tests only).
func (t *Table) check() error { return t.eng.check() }
