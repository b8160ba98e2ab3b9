// Package peers replicates stick tables between Caddy instances, the way
// HAProxy's `peers` section does, on top of hashicorp/memberlist.
//
// memberlist provides membership, failure detection and the encrypted,
// authenticated transport (AES-GCM with a shared keyring); this package
// adds only what is specific to stick tables:
//
//   - Steady state: every local change a table reports through its change
//     feed is queued, batched every few milliseconds into compact binary
//     messages of at most one UDP packet, and sent best-effort to every
//     live member. Loss is repaired by anti-entropy, so no per-message
//     acknowledgements or retransmissions are needed.
//   - Anti-entropy and catch-up: memberlist's periodic push/pull (and the
//     push/pull of a join) carries a digest of each table: 16 to 4096
//     buckets (by table size) by key hash, each an order-independent sum
//     of hashes of (key, version, node) of its entries and tombstones. Each side then streams to the
//     other, over memberlist's reliable (TCP) channel, only the entries of
//     the buckets that differ. A node that restarts, or returns from a
//     partition, catches up without anyone restarting and without whole
//     tables being sent when a few entries differ.
//
// Merging is the table's job: Table.Apply installs a change only if its
// version (hybrid logical clock, then node name) is higher, caps its TTL by
// the local expiry and feeds the version to the table's clock, so the
// order and repetition of deliveries does not matter.
package peers
