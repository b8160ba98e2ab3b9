package selection

import (
	"context"

	"github.com/caddy-sticky/sticky/sticktable"
)

// BackingSource is implemented by a sticky app whose tables can keep their
// authoritative copy in a shared store.
type BackingSource interface {
	// TableBacking returns the store behind the named table of the config
	// being provisioned, or nil when the table is local (or replicated by
	// peers).
	TableBacking(name string) sticktable.Backing
}

// backingFor returns the table's store, if the app has one for it.
func backingFor(src any, table string) sticktable.Backing {
	if bs, ok := src.(BackingSource); ok {
		return bs.TableBacking(table)
	}
	return nil
}

// storeBacked records k with the server that answered, through the store:
// a key with no known server is placed (written if absent), a key stuck to
// another server (the one that failed, or the winner of a placement that
// failed since) is re-stuck conditionally, and a key already stuck to it
// costs nothing.
func (p *StickTable) storeBacked(ctx context.Context, k sticktable.Key, stuck, server string) {
	var err error
	switch {
	case stuck == "":
		_, err = p.backing.Place(ctx, k, server)
	case stuck != server:
		_, err = p.backing.Restick(ctx, k, stuck, server)
	}
	if err != nil {
		p.debug("store call failed; decided locally", err.Error())
	}
}
