// Package valkey keeps stick tables in a shared Valkey or Redis (>= 7)
// server, so that every Caddy instance of a fleet answers from one truth.
//
// The local sticktable.Table stays in front as a cache: hits never leave
// the process. A Store is one connection to the server (one client, one
// circuit breaker, one invalidation feed) that any number of tables share
// through Bind; each bound table implements sticktable.Backing, the seam
// the stick_table policy calls on a miss, on placing a new key, on a
// re-stick and for admin changes.
//
// # Keys and values
//
// An entry is the string key <prefix><table>:<key bytes>, where the key
// bytes are sticktable.Key.AppendBytes (4 bytes for an IPv4 key, the text
// of a string key), with a native TTL of the table's expire. Its value is
// a compact, versioned encoding of who wrote it and where it points: see
// encodeValue. A value that does not decode is treated as absent and
// counted (caddy_sticky_store_malformed_values_total). Drained servers are
// the members of the set <prefix>_sticky_drain.
//
// # Consistency
//
// A new key is written with SET NX GET: the first instance wins, the
// others get its value back in the same round trip and route there, so
// racing first requests agree at once. Re-sticks, pins, deletes and clears
// are conditional writes (Lua scripts): a re-stick only moves a key away
// from the server the caller saw fail, a pin or a delete only overrides
// older versions. Every write reaches the other instances' caches through
// server-assisted invalidation (RESP3 CLIENT TRACKING in broadcast mode on
// the prefix): the server pushes the names of changed keys, the receiving
// instance drops its copy at once and fetches the new value in the
// background. TTL refreshes (PEXPIRE, which also invalidates every copy)
// are sent at most once per expire/4 per key.
//
// # Degraded mode
//
// Every call is bounded by the configured timeout. After a few consecutive
// failures a circuit breaker opens: calls fail at once, decisions are made
// from the local table and the policy's fallback, and a prober pings the
// server. When it answers the breaker closes and the local table is
// reconciled with the store: local entries the store lacks are written if
// absent, entries the store holds differently are adopted, so instances
// that decided alone during the outage converge on one answer.
package valkey
