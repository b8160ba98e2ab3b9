package sticktable

import "context"

// Backing is an authoritative copy of a table kept outside the process: a
// store that several instances share (Valkey or Redis). The local Table is
// then a cache in front of it. A policy of a table that has a Backing
// reads the local table first and calls the Backing only as documented on
// each method, so hits stay local and allocation-free.
//
// Every method keeps the local table in step itself: what it returns is
// already installed locally, and on an error (store slow, down, or its
// circuit breaker open) it has applied the caller's decision locally, to be
// reconciled when the store returns. Errors are for logs and metrics only;
// a caller never fails a request because of one. No method waits longer
// than the store's configured timeout, whatever ctx allows.
type Backing interface {
	// Lookup reads k from the store after a local miss (MatchKey returned
	// OutcomeMiss or OutcomeExpired). found reports an entry; its server is
	// then installed locally.
	Lookup(ctx context.Context, k Key) (server string, found bool, err error)

	// Place sticks a key that has no entry yet to server, only if the
	// store has none either (first writer wins), and returns the server the
	// key is stuck to afterwards: server itself, or the one another
	// instance placed first, which the caller should route to when it is
	// available. Policies call it when they choose a server for a key known
	// at request time, before the request is sent.
	Place(ctx context.Context, k Key, server string) (winner string, err error)

	// Restick moves k from server from, which failed or is gone, to to,
	// only if the store still names from (or nothing): two instances
	// redispatching one user converge on the first re-stick. It returns
	// the server the key is stuck to afterwards.
	Restick(ctx context.Context, k Key, from, to string) (winner string, err error)

	// Touch is called on every local hit with the entry MatchKey returned.
	// It refreshes the store's expiry at most once per Expire/4 per key,
	// in the background; it never blocks and does not allocate otherwise.
	Touch(k Key, e Entry)

	// Pin is an explicit store (admin API): it wins over every write the
	// store has seen, and reaches every instance's cache.
	Pin(ctx context.Context, k Key, server string) error

	// Delete forgets k everywhere.
	Delete(ctx context.Context, k Key) error

	// Clear removes every entry of the table, or only server's when
	// server is not empty, from the store and the local table, and returns
	// how many entries the store held.
	Clear(ctx context.Context, server string) (int, error)
}
