package selection

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-sticky/sticky/internal/drain"
	"github.com/caddy-sticky/sticky/internal/haproxycookie"
)

func init() {
	caddy.RegisterModule(new(StickyCookie))
}

// Cookie modes, as HAProxy names them.
const (
	ModeInsert  = "insert"
	ModeRewrite = "rewrite"
	ModePrefix  = "prefix"
)

// StickyCookie is cookie persistence with HAProxy's semantics: the proxy
// names the server in a cookie (insert), or marks the application's own
// cookie with it (rewrite, prefix), and sends every request that carries a
// valid value to that server while it is available. Cookie values use
// HAProxy's format, so a fleet can move between HAProxy and Caddy without
// logging anybody out.
//
// Lookups are O(1) in the number of upstreams: the value of every upstream
// is computed once per pool, not per request.
type StickyCookie struct {
	// The cookie name. Default: SERVERID.
	Name string `json:"name,omitempty"`

	// insert (default): the proxy sets the cookie when the client has no
	// valid one for the server that answered. rewrite: the application sets
	// the cookie and the proxy replaces its value with the server's.
	// prefix: the proxy prepends `<server>~` to the application's cookie
	// and strips it from requests, so the application sees its own value.
	Mode string `json:"mode,omitempty"`

	// Remove the cookie from requests before the application sees them
	// (insert mode), and do not send a new one to a client whose cookie is
	// still valid. Unless preserve is set, a cookie of the same name set by
	// the application is removed from responses.
	Indirect bool `json:"indirect,omitempty"`

	// When a cookie is set on a response that shared caches could store,
	// make the response `Cache-Control: private`, so a cache never hands one
	// user's persistence cookie to everybody.
	NoCache bool `json:"nocache,omitempty"`

	// Insert the cookie only on responses to POST requests (insert mode).
	PostOnly bool `json:"postonly,omitempty"`

	// Let the application set the cookie itself: when its response carries
	// a cookie of this name, it is left untouched and none is inserted.
	// Useful to end persistence on logout.
	Preserve bool `json:"preserve,omitempty"`

	// Add the HttpOnly attribute.
	HTTPOnly bool `json:"httponly,omitempty"`

	// Add the Secure attribute. Unset: added when the request arrived over
	// TLS, or from a trusted proxy with `X-Forwarded-Proto: https`.
	Secure *bool `json:"secure,omitempty"`

	// SameSite attribute: strict, lax or none. none implies Secure, as
	// browsers require.
	SameSite string `json:"samesite,omitempty"`

	// Domain attribute.
	Domain string `json:"domain,omitempty"`

	// Path attribute. Default: /.
	Path string `json:"path,omitempty"`

	// Max-Age attribute: how long the browser keeps the cookie. Default:
	// a session cookie.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	// Ignore a cookie not seen for this long (insert mode). The last-seen
	// date travels in the cookie and is refreshed as the user keeps using
	// the site.
	MaxIdle caddy.Duration `json:"maxidle,omitempty"`

	// Ignore a cookie first issued longer ago than this (insert mode),
	// however active the user is.
	MaxLife caddy.Duration `json:"maxlife,omitempty"`

	// Secret from which each server's value is derived (HAProxy's
	// dynamic-cookie-key): 16 hex digits of XXH64 over the key, the
	// server's IP and its port. Every proxy with the same key agrees on the
	// values, including for servers found through DNS. Placeholders such as
	// {env.STICKY_KEY} are expanded at load.
	DynamicKey string `json:"dynamic_key,omitempty"`

	// Fixed cookie values by upstream dial address, e.g.
	// {"10.0.0.11:8080": "web1"}; they win over dynamic values. Servers
	// with neither get 16 hex digits of XXH64 of their dial address.
	Servers map[string]string `json:"servers,omitempty"`

	// Extra attributes appended to the cookie as written, e.g.
	// "Partitioned" (HAProxy's attr).
	Attrs []string `json:"attrs,omitempty"`

	// Carry the persistence value in this request/response header instead
	// of a cookie, for API and gRPC clients that keep no cookies: the
	// response sets the header whenever it would have set the cookie (same
	// values: server lines, dynamic values, dates), and the client sends
	// it back in the same header. A forged, malformed or oversized value
	// counts as absent (outcome invalid). indirect removes the header from
	// the request. Insert mode only; the cookie-only options (domain, path,
	// samesite, secure, httponly, max_age, attrs, preserve) are refused.
	// The policy's name still labels its metrics.
	Header string `json:"header,omitempty"`

	// Strict persistence: a user whose cookie names a server that is down,
	// or that fails during the request, gets 503 Service Unavailable
	// instead of being moved to another server, also when Caddy retries
	// (lb_retries, try_duration; while the server is known down, each try
	// checks again, so one that becomes available within try_duration is
	// used). Users without a valid cookie are served as usual. For applications where a moved session is worse than an
	// error. Outcome: strict_refused.
	Strict bool `json:"strict,omitempty"`

	// The policy for users without a valid cookie, and for redispatch.
	// Default: random.
	FallbackRaw json.RawMessage `json:"fallback,omitempty" caddy:"namespace=http.reverse_proxy.selection_policies inline_key=policy"`

	fallback   reverseproxy.Selector
	dynamicKey []byte
	servers    map[string]string
	varKey     string
	seenKey    string
	headerKey  string
	// editsRequest: indirect or prefix, the modes whose Select edits the
	// request and so keeps the presented value in vars
	editsRequest bool
	// plainCookies: a cookie, not a header, that Select only reads, and
	// values without dates, so a hit can take plainHit
	plainCookies bool
	sameSite     string
	index        atomic.Pointer[serverIndex]
	seen         seenPool // the pool Select last saw, for the status page
	logger       *zap.Logger
	counts       *outcomeCounters
	inserts      interface{ Inc() }
	uncached     interface{ Inc() }
	side         responseSide
	drained      *drain.Set
	// refused marks a request refused at selection by strict
	refused *cookieDecision
	now     func() time.Time
}

// CaddyModule returns the Caddy module information.
func (*StickyCookie) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.sticky_cookie",
		New: func() caddy.Module { return new(StickyCookie) },
	}
}

// Provision validates the configuration, loads the fallback, and hooks the
// policy into its reverse_proxy's responses.
func (s *StickyCookie) Provision(ctx caddy.Context) error {
	if err := s.setup(ctx); err != nil {
		return err
	}
	if err := s.side.attach(ctx, s, "sticky_cookie", s.Name); err != nil {
		return err
	}
	st, err := stickyState(ctx)
	if err != nil {
		return err
	}
	s.drained = st.Drained()
	st.AddCookiePolicy(s)
	return nil
}

// setup is everything Provision does except hooking into the parent
// handler, which unit tests and benchmarks do not have.
func (s *StickyCookie) setup(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	if s.now == nil {
		s.now = time.Now
	}
	if s.Name == "" {
		s.Name = "SERVERID"
	}
	if s.Mode == "" {
		s.Mode = ModeInsert
	}
	if s.Path == "" {
		s.Path = "/"
	}
	if err := s.validate(); err != nil {
		return err
	}
	if s.DynamicKey != "" {
		key := caddy.NewReplacer().ReplaceKnown(s.DynamicKey, "")
		if key == "" {
			return fmt.Errorf("dynamic_key %q is empty once placeholders are expanded (is the variable set?)", s.DynamicKey)
		}
		s.dynamicKey = []byte(key)
	}
	s.servers = make(map[string]string, len(s.Servers))
	seen := make(map[string]string, len(s.Servers))
	for addr, value := range s.Servers {
		if !validCookieValue(value) {
			return fmt.Errorf("server %s: %q is not a valid cookie value", addr, value)
		}
		if other, dup := seen[value]; dup {
			return fmt.Errorf("servers %s and %s have the same cookie value %q", other, addr, value)
		}
		seen[value] = addr
		s.servers[normalizeDial(addr)] = value
	}
	s.varKey = "sticky_cookie." + s.Name
	s.seenKey = s.varKey + ".presented"
	s.refused = &cookieDecision{policy: s, outcome: OutcomeStrictRefused}
	s.editsRequest = s.Indirect || s.Mode == ModePrefix
	s.plainCookies = !s.editsRequest && s.Header == "" && s.MaxIdle == 0 && s.MaxLife == 0

	if s.FallbackRaw == nil {
		s.FallbackRaw = caddyconfig.JSONModuleObject(reverseproxy.RandomSelection{}, "policy", "random", nil)
	}
	mod, err := ctx.LoadModule(s, "FallbackRaw")
	if err != nil {
		return fmt.Errorf("loading fallback selection policy: %v", err)
	}
	s.fallback = mod.(reverseproxy.Selector)

	if err := registerCollectors(ctx.GetMetricsRegistry(), cookieLookups, cookieInserts, cookieUncached); err != nil {
		return err
	}
	s.counts = newOutcomeCounters(cookieLookups, s.Name)
	s.inserts = cookieInserts.WithLabelValues(s.Name)
	s.uncached = cookieUncached.WithLabelValues(s.Name)
	return nil
}

// Cleanup detaches the policy from its handler's transport.
func (s *StickyCookie) Cleanup() error {
	return s.side.release()
}

// validate applies HAProxy's rules on which options combine.
func (s *StickyCookie) validate() error {
	if !validCookieName(s.Name) {
		return fmt.Errorf("%q is not a valid cookie name", s.Name)
	}
	switch s.Mode {
	case ModeInsert:
	case ModeRewrite:
		if s.Indirect {
			return fmt.Errorf("rewrite cannot be combined with indirect")
		}
	case ModePrefix:
	default:
		return fmt.Errorf("unknown mode %q (want insert, rewrite or prefix)", s.Mode)
	}
	if s.Mode != ModeInsert {
		for opt, set := range map[string]bool{
			"postonly": s.PostOnly,
			"maxidle":  s.MaxIdle != 0,
			"maxlife":  s.MaxLife != 0,
		} {
			if set {
				return fmt.Errorf("%s only works in insert mode, not %s", opt, s.Mode)
			}
		}
		if s.Preserve && !s.Indirect {
			return fmt.Errorf("preserve needs insert mode or indirect")
		}
	}
	for name, d := range map[string]caddy.Duration{"max_age": s.MaxAge, "maxidle": s.MaxIdle, "maxlife": s.MaxLife} {
		if d < 0 {
			return fmt.Errorf("%s must not be negative", name)
		}
	}
	if err := s.validateHeader(); err != nil {
		return err
	}
	switch strings.ToLower(s.SameSite) {
	case "":
	case "strict":
		s.sameSite = "Strict"
	case "lax":
		s.sameSite = "Lax"
	case "none":
		if s.Secure != nil && !*s.Secure {
			return fmt.Errorf("samesite none needs the Secure attribute; remove `secure off`")
		}
		s.sameSite = "None"
	default:
		return fmt.Errorf("samesite must be strict, lax or none, not %q", s.SameSite)
	}
	for what, v := range map[string]string{"domain": s.Domain, "path": s.Path} {
		if !validAttrValue(v) {
			return fmt.Errorf("%s %q contains characters a cookie attribute cannot hold", what, v)
		}
	}
	for _, a := range s.Attrs {
		if a == "" || !validAttrValue(a) {
			return fmt.Errorf("attr %q contains characters a cookie attribute cannot hold", a)
		}
	}
	return nil
}

// cookieDecision is what Select decided for one request, kept in the
// request's vars so the response side and a retry see it. Hits that need no
// new cookie share one immutable decision per server, so the common path
// allocates nothing.
type cookieDecision struct {
	policy  *StickyCookie
	server  *serverRecord
	outcome Outcome
	// setCookie is the Set-Cookie header to add in insert mode, "" when the
	// client's cookie is still good.
	setCookie string
	// header is, with the header carrier, the value to send in the
	// response header, "" when the client's is still good.
	header string
	// firstSeen is the first-seen date to carry into a new cookie.
	firstSeen time.Time
	// tried lists the dial addresses of earlier attempts of this request:
	// Select only runs again after a failure, so they are not retried.
	tried []string
}

// Select sends a request with a valid cookie to the server it names, and
// every other request to the fallback's choice.
func (s *StickyCookie) Select(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	s.seen.observe(pool)
	vars, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	refusedBefore := false
	if prev, ok := vars[s.varKey].(*cookieDecision); ok && prev.policy == s {
		if prev != s.refused {
			return s.reselect(pool, r, w, vars, prev)
		}
		// strict refused an earlier try of this request: the server may
		// be back (try_duration), so decide again
		refusedBefore = true
	}

	idx := s.indexFor(pool)
	// the clock is only read for dated cookies: it is a visible share of a
	// hit on machines whose clock source is slow
	var now time.Time
	if s.MaxIdle > 0 || s.MaxLife > 0 {
		now = s.now()
	}
	named := true
	if s.plainCookies {
		var rec *serverRecord
		var outcome Outcome
		if rec, outcome, named = s.plainHit(idx, pool, r); rec != nil {
			d := rec.hit
			if outcome == OutcomeDrained {
				d = rec.drainedHit
			}
			return s.finishFirstHit(vars, r, w, d, pool[rec.pos], refusedBefore)
		}
	}
	outcome := OutcomeMiss
	var firstSeen time.Time

	raw, presence := "", haproxycookie.Absent
	if named {
		raw, presence = s.readCookie(r, vars, idx, pool)
	}
	switch presence {
	case haproxycookie.Unusable:
		// malformed or oversized: there, but names nobody
		s.debug("malformed or oversized persistence cookie", raw)
		outcome = OutcomeInvalid
	case haproxycookie.Present:
		serverValue := raw
		if s.Mode == ModePrefix {
			if sv, _, ok := haproxycookie.SplitPrefix(raw); ok {
				serverValue = sv
			} else {
				// the application's own cookie without our mark: leave it
				// alone and let the fallback choose
				serverValue = ""
			}
		}
		if serverValue != "" {
			var rec *serverRecord
			var fresh bool
			rec, outcome, firstSeen, fresh = s.checkValue(idx, pool, serverValue, now)
			if outcome == OutcomeHit || outcome == OutcomeDrained {
				d := rec.hit
				if outcome == OutcomeDrained {
					d = rec.drainedHit
				}
				if !fresh {
					d = s.newDecision(rec, outcome, r, now, firstSeen)
				}
				return s.finishFirstHit(vars, r, w, d, pool[rec.pos], refusedBefore)
			}
			if outcome == OutcomeDown && s.Strict {
				return s.refuseDown(vars, r, refusedBefore)
			}
		} else if s.Mode != ModePrefix {
			s.debug("empty persistence cookie", raw)
			outcome = OutcomeInvalid
		}
	}

	up := selectExcluding(s.fallback, s.drained, pool, r, w, nil)
	if up == nil {
		s.counts.inc(outcome)
		setOutcomePlaceholder(r, outcome)
		return nil
	}
	rec := s.recordFor(pool, up)
	return s.finish(vars, r, w, s.newDecision(rec, outcome, r, now, firstSeen), up)
}

// plainHit is the hit of the usual cookie: exactly the value of an
// available server, without dates. A value the index knows is well formed
// and needs no parsing, so its bytes are not checked (FirstCookie). It
// returns a nil record for anything else, which Select then reads in full
// (ScanCookie, Parse: a malformed first cookie, a value of no server here,
// a server that is down), and named false when the request has no cookie
// of our name at all, so that Select does not look for it again.
func (s *StickyCookie) plainHit(idx *serverIndex, pool reverseproxy.UpstreamPool, r *http.Request) (rec *serverRecord, outcome Outcome, named bool) {
	raw, named := haproxycookie.FirstCookie(r.Header["Cookie"], s.Name)
	if !named {
		return nil, OutcomeMiss, false
	}
	if rec, _ = idx.find(raw, pool); rec == nil || !rec.plain {
		return nil, OutcomeMiss, true
	}
	rec, outcome, _, _ = s.availability(rec, pool, time.Time{}, true)
	return rec, outcome, true
}

// presentedCookie is our cookie as the client sent it, kept for the
// request's later Select calls once the first one edited the request.
type presentedCookie struct {
	value    string
	presence haproxycookie.Presence
}

// readCookie returns the value of our cookie as the client sent it, and
// makes the request what the application must see: indirect removes the
// cookie, prefix strips the server part. Caddy calls Select again after a
// nil selection (try_duration), and the edits are not repeatable (a second
// strip would cut into the application's own value), so the first reading is
// kept in the request's vars whenever the request was edited, and later
// calls read it from there. Requests that need no edit store nothing, so a
// plain hit allocates nothing.
func (s *StickyCookie) readCookie(r *http.Request, vars map[string]any, idx *serverIndex, pool reverseproxy.UpstreamPool) (string, haproxycookie.Presence) {
	if s.editsRequest {
		if p, ok := vars[s.seenKey].(*presentedCookie); ok {
			return p.value, p.presence
		}
	}
	if s.headerKey != "" {
		return s.readHeader(r, vars)
	}
	raw, presence := haproxycookie.ScanCookie(r.Header["Cookie"], s.Name)
	edited := false
	if presence == haproxycookie.Present && s.Mode == ModePrefix {
		if _, _, ok := haproxycookie.SplitPrefix(raw); ok {
			// the application only ever sees the value it set
			edited = rewriteRequestCookie(r, s.Name)
		}
	}
	if s.Indirect && s.Mode == ModeInsert {
		edited = removeRequestCookie(r, s.Name) || edited
	}
	if edited && vars != nil {
		vars[s.seenKey] = presented(idx, pool, raw, presence)
	}
	return raw, presence
}

// presented is what readCookie keeps of the cookie it read: the shared
// record of the server whose value it is exactly (the usual hit, which so
// allocates nothing), else one of its own.
func presented(idx *serverIndex, pool reverseproxy.UpstreamPool, raw string, presence haproxycookie.Presence) *presentedCookie {
	if presence == haproxycookie.Present {
		if rec, _ := idx.find(raw, pool); rec != nil {
			return rec.presented
		}
	}
	return &presentedCookie{value: raw, presence: presence}
}

// reselect handles a retry: the upstream of the previous attempt failed, so
// the user is redispatched to another one and re-stuck there.
func (s *StickyCookie) reselect(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter, vars map[string]any, prev *cookieDecision) *reverseproxy.Upstream {
	if s.Strict && (prev.outcome == OutcomeStrictRefused || stuck(prev.outcome)) {
		return s.refuseFailed(vars, r, prev)
	}
	tried := prev.tried
	if prev.server != nil {
		tried = append(tried[:len(tried):len(tried)], prev.server.dial)
	}
	up := selectExcluding(s.fallback, s.drained, pool, r, w, tried)
	if up == nil {
		return nil
	}
	rec := s.recordFor(pool, up)
	outcome := prev.outcome
	if prev.server != nil && rec.dial != prev.server.dial && (prev.outcome == OutcomeHit || prev.outcome == OutcomeDrained) {
		outcome = OutcomeRedispatched
	}
	var now time.Time
	if s.MaxIdle > 0 || s.MaxLife > 0 {
		now = s.now()
	}
	d := s.newDecision(rec, outcome, r, now, prev.firstSeen)
	d.tried = tried
	return s.finish(vars, r, w, d, up)
}

// finishFirstHit is finish for a hit on the request's first selection, the
// hot path: the outcome is published without a replacer lock.
func (s *StickyCookie) finishFirstHit(vars map[string]any, r *http.Request, w http.ResponseWriter, d *cookieDecision, up *reverseproxy.Upstream, refusedBefore bool) *reverseproxy.Upstream {
	if refusedBefore {
		// a strict refusal of an earlier try was published with Set
		return s.finish(vars, r, w, d, up)
	}
	if vars != nil {
		vars[s.varKey] = d
	}
	if !s.side.installed() {
		s.withoutResponse(w, r, d)
	}
	s.counts.inc(d.outcome)
	publishOutcomeLazily(r, d.outcome)
	return up
}

func (s *StickyCookie) finish(vars map[string]any, r *http.Request, w http.ResponseWriter, d *cookieDecision, up *reverseproxy.Upstream) *reverseproxy.Upstream {
	if vars != nil {
		vars[s.varKey] = d
	}
	if !s.side.installed() {
		s.withoutResponse(w, r, d)
	}
	s.counts.inc(d.outcome)
	setOutcomePlaceholder(r, d.outcome)
	return up
}

// checkValue decides whether a presented server value still routes: it must
// name an available upstream and, with maxidle/maxlife, carry acceptable
// dates. fresh reports that the cookie needs no rewriting. firstSeen is the
// cookie's first-seen date whenever its dates were acceptable, even if the
// user must move: HAProxy carries it over so maxlife still counts from the
// first visit.
func (s *StickyCookie) checkValue(idx *serverIndex, pool reverseproxy.UpstreamPool, value string, now time.Time) (rec *serverRecord, outcome Outcome, firstSeen time.Time, fresh bool) {
	if s.MaxIdle == 0 && s.MaxLife == 0 {
		// The usual cookie is a server's value and nothing else: one the
		// index knows, and that parses as itself, is what Parse would
		// find, so it is not parsed. Anything else (dates, another value,
		// a pool that moved) takes the full path below.
		if rec, _ := idx.find(value, pool); rec != nil && rec.plain {
			return s.availability(rec, pool, time.Time{}, true)
		}
	}
	parsed, ok := haproxycookie.Parse(value)
	if !ok {
		s.debug("malformed persistence cookie", value)
		return nil, OutcomeInvalid, time.Time{}, false
	}
	fresh = true
	if s.MaxIdle > 0 || s.MaxLife > 0 {
		verdict, refresh := haproxycookie.Check(parsed, now, time.Duration(s.MaxIdle), time.Duration(s.MaxLife))
		switch verdict {
		case haproxycookie.Valid:
		case haproxycookie.ExpiredIdle:
			return nil, OutcomeExpired, time.Time{}, false
		case haproxycookie.ExpiredLife:
			return nil, OutcomeTooOld, time.Time{}, false
		default:
			s.debug("persistence cookie dated in the future", value)
			return nil, OutcomeInvalid, time.Time{}, false
		}
		fresh = !refresh
		firstSeen = parsed.FirstSeen
	}
	rec = s.lookupValue(idx, parsed.Server, pool)
	if rec == nil {
		s.debug("persistence cookie names no server of the pool", value)
		return nil, OutcomeInvalid, firstSeen, false
	}
	return s.availability(rec, pool, firstSeen, fresh)
}

// availability finishes checkValue for the server a valid cookie names.
func (s *StickyCookie) availability(rec *serverRecord, pool reverseproxy.UpstreamPool, firstSeen time.Time, fresh bool) (*serverRecord, Outcome, time.Time, bool) {
	if !pool[rec.pos].Available() {
		return nil, OutcomeDown, firstSeen, false
	}
	if serverDrained(s.drained, rec.dial) {
		// drained servers keep their users
		return rec, OutcomeDrained, firstSeen, fresh
	}
	return rec, OutcomeHit, firstSeen, fresh
}

// newDecision builds the decision for a request that needs a (new) cookie.
func (s *StickyCookie) newDecision(rec *serverRecord, outcome Outcome, r *http.Request, now, firstSeen time.Time) *cookieDecision {
	d := &cookieDecision{policy: s, server: rec, outcome: outcome, firstSeen: firstSeen}
	if s.Mode != ModeInsert {
		return d
	}
	if s.headerKey != "" {
		d.header = s.headerValue(rec, now, firstSeen)
		return d
	}
	secure := s.secureFor(r)
	if s.MaxIdle == 0 && s.MaxLife == 0 {
		d.setCookie = rec.setCookie[boolIndex(secure)]
		return d
	}
	value := haproxycookie.AppendIssued(nil, rec.value, now, firstSeen, time.Duration(s.MaxIdle), time.Duration(s.MaxLife))
	d.setCookie = s.buildSetCookie(string(value), secure)
	return d
}

func (s *StickyCookie) secureFor(r *http.Request) bool {
	if s.sameSite == "None" {
		return true
	}
	if s.Secure != nil {
		return *s.Secure
	}
	if r.TLS != nil {
		return true
	}
	if trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool); trusted {
		if xfp := r.Header.Values("X-Forwarded-Proto"); len(xfp) > 0 {
			last := xfp[len(xfp)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			return strings.EqualFold(strings.TrimSpace(last), "https")
		}
	}
	return false
}

// buildSetCookie writes the Set-Cookie header for a value.
func (s *StickyCookie) buildSetCookie(value string, secure bool) string {
	var b strings.Builder
	b.Grow(len(s.Name) + len(value) + 64)
	b.WriteString(s.Name)
	b.WriteByte('=')
	b.WriteString(value)
	b.WriteString("; Path=")
	b.WriteString(s.Path)
	if s.Domain != "" {
		b.WriteString("; Domain=")
		b.WriteString(s.Domain)
	}
	if s.MaxAge > 0 {
		fmt.Fprintf(&b, "; Max-Age=%d", int64(time.Duration(s.MaxAge)/time.Second))
	}
	if s.HTTPOnly {
		b.WriteString("; HttpOnly")
	}
	if secure {
		b.WriteString("; Secure")
	}
	if s.sameSite != "" {
		b.WriteString("; SameSite=")
		b.WriteString(s.sameSite)
	}
	for _, a := range s.Attrs {
		b.WriteString("; ")
		b.WriteString(a)
	}
	return b.String()
}

// onResponse applies the decision to the upstream's response headers.
func (s *StickyCookie) onResponse(vars map[string]any, req *http.Request, res *http.Response) {
	d, ok := vars[s.varKey].(*cookieDecision)
	if !ok || d.policy != s || d.server == nil {
		return
	}
	h := res.Header
	if s.headerKey != "" {
		s.headerOnResponse(req, res, d)
		return
	}
	switch s.Mode {
	case ModeInsert:
		if s.Preserve && hasSetCookie(h, s.Name) {
			return
		}
		removeSetCookie(h, s.Name)
		if d.setCookie == "" || (s.PostOnly && req.Method != http.MethodPost) {
			return
		}
		h.Add("Set-Cookie", d.setCookie)
		s.inserts.Inc()
		s.makePrivate(req, res)
	case ModeRewrite:
		if rewriteSetCookie(h, s.Name, func(string) string { return d.server.value }) {
			s.inserts.Inc()
			s.makePrivate(req, res)
		}
	case ModePrefix:
		if rewriteSetCookie(h, s.Name, func(app string) string { return haproxycookie.JoinPrefix(d.server.value, app) }) {
			s.inserts.Inc()
			s.makePrivate(req, res)
		}
	}
}

// withoutResponse is what insert mode can still do when the handler's
// responses bypass the policy (see responseSide): set the cookie on the
// client's response directly, as Caddy's own cookie policy does, replacing
// the one of an earlier attempt. nocache, preserve and the removal of the
// application's cookie need the response and are lost, as are rewrite and
// prefix; the requests are counted and the cause logged.
func (s *StickyCookie) withoutResponse(w http.ResponseWriter, r *http.Request, d *cookieDecision) {
	if w == nil || s.Mode != ModeInsert || d.server == nil {
		return
	}
	h := w.Header()
	if s.headerKey != "" {
		delete(h, s.headerKey)
		if d.header != "" && (!s.PostOnly || r.Method == http.MethodPost) {
			h[s.headerKey] = []string{d.header}
			s.inserts.Inc()
		}
		return
	}
	removeSetCookie(h, s.Name)
	if d.setCookie == "" || (s.PostOnly && r.Method != http.MethodPost) {
		return
	}
	h.Add("Set-Cookie", d.setCookie)
	s.inserts.Inc()
}

func (s *StickyCookie) makePrivate(req *http.Request, res *http.Response) {
	if s.NoCache && sharedCacheable(req, res) {
		res.Header.Set("Cache-Control", "private")
		s.uncached.Inc()
	}
}

func (s *StickyCookie) debug(msg, value string) {
	if c := s.logger.Check(zapcore.DebugLevel, msg); c != nil {
		if len(value) > 64 {
			value = value[:64] + "..."
		}
		c.Write(zap.String("cookie", s.Name), zap.String("value", value))
	}
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Interface guards
var (
	_ reverseproxy.Selector = (*StickyCookie)(nil)
	_ caddy.Provisioner     = (*StickyCookie)(nil)
	_ caddy.CleanerUpper    = (*StickyCookie)(nil)
	_ responseHook          = (*StickyCookie)(nil)
)
