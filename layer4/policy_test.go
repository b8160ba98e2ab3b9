package layer4

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4proxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/internal/rendezvous"
	"github.com/caddy-sticky/sticky/sticktable"
)

// remoteConn is a connection seen from the proxy: only its addresses matter
// to a selection policy.
type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }
func (c remoteConn) LocalAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5432} }

// connFrom is a new caddy-l4 connection from ip (TCP unless udp).
func connFrom(ip string, udp bool) *layer4.Connection {
	var a net.Addr = &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}
	if udp {
		a = &net.UDPAddr{IP: net.ParseIP(ip), Port: 40000}
	}
	return layer4.WrapConnection(remoteConn{remote: a}, nil, zap.NewNop())
}

func newPool(n int) l4proxy.UpstreamPool {
	pool := make(l4proxy.UpstreamPool, n)
	for i := range pool {
		pool[i] = &l4proxy.Upstream{Dial: []string{fmt.Sprintf("10.0.0.%d:5432", i+1)}}
	}
	return pool
}

// newPolicy provisions p against a fresh table of the given key type.
func newPolicy(t testing.TB, p *StickTable, typ sticktable.KeyType) *StickTable {
	t.Helper()
	if p.Table == "" {
		p.Table = "t"
	}
	table, err := sticktable.New(sticktable.Config{Type: typ, Size: 10000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(table.Close)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	p.logger = zap.NewNop()
	if p.names == nil {
		p.names = map[string]string{}
		for a, n := range p.Servers {
			p.names[a] = n
		}
	}
	if p.drainSet == nil {
		p.drainSet = drain.New()
	}
	if err := p.load(ctx, table); err != nil {
		t.Fatal(err)
	}
	return p
}

func roundRobin() json.RawMessage { return json.RawMessage(`{"policy":"round_robin"}`) }

func stored(t testing.TB, p *StickTable, key string) string {
	t.Helper()
	e, ok := p.table.Get(key)
	if !ok {
		return ""
	}
	return e.Server
}

func outcomeOf(conn *layer4.Connection) string {
	v, _ := conn.Replacer().Get(OutcomePlaceholder)
	s, _ := v.(string)
	return s
}

func TestL4EachClientKeepsItsUpstream(t *testing.T) {
	p := newPolicy(t, &StickTable{FallbackRaw: roundRobin()}, sticktable.KeyIP)
	pool := newPool(3)
	first := map[string]*l4proxy.Upstream{}
	used := map[*l4proxy.Upstream]bool{}
	for i := range 30 {
		ip := fmt.Sprintf("192.0.2.%d", i+1)
		conn := connFrom(ip, false)
		up := p.Select(pool, conn)
		if up == nil {
			t.Fatalf("%s: no upstream", ip)
		}
		if outcomeOf(conn) != "miss" {
			t.Fatalf("%s: first connection outcome %q", ip, outcomeOf(conn))
		}
		if got := stored(t, p, ip); got != up.String() {
			t.Fatalf("%s went to %s but the table says %q", ip, up, got)
		}
		first[ip], used[up] = up, true
	}
	if len(used) != 3 {
		t.Fatalf("round_robin placed 30 clients on %d upstreams", len(used))
	}
	for range 3 {
		for ip, want := range first {
			conn := connFrom(ip, true) // a UDP session of the same client too
			if got := p.Select(pool, conn); got != want {
				t.Fatalf("%s moved from %s to %s", ip, want, got)
			}
			if outcomeOf(conn) != "hit" {
				t.Fatalf("%s: outcome %q", ip, outcomeOf(conn))
			}
		}
	}
}

// A failed dial makes caddy-l4 call Select again on the same connection:
// the failed upstream is skipped, the client re-stuck, others untouched.
func TestL4ReselectSkipsFailedUpstreamAndRestucks(t *testing.T) {
	p := newPolicy(t, &StickTable{FallbackRaw: roundRobin()}, sticktable.KeyIP)
	pool := newPool(3)
	for i, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		if _, err := p.table.Store(ip, pool[i].String()); err != nil {
			t.Fatal(err)
		}
	}
	conn := connFrom("192.0.2.1", false)
	if up := p.Select(pool, conn); up != pool[0] {
		t.Fatalf("stuck to %s, got %s", pool[0], up)
	}
	second := p.Select(pool, conn) // pool[0] refused
	if second == nil || second == pool[0] {
		t.Fatalf("after %s failed: %v", pool[0], second)
	}
	if outcomeOf(conn) != "redispatched" {
		t.Fatalf("outcome %q, want redispatched", outcomeOf(conn))
	}
	if got := stored(t, p, "192.0.2.1"); got != second.String() {
		t.Fatalf("re-stuck to %q, want %s", got, second)
	}
	third := p.Select(pool, conn) // the second refused too
	if third == nil || third == pool[0] || third == second {
		t.Fatalf("after %s and %s failed: %v", pool[0], second, third)
	}
	if got := stored(t, p, "192.0.2.1"); got != third.String() {
		t.Fatalf("re-stuck to %q, want %s", got, third)
	}
	// every upstream failed: try them again rather than refuse the client
	if fourth := p.Select(pool, conn); fourth == nil {
		t.Fatal("no upstream once all failed once")
	}
	// the next connection of the client goes where the last one went
	last := stored(t, p, "192.0.2.1")
	if up := p.Select(pool, connFrom("192.0.2.1", false)); up.String() != last {
		t.Fatalf("next connection went to %s, entry says %s", up, last)
	}
	// the other clients never moved
	for i, ip := range []string{"192.0.2.2", "192.0.2.3"} {
		if got := stored(t, p, ip); got != pool[i+1].String() {
			t.Fatalf("%s moved to %q", ip, got)
		}
		if up := p.Select(pool, connFrom(ip, false)); up != pool[i+1] {
			t.Fatalf("%s went to %s", ip, up)
		}
	}
}

// An entry naming an upstream that is no longer configured (a reload
// removed it) places the client again.
func TestL4RemovedUpstreamMovesItsClientsOnly(t *testing.T) {
	p := newPolicy(t, &StickTable{FallbackRaw: roundRobin()}, sticktable.KeyIP)
	pool := newPool(3)
	_, _ = p.table.Store("192.0.2.1", pool[0].String())
	_, _ = p.table.Store("192.0.2.2", pool[1].String())
	smaller := l4proxy.UpstreamPool{pool[1], pool[2]}
	conn := connFrom("192.0.2.1", false)
	up := p.Select(smaller, conn)
	if up == nil || up == pool[0] || outcomeOf(conn) != "down" {
		t.Fatalf("got %v, outcome %q", up, outcomeOf(conn))
	}
	if stored(t, p, "192.0.2.1") != up.String() {
		t.Fatalf("not re-stuck: %q", stored(t, p, "192.0.2.1"))
	}
	if got := p.Select(smaller, connFrom("192.0.2.2", false)); got != pool[1] {
		t.Fatalf("client of a remaining upstream moved to %s", got)
	}
}

func TestL4NamesAreStoredAndAddressesStillMatch(t *testing.T) {
	pool := newPool(2)
	p := newPolicy(t, &StickTable{FallbackRaw: json.RawMessage(`{"policy":"first"}`),
		Servers: map[string]string{pool[0].String(): "pg1", pool[1].String(): "pg2"}}, sticktable.KeyIP)
	if up := p.Select(pool, connFrom("192.0.2.9", false)); up != pool[0] {
		t.Fatalf("first policy chose %s", up)
	}
	if got := stored(t, p, "192.0.2.9"); got != "pg1" {
		t.Fatalf("stored %q, want the name pg1", got)
	}
	// an admin pin by address reaches the named upstream
	_, _ = p.table.Pin("192.0.2.9", pool[1].String())
	if up := p.Select(pool, connFrom("192.0.2.9", false)); up != pool[1] {
		t.Fatalf("pinned by address to %s, got %s", pool[1], up)
	}
	_, _ = p.table.Pin("192.0.2.9", "pg1")
	if up := p.Select(pool, connFrom("192.0.2.9", false)); up != pool[0] {
		t.Fatalf("pinned by name to pg1, got %s", up)
	}
}

// Two instances that share nothing place new clients identically with
// first_choice hash, whatever the order of their upstreams.
func TestL4FirstChoiceHashAgreesAcrossInstances(t *testing.T) {
	pool := newPool(4)
	reversed := l4proxy.UpstreamPool{pool[3], pool[2], pool[1], pool[0]}
	a := newPolicy(t, &StickTable{FirstChoice: "hash", FallbackRaw: roundRobin()}, sticktable.KeyIP)
	b := newPolicy(t, &StickTable{FirstChoice: "hash", FallbackRaw: roundRobin()}, sticktable.KeyIP)
	used := map[string]bool{}
	for i := range 200 {
		ip := fmt.Sprintf("198.51.100.%d", i+1)
		ua, ub := a.Select(pool, connFrom(ip, false)), b.Select(reversed, connFrom(ip, false))
		if ua != ub {
			t.Fatalf("%s: %s on one instance, %s on the other", ip, ua, ub)
		}
		// the winner is the highest rendezvous score of the identity
		var best string
		var bestScore uint64
		for _, up := range pool {
			if s := rendezvous.Score(rendezvous.Hash(up.String()), rendezvous.Hash(ip)); best == "" || s > bestScore {
				best, bestScore = up.String(), s
			}
		}
		if ua.String() != best {
			t.Fatalf("%s: placed on %s, rendezvous says %s", ip, ua, best)
		}
		used[best] = true
	}
	if len(used) != 4 {
		t.Fatalf("200 clients hashed onto %d of 4 upstreams", len(used))
	}
}

func TestL4DrainedUpstreamKeepsItsClientsAndGetsNoNewOnes(t *testing.T) {
	for _, firstChoice := range []string{"", "hash"} {
		drained := drain.New()
		p := newPolicy(t, &StickTable{FirstChoice: firstChoice, FallbackRaw: roundRobin(),
			Servers: map[string]string{"10.0.0.2:5432": "pg2"}, drainSet: drained}, sticktable.KeyIP)
		pool := newPool(3)
		_, _ = p.table.Store("192.0.2.1", pool[0].String())
		for _, by := range []string{pool[0].String(), "pg2"} { // by address, and by name
			drained.Replace([]string{by})
			drainedUp := pool[0]
			if by == "pg2" {
				drainedUp = pool[1]
			}
			for i := range 30 {
				ip := fmt.Sprintf("203.0.113.%d", i+1)
				if up := p.Select(pool, connFrom(ip, false)); up == drainedUp {
					t.Fatalf("first_choice %q: new client %s placed on drained %s", firstChoice, ip, by)
				}
				_, _ = p.table.Delete(ip)
			}
		}
		drained.Replace([]string{pool[0].String()})
		conn := connFrom("192.0.2.1", false)
		if up := p.Select(pool, conn); up != pool[0] || outcomeOf(conn) != "drained" {
			t.Fatalf("stuck client of a drained upstream: %s, outcome %q", up, outcomeOf(conn))
		}
	}
}

func TestL4ClientAddressKeys(t *testing.T) {
	pool := newPool(2)
	ip := newPolicy(t, &StickTable{}, sticktable.KeyIP)
	// an IPv4 client of a dual-stack listener is its IPv4 address
	ip.Select(pool, connFrom("::ffff:192.0.2.44", false))
	if stored(t, ip, "192.0.2.44") == "" {
		t.Fatal("IPv4-mapped client not stored as its IPv4 address")
	}
	// an IPv6 client cannot be held by an ip table: balanced, not stored
	conn := connFrom("2001:db8::1", false)
	if up := ip.Select(pool, conn); up == nil || outcomeOf(conn) != "invalid" || ip.table.Len() != 1 {
		t.Fatalf("IPv6 client in an ip table: %v, outcome %q, %d entries", up, outcomeOf(conn), ip.table.Len())
	}
	if up := ip.Select(pool, conn); up == nil { // and its retries still work
		t.Fatal("no upstream on retry")
	}
	v6 := newPolicy(t, &StickTable{}, sticktable.KeyIPv6)
	v6.Select(pool, connFrom("2001:db8::1", true))
	if stored(t, v6, "2001:db8::1") == "" {
		t.Fatal("IPv6 client not stored in an ipv6 table")
	}
	str := newPolicy(t, &StickTable{}, sticktable.KeyString)
	str.Select(pool, connFrom("192.0.2.45", false))
	if stored(t, str, "192.0.2.45") == "" {
		t.Fatal("client not stored in a string table by its address text")
	}
}

func TestL4RemoteIP(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1}, "::ffff:192.0.2.1"},
		{&net.UDPAddr{IP: net.ParseIP("2001:db8::2"), Port: 1}, "2001:db8::2"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0"}, "fe80::1"},
		{&net.UnixAddr{Name: "/x", Net: "unix"}, ""},
		{nil, ""},
	} {
		got, ok := remoteIP(c.addr)
		if (c.want == "") == ok || (ok && got.String() != c.want) {
			t.Errorf("%v: %v %v, want %q", c.addr, got, ok, c.want)
		}
	}
}

func TestL4ProvisionRefusesTablesThatCannotHoldAddresses(t *testing.T) {
	table, _ := sticktable.New(sticktable.Config{Type: sticktable.KeyInteger})
	defer table.Close()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	p := &StickTable{Table: "n", logger: zap.NewNop()}
	if err := p.load(ctx, table); err == nil || !strings.Contains(err.Error(), "type ip, ipv6 or string") {
		t.Fatalf("integer table: %v", err)
	}
	for _, bad := range []*StickTable{
		{},
		{Table: "t", FirstChoice: "random"},
		{Table: "t", Servers: map[string]string{"a:1": "x", "b:1": "x"}},
		{Table: "t", Servers: map[string]string{"a:1": ""}},
	} {
		if err := bad.Provision(ctx); err == nil {
			t.Errorf("%+v provisioned", bad)
		}
	}
}

// Select allocates nothing for a client found in the table, and nothing
// beyond the table's own store for a new one, on a connection whose variable table has room (caddy-l4 makes that
// map per connection; its first insert is the map's own allocation).
func TestL4SelectDoesNotAllocate(t *testing.T) {
	p := newPolicy(t, &StickTable{FallbackRaw: roundRobin()}, sticktable.KeyIP)
	pool := newPool(3)
	conn := connFrom("192.0.2.1", false)
	p.Select(pool, conn)
	hits := testing.AllocsPerRun(1000, func() {
		conn.SetVar(p.varKey, nil)
		p.Select(pool, conn)
	})
	if hits != 0 {
		t.Errorf("a hit allocates %.1f times", hits)
	}
	// a miss costs what the table's store of a new key costs, no more
	key, _ := p.table.ParseKey("192.0.2.1")
	store := testing.AllocsPerRun(1000, func() {
		_, _ = p.table.DeleteKey(key)
		_, _ = p.table.StoreKey(key, pool[0].String())
	})
	misses := testing.AllocsPerRun(1000, func() {
		conn.SetVar(p.varKey, nil)
		_, _ = p.table.DeleteKey(key)
		p.Select(pool, conn)
	})
	if misses > store {
		t.Errorf("a miss allocates %.1f times, the table's store %.1f", misses, store)
	}
}

func TestL4Caddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`stick_table pg {
		fallback least_conn
		first_choice hash
		server 10.0.0.31:5432 pg1
		server 10.0.0.32:5432 pg2
	}`)
	var p StickTable
	if err := p.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(&p)
	want := `{"table":"pg","servers":{"10.0.0.31:5432":"pg1","10.0.0.32:5432":"pg2"},"first_choice":"hash","fallback":{"policy":"least_conn"}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	d = caddyfile.NewTestDispenser(`stick_table pg {
		fallback random_choose 3
	}`)
	p = StickTable{}
	if err := p.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if string(p.FallbackRaw) != `{"choose":3,"policy":"random_choose"}` {
		t.Fatalf("fallback with an argument: %s", p.FallbackRaw)
	}
	for _, bad := range []string{
		"stick_table",
		"stick_table a b",
		"stick_table a {\nbogus\n}",
		"stick_table a {\nserver 10.0.0.1:1\n}",
		"stick_table a {\nserver 10.0.0.1:1 x\nserver 10.0.0.1:1 y\n}",
		"stick_table a {\nserver 10.0.0.1:1 x\nserver 10.0.0.2:1 x\n}",
		"stick_table a {\nfirst_choice random\n}",
		"stick_table a {\nfirst_choice hash\nfirst_choice hash\n}",
		"stick_table a {\nfallback\n}",
		"stick_table a {\nfallback nosuchpolicy\n}",
		"stick_table a {\nfallback round_robin\nfallback random\n}",
		"stick_table a {\nfallback round_robin {\nx\n}\n}",
	} {
		var p StickTable
		if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
}

func TestL4WarnsOfServerLinesThatMatchNoUpstream(t *testing.T) {
	pool := newPool(2)
	p := newPolicy(t, &StickTable{Servers: map[string]string{pool[0].String(): "pg1", "tcp/" + pool[1].String(): "pg2"}}, sticktable.KeyIP)
	core, logs := observer.New(zap.WarnLevel)
	p.logger = zap.New(core)
	p.Select(pool, connFrom("192.0.2.1", false))
	p.Select(pool, connFrom("192.0.2.2", false))
	warned := logs.FilterField(zap.String("server", "tcp/"+pool[1].String())).Len()
	if warned != 1 || logs.Len() != 1 {
		t.Fatalf("%d warnings about the unknown server, %d in all: %v", warned, logs.Len(), logs.All())
	}
}

// A database driver opens its pool at once: every first connection of one
// client must reach the same upstream, and so must their retries when that
// upstream refuses them all.
func TestL4ConcurrentFirstConnectionsOfAClientAgree(t *testing.T) {
	p := newPolicy(t, &StickTable{FallbackRaw: json.RawMessage(`{"policy":"weighted_round_robin"}`)}, sticktable.KeyIP)
	pool := newPool(3)
	for c := range 20 {
		ip := fmt.Sprintf("192.0.2.%d", c+1)
		const n = 16
		conns := make([]*layer4.Connection, n)
		for i := range conns {
			conns[i] = connFrom(ip, false)
		}
		for round := range 2 { // first choices, then retries after all of them failed
			got := make([]*l4proxy.Upstream, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					got[i] = p.Select(pool, conns[i])
				}()
			}
			close(start)
			wg.Wait()
			for i := range got {
				if got[i] != got[0] {
					t.Fatalf("client %s, round %d: connections went to %s and %s", ip, round, got[0], got[i])
				}
			}
			if stored(t, p, ip) != got[0].String() {
				t.Fatalf("client %s, round %d: entry %q, connections on %s", ip, round, stored(t, p, ip), got[0])
			}
		}
	}
}
