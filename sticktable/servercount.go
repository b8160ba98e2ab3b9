package sticktable

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ServerCount is one server as the per-server counters see it.
type ServerCount struct {
	// Server is the identity entries store (dial address or name).
	Server string
	// Stuck is the number of entries naming the server, expired entries
	// the reaper has not reclaimed yet included (as in Stats.Entries).
	Stuck int
	// LastNewUser is when an entry for a key that had no live entry was
	// last created naming the server (locally or applied from a peer):
	// the write's version time. Zero if never since the table was created.
	LastNewUser time.Time
}

// maxIdleServers bounds how many servers with no entries left the table
// remembers (for their LastNewUser), so upstreams that come and go
// (dynamic sources) cannot grow it without limit.
const maxIdleServers = 256

// serverTally holds the table's per-server counters. Shards reach a
// server's counter through their interned name (names.counts), so keeping
// the counts costs one atomic add where a slot takes or drops a server
// reference; the mutex is taken only when a shard interns a name for the
// first time or forgets it, and by readers.
type serverTally struct {
	mu     sync.Mutex
	byName map[string]*serverCount
	idle   int // counters no shard holds
}

type serverCount struct {
	name    string
	stuck   atomic.Int64
	lastNew atomic.Int64 // Unix milliseconds; 0 = never
	holders int          // shards that intern the name; under serverTally.mu
}

// attach returns name's counter for a shard that interns the name.
func (t *serverTally) attach(name string) *serverCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byName == nil {
		t.byName = map[string]*serverCount{}
	}
	c := t.byName[name]
	if c == nil {
		c = &serverCount{name: name}
		t.byName[name] = c
	} else if c.holders == 0 {
		t.idle--
	}
	c.holders++
	return c
}

// detach is attach undone, when a shard forgets the name (no slot of it
// references the server any more).
func (t *serverTally) detach(c *serverCount) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.holders--; c.holders > 0 {
		return
	}
	if t.idle >= maxIdleServers {
		delete(t.byName, c.name)
		return
	}
	t.idle++
}

// sawNewUser records that an entry naming c's server was created with
// version v.
func (c *serverCount) sawNewUser(v uint64) {
	ms := VersionTime(v).UnixMilli()
	for {
		old := c.lastNew.Load()
		if ms <= old || c.lastNew.CompareAndSwap(old, ms) {
			return
		}
	}
}

// list returns the counters sorted by server.
func (t *serverTally) list() []ServerCount {
	t.mu.Lock()
	out := make([]ServerCount, 0, len(t.byName))
	for _, c := range t.byName {
		sc := ServerCount{Server: c.name, Stuck: int(c.stuck.Load())}
		if ms := c.lastNew.Load(); ms != 0 {
			sc.LastNewUser = time.UnixMilli(ms)
		}
		out = append(out, sc)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b ServerCount) int { return strings.Compare(a.Server, b.Server) })
	return out
}

// stuck returns the count of one server.
func (t *serverTally) stuck(server string) int {
	t.mu.Lock()
	c := t.byName[server]
	t.mu.Unlock()
	if c == nil {
		return 0
	}
	return int(c.stuck.Load())
}

// ServerCounts returns every server the table has entries for, and those
// that recently had some, with the number of entries naming each and when
// it last got a new user, sorted by server. The counts are kept as entries
// change, so this costs O(servers), not a walk of the table.
func (t *Table) ServerCounts() []ServerCount { return t.tally.list() }

// Stuck returns how many entries name server, in O(1).
func (t *Table) Stuck(server string) int { return t.tally.stuck(server) }

// checkCounts verifies the per-server counters against a full walk of
// every shard, with all shard locks held so no change lands between the
// walk and the comparison (tests only, through check).
func (g *engine[K]) checkCounts() error {
	for si := range g.shards {
		g.shards[si].mu.Lock()
	}
	defer func() {
		for si := range g.shards {
			g.shards[si].mu.Unlock()
		}
	}()
	scanned := map[string]int64{}
	holders := map[string]int{}
	for si := range g.shards {
		s := &g.shards[si]
		for i := s.at(lruHead).next; i != lruHead; i = s.at(i).next {
			scanned[s.servers.list[s.at(i).server]]++
		}
		for i, name := range s.servers.list {
			if i == 0 || s.servers.refs[i] == 0 {
				continue
			}
			c := s.servers.counts[i]
			if c == nil || c.name != name {
				return fmt.Errorf("shard %d: server %q has no counter of its own", si, name)
			}
			holders[name]++
		}
	}
	tally := &g.t.tally
	tally.mu.Lock()
	defer tally.mu.Unlock()
	idle := 0
	for name, c := range tally.byName {
		if got, want := c.stuck.Load(), scanned[name]; got != want {
			return fmt.Errorf("server %q: counter says %d entries, the table holds %d", name, got, want)
		}
		if c.holders != holders[name] {
			return fmt.Errorf("server %q: counter held by %d shards, %d intern it", name, c.holders, holders[name])
		}
		if c.holders == 0 {
			idle++
		}
	}
	for name, n := range scanned {
		if tally.byName[name] == nil {
			return fmt.Errorf("server %q: %d entries but no counter", name, n)
		}
	}
	if idle != tally.idle || idle > maxIdleServers {
		return fmt.Errorf("idle counters: %d, recorded %d (at most %d)", idle, tally.idle, maxIdleServers)
	}
	return nil
}
