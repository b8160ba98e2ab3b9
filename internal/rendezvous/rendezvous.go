// Package rendezvous is the score behind `first_choice hash`: rendezvous
// (highest random weight) placement of a key over servers. Every instance
// computes the same winner from the key and the server identities alone,
// and removing a server moves only the keys it had. The HTTP and layer-4
// stick_table policies place keys with the same score, so its outputs are
// part of behaviour and must not change.
package rendezvous

import (
	"github.com/cespare/xxhash/v2"

	"github.com/caddy-sticky/sticky/internal/hashmix"
)

// Hash is the hash of a server identity or of a key's text.
func Hash(s string) uint64 { return xxhash.Sum64String(s) }

// HashBytes is Hash of text held in a byte slice, so callers can format a
// key into a stack buffer and hash it without allocating.
func HashBytes(b []byte) uint64 { return xxhash.Sum64(b) }

// Score is the weight of a server (by the Hash of its identity) for a key
// (by the Hash of its text): the key goes to the server scoring highest.
func Score(serverHash, keyHash uint64) uint64 {
	return hashmix.Splitmix64(serverHash ^ keyHash)
}
