package sticktable

import (
	"fmt"
	"slices"
	"strings"
	"sync"
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

// The per-server counts live in the shards: a shard already keeps, for
// each server name it interns, the number of slots referencing it (the
// name's reference count, which every store, replace, delete, expiry,
// eviction, clear and applied change adjusts under the shard lock), and
// next to it (names.lastNew) the newest new user. Nothing is shared
// between shards on the write path, so keeping the counts costs no
// contended atomic; a reader sums over the shards, O(shards x servers).
//
// serverTally is the table-wide part: which servers the shards intern
// (taken only when a shard interns a name for the first time or forgets
// it), and the last new user of servers no shard holds any more. Lock
// order: shard, then tally.
type serverTally struct {
	mu     sync.Mutex
	byName map[string]*serverCount
	idle   int // records no shard holds
}

type serverCount struct {
	holders int   // shards that intern the name
	lastNew int64 // newest new user of shards that forgot the name, Unix ms
}

// interned is called when the names gain index i.
func (n *names) interned(i uint16) {
	if n.tally == nil {
		return
	}
	for len(n.lastNew) <= int(i) {
		n.lastNew = append(n.lastNew, 0)
	}
	n.lastNew[i] = 0
	n.tally.attach(n.list[i])
}

// forgotten is called when index i loses its last reference.
func (n *names) forgotten(i uint16) {
	if n.tally == nil {
		return
	}
	n.tally.detach(n.list[i], n.lastNew[i])
	n.lastNew[i] = 0
}

// sawNewUser records an entry created with version v naming server i: a
// key that had no live entry (a new user).
func (n *names) sawNewUser(i uint16, v uint64) {
	if n.tally == nil || i == 0 {
		return
	}
	if ms := int64(v >> LogicalBits); ms > n.lastNew[i] {
		n.lastNew[i] = ms
	}
}

func (t *serverTally) attach(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byName == nil {
		t.byName = map[string]*serverCount{}
	}
	c := t.byName[name]
	if c == nil {
		c = &serverCount{}
		t.byName[name] = c
	} else if c.holders == 0 {
		t.idle--
	}
	c.holders++
}

func (t *serverTally) detach(name string, lastNew int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.byName[name]
	c.lastNew = max(c.lastNew, lastNew)
	if c.holders--; c.holders > 0 {
		return
	}
	if t.idle >= maxIdleServers {
		delete(t.byName, name)
		return
	}
	t.idle++
}

// eachServerNames calls fn with every shard's server names, the shard
// locked.
func (t *Table) eachServerNames(fn func(*names)) {
	switch {
	case t.ipEng != nil:
		eachNames(t.ipEng, fn)
	case t.v6Eng != nil:
		eachNames(t.v6Eng, fn)
	case t.intEng != nil:
		eachNames(t.intEng, fn)
	default:
		eachNames(t.strEng, fn)
	}
}

func eachNames[K comparable](g *engine[K], fn func(*names)) {
	for si := range g.shards {
		s := &g.shards[si]
		s.mu.Lock()
		fn(&s.servers)
		s.mu.Unlock()
	}
}

// ServerCounts returns every server the table has entries for, and those
// that recently had some, with the number of entries naming each and when
// it last got a new user, sorted by server. The counts are kept as entries
// change, so this costs O(shards x servers), never a walk of the entries.
func (t *Table) ServerCounts() []ServerCount {
	type agg struct {
		stuck   int
		lastNew int64
	}
	byName := map[string]*agg{}
	t.eachServerNames(func(n *names) {
		for i, name := range n.list {
			if i == 0 || n.refs[i] == 0 {
				continue
			}
			a := byName[name]
			if a == nil {
				a = &agg{}
				byName[name] = a
			}
			a.stuck += int(n.refs[i])
			a.lastNew = max(a.lastNew, n.lastNew[i])
		}
	})
	t.tally.mu.Lock()
	for name, c := range t.tally.byName {
		a := byName[name]
		if a == nil {
			a = &agg{}
			byName[name] = a
		}
		a.lastNew = max(a.lastNew, c.lastNew)
	}
	t.tally.mu.Unlock()
	out := make([]ServerCount, 0, len(byName))
	for name, a := range byName {
		sc := ServerCount{Server: name, Stuck: a.stuck}
		if a.lastNew != 0 {
			sc.LastNewUser = time.UnixMilli(a.lastNew)
		}
		out = append(out, sc)
	}
	slices.SortFunc(out, func(a, b ServerCount) int { return strings.Compare(a.Server, b.Server) })
	return out
}

// Stuck returns how many entries name server, in O(shards).
func (t *Table) Stuck(server string) int {
	n := 0
	t.eachServerNames(func(ns *names) {
		if i, ok := ns.byName[server]; ok {
			n += int(ns.refs[i])
		}
	})
	return n
}

// checkCounts verifies the per-server counts against a full walk of every
// shard, with all shard locks held so no change lands between the walk and
// the comparison (tests only, through check).
func (g *engine[K]) checkCounts() error {
	for si := range g.shards {
		g.shards[si].mu.Lock()
	}
	defer func() {
		for si := range g.shards {
			g.shards[si].mu.Unlock()
		}
	}()
	scanned := map[string]int{}
	counted := map[string]int{}
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
			if i >= len(s.servers.lastNew) {
				return fmt.Errorf("shard %d: server %q (%d) has no last-new-user slot", si, name, i)
			}
			counted[name] += int(s.servers.refs[i])
			holders[name]++
		}
	}
	if fmt.Sprint(counted) != fmt.Sprint(scanned) {
		return fmt.Errorf("per-server counts %v, the entries say %v", counted, scanned)
	}
	tally := &g.t.tally
	tally.mu.Lock()
	defer tally.mu.Unlock()
	idle := 0
	for name, c := range tally.byName {
		if c.holders != holders[name] {
			return fmt.Errorf("server %q: recorded as held by %d shards, %d intern it", name, c.holders, holders[name])
		}
		if c.holders == 0 {
			idle++
		}
	}
	for name := range holders {
		if tally.byName[name] == nil {
			return fmt.Errorf("server %q: interned by a shard but not recorded", name)
		}
	}
	if idle != tally.idle || idle > maxIdleServers {
		return fmt.Errorf("idle records: %d, counted %d (at most %d)", idle, tally.idle, maxIdleServers)
	}
	return nil
}
