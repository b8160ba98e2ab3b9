package sticktable

import (
	"fmt"
	"time"
)

// Entry is a snapshot of one entry, copied out of the table.
type Entry struct {
	// Key is the entry's key; Key.String renders it canonically.
	Key Key
	// Server is the identity of the server the key is stuck to (its dial
	// address or configured name); empty for a tombstone.
	Server string
	// ExpiresAt is when the entry stops matching unless refreshed (for a
	// tombstone, when it is forgotten).
	ExpiresAt time.Time
	// Version orders writes to this key across nodes; see Clock.
	Version uint64
	// Node is the node that made the write Version stamps.
	Node string
	// Origin says whether the write was a placement or an explicit
	// change (see CompareWrites).
	Origin uint32
	// Deleted marks a tombstone; only RangeChanges-style walks that ask
	// for tombstones see them.
	Deleted bool
}

// UpdatedAt is when the entry's server was last written (stored, pinned
// or replicated); refreshes that keep the server do not change it. It is
// the physical part of Version, so it costs no space of its own.
func (e Entry) UpdatedAt() time.Time { return VersionTime(e.Version) }

// Op says what a Change did.
type Op uint8

// Change operations.
const (
	// OpStore is a store of a new key (a placement) or of a different
	// server (a re-stick, an explicit change); Change.Origin tells which.
	OpStore Op = iota + 1
	// OpRefresh pushed out the expiry of an entry without changing its
	// server or version (a Match hit or a store of the same server).
	OpRefresh
	// OpPin is an explicit admin store.
	OpPin
	// OpDelete turned an entry into a tombstone.
	OpDelete
	// OpClear removed every entry at or below Version.
	OpClear
)

var opNames = [...]string{"op(0)", "store", "refresh", "pin", "delete", "clear"}

// String names the operation for logs.
func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", o)
}

// Change describes one local change, as passed to OnChange, and one remote
// change, as passed to Apply: it carries everything a peer needs to
// reproduce the resulting entry, not a diff.
type Change struct {
	// Op is what happened.
	Op Op
	// Key is the key changed; zero for OpClear.
	Key Key
	// Server is empty for OpDelete and OpClear.
	Server string
	// Version is the version the change wrote (for OpRefresh, the
	// unchanged version of the entry; for OpClear, the watermark).
	Version uint64
	// Node is the node Version belongs to.
	Node string
	// Origin says whether the write was a placement (the first store of
	// a key the node had no live entry for) or an explicit change, and
	// for a placement which explicit change it followed; it decides which
	// of two writes wins (see CompareWrites). Zero is an explicit change.
	Origin uint32
	// TTL is the remaining life: of the entry for store, refresh and pin;
	// of the tombstone's retention for delete.
	TTL time.Duration
}

// Outcome is the result of a Match, for per-policy metrics.
type Outcome uint8

// Match outcomes.
const (
	// OutcomeMiss: no entry for the key (or only a tombstone).
	OutcomeMiss Outcome = iota
	// OutcomeHit: the key is stuck to Entry.Server.
	OutcomeHit
	// OutcomeExpired: the key was there but idle too long; it is removed.
	OutcomeExpired
	// OutcomeInvalid: the key text does not parse as the table's type.
	OutcomeInvalid
	// OutcomeEmpty: the key was empty (the placeholder had no value).
	OutcomeEmpty
)

var outcomeNames = [...]string{"miss", "hit", "expired", "invalid", "empty"}

// String returns the metric label of the outcome.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// Stats are cumulative counters since the table was created, plus the
// current sizes, for metrics.
type Stats struct {
	Hits, Misses, Expired uint64 // Match outcomes (Get does not count)
	Invalid, Empty        uint64 // keys refused before reaching a shard (Invalid includes NoteInvalid)
	Stores                uint64 // Store and Pin calls that stored or refreshed
	Evictions             uint64 // live entries evicted to make room
	Refused               uint64 // new keys refused by a full NoPurge table
	Reaped                uint64 // expired entries reclaimed, by any path
	Applied, Stale        uint64 // remote changes installed / ignored as older
	Entries               int    // current entries (may include some expired, not yet reclaimed)
	Tombstones            int    // current tombstones
}

// ServerEntries is one server and how many entries point at it.
type ServerEntries struct {
	Server  string // server identity as stored
	Entries int    // entries stuck to it
}
