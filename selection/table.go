package selection

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/internal/haproxycookie"
	placement "github.com/caddy-sticky/sticky/internal/rendezvous"
	"github.com/caddy-sticky/sticky/sticktable"
)

func init() {
	caddy.RegisterModule(new(StickTable))
}

// StickTable is stick-table persistence, as HAProxy's `stick on`, `stick
// match`, `stick store-request` and `stick store-response`: keys taken from
// the request (client IP, a header, a cookie, anything a placeholder gives)
// or learned from the application's response map to the server that served
// them, in a table of the sticky app.
type StickTable struct {
	// The table's name in the sticky app.
	Table string `json:"table,omitempty"`

	// Keys, in the order they are tried. A rule that matches looks its key
	// up and sends the request to the server stored for it if that server
	// is available; the first such key wins. A rule that stores records
	// its key with the server that actually answered, once it answered, so
	// a redispatched user is re-stuck to the new server. `on` in the
	// Caddyfile is a rule that does both. Default: one rule matching and
	// storing {http.vars.client_ip}.
	Rules []TableRule `json:"rules,omitempty"`

	// Keys learned from the application's response, stored with the server
	// that sent it (HAProxy's store-response): the value of a cookie the
	// application sets, or of a response header.
	StoreResponse []ResponseKey `json:"store_response,omitempty"`

	// Names for upstreams, by dial address, e.g. {"10.0.0.21:8080":
	// "app1"}. The table stores (and peers replicate) a server's name
	// instead of its address, so instances that reach the same servers
	// through different addresses share their entries.
	Servers map[string]string `json:"servers,omitempty"`

	// How a key that is not in the table yet chooses its server. "hash":
	// rendezvous hashing of the key over the available servers (each by
	// its name in Servers, else its dial address), so instances that have
	// not heard from each other still agree, also when they reach the
	// servers through different addresses. Empty: the fallback policy
	// chooses.
	FirstChoice string `json:"first_choice,omitempty"`

	// With first_choice hash: bounded loads (HAProxy's
	// hash-balance-factor). A new key skips, in its rendezvous order, any
	// server whose stuck keys would exceed balance_factor/100 of the mean
	// over the available servers; keys already in the table never move
	// because of it. Must be over 100; 125 keeps every server within 25%
	// of the mean. 0: plain rendezvous.
	BalanceFactor int `json:"balance_factor,omitempty"`

	// Strict persistence: a request whose key is stuck to a server that is
	// down, or that fails during the request, gets 503 Service Unavailable
	// instead of being moved, also when Caddy retries (lb_retries,
	// try_duration). Keys not in the table, and keys whose server left the
	// pool, are placed as usual. Outcome: strict_refused.
	Strict bool `json:"strict,omitempty"`

	// The policy for keys not in the table and for redispatch. Default:
	// random.
	FallbackRaw json.RawMessage `json:"fallback,omitempty" caddy:"namespace=http.reverse_proxy.selection_policies inline_key=policy"`

	fallback reverseproxy.Selector
	table    *sticktable.Table
	drained  *drain.Set
	seen     seenPool // the pool Select last saw, for the status page
	// backing is the table's shared store, nil for a local table
	backing sticktable.Backing
	rules   []compiledRule
	varKey  string
	logger  *zap.Logger
	counts  *outcomeCounters
	index   atomic.Pointer[dialIndex]
	// names maps dial addresses to configured names, dials the reverse
	names, dials map[string]string
	side         responseSide
	// refused marks a request refused at selection by strict
	refused *tableDecision
}

// TableRule is one key of the request.
type TableRule struct {
	// The key: placeholders such as {http.vars.client_ip},
	// {http.request.header.X-User} or {http.request.cookie.JSESSIONID},
	// possibly several joined. An empty key neither matches nor stores.
	Key string `json:"key"`
	// Look the key up.
	Match bool `json:"match,omitempty"`
	// Store the key with the server that answers.
	Store bool `json:"store,omitempty"`
}

// ResponseKey names where a key comes from in a response.
type ResponseKey struct {
	// cookie (the value of a Set-Cookie of that name) or header.
	From string `json:"from"`
	// The cookie or header name.
	Name string `json:"name"`
}

type compiledRule struct {
	TableRule
	// placeholder is the key's one placeholder when the key is nothing
	// else, so it is read without building a string.
	placeholder string
	// varName is the variable when placeholder is {http.vars.<name>}
	// (the default key, {client_ip} in a Caddyfile): it is read from the
	// request's vars, where Caddy's replacer would find it after asking
	// every provider before its own.
	varName string
}

func compileRule(r TableRule) compiledRule {
	c := compiledRule{TableRule: r, placeholder: singlePlaceholder(r.Key)}
	if name, ok := strings.CutPrefix(c.placeholder, "http.vars."); ok && name != "" {
		c.varName = name
	}
	return c
}

// CaddyModule returns the Caddy module information.
func (*StickTable) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.stick_table",
		New: func() caddy.Module { return new(StickTable) },
	}
}

// Provision finds the table, compiles the rules and hooks the policy into
// its reverse_proxy's responses.
func (p *StickTable) Provision(ctx caddy.Context) error {
	if err := p.setup(ctx); err != nil {
		return err
	}
	return p.side.attach(ctx, p, "stick_table", p.Table)
}

// Cleanup detaches the policy from its handler's transport.
func (p *StickTable) Cleanup() error {
	return p.side.release()
}

func (p *StickTable) setup(ctx caddy.Context) error {
	p.logger = ctx.Logger()
	if p.Table == "" {
		return errors.New("stick_table needs the name of a table of the sticky app")
	}
	if len(p.Rules) == 0 && len(p.StoreResponse) == 0 {
		p.Rules = []TableRule{{Key: "{http.vars.client_ip}", Match: true, Store: true}}
	}
	for i, r := range p.Rules {
		if strings.TrimSpace(r.Key) == "" {
			return fmt.Errorf("rule %d has no key", i)
		}
		if !r.Match && !r.Store {
			return fmt.Errorf("rule %d (%s) neither matches nor stores", i, r.Key)
		}
		p.rules = append(p.rules, compileRule(r))
	}
	for _, rk := range p.StoreResponse {
		switch rk.From {
		case "cookie", "header":
		default:
			return fmt.Errorf("store_response takes cookie or header, not %q", rk.From)
		}
		if rk.Name == "" {
			return fmt.Errorf("store_response %s needs a name", rk.From)
		}
	}
	p.names = make(map[string]string, len(p.Servers))
	p.dials = make(map[string]string, len(p.Servers))
	for addr, name := range p.Servers {
		if name == "" {
			return fmt.Errorf("server %s has an empty name", addr)
		}
		dial := normalizeDial(addr)
		if other, dup := p.dials[name]; dup {
			return fmt.Errorf("servers %s and %s have the same name %q", other, dial, name)
		}
		p.names[dial], p.dials[name] = name, dial
	}
	switch p.FirstChoice {
	case "", "hash":
	default:
		return fmt.Errorf("first_choice must be hash (or absent), not %q", p.FirstChoice)
	}
	if p.BalanceFactor != 0 {
		if p.FirstChoice != "hash" {
			return fmt.Errorf("balance_factor needs first_choice hash")
		}
		if p.BalanceFactor <= 100 {
			return fmt.Errorf("balance_factor must be over 100 (a percentage of the mean load), not %d", p.BalanceFactor)
		}
	}

	src, err := stickyState(ctx)
	if err != nil {
		return err
	}
	if p.table, err = src.StickTable(p.Table); err != nil {
		return err
	}
	p.drained = src.Drained()
	p.backing = backingFor(src, p.Table)
	if reg, ok := src.(TableRegistry); ok && directPolicy(ctx) {
		// a policy that is another's fallback shows under that one
		reg.AddTablePolicy(p)
	}
	return p.load(ctx)
}

// load finishes setup once the table is known; tests call it directly.
func (p *StickTable) load(ctx caddy.Context) error {
	p.varKey = "stick_table." + p.Table
	p.refused = &tableDecision{policy: p, outcome: OutcomeStrictRefused}
	if p.FallbackRaw == nil {
		p.FallbackRaw = caddyconfig.JSONModuleObject(reverseproxy.RandomSelection{}, "policy", "random", nil)
	}
	mod, err := ctx.LoadModule(p, "FallbackRaw")
	if err != nil {
		return fmt.Errorf("loading fallback selection policy: %v", err)
	}
	p.fallback = mod.(reverseproxy.Selector)
	if err := registerCollectors(ctx.GetMetricsRegistry(), tableLookups); err != nil {
		return err
	}
	p.counts = newOutcomeCounters(tableLookups, p.Table)
	return nil
}

// tableDecision is what Select decided for one request, kept in the
// request's vars for the response side and for a retry. A hit that leaves
// the response nothing to do per request uses a shared, immutable decision
// of its server (see sharedHit), so it allocates nothing; every other
// decision is the request's own.
type tableDecision struct {
	policy  *StickTable
	server  string
	outcome Outcome
	// shared marks a server's shared hit decision: it holds no keys, and a
	// retry reads them from the request again (see reselect)
	shared bool
	// keys to store with the server once it answers; storeBuf holds the
	// first ones, so the usual one or two keys cost no allocation
	store    []sticktable.Key
	storeBuf [2]sticktable.Key
	// matched has bit i set when store[i] is also matched (`on`): its
	// entry routes the user, so it follows the placement rule (see
	// onResponse)
	matched uint64
	// tried lists the servers of failed earlier attempts of this request
	tried []string
	// hashKey is the key placed by first_choice hash on redispatch
	hashKey string
	// stuck is the server identity the shared store holds for the keys
	// (the stuck server, or the winner of the placement made in Select);
	// empty when unknown. Only used with a store.
	stuck string
	// stuckKey is the key stuck is known for; the others are looked up in
	// the local cache, which mirrors the store
	stuckKey sticktable.Key
}

// Select sends the request to the server of the first matching key whose
// server is available; otherwise to the first choice or the fallback.
func (p *StickTable) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	p.seen.observe(pool)
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	refusedBefore := false
	if prev, ok := vars[p.varKey].(*tableDecision); ok && prev.policy == p {
		if prev != p.refused {
			return p.reselect(pool, r, w, vars, prev)
		}
		refusedBefore = true // strict refused an earlier try; decide again
	}
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	idx := p.indexFor(pool)
	// The decision and the keys to store stay on the stack until the
	// request turns out to need a decision of its own (onHeap); a shared
	// hit never does.
	var keys [len(tableDecision{}.storeBuf)]sticktable.Key
	store := keys[:0]
	d := tableDecision{policy: p, outcome: OutcomeMiss}
	hashKey := ""
	stuckDown := false
	var hit *reverseproxy.Upstream
	var hitTarget *dialTarget
	// hitStored is the position in store of the key that hit (-1: the
	// hit's rule only matches); hitServer is the server its entry holds
	hitStored, hitServer := -1, ""
	for i := range p.rules {
		rule := &p.rules[i]
		text := rule.keyText(repl, vars)
		if text == "" {
			continue
		}
		key, err := p.table.ParseKey(text)
		if err != nil {
			p.debug("key does not parse for the table's type", text)
			if d.outcome == OutcomeMiss {
				d.outcome = OutcomeInvalid
			}
			continue
		}
		if hashKey == "" {
			hashKey = text
		}
		store, d.matched = storedKey(store, d.matched, rule, key)
		if !rule.Match || hit != nil {
			continue
		}
		entry, outcome := p.table.MatchKey(key)
		if p.backing != nil {
			if outcome == sticktable.OutcomeHit {
				p.backing.Touch(key, entry)
			} else if !rule.Store {
				// A match-only key: read through. Keys that are also
				// stored are looked up by the placement below, in the
				// same round trip.
				if srv, found, _ := p.backing.Lookup(r.Context(), key); found {
					entry, outcome = sticktable.Entry{Server: srv}, sticktable.OutcomeHit
				}
			}
			if outcome == sticktable.OutcomeHit && d.stuck == "" {
				d.stuck, d.stuckKey = entry.Server, key
			}
		}
		switch outcome {
		case sticktable.OutcomeHit:
			up, target := p.target(idx, pool, p.dialOf(entry.Server))
			switch {
			case up == nil:
				// the server is gone from the pool: redispatch
				d.outcome = OutcomeDown
			case !up.Available():
				d.outcome = OutcomeDown
				stuckDown = true
			default:
				hit, hitTarget, hitServer = up, target, entry.Server
				if rule.Store {
					hitStored = len(store) - 1
				}
				d.outcome = OutcomeHit
				if serverDrained(p.drained, up.Dial) {
					d.outcome = OutcomeDrained
				}
			}
		case sticktable.OutcomeExpired:
			if d.outcome == OutcomeMiss {
				d.outcome = OutcomeExpired
			}
		}
	}
	d.hashKey = hashKey
	if hit == nil && stuckDown && p.Strict {
		return p.refuseDown(vars, r, refusedBefore)
	}
	if hit != nil && p.sharedHit(len(store), hitStored, hitServer, hit.Dial) {
		shared := hitTarget.hit
		if d.outcome == OutcomeDrained {
			shared = hitTarget.drainedHit
		}
		if refusedBefore {
			// a strict refusal of an earlier try was published with Set
			return p.finish(vars, r, shared, hit)
		}
		return p.finishFirstHit(vars, r, shared, hit)
	}
	up := hit
	if up == nil {
		up = p.chooseNew(pool, r, w, hashKey, nil)
		switch {
		case up == nil || len(store) == 0:
		case p.backing != nil:
			if d.stuck == "" {
				up = p.place(idx, pool, r, &d, store[0], up)
			}
		default:
			up = p.reserve(idx, pool, store, d.matched, up)
		}
	}
	if up == nil {
		p.count(d.outcome)
		setOutcomePlaceholder(r, d.outcome)
		return nil
	}
	d.server = up.Dial
	return p.finish(vars, r, d.onHeap(store), up)
}

// sharedHit reports whether a hit on the server with dial address dial
// leaves the response nothing to do per request, so the server's shared
// decision can stand for it: no key to store, or only the key that hit
// (hitStored 0), whose entry already holds this server (hitServer). The
// lookup refreshed that entry; storing it with the server that answers
// would only refresh it again (PlaceKey on a live entry; with a store, a
// key stuck to the server that answers costs nothing), and a retry reads
// the keys again (reselect). Keys learned from the response
// (store_response) need only the server, which the shared decision has.
func (p *StickTable) sharedHit(stored, hitStored int, hitServer, dial string) bool {
	switch stored {
	case 0:
		return true
	case 1:
		return hitStored == 0 && hitServer == p.identity(dial)
	}
	return false
}

// onHeap returns a copy of d the request can keep, with store, the keys
// to store, copied into the copy's own buffer (or, past its size, a new
// array).
func (d *tableDecision) onHeap(store []sticktable.Key) *tableDecision {
	h := new(tableDecision)
	*h = *d
	h.store = append(h.storeBuf[:0], store...)
	return h
}

// requestKeys evaluates the rules' keys as Select does (the keys to store,
// which of them are matched, the key placed by first_choice hash): they
// are the same on every attempt of a request, so a retry of a shared hit
// reads them again instead of every hit keeping them.
func (p *StickTable) requestKeys(r *http.Request) (store []sticktable.Key, matched uint64, hashKey string) {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	for i := range p.rules {
		rule := &p.rules[i]
		text := rule.keyText(repl, vars)
		if text == "" {
			continue
		}
		key, err := p.table.ParseKey(text)
		if err != nil {
			continue
		}
		if hashKey == "" {
			hashKey = text
		}
		store, matched = storedKey(store, matched, rule, key)
	}
	return store, matched, hashKey
}

// storedKey adds the key of rule to store, the keys a request stores once
// its server answers, if the rule stores, with its bit in matched set when
// the rule also matches (the entry routes the user, see onResponse).
// Select and requestKeys share it.
func storedKey(store []sticktable.Key, matched uint64, rule *compiledRule, key sticktable.Key) ([]sticktable.Key, uint64) {
	if rule.Store {
		if rule.Match && len(store) < 64 {
			matched |= 1 << len(store)
		}
		store = append(store, key)
	}
	return store, matched
}

// reselect runs on a retry: the server of the previous attempt failed.
func (p *StickTable) reselect(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter, vars map[string]any, prev *tableDecision) *reverseproxy.Upstream {
	if p.Strict && (prev.outcome == OutcomeStrictRefused || stuck(prev.outcome)) {
		return p.refuseFailed(vars, r, prev)
	}
	store, matched, hashKey := prev.store, prev.matched, prev.hashKey
	stuckServer, stuckKey := prev.stuck, prev.stuckKey
	if prev.shared {
		store, matched, hashKey = p.requestKeys(r)
		if p.backing != nil && len(store) == 1 {
			// the key that hit, stuck to the server that failed
			stuckServer, stuckKey = p.identity(prev.server), store[0]
		}
	}
	tried := append(prev.tried[:len(prev.tried):len(prev.tried)], prev.server)
	up := p.chooseNew(pool, r, w, hashKey, tried)
	if up == nil {
		return nil
	}
	outcome := prev.outcome
	if outcome == OutcomeHit || outcome == OutcomeDrained {
		outcome = OutcomeRedispatched
	}
	d := &tableDecision{policy: p, server: up.Dial, outcome: outcome, store: store, matched: matched, tried: tried, hashKey: hashKey, stuck: stuckServer, stuckKey: stuckKey}
	return p.finish(vars, r, d, up)
}

// finishFirstHit is finish for a hit on the request's first selection, the
// hot path: the outcome is published without a replacer lock (see
// publishOutcomeLazily); every later decision of the request uses Set.
func (p *StickTable) finishFirstHit(vars map[string]any, r *http.Request, d *tableDecision, up *reverseproxy.Upstream) *reverseproxy.Upstream {
	if vars != nil {
		vars[p.varKey] = d
	}
	// when responses bypass the policy this counts the request; a shared
	// hit has nothing to store meanwhile (see sharedHit)
	p.side.installed()
	p.count(d.outcome)
	publishOutcomeLazily(r, d.outcome)
	return up
}

func (p *StickTable) finish(vars map[string]any, r *http.Request, d *tableDecision, up *reverseproxy.Upstream) *reverseproxy.Upstream {
	if vars != nil {
		vars[p.varKey] = d
	}
	if !p.side.installed() {
		// responses bypass the policy (see responseSide): store the
		// request's keys now, with the server chosen, rather than never
		for _, k := range d.store {
			p.storeKey(k, d.server)
		}
	}
	p.count(d.outcome)
	setOutcomePlaceholder(r, d.outcome)
	return up
}

// count records a lookup's outcome in the policy's metric and, for invalid
// keys, in the table's Stats.Invalid (what /sticky/tables shows as
// stats.invalid), so both count the same lookups.
func (p *StickTable) count(o Outcome) {
	p.counts.inc(o)
	if o == OutcomeInvalid {
		p.table.NoteInvalid()
	}
}

// reserve records the request's keys with the server just chosen, if they
// are still absent (SPEC 4): a browser's parallel first requests then all
// reach the server the first of them chose, instead of each placing the
// user anew until a response arrives. A key some concurrent request placed
// meanwhile sends this one to that server, when it is available. A retry
// does not come here (reselect), and the response confirms the entry or,
// after a redispatch, overwrites it, so running Select again is harmless.
func (p *StickTable) reserve(idx *dialIndex, pool reverseproxy.UpstreamPool, store []sticktable.Key, matched uint64, up *reverseproxy.Upstream) *reverseproxy.Upstream {
	server := p.identity(up.Dial)
	for i, k := range store {
		e, placed, err := p.table.PlaceKey(k, server)
		if err != nil || placed || e.Server == server || i > 0 || matched&1 == 0 {
			continue
		}
		if other := p.lookup(idx, pool, p.dialOf(e.Server)); other != nil && other.Available() {
			up, server = other, e.Server
		}
	}
	return up
}

// chooseNew places a user who is not (or no longer) stuck.
func (p *StickTable) chooseNew(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter, hashKey string, exclude []string) *reverseproxy.Upstream {
	if p.FirstChoice == "hash" && hashKey != "" {
		if up := p.placeByHash(pool, hashKey, exclude); up != nil {
			return up
		}
	}
	return selectExcluding(p.fallback, p.drained, pool, r, w, exclude)
}

// rendezvous returns the available, undrained upstream with the highest
// hash of (server, key): every instance computes the same answer from the
// key alone, and removing a server only moves the keys it had. A server is
// hashed by its identity (its configured name in names, else its dial
// address), so instances that reach the same named servers through
// different addresses place keys alike.
func rendezvous(drainSet *drain.Set, pool reverseproxy.UpstreamPool, key string, exclude []string, names map[string]string) *reverseproxy.Upstream {
	kh := placement.Hash(key)
	var best *reverseproxy.Upstream
	var bestScore uint64
	drained := anyDrained(drainSet)
	for _, up := range pool {
		if !up.Available() || containsString(exclude, up.Dial) || (drained && isDrained(drainSet, up.Dial)) {
			continue
		}
		id := up.Dial
		if name, ok := names[id]; ok {
			id = name
		}
		if score := placement.Score(placement.Hash(id), kh); best == nil || score > bestScore {
			best, bestScore = up, score
		}
	}
	return best
}

// onResponse commits the stores with the server that answered.
func (p *StickTable) onResponse(vars map[string]any, req *http.Request, res *http.Response) {
	d, ok := vars[p.varKey].(*tableDecision)
	if !ok || d.policy != p || d.server == "" {
		return
	}
	// A matched key is overwritten only after a redispatch (the stuck
	// server failed, or a reserved one did): a re-stick, an explicit
	// change. Otherwise the response confirms the reservation, and if the
	// entry changed meanwhile (an earlier placement of this user arrived
	// from a peer), the earlier placement stays: this node had not heard
	// of it when it chose. Store-only keys record the server used.
	redispatched := len(d.tried) > 0 || d.outcome == OutcomeDown || d.outcome == OutcomeRedispatched
	for i, k := range d.store {
		if p.backing != nil {
			// each key has its own entry in the store, which the local
			// cache mirrors (the store's answers, a placement's winner
			// included, are installed there)
			stuck := ""
			if d.stuck != "" && k == d.stuckKey {
				stuck = d.stuck
			} else if e, ok := p.table.GetKey(k); ok {
				stuck = e.Server
			}
			p.storeBacked(req.Context(), k, stuck, p.identity(d.server))
			continue
		}
		if redispatched || i >= 64 || d.matched&(1<<i) == 0 {
			p.storeKey(k, d.server)
		} else {
			p.placeKey(k, d.server)
		}
	}
	for _, rk := range p.StoreResponse {
		var text string
		if rk.From == "header" {
			text = res.Header.Get(rk.Name)
		} else {
			text = setCookieValue(res.Header, rk.Name)
		}
		if text == "" {
			continue
		}
		k, err := p.table.ParseKey(text)
		if err != nil {
			p.debug("response key does not parse for the table's type", text)
			continue
		}
		if p.backing != nil {
			p.storeBacked(req.Context(), k, "", p.identity(d.server))
			continue
		}
		p.storeKey(k, d.server)
	}
}

// place writes the first key of a new user to the shared store with the
// chosen upstream, if no instance placed it first; when one did and its
// server is available here, the request goes there instead, so racing
// first requests on several instances agree.
func (p *StickTable) place(idx *dialIndex, pool reverseproxy.UpstreamPool, r *http.Request, d *tableDecision, first sticktable.Key, up *reverseproxy.Upstream) *reverseproxy.Upstream {
	mine := p.identity(up.Dial)
	winner, err := p.backing.Place(r.Context(), first, mine)
	if err != nil {
		p.debug("store call failed; decided locally", err.Error())
	}
	d.stuck, d.stuckKey = winner, first
	if winner == mine {
		return up
	}
	if wup := p.lookup(idx, pool, p.dialOf(winner)); wup != nil && wup.Available() {
		d.outcome = OutcomeHit
		return wup
	}
	// The winner is not usable here: the response re-sticks the key.
	return up
}

// storeKey records k with the server that answered (its name when it has
// one); a store of the same server only refreshes the entry.
func (p *StickTable) storeKey(k sticktable.Key, dial string) {
	if _, err := p.table.StoreKey(k, p.identity(dial)); err != nil {
		p.debug("store refused", err.Error())
	}
}

// placeKey records k with the server that answered unless k has a live
// entry (which it refreshes).
func (p *StickTable) placeKey(k sticktable.Key, dial string) {
	if _, _, err := p.table.PlaceKey(k, p.identity(dial)); err != nil {
		p.debug("store refused", err.Error())
	}
}

// identity is what the table stores for a server: its configured name,
// else its dial address.
func (p *StickTable) identity(dial string) string {
	if name, ok := p.names[dial]; ok {
		return name
	}
	return dial
}

func (p *StickTable) debug(msg, value string) {
	if c := p.logger.Check(zapcore.DebugLevel, msg); c != nil {
		if len(value) > 64 {
			value = value[:64] + "..."
		}
		c.Write(zap.String("table", p.Table), zap.String("value", value))
	}
}

// dialOf turns a stored server identity back into a dial address.
func (p *StickTable) dialOf(server string) string {
	if dial, ok := p.dials[server]; ok {
		return dial
	}
	return server
}

// keyText evaluates a rule's key for this request, whose vars are vars.
func (r *compiledRule) keyText(repl *caddy.Replacer, vars map[string]any) string {
	if repl == nil {
		return ""
	}
	if r.placeholder != "" {
		var v any
		if r.varName != "" {
			// what Caddy's {http.vars.*} provider answers: Caddy keeps
			// variables in vars, not as static replacer values
			v = vars[r.varName]
		} else {
			var ok bool
			if v, ok = repl.Get(r.placeholder); !ok {
				return ""
			}
		}
		if v == nil {
			return ""
		}
		switch s := v.(type) {
		case string:
			return s
		case fmt.Stringer:
			return s.String()
		default:
			return fmt.Sprint(v)
		}
	}
	return repl.ReplaceKnown(r.Key, "")
}

// singlePlaceholder returns "x" when key is exactly "{x}".
func singlePlaceholder(key string) string {
	if len(key) > 2 && key[0] == '{' && key[len(key)-1] == '}' && strings.IndexAny(key[1:len(key)-1], "{}") < 0 {
		return key[1 : len(key)-1]
	}
	return ""
}

// setCookieValue returns the value the response sets for cookie name.
func setCookieValue(h http.Header, name string) string {
	for _, line := range h["Set-Cookie"] {
		if setCookieName(line) != name {
			continue
		}
		v := line[strings.IndexByte(line, '=')+1:]
		if i := strings.IndexByte(v, ';'); i >= 0 {
			v = v[:i]
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		if len(v) > haproxycookie.MaxValueLen {
			return ""
		}
		return v
	}
	return ""
}

// Interface guards
var (
	_ reverseproxy.Selector = (*StickTable)(nil)
	_ caddy.Provisioner     = (*StickTable)(nil)
	_ caddy.CleanerUpper    = (*StickTable)(nil)
	_ responseHook          = (*StickTable)(nil)
)
