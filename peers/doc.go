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
//     of hashes of (key, version, node, origin) of its entries and
//     tombstones, sent as 32 bits folded with a per-digest salt. Each side
//     then streams to the other, over memberlist's reliable (TCP) channel,
//     only the entries of the buckets that differ. Tables that agree cost
//     two digests a round and nothing else.
//   - Healing: every membership change (a join, a rejoin after a
//     partition, a restart) starts a digest exchange between the member
//     that changed and every other member (each pair once), and a node that
//     anti-entropy taught something offers its digests to all members
//     shortly after, so what it learned reaches nodes that cannot (yet)
//     reach its source. A table catching up through one member is left out
//     of the digests it offers others meanwhile, so a node joining empty
//     receives the table once, not once per member. Members seen failing
//     are dialled again every few seconds.
//   - Missed members: gossip can miss a new member on some node during a
//     burst of joins. A node that refuses a message from a non-member runs
//     one push/pull with a live member (rate-limited), which teaches it the
//     sender without waiting for the periodic push/pull (see repair.go).
//   - Hostile input: changes are accepted only from current members (names
//     never create state; per-member state comes from memberlist's events
//     and is capped), digests are answered only to members at the address
//     memberlist knows them by, versions more than max_clock_offset ahead
//     of this node's clock are refused, batches and digests for a table of
//     another key type or length are refused (logged once), and warnings
//     about bad packets are rate-limited. Everything refused is counted
//     (Stats).
//
// Merging is the table's job: Table.Apply keeps, for each key, the
// greatest write by the placement rule (sticktable.CompareWrites: the
// earlier of two independent placements, an explicit change over what its
// node had seen, the higher version among concurrent explicit changes),
// caps its TTL by the local expiry and feeds the version to the table's
// clock, so the order and repetition of deliveries does not matter.
package peers
