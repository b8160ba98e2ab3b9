package sticktable

import "strings"

// The placement rule. A write to a key is one of two kinds:
//
//   - An explicit change: a pin, a delete, a clear, or a store that
//     overwrote a live entry with another server (a re-stick after a
//     failure). It was decided knowing the key's state, so it must win
//     over everything its node had seen; among explicit changes made
//     without seeing each other, the higher version wins.
//   - A placement: the first store of a key the node had no live entry for
//     (a new user, an expired entry, a key deleted earlier). Two nodes
//     that had not heard of each other's placement of one key (both sides
//     of a partition, a lagging node, racing first requests) placed the
//     same user twice; the user has been using the earlier one, so the
//     earlier placement wins, and nobody already stuck is moved by a node
//     that had not heard of them.
//
// A write's Origin records which kind it is and, for a placement, the
// explicit change it followed (its "base": the delete it replaced, or the
// base of the expired placement it replaced). Writes are totally ordered
// by the tuple
//
//	(base time, kind: explicit < placement,
//	 explicit: version ascending | placement: version descending,
//	 node name, tombstone above entry, server name)
//
// and every node keeps the greatest write it has seen for each key. A
// maximum under a total order is commutative, associative and idempotent
// (a join-semilattice), so any delivery order, loss repaired later or
// duplication gives every node the same winner. An explicit change is
// versioned above everything its node had seen (the clock observes every
// version installed), so its base is higher than theirs and it wins over
// them; a placement shares its base with what it replaced and sorts above
// it (it came after), and with an independent placement of the same base,
// the earlier version is greater.

// Origin values.
const (
	// OriginExplicit marks an explicit change.
	OriginExplicit uint32 = 0
	// OriginFirst marks a placement of a key its node knew nothing about
	// (base 0).
	OriginFirst uint32 = ^uint32(0)
	// originMaxDelta caps the distance, in milliseconds, between a
	// placement and its base (24.8 days): a placement that follows an
	// older explicit change records it as that much older, which still
	// orders it after the change it replaced.
	originMaxDelta = uint64(OriginFirst - 2)
)

// baseMS is the base time of a write, in version milliseconds.
func baseMS(version uint64, origin uint32) uint64 {
	ms := version >> LogicalBits
	switch origin {
	case OriginExplicit:
		return ms
	case OriginFirst:
		return 0
	}
	d := uint64(origin - 1)
	if d >= ms {
		return 0
	}
	return ms - d
}

// placementOrigin is the Origin of a placement at version v that replaces
// a write (prevVersion, prevOrigin); present is false when the key was
// absent, which gives base 0.
func placementOrigin(v uint64, present bool, prevVersion uint64, prevOrigin uint32) uint32 {
	if !present {
		return OriginFirst
	}
	base := baseMS(prevVersion, prevOrigin)
	if base == 0 {
		return OriginFirst
	}
	ms := v >> LogicalBits
	d := uint64(0)
	if ms > base {
		d = ms - base
	}
	return uint32(min(d, originMaxDelta)) + 1
}

// IsPlacement reports whether origin marks a placement.
func IsPlacement(origin uint32) bool { return origin != OriginExplicit }

// Write identifies one write to a key for ordering: what Apply compares.
type Write struct {
	Version uint64
	Node    string
	Origin  uint32
	// Deleted marks a tombstone; Server is empty then.
	Deleted bool
	Server  string
}

// CompareWrites orders two writes to one key by the placement rule (see
// the top of merge.go): the greater one wins on every node. It returns
// -1, 0 or +1; 0 means the same write.
func CompareWrites(a, b Write) int {
	if c := cmpU64(baseMS(a.Version, a.Origin), baseMS(b.Version, b.Origin)); c != 0 {
		return c
	}
	ap, bp := IsPlacement(a.Origin), IsPlacement(b.Origin)
	switch {
	case ap && !bp:
		return 1
	case !ap && bp:
		return -1
	case ap:
		// both placements: the earlier one wins
		if c := cmpU64(a.Version, b.Version); c != 0 {
			return -c
		}
	default:
		if c := cmpU64(a.Version, b.Version); c != 0 {
			return c
		}
	}
	if c := strings.Compare(a.Node, b.Node); c != 0 {
		return c
	}
	// Two writes that share a version and a node can only come from a
	// node that reused versions (its clock went back and it lost its
	// state), or from a forged message: any fixed choice converges.
	if c := cmpU64(uint64(a.Origin), uint64(b.Origin)); c != 0 {
		return c
	}
	switch {
	case a.Deleted && !b.Deleted:
		return 1
	case !a.Deleted && b.Deleted:
		return -1
	}
	return strings.Compare(a.Server, b.Server)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
