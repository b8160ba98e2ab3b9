package valkey

import (
	"sync/atomic"
	"time"
)

// breakerThreshold is how many consecutive failed calls open the breaker:
// one timeout can be a hiccup, three in a row cost every following
// request its timeout until the server is back.
const breakerThreshold = 3

// breaker is a circuit breaker with two states. Closed: calls go to the
// server; consecutive failures are counted and a success resets the
// count. Open: calls fail at once without touching the network, and only
// the prober talks to the server; its first success closes the breaker.
type breaker struct {
	open     atomic.Bool
	fails    atomic.Int32
	openedAt atomic.Int64 // unix nanoseconds
}

func (b *breaker) isOpen() bool { return b.open.Load() }

// success records a call the server answered.
func (b *breaker) success() {
	if b.fails.Load() != 0 {
		b.fails.Store(0)
	}
}

// failure records a failed call and reports whether it opened the breaker.
func (b *breaker) failure() bool {
	if b.fails.Add(1) < breakerThreshold {
		return false
	}
	return b.trip()
}

// trip opens the breaker; it reports whether it was closed before.
func (b *breaker) trip() bool {
	if b.open.CompareAndSwap(false, true) {
		b.openedAt.Store(time.Now().UnixNano())
		return true
	}
	return false
}

// reset closes the breaker and returns how long it was open (0 if it was
// not).
func (b *breaker) reset() time.Duration {
	b.fails.Store(0)
	if b.open.CompareAndSwap(true, false) {
		return time.Since(time.Unix(0, b.openedAt.Load()))
	}
	return 0
}
