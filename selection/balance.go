package selection

import (
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Bounded-load placement for first_choice hash (balance_factor, as HAProxy's
// hash-balance-factor): a new key goes to the first server in its own
// rendezvous ranking whose stuck keys stay within factor/100 of the mean
// over the available servers, counting the key being placed. Only keys
// being placed are affected; a key in the table keeps its server. Two
// instances that share no table agree on a key as long as their loads keep
// the same servers under the limit (measured in balance_test.go).

// placeByHash places a key that is not in the table (or must move).
func (p *StickTable) placeByHash(pool reverseproxy.UpstreamPool, key string, exclude []string) *reverseproxy.Upstream {
	if p.BalanceFactor == 0 {
		return rendezvous(p.drained, pool, key, exclude, p.names)
	}
	drained := anyDrained(p.drained)
	total, n := 0, 0
	for _, up := range pool {
		if !up.Available() || containsString(exclude, up.Dial) || (drained && isDrained(p.drained, up.Dial)) {
			continue
		}
		total += p.stuckCount(p.identity(up.Dial))
		n++
	}
	if n == 0 {
		return nil
	}
	// the most keys a server may hold once this one is placed, rounded up
	// so that the least loaded server always qualifies
	limit := ((total+1)*p.BalanceFactor + 100*n - 1) / (100 * n)
	skip := exclude
	for range n {
		up := rendezvous(p.drained, pool, key, skip, p.names)
		if up == nil {
			break
		}
		id := p.identity(up.Dial)
		if p.stuckCount(id) < limit {
			return up
		}
		skip = append(skip[:len(skip):len(skip)], up.Dial)
	}
	return rendezvous(p.drained, pool, key, exclude, p.names)
}

// stuckCount is the number of the table's entries naming server, which
// the table keeps as entries change (never a scan). A placement counts once
// its key is stored: at once for keys known at request time (they are
// reserved when placed), on the response for keys learned from it.
func (p *StickTable) stuckCount(server string) int { return p.table.Stuck(server) }
