package selection

import (
	"fmt"
	"github.com/caddy-sticky/sticky/internal/hashmix"
	"hash/maphash"
	"math/bits"
	"net/http"
	"net/netip"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/cespare/xxhash/v2"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/internal/haproxycookie"
)

// serverRecord is everything the hot path needs about one upstream,
// computed once per pool.
type serverRecord struct {
	dial  string
	value string
	pos   int
	// plain: the value parses as itself, a server part without dates, so
	// a cookie equal to it needs no parsing (see checkValue)
	plain bool
	// setCookie holds the ready Set-Cookie header, without and with Secure,
	// for cookies that carry no dates.
	setCookie [2]string
	// hit is the shared decision for a valid cookie that needs no rewrite,
	// drainedHit the same while the server is drained.
	hit, drainedHit *cookieDecision
	// presented is the cookie as read when it is exactly value (see
	// readCookie)
	presented *presentedCookie
}

// serverIndex maps cookie values and dial addresses to upstreams. Values
// derived from dynamic_key are found through a seeded hash and then
// compared in constant time, so neither the map nor the comparison leaks
// how close a forged value came to one. The other values (server lines,
// hashes of dial addresses) are no secret: anyone who knows the addresses
// can compute them, so they are looked up directly.
type serverIndex struct {
	byValue  valueTable
	bySecret map[uint64]*serverRecord
	byDial   map[string]*serverRecord
	size     int
	// dials is the pool the index was built from, in order
	dials []string
}

var valueSeed = maphash.MakeSeed()

// indexFor returns the index for pool, building it on first use. Pools from
// dynamic upstream sources are new slices on every request, so an index is
// not tied to one slice: each hit verifies its record's position instead,
// which costs one string comparison and no scan.
func (s *StickyCookie) indexFor(pool reverseproxy.UpstreamPool) *serverIndex {
	if idx := s.index.Load(); idx != nil && idx.size == len(pool) {
		return idx
	}
	return s.rebuild(pool)
}

func (s *StickyCookie) rebuild(pool reverseproxy.UpstreamPool) *serverIndex {
	idx := &serverIndex{
		byValue:  newValueTable(len(pool)),
		bySecret: make(map[uint64]*serverRecord),
		byDial:   make(map[string]*serverRecord, len(pool)),
		size:     len(pool),
		dials:    make([]string, len(pool)),
	}
	for i, up := range pool {
		idx.dials[i] = up.Dial
		if _, dup := idx.byDial[up.Dial]; dup {
			continue
		}
		rec := s.newRecord(up.Dial, i)
		idx.byDial[up.Dial] = rec
		if s.secretValue(up.Dial) {
			idx.bySecret[maphash.String(valueSeed, rec.value)] = rec
		} else {
			idx.byValue.add(rec)
		}
	}
	s.index.Store(idx)
	return idx
}

func (s *StickyCookie) newRecord(dial string, pos int) *serverRecord {
	rec := &serverRecord{dial: dial, value: s.valueFor(dial), pos: pos}
	if p, ok := haproxycookie.Parse(rec.value); ok && p.Server == rec.value {
		rec.plain = true
	}
	rec.setCookie[0] = s.buildSetCookie(rec.value, false)
	rec.setCookie[1] = s.buildSetCookie(rec.value, true)
	rec.hit = &cookieDecision{policy: s, server: rec, outcome: OutcomeHit}
	rec.drainedHit = &cookieDecision{policy: s, server: rec, outcome: OutcomeDrained}
	rec.presented = &presentedCookie{value: rec.value, presence: haproxycookie.Present}
	return rec
}

// lookupValue finds the upstream a cookie value names in the current pool.
// A known value whose upstream is no longer where the index says means the
// pool changed (reordered, or a member replaced, under the same size): the
// index is rebuilt from the current pool once and asked again.
//
// An unknown value may name a server that joined a pool of the same size
// (dynamic upstreams, or a cookie from an instance that saw the change
// first): when the pool differs from the one indexed, the index is rebuilt
// once. That costs a comparison of the dial addresses, on misses only.
func (s *StickyCookie) lookupValue(idx *serverIndex, value string, pool reverseproxy.UpstreamPool) *serverRecord {
	rec, moved := idx.find(value, pool)
	if moved || (rec == nil && !idx.matches(pool)) {
		rec, _ = s.rebuild(pool).find(value, pool)
	}
	return rec
}

// matches reports whether pool is the pool the index was built from.
func (idx *serverIndex) matches(pool reverseproxy.UpstreamPool) bool {
	if len(pool) != len(idx.dials) {
		return false
	}
	for i, up := range pool {
		if up.Dial != idx.dials[i] {
			return false
		}
	}
	return true
}

// find returns the record of value if it is at its recorded position in
// pool; moved reports a known value found elsewhere or nowhere.
func (idx *serverIndex) find(value string, pool reverseproxy.UpstreamPool) (rec *serverRecord, moved bool) {
	rec = idx.byValue.find(value)
	if rec == nil && len(idx.bySecret) > 0 {
		rec = idx.bySecret[maphash.String(valueSeed, value)]
		if rec != nil && !haproxycookie.Equal(rec.value, value) {
			rec = nil
		}
	}
	if rec == nil {
		return nil, false
	}
	if rec.pos >= len(pool) || pool[rec.pos].Dial != rec.dial {
		return nil, true
	}
	return rec, false
}

// valueTable holds the records of values that are no secret, by value:
// open addressing over a power-of-two array at most half full, hashed from
// the value's length and its first and last eight bytes, so the usual
// lookup is one multiplication, one probe and one string comparison (a Go
// map hashes the whole value and costs several times that on a hit).
// Values that share those bytes only probe further.
type valueTable struct {
	slots []*serverRecord
	mask  uint64
}

func newValueTable(n int) valueTable {
	size := 4
	for size < 2*n {
		size *= 2
	}
	return valueTable{slots: make([]*serverRecord, size), mask: uint64(size - 1)}
}

// add inserts rec; values are distinct (rebuild adds one record per dial
// address, and setup refuses two servers with the same value), and the
// first record of a value is kept.
func (t *valueTable) add(rec *serverRecord) {
	for i := valueHash(rec.value) & t.mask; ; i = (i + 1) & t.mask {
		switch cur := t.slots[i]; {
		case cur == nil:
			t.slots[i] = rec
			return
		case cur.value == rec.value:
			return
		}
	}
}

func (t *valueTable) find(value string) *serverRecord {
	for i := valueHash(value) & t.mask; ; i = (i + 1) & t.mask {
		rec := t.slots[i]
		if rec == nil || rec.value == value {
			return rec
		}
	}
}

func valueHash(v string) uint64 {
	var a, b uint64
	if len(v) >= 8 {
		a, b = hashmix.Word(v), hashmix.Word(v[len(v)-8:])
	} else {
		for i := 0; i < len(v); i++ {
			a = a<<8 | uint64(v[i])
		}
	}
	h := (a ^ bits.RotateLeft64(b, 29) ^ uint64(len(v))) * 0x9e3779b97f4a7c15
	return h ^ h>>32
}

// recordFor returns the record of an upstream the fallback chose.
func (s *StickyCookie) recordFor(pool reverseproxy.UpstreamPool, up *reverseproxy.Upstream) *serverRecord {
	idx := s.indexFor(pool)
	if rec := idx.byDial[up.Dial]; rec != nil && rec.pos < len(pool) && pool[rec.pos].Dial == up.Dial {
		return rec
	}
	// the pool changed under the same size: rebuild once
	if rec := s.rebuild(pool).byDial[up.Dial]; rec != nil {
		return rec
	}
	return s.newRecord(up.Dial, 0)
}

// secretValue reports whether the cookie value of an upstream derives from
// dynamic_key (it has no server line).
func (s *StickyCookie) secretValue(dial string) bool {
	_, fixed := s.servers[dial]
	return s.dynamicKey != nil && !fixed
}

// valueFor is the cookie value of an upstream: its configured value, else
// the dynamic value, else a hash of its dial address.
func (s *StickyCookie) valueFor(dial string) string {
	if v, ok := s.servers[dial]; ok {
		return v
	}
	if s.dynamicKey != nil {
		host, port := splitDial(dial)
		if addr, err := netip.ParseAddr(host); err == nil {
			return haproxycookie.DynamicValue(s.dynamicKey, addr, port)
		}
		return haproxycookie.DynamicValueHost(s.dynamicKey, host, port)
	}
	return fmt.Sprintf("%016x", xxhash.Sum64String(dial))
}

// splitDial extracts host and port from a dial address such as
// "10.0.0.11:8080", "[::1]:80" or "tcp/app:80".
func splitDial(dial string) (string, uint16) {
	addr, err := caddy.ParseNetworkAddress(dial)
	if err != nil {
		return dial, 0
	}
	return strings.TrimSuffix(strings.TrimPrefix(addr.Host, "["), "]"), uint16(addr.StartPort)
}

// normalizeDial lets `server` lines name an upstream the way the
// reverse_proxy line does, with or without a scheme.
func normalizeDial(addr string) string {
	addr = strings.TrimPrefix(addr, "http://")
	addr = strings.TrimPrefix(addr, "https://")
	return strings.TrimSuffix(addr, "/")
}

// selectExcluding asks the fallback for an upstream for a new (or moving)
// user: never a drained server, and not one that already failed during this
// request. When that leaves nothing available it lets the fallback choose
// among all of them: a drained or retried server beats failing the request.
func selectExcluding(fb reverseproxy.Selector, drainSet *drain.Set, pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter, exclude []string) *reverseproxy.Upstream {
	drained := anyDrained(drainSet)
	if len(exclude) == 0 && !drained {
		return fb.Select(pool, r, w)
	}
	filtered := make(reverseproxy.UpstreamPool, 0, len(pool))
	available := false
	for _, up := range pool {
		if containsString(exclude, up.Dial) || (drained && isDrained(drainSet, up.Dial)) {
			continue
		}
		filtered = append(filtered, up)
		available = available || up.Available()
	}
	if !available {
		return fb.Select(pool, r, w)
	}
	return fb.Select(filtered, r, w)
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// dialIndex finds an upstream by server identity (dial address) in O(1).
// Like serverIndex it is not tied to one pool slice: a lookup verifies the
// position it finds and rebuilds only when the pool really changed.
type dialIndex struct {
	byDial map[string]*dialTarget
	size   int
}

// dialTarget is one upstream of a stick_table policy's pool.
type dialTarget struct {
	pos int
	// hit and drainedHit are the shared decisions of a hit on this
	// upstream that leaves the response nothing to do per request (see
	// sharedHit), so such hits allocate nothing.
	hit, drainedHit *tableDecision
}

func (p *StickTable) indexFor(pool reverseproxy.UpstreamPool) *dialIndex {
	if idx := p.index.Load(); idx != nil && idx.size == len(pool) {
		return idx
	}
	return p.rebuildIndex(pool)
}

func (p *StickTable) rebuildIndex(pool reverseproxy.UpstreamPool) *dialIndex {
	idx := &dialIndex{byDial: make(map[string]*dialTarget, len(pool)), size: len(pool)}
	for i, up := range pool {
		if _, dup := idx.byDial[up.Dial]; !dup {
			idx.byDial[up.Dial] = &dialTarget{pos: i,
				hit:        &tableDecision{policy: p, server: up.Dial, outcome: OutcomeHit, shared: true},
				drainedHit: &tableDecision{policy: p, server: up.Dial, outcome: OutcomeDrained, shared: true},
			}
		}
	}
	p.index.Store(idx)
	return idx
}

// lookup returns the upstream of pool whose dial address is server, or nil.
func (p *StickTable) lookup(idx *dialIndex, pool reverseproxy.UpstreamPool, server string) *reverseproxy.Upstream {
	up, _ := p.target(idx, pool, server)
	return up
}

// target is lookup that also returns the upstream's entry in the index.
func (p *StickTable) target(idx *dialIndex, pool reverseproxy.UpstreamPool, server string) (*reverseproxy.Upstream, *dialTarget) {
	t, known := idx.byDial[server]
	if known && t.pos < len(pool) && pool[t.pos].Dial == server {
		return pool[t.pos], t
	}
	if known {
		// the pool changed under the same size: index it again
		if t, ok := p.rebuildIndex(pool).byDial[server]; ok {
			return pool[t.pos], t
		}
		return nil, nil
	}
	// A server the index never saw: gone from the pool (the user is
	// redispatched and re-stuck, so this costs once per such user), or
	// new in a pool that changed under the same size.
	for _, up := range pool {
		if up.Dial == server {
			t := p.rebuildIndex(pool).byDial[server]
			return pool[t.pos], t
		}
	}
	return nil, nil
}
