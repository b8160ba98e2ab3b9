package selection

import "github.com/caddy-sticky/sticky/internal/drain"

// The policies read drain state only through these functions, so the state
// can move (to the sticky app's state owner) by changing them alone.

// anyDrained reports whether any server is drained, so callers skip the
// per-server check in the common case.
func anyDrained() bool { return drain.Any() }

// isDrained reports whether the server with this dial address is drained.
func isDrained(dial string) bool { return drain.Is(dial) }

// serverDrained is anyDrained() && isDrained(dial), for one server.
func serverDrained(dial string) bool { return drain.Any() && drain.Is(dial) }
