package sticktable

import (
	"strings"
	"sync/atomic"
	"time"
)

// MaxVersion is the greatest version; clocks stop there instead of
// wrapping.
const MaxVersion = ^uint64(0)

// LogicalBits is the width of the logical counter in a version: a version
// is physical Unix milliseconds << LogicalBits | logical counter.
const LogicalBits = 16

// Clock is a hybrid logical clock. Its values follow wall-clock
// milliseconds, so "the later write wins" means what a user expects, but
// never go backwards and always exceed every value the clock has issued or
// observed, so a write made after seeing another is ordered after it even
// when the two machines' clocks disagree.
//
// The zero Clock is ready to use and reads time.Now. A Clock is safe for
// concurrent use.
type Clock struct {
	last atomic.Uint64
	now  func() time.Time
}

// NewClock returns a clock that reads physical time from now (nil means
// time.Now); tests inject a fake.
func NewClock(now func() time.Time) *Clock {
	return &Clock{now: now}
}

// Now returns a fresh version, greater than any returned or observed.
func (c *Clock) Now() uint64 {
	var t time.Time
	if c.now != nil {
		t = c.now()
	} else {
		t = time.Now()
	}
	return c.next(t.UnixMilli())
}

// next is Now with the physical time supplied, so table operations that
// already read the time do not read it twice.
func (c *Clock) next(ms int64) uint64 {
	p := MaxVersion
	if ms < 1<<(64-LogicalBits) {
		p = uint64(max(ms, 0)) << LogicalBits
	}
	for {
		old := c.last.Load()
		n := p
		if n <= old {
			// Saturate rather than wrap to 0, which would lose every
			// comparison from then on; peers refuse versions that far
			// ahead anyway (max_clock_offset), so only a clock observing
			// a local snapshot or a test can get here.
			n = old + 1
			if old == MaxVersion {
				n = MaxVersion
			}
		}
		if c.last.CompareAndSwap(old, n) {
			return n
		}
	}
}

// Observe records a version seen from elsewhere (a peer, a snapshot), so
// every later Now is greater than it.
func (c *Clock) Observe(remote uint64) {
	for {
		old := c.last.Load()
		if remote <= old || c.last.CompareAndSwap(old, remote) {
			return
		}
	}
}

// Last returns the greatest version issued or observed so far.
func (c *Clock) Last() uint64 { return c.last.Load() }

// VersionTime returns the physical time encoded in a version.
func VersionTime(v uint64) time.Time {
	return time.UnixMilli(int64(v >> LogicalBits))
}

// CompareVersions orders two (version, node) pairs the way Apply does:
// by version, then by node name, so two nodes that issue the same version
// still agree on a winner. It returns -1, 0 or +1.
func CompareVersions(av uint64, anode string, bv uint64, bnode string) int {
	switch {
	case av < bv:
		return -1
	case av > bv:
		return 1
	}
	return strings.Compare(anode, bnode)
}
