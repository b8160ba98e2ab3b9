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

	// The policy for users without a valid cookie, and for redispatch.
	// Default: random.
	FallbackRaw json.RawMessage `json:"fallback,omitempty" caddy:"namespace=http.reverse_proxy.selection_policies inline_key=policy"`

	fallback   reverseproxy.Selector
	dynamicKey []byte
	servers    map[string]string
	varKey     string
	sameSite   string
	index      atomic.Pointer[serverIndex]
	seen       seenPool // the pool Select last saw, for the status page
	logger     *zap.Logger
	counts     *outcomeCounters
	inserts    interface{ Inc() }
	uncached   interface{ Inc() }
	created    *reverseproxy.HTTPTransport
	drained    *drain.Set
	now        func() time.Time
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
	var err error
	if s.created, err = attachResponseHook(ctx, s); err != nil {
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

// Cleanup releases the transport the policy had to create for its handler.
func (s *StickyCookie) Cleanup() error {
	if s.created != nil {
		return s.created.Cleanup()
	}
	return nil
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
	if prev, ok := vars[s.varKey].(*cookieDecision); ok && prev.policy == s {
		return s.reselect(pool, r, w, vars, prev)
	}

	idx := s.indexFor(pool)
	// the clock is only read for dated cookies: it is a visible share of a
	// hit on machines whose clock source is slow
	var now time.Time
	if s.MaxIdle > 0 || s.MaxLife > 0 {
		now = s.now()
	}
	outcome := OutcomeMiss
	var firstSeen time.Time

	raw, found := haproxycookie.FindCookie(r.Header["Cookie"], s.Name)
	if found {
		serverValue := raw
		if s.Mode == ModePrefix {
			sv, _, ok := haproxycookie.SplitPrefix(raw)
			if ok {
				serverValue = sv
				// the application only ever sees the value it set
				rewriteRequestCookie(r, s.Name)
			} else {
				// the application's own cookie without our mark: leave it
				// alone and let the fallback choose
				serverValue = ""
			}
		}
		if s.Indirect && s.Mode == ModeInsert {
			removeRequestCookie(r, s.Name)
		}
		if serverValue != "" {
			var rec *serverRecord
			var fresh bool
			rec, outcome, firstSeen, fresh = s.checkValue(idx, pool, serverValue, now)
			if outcome == OutcomeHit {
				d := rec.hit
				if !fresh {
					d = s.newDecision(rec, OutcomeHit, r, now, firstSeen)
				}
				return s.finish(vars, r, d, pool[rec.pos])
			}
		} else if s.Mode != ModePrefix {
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
	return s.finish(vars, r, s.newDecision(rec, outcome, r, now, firstSeen), up)
}

// reselect handles a retry: the upstream of the previous attempt failed, so
// the user is redispatched to another one and re-stuck there.
func (s *StickyCookie) reselect(pool reverseproxy.UpstreamPool, r *http.Request, w http.ResponseWriter, vars map[string]any, prev *cookieDecision) *reverseproxy.Upstream {
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
	if prev.server != nil && rec.dial != prev.server.dial && prev.outcome == OutcomeHit {
		outcome = OutcomeRedispatched
	}
	var now time.Time
	if s.MaxIdle > 0 || s.MaxLife > 0 {
		now = s.now()
	}
	d := s.newDecision(rec, outcome, r, now, prev.firstSeen)
	d.tried = tried
	return s.finish(vars, r, d, up)
}

func (s *StickyCookie) finish(vars map[string]any, r *http.Request, d *cookieDecision, up *reverseproxy.Upstream) *reverseproxy.Upstream {
	if vars != nil {
		vars[s.varKey] = d
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
	if !pool[rec.pos].Available() {
		return nil, OutcomeDown, firstSeen, false
	}
	return rec, OutcomeHit, firstSeen, fresh
}

// newDecision builds the decision for a request that needs a (new) cookie.
func (s *StickyCookie) newDecision(rec *serverRecord, outcome Outcome, r *http.Request, now, firstSeen time.Time) *cookieDecision {
	d := &cookieDecision{policy: s, server: rec, outcome: outcome, firstSeen: firstSeen}
	if s.Mode != ModeInsert {
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
