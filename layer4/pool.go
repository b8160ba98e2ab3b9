package layer4

import (
	"net/netip"

	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4proxy"
	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/internal/rendezvous"
	"github.com/caddy-sticky/sticky/selection"
)

// serverRecord is what Select needs about one upstream, computed once per
// pool.
type serverRecord struct {
	up *l4proxy.Upstream
	// dial is the upstream's identity by address (its dial addresses,
	// joined with commas when there are several)
	dial string
	// name is its configured name, or empty
	name string
	// id is what the table stores: the name when there is one, else dial
	id string
	// idHash is rendezvous.Hash(id)
	idHash uint64
	// decisions are the shared decisions of this upstream by outcome
	decisions [numShared]*decision
}

// numShared covers the outcomes Select can reach without a failure
// history (miss, hit, expired, invalid, down, drained).
const numShared = int(selection.OutcomeDrained) + 1

func (rec *serverRecord) decision(o selection.Outcome) *decision {
	if int(o) < numShared {
		return rec.decisions[o]
	}
	return &decision{policy: rec.decisions[0].policy, up: rec.up, outcome: o}
}

// poolIndex finds an upstream by what the table stores. caddy-l4 hands every
// Select the handler's own upstream slice, so the index is built once; a
// pool that differs (a policy that wraps this one and filters) is indexed
// again.
type poolIndex struct {
	records []serverRecord
	// byServer maps a stored server (name or dial) to a position in records
	byServer map[string]int
	// byUpstream maps an upstream to its position
	byUpstream map[*l4proxy.Upstream]int
}

func (p *StickTable) indexFor(pool l4proxy.UpstreamPool) *poolIndex {
	if idx := p.index.Load(); idx != nil && idx.matches(pool) {
		return idx
	}
	idx := &poolIndex{
		records:    make([]serverRecord, len(pool)),
		byServer:   make(map[string]int, 2*len(pool)),
		byUpstream: make(map[*l4proxy.Upstream]int, len(pool)),
	}
	for i, up := range pool {
		idx.records[i] = *p.newRecord(up)
		rec := &idx.records[i]
		if _, dup := idx.byServer[rec.dial]; !dup {
			idx.byServer[rec.dial] = i
		}
		if rec.name != "" {
			idx.byServer[rec.name] = i
		}
		idx.byUpstream[up] = i
	}
	p.checkNames.Do(func() { p.warnUnknownServers(idx) })
	p.index.Store(idx)
	return idx
}

// warnUnknownServers reports `server` lines that name no upstream of the
// proxy (the policy sees its upstreams only once connections arrive):
// such a name is never stored, which is easy to miss.
func (p *StickTable) warnUnknownServers(idx *poolIndex) {
	for addr, name := range p.names {
		if _, ok := idx.byServer[addr]; !ok {
			p.logger.Warn("stick_table server address matches no upstream of the proxy (write it as the upstream's dial address)",
				zap.String("table", p.Table), zap.String("server", addr), zap.String("name", name))
		}
	}
}

func (p *StickTable) newRecord(up *l4proxy.Upstream) *serverRecord {
	rec := &serverRecord{up: up, dial: up.String()}
	rec.name = p.names[rec.dial]
	rec.id = rec.dial
	if rec.name != "" {
		rec.id = rec.name
	}
	rec.idHash = rendezvous.Hash(rec.id)
	for o := range rec.decisions {
		rec.decisions[o] = &decision{policy: p, up: up, outcome: selection.Outcome(o)}
	}
	return rec
}

// matches reports whether pool is the pool the index was built from: the
// same upstreams in the same order (compared by pointer, which costs no
// more than a length check for caddy-l4's fixed upstream lists).
func (idx *poolIndex) matches(pool l4proxy.UpstreamPool) bool {
	if len(pool) != len(idx.records) {
		return false
	}
	for i, up := range pool {
		if idx.records[i].up != up {
			return false
		}
	}
	return true
}

// find returns the record of a stored server (a name, or a dial address
// such as an admin pin may give even for a named upstream), or nil when no
// upstream of the pool is that server.
func (idx *poolIndex) find(server string) *serverRecord {
	if i, ok := idx.byServer[server]; ok {
		return &idx.records[i]
	}
	return nil
}

// recordOf returns the record of an upstream of the pool, or nil.
func (idx *poolIndex) recordOf(up *l4proxy.Upstream) *serverRecord {
	if i, ok := idx.byUpstream[up]; ok {
		return &idx.records[i]
	}
	return nil
}

// availability asks caddy-l4 whether an upstream can take a connection now
// (healthy by active and passive checks, below max_connections). caddy-l4
// keeps that test unexported; its `first` policy over a pool of just that
// upstream is the public way to ask it.
var availability l4proxy.FirstSelection

func available(up *l4proxy.Upstream, conn *layer4.Connection) bool {
	one := [1]*l4proxy.Upstream{up}
	return availability.Select(one[:], conn) != nil
}

// anyAvailable reports whether some upstream of pool can take a connection.
func anyAvailable(pool l4proxy.UpstreamPool, conn *layer4.Connection) bool {
	return availability.Select(pool, conn) != nil
}

// drained is the one place this package reads drain state: a drained
// server keeps its clients and gets no new ones. Drains are set by dial
// address or by name.
func (p *StickTable) drained(rec *serverRecord) bool {
	if !p.drainSet.Any() {
		return false
	}
	return p.drainSet.Is(rec.dial) || (rec.name != "" && p.drainSet.Is(rec.name))
}

// chooseNew places a client that is not (or no longer) stuck: never on a
// drained upstream nor on one that failed for this connection, unless that
// leaves nothing available (a drained or retried upstream beats refusing
// the client).
func (p *StickTable) chooseNew(idx *poolIndex, pool l4proxy.UpstreamPool, conn *layer4.Connection, client netip.Addr, exclude []*l4proxy.Upstream) *l4proxy.Upstream {
	if p.FirstChoice == "hash" && client.IsValid() {
		if up := p.rendezvous(idx, conn, placementHash(client), exclude); up != nil {
			return up
		}
	}
	anyDrained := p.drainSet.Any()
	if len(exclude) == 0 && !anyDrained {
		return p.fallback.Select(pool, conn)
	}
	filtered := make(l4proxy.UpstreamPool, 0, len(pool))
	for i := range idx.records {
		rec := &idx.records[i]
		if contains(exclude, rec.up) || (anyDrained && p.drained(rec)) {
			continue
		}
		filtered = append(filtered, rec.up)
	}
	if !anyAvailable(filtered, conn) {
		return p.fallback.Select(pool, conn)
	}
	return p.fallback.Select(filtered, conn)
}

// rendezvous returns the available, undrained, untried upstream scoring
// highest for the key.
func (p *StickTable) rendezvous(idx *poolIndex, conn *layer4.Connection, hashKey uint64, exclude []*l4proxy.Upstream) *l4proxy.Upstream {
	var best *l4proxy.Upstream
	var bestScore uint64
	for i := range idx.records {
		rec := &idx.records[i]
		if contains(exclude, rec.up) || p.drained(rec) || !available(rec.up, conn) {
			continue
		}
		if score := rendezvous.Score(rec.idHash, hashKey); best == nil || score > bestScore {
			best, bestScore = rec.up, score
		}
	}
	return best
}

func contains(list []*l4proxy.Upstream, up *l4proxy.Upstream) bool {
	for _, u := range list {
		if u == up {
			return true
		}
	}
	return false
}
