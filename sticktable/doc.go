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
// A table is split into a power-of-two number of shards (up to 64, chosen
// from the size so every shard holds at least a thousand entries) selected
// by a seeded hash of the key. Each shard has its own mutex, its own key
// index (open addressing over 8-byte cells holding part of the hash and a
// slot number) and its own slot arena: fixed-size pages of slots (32 bytes
// for ip keys, 40 for integer, 48 for the others) linked into an LRU list
// and a tombstone list through uint32 indices. No entry is a heap object
// of its own (string and binary keys keep one allocation for their bytes),
// so a million entries are a few thousand large allocations for the
// garbage collector to scan, and take about 49 bytes each with ip keys and
// 102 with 32-byte string keys (HAProxy: about 243 for the latter).
//
// The size cap is split exactly across shards (the per-shard limits add up
// to Size), so Len never exceeds Size. The cost is that eviction (or, with
// NoPurge, refusal) starts when the key's own shard is full, which with
// uniform hashing happens when the table as a whole is about 99% full.
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
// per shard per lock hold, never sweeping the table in one go.
//
// # Replication support
//
// Every entry carries a version: a hybrid logical clock value (physical
// milliseconds << 16 | logical counter) and the name of the node that made
// it. Apply installs a remote entry or tombstone only when its version is
// higher (ties broken by node name), which makes it commutative and
// idempotent. Deletes leave tombstones for Config.Retention so they can
// travel; Clear leaves a single table-wide watermark instead.
package sticktable
