package selection

import (
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-sticky/sticky/sticktable"
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
		return rendezvous(pool, key, exclude)
	}
	drained := anyDrained()
	total, n := 0, 0
	for _, up := range pool {
		if !up.Available() || containsString(exclude, up.Dial) || (drained && isDrained(up.Dial)) {
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
		up := rendezvous(pool, key, skip)
		if up == nil {
			break
		}
		id := p.identity(up.Dial)
		if p.stuckCount(id) < limit {
			p.notePlaced(id)
			return up
		}
		skip = append(skip[:len(skip):len(skip)], up.Dial)
	}
	return rendezvous(pool, key, exclude)
}

// identity is what the table stores for a server: its configured name, or
// its dial address.
func (p *StickTable) identity(dial string) string {
	if name, ok := p.names[dial]; ok {
		return name
	}
	return dial
}

// stuckCount and notePlaced are the policy's only access to per-server
// counts, so a table that keeps them itself can replace stuckCounts here.
func (p *StickTable) stuckCount(server string) int { return p.loads.get(p.table, server) }
func (p *StickTable) notePlaced(server string)     { p.loads.add(server) }

// stuckCounts approximates how many keys of the table are stuck to each
// server: a count taken from the table (Table.Servers, a scan, so at most
// every `every`, in the background after the first), plus the placements
// this policy made since. Peers' entries, expiry and eviction reach it at
// the next scan.
type stuckCounts struct {
	mu         sync.Mutex
	counts     map[string]int
	next       time.Time
	every      time.Duration
	refreshing bool
}

const stuckCountsEvery = 5 * time.Second

func (c *stuckCounts) get(t *sticktable.Table, server string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	switch {
	case c.counts == nil:
		c.counts = countServers(t)
		c.next = now.Add(c.interval())
	case now.After(c.next) && !c.refreshing:
		c.refreshing = true
		go func() {
			fresh := countServers(t)
			c.mu.Lock()
			c.counts, c.refreshing = fresh, false
			c.next = time.Now().Add(c.interval())
			c.mu.Unlock()
		}()
	}
	return c.counts[server]
}

func (c *stuckCounts) add(server string) {
	c.mu.Lock()
	if c.counts == nil {
		c.counts = map[string]int{}
	}
	c.counts[server]++
	c.mu.Unlock()
}

func (c *stuckCounts) interval() time.Duration {
	if c.every > 0 {
		return c.every
	}
	return stuckCountsEvery
}

func countServers(t *sticktable.Table) map[string]int {
	m := map[string]int{}
	for _, s := range t.Servers() {
		m[s.Server] = s.Entries
	}
	return m
}
