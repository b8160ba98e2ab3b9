// Package sticktable is an in-memory stick table in the style of HAProxy's:
// a bounded, expiring map from a client key (an IP address, a session ID,
// a user number) to the backend server that client is stuck to.
//
// The package depends on the standard library only, so the Caddy modules,
// the admin API and the peers replication layer can all build on it without
// it knowing about any of them. Data flows one way: replication reads the
// change feed (SetOnChange, RangeChanges) and writes through Apply; the
// table never calls into a replication layer.
//
// # Layout
//
// A table is split into a power-of-two number of shards (64 once every
// shard holds at least 1024 entries, more beyond 2M entries so no shard
// holds over 32768, up to 1024 shards; tables smaller than 2048 have one)
// selected by a hash of the key that is the same on every node (so peers'
// full tables evict alike). Each shard has its own mutex
// and one open-addressing hash table (linear probing) whose cells are the
// entries themselves (40 bytes for ip and integer keys, 48 for the
// others), beside a control byte per cell (empty, deleted, or full with 7
// bits of the key's hash). A hit reads the dense control bytes, then the
// one cell that holds its entry: a single cache miss at any size, where a
// separate index in front of an arena cost two dependent ones; the lookup
// also prefetches that cell before it takes the lock and reads the clock,
// so the miss overlaps that work. Cells are linked into an LRU list and a
// tombstone list through uint32 positions. The cell count is any number,
// not a power of two: a shard is rebuilt seven tenths full when it gets
// seven eighths full (or full of deleted cells), which keeps it dense
// (about 54 bytes per ip entry at a million entries, 97 with 32-byte
// string keys; HAProxy: about 243 for the latter) at the price of a
// rebuild, O(entries of the shard), every quarter of growth. Rebuilds
// renumber every slot; bulk walks hold them off (see walk). No entry is a
// heap object of its own (string and binary keys keep one allocation for
// their bytes), so a million entries are a few hundred large allocations
// for the garbage collector to scan.
//
// The size cap is split exactly across shards (the per-shard limits add up
// to Size), so Len never exceeds Size and each shard evicts from its own
// LRU list with no cross-shard coordination. The cost is that eviction
// (or, with NoPurge, refusal) starts when the key's own shard is full:
// with uniform hashing, when the table as a whole is about 98% full at a
// million entries (about 92% at the minimum of 1024 entries per shard),
// and the evicted entry is the least recently used of its shard, not of
// the whole table. A global atomic count would make the cap exact but put
// a contended atomic on every insert and need cross-shard eviction.
//
// # Expiry
//
// An entry lives Expire after its last Match or Store. To keep the hot path
// free of writes, a hit only moves the entry to the front of the LRU list
// and pushes its expiry out when the previous refresh is older than the
// table's refresh granularity, min(1s, Expire/64); an entry can therefore
// expire up to that much earlier than "last use + Expire". An expired entry
// stops matching at once (every read checks the deadline), and its memory
// is reclaimed incrementally: by the lookup that finds it, by a store that
// needs a slot, and by a background reaper that frees at most a small batch
// per shard per lock hold, never sweeping the table in one go, and works at
// most a tenth of each tick, resuming where it stopped at the next (a
// reaper that ran until done held one shard lock after another for as
// long as a mass expiry lasted, and doubled lookup p99 meanwhile). Each tick
// the reaper also moves a clock hand over a few slots per shard, catching
// expired entries that are not at the cold end of their list (replicated
// entries that arrived with little life left), and compacts a shard that
// has shrunk to a quarter of its capacity, which gives the memory back.
//
// # Concurrency
//
// Match, Store and the other single-key operations lock one shard. Bulk
// operations (Clear, ClearServer, Range, Entries, snapshots, Reconfigure,
// reaping) work through a shard in batches of at most 128 slots per lock
// hold and yield between batches, so a lookup never waits behind a whole
// shard. Two operations hold a shard lock for longer, both bounded by one
// shard: growing its key index (rehashing its cells, of the order of
// 100µs for the 16K entries of a shard of a million-entry table, and only
// while it fills) and compacting it (copying at most a quarter of its
// capacity).
//
// # Replication support
//
// Every entry carries a version: a hybrid logical clock value (physical
// milliseconds << 16 | logical counter), the name of the node that made
// it and its origin (a placement or an explicit change). Apply installs a
// remote entry or tombstone only when it wins by the placement rule
// (merge.go: the earlier of two independent placements, an explicit change
// over what its node had seen, the higher version among explicit
// changes), a total order, which makes Apply commutative, associative and
// idempotent. Deletes leave tombstones for Config.Retention so they can
// travel; Clear leaves a single table-wide watermark instead.
package sticktable
