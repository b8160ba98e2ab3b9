package selection

import "github.com/caddy-sticky/sticky/internal/drain"

// The policies read drain state only through these functions, over the
// drained set the sticky app lends them (nil: nothing is drained).

// anyDrained reports whether any server is drained, so callers skip the
// per-server check in the common case.
func anyDrained(d *drain.Set) bool { return d.Any() }

// isDrained reports whether the server with this dial address is drained.
func isDrained(d *drain.Set, dial string) bool { return d.Is(dial) }

// serverDrained is anyDrained && isDrained, for one server.
func serverDrained(d *drain.Set, dial string) bool { return d.Any() && d.Is(dial) }
