// Package layer4 is stick-table persistence for caddy-l4's proxy handler
// (github.com/mholt/caddy-l4): TCP and UDP clients stick to an upstream by
// their IP address, in a table of the sticky app, so the HAProxy-style
// client-address persistence that serves databases, MQTT, SIP or game
// servers gets the sticky app's reloads, snapshots, replication, drain,
// metrics and admin API. It is a package of its own so that a Caddy built
// with the plugin but without caddy-l4 registers no layer-4 module.
package layer4

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/mholt/caddy-l4/layer4"
	"github.com/mholt/caddy-l4/modules/l4proxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/selection"
	"github.com/caddy-sticky/sticky/sticktable"
)

func init() {
	caddy.RegisterModule(new(StickTable))
}

// StickTable sends each client (by the IP address of its connection, after
// caddy-l4's proxy_protocol handler the address that handler received) to
// the upstream stored for it in a table of the sticky app, as HAProxy's
// `stick on src` does. New clients are placed by the fallback policy (or
// by rendezvous hashing) and stored at once; a client whose upstream is
// unavailable, gone from the config or refuses the connection is placed
// again and re-stuck, and clients of other upstreams never move.
type StickTable struct {
	// The table's name in the sticky app. Its key type must be ip, ipv6 or
	// string (the client address in text).
	Table string `json:"table,omitempty"`

	// Names for upstreams, by dial address as the upstream gives it (for an
	// upstream with several dial addresses, all of them joined with
	// commas), e.g. {"10.0.0.31:5432": "pg1"}. The table stores, and peers
	// replicate, the name instead of the address, so instances that reach
	// one server through different addresses share their entries.
	Servers map[string]string `json:"servers,omitempty"`

	// How a client that is not in the table yet is placed. "hash":
	// rendezvous hashing of its address over the available upstreams, so
	// instances that have not heard from each other still agree. Empty:
	// the fallback policy chooses.
	FirstChoice string `json:"first_choice,omitempty"`

	// The caddy-l4 selection policy for new clients and for moving
	// clients whose upstream failed. Default: random.
	FallbackRaw json.RawMessage `json:"fallback,omitempty" caddy:"namespace=layer4.proxy.selection_policies inline_key=policy"`

	fallback l4proxy.Selector
	table    *sticktable.Table
	drainSet *drain.Set
	keyType  sticktable.KeyType
	counts   *selection.TableCounters
	logger   *zap.Logger
	// varKey names this policy's decision in the connection's variables
	varKey string
	// names maps dial identities to configured names
	names map[string]string
	index atomic.Pointer[poolIndex]
	// checkNames runs warnUnknownServers on the first pool
	checkNames sync.Once
}

// CaddyModule returns the Caddy module information.
func (*StickTable) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.proxy.selection_policies.stick_table",
		New: func() caddy.Module { return new(StickTable) },
	}
}

// Provision checks the configuration, finds the table in the sticky app and
// loads the fallback policy.
func (p *StickTable) Provision(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	if p.Table == "" {
		return errors.New("stick_table needs the name of a table of the sticky app")
	}
	switch p.FirstChoice {
	case "", "hash":
	default:
		return fmt.Errorf("first_choice must be hash (or absent), not %q", p.FirstChoice)
	}
	p.names = make(map[string]string, len(p.Servers))
	byName := make(map[string]string, len(p.Servers))
	for addr, name := range p.Servers {
		if addr == "" || name == "" {
			return fmt.Errorf("server %q has an empty address or name", addr+" "+name)
		}
		if other, dup := byName[name]; dup {
			return fmt.Errorf("servers %s and %s have the same name %q", other, addr, name)
		}
		p.names[addr], byName[name] = name, addr
	}

	appIface, err := ctx.App("sticky")
	if err != nil {
		return fmt.Errorf("getting the sticky app: %v", err)
	}
	src, ok := appIface.(selection.TableSource)
	if !ok {
		return fmt.Errorf("the sticky app (%T) does not provide tables", appIface)
	}
	table, err := src.StickTable(p.Table)
	if err != nil {
		return err
	}
	if bs, ok := src.(selection.BackingSource); ok && bs.TableBacking(p.Table) != nil {
		// the layer-4 policy reads and writes the local table only; a
		// store-backed table would diverge from the fleet's
		return fmt.Errorf("table %s is kept in a shared store, which the layer-4 stick_table policy does not support yet: use a local or peers-replicated table", p.Table)
	}
	p.drainSet = src.Drained()
	return p.load(ctx, table)
}

// load finishes Provision once the table is known; tests call it directly.
func (p *StickTable) load(ctx caddy.Context, table *sticktable.Table) error {
	p.table = table
	p.keyType = table.Config().Type
	switch p.keyType {
	case sticktable.KeyIP, sticktable.KeyIPv6, sticktable.KeyString:
	default:
		return fmt.Errorf("table %s has %s keys; a layer4 stick_table keys clients by address: use type ip, ipv6 or string", p.Table, p.keyType)
	}
	p.varKey = "sticky.stick_table." + p.Table
	if p.FallbackRaw == nil {
		p.FallbackRaw = caddyconfig.JSONModuleObject(l4proxy.RandomSelection{}, "policy", "random", nil)
	}
	mod, err := ctx.LoadModule(p, "FallbackRaw")
	if err != nil {
		return fmt.Errorf("loading fallback selection policy: %v", err)
	}
	p.fallback = mod.(l4proxy.Selector)
	p.counts, err = selection.NewTableCounters(ctx.GetMetricsRegistry(), p.Table)
	return err
}

// decision is what Select chose for one connection, kept in its variables:
// caddy-l4 calls Select again on the same connection when the dial of the
// chosen upstream failed (within try_duration), and this is how the next
// call knows which upstreams already failed. Decisions without a failure
// history are shared per upstream and outcome, so a hit allocates nothing.
type decision struct {
	policy  *StickTable
	up      *l4proxy.Upstream // nil: Select found none
	outcome selection.Outcome
	tried   []*l4proxy.Upstream // upstreams that failed earlier for this connection
}

// Select returns the client's upstream when it has one and it is
// available; otherwise it places the client and sticks it to the choice.
func (p *StickTable) Select(pool l4proxy.UpstreamPool, conn *layer4.Connection) *l4proxy.Upstream {
	idx := p.indexFor(pool)
	if prev, ok := conn.GetVar(p.varKey).(*decision); ok && prev.policy == p {
		return p.reselect(idx, pool, conn, prev)
	}
	key, addr, ok := p.clientKey(conn)
	if !ok {
		// no address the table can hold: balance without persistence
		return p.finish(conn, nil, p.chooseNew(idx, pool, conn, addr, nil), selection.OutcomeInvalid, nil)
	}
	outcome := selection.OutcomeMiss
	entry, found := p.table.MatchKey(key)
	switch found {
	case sticktable.OutcomeHit:
		rec := idx.find(entry.Server)
		switch {
		case rec == nil:
			// its upstream is gone from the config: place it again
			outcome = selection.OutcomeDown
		case !available(rec.up, conn):
			outcome = selection.OutcomeDown
		default:
			outcome = selection.OutcomeHit
			if p.drained(rec) {
				outcome = selection.OutcomeDrained
			}
			return p.finish(conn, rec, rec.up, outcome, nil)
		}
	case sticktable.OutcomeExpired:
		outcome = selection.OutcomeExpired
	}
	rec, up, outcome := p.place(idx, pool, conn, key, addr, nil, outcome)
	return p.finish(conn, rec, up, outcome, nil)
}

// reselect runs when caddy-l4 asks again for the same connection: the
// upstream chosen last time refused or failed the dial (or none was
// available). That upstream is not chosen again for this connection; the
// client is stuck to the new choice, overwriting its entry, so its next
// connections go where this one is accepted.
func (p *StickTable) reselect(idx *poolIndex, pool l4proxy.UpstreamPool, conn *layer4.Connection, prev *decision) *l4proxy.Upstream {
	tried := prev.tried
	if prev.up != nil {
		tried = append(tried[:len(tried):len(tried)], prev.up)
	}
	outcome := prev.outcome
	if outcome == selection.OutcomeHit || outcome == selection.OutcomeDrained {
		outcome = selection.OutcomeRedispatched
	}
	key, addr, ok := p.clientKey(conn)
	if !ok {
		return p.finish(conn, nil, p.chooseNew(idx, pool, conn, addr, tried), outcome, tried)
	}
	rec, up, outcome := p.place(idx, pool, conn, key, addr, tried, outcome)
	return p.finish(conn, rec, up, outcome, tried)
}

// placing serialises the placement of one client: concurrent first
// connections of a client (a database driver opening its pool) must all
// reach one upstream, and so must the retries of connections that failed
// together. Striped by the client's address, so different clients rarely
// wait for each other; hits never take a lock.
var placing [64]sync.Mutex

// place chooses an upstream for a client that has none usable (outside
// tried) and sticks it there (its name when it has one), unless a
// concurrent connection of the same client has just done so, whose choice
// it then follows.
//
// The store happens here, before caddy-l4 dials: caddy-l4 offers a
// selection policy no way to learn that the dial succeeded. If the dial
// fails, caddy-l4 calls Select again (within try_duration) and the new
// choice overwrites the entry, so once the connection is established the
// entry names the upstream that accepted it.
func (p *StickTable) place(idx *poolIndex, pool l4proxy.UpstreamPool, conn *layer4.Connection, key sticktable.Key, addr netip.Addr, tried []*l4proxy.Upstream, outcome selection.Outcome) (*serverRecord, *l4proxy.Upstream, selection.Outcome) {
	mu := &placing[placementHash(addr)%uint64(len(placing))]
	mu.Lock()
	defer mu.Unlock()
	entry, known := p.table.GetKey(key)
	if known {
		if rec := idx.find(entry.Server); rec != nil && !contains(tried, rec.up) && available(rec.up, conn) {
			if len(tried) == 0 {
				outcome = selection.OutcomeHit
			}
			return rec, rec.up, outcome
		}
	}
	up := p.chooseNew(idx, pool, conn, addr, tried)
	if up == nil {
		return nil, nil, outcome
	}
	rec := idx.recordOf(up)
	if rec == nil {
		rec = p.newRecord(up)
	}
	if known || len(tried) > 0 {
		// a re-stick: the client's server is down or refused it
		if _, err := p.table.StoreKey(key, rec.id); err != nil {
			p.debug("store refused", err.Error())
		}
		return rec, up, outcome
	}
	// A first placement is inserted if absent, by the placement rule: an
	// earlier placement of this client that a peer replicated meanwhile
	// stays, and the connection follows it when it can.
	e, placed, err := p.table.PlaceKey(key, rec.id)
	if err != nil {
		p.debug("store refused", err.Error())
	} else if !placed && e.Server != rec.id {
		if other := idx.find(e.Server); other != nil && available(other.up, conn) {
			return other, other.up, selection.OutcomeHit
		}
	}
	return rec, up, outcome
}

// finish records the decision on the connection and counts it.
func (p *StickTable) finish(conn *layer4.Connection, rec *serverRecord, up *l4proxy.Upstream, outcome selection.Outcome, tried []*l4proxy.Upstream) *l4proxy.Upstream {
	var d *decision
	switch {
	case len(tried) == 0 && rec != nil && rec.up == up:
		d = rec.decision(outcome)
	default:
		d = &decision{policy: p, up: up, outcome: outcome, tried: tried}
	}
	conn.SetVar(p.varKey, d)
	p.counts.Inc(outcome)
	setOutcomePlaceholder(conn, outcome)
	return up
}

func (p *StickTable) debug(msg, value string) {
	if c := p.logger.Check(zapcore.DebugLevel, msg); c != nil {
		c.Write(zap.String("table", p.Table), zap.String("value", value))
	}
}

// Interface guards
var (
	_ l4proxy.Selector  = (*StickTable)(nil)
	_ caddy.Provisioner = (*StickTable)(nil)
)
