package selection

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Outcome says how persistence decided one request. Its String form is the
// {http.sticky.outcome} placeholder and the outcome label of the lookup
// metrics, so both speak the same words.
type Outcome uint8

// The outcomes. Every request that reaches a sticky policy gets exactly one,
// the one of its last selection attempt.
const (
	// OutcomeMiss: nothing to go by (no cookie, no key, no entry).
	OutcomeMiss Outcome = iota
	// OutcomeHit: the request named an available server and went there.
	OutcomeHit
	// OutcomeExpired: the cookie was idle longer than maxidle.
	OutcomeExpired
	// OutcomeTooOld: the cookie was first issued longer ago than maxlife.
	OutcomeTooOld
	// OutcomeInvalid: the request carried a persistence value that is
	// unusable: a cookie (or header) that is empty, malformed (bytes a
	// cookie cannot hold), oversized (over 4 KiB), dated in the future, or
	// that names no server of the pool; a table key that does not parse for
	// the table's type. A quoted valid cookie is not invalid: quotes are
	// stripped, as net/http does, and it is a hit.
	OutcomeInvalid
	// OutcomeDown: the server it names is unavailable; redispatched.
	OutcomeDown
	// OutcomeRedispatched: the stuck server failed during this request and
	// Caddy retried; the retry went elsewhere and the user is re-stuck.
	OutcomeRedispatched
	// OutcomeDrained: the request went to the server it is stuck to, which
	// is drained (drained servers keep their users and get no new ones).
	// Both policies count it instead of hit, so the count falls to zero as
	// a drained server's users leave.
	OutcomeDrained
	// OutcomeStrictRefused: strict persistence; the server the user is
	// stuck to is down or failed during this request, and the request was
	// answered 503 instead of moving the user.
	OutcomeStrictRefused
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	OutcomeMiss:          "miss",
	OutcomeHit:           "hit",
	OutcomeExpired:       "expired",
	OutcomeTooOld:        "too_old",
	OutcomeInvalid:       "invalid",
	OutcomeDown:          "down",
	OutcomeRedispatched:  "redispatched",
	OutcomeDrained:       "drained",
	OutcomeStrictRefused: "strict_refused",
}

// outcomeValues holds the names already boxed: the replacer stores values as
// any, and boxing a string on every request would allocate.
var outcomeValues = func() (v [numOutcomes]any) {
	for o := range numOutcomes {
		v[o] = outcomeNames[o]
	}
	return v
}()

// String is the outcome's name as logs and metrics show it.
func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return "unknown"
}

// OutcomePlaceholder is the placeholder that carries the outcome, for access
// logs (log_append) and headers.
const OutcomePlaceholder = "http.sticky.outcome"

// setOutcomePlaceholder makes o the request's {http.sticky.outcome}, as a
// static replacer value. Static values are consulted before providers, so
// this overrides an earlier publishOutcomeLazily of the same request.
func setOutcomePlaceholder(r *http.Request, o Outcome) {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set(OutcomePlaceholder, outcomeValues[o])
	}
}

// outcomeProviders answer {http.sticky.outcome} with one fixed outcome each.
// They hold no per-request state, so adding one to a request's replacer
// allocates nothing (Caddy's per-request replacer has room for it) and,
// unlike Replacer.Set, takes no lock and writes no map.
var outcomeProviders = func() (p [numOutcomes]caddy.ReplacerFunc) {
	for o := range numOutcomes {
		value := outcomeValues[o]
		p[o] = func(key string) (any, bool) {
			if key == OutcomePlaceholder {
				return value, true
			}
			return nil, false
		}
	}
	return p
}()

// outcomeBySet forces every outcome through Replacer.Set, for benchmarks
// comparing the two routes in one run.
var outcomeBySet = false

// publishOutcomeLazily is setOutcomePlaceholder for the hot path: the first
// decision of a request that called no other policy (a hit). Providers are
// consulted in order, so a later decision of the same request must use
// setOutcomePlaceholder, which every other path does: a retry, a refusal,
// the outer policy of a chain. The one case it cannot tell apart is two
// hits by policies of two reverse_proxy handlers of one request (the first
// one's outcome shows).
func publishOutcomeLazily(r *http.Request, o Outcome) {
	if outcomeBySet {
		setOutcomePlaceholder(r, o)
		return
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Map(outcomeProviders[o])
	}
}

// Collectors live at package level because Caddy gives every config a new
// registry: each Provision registers the same collectors into the registry of
// its config, and counts carry across reloads.
var (
	cookieLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "sticky",
		Name:      "cookie_lookups_total",
		Help:      "Requests seen by sticky_cookie policies, by cookie name and persistence outcome.",
	}, []string{"cookie", "outcome"})
	cookieInserts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "sticky",
		Name:      "cookie_inserts_total",
		Help:      "Persistence cookies set or rewritten on responses, by cookie name.",
	}, []string{"cookie"})
	tableLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "sticky",
		Name:      "table_lookups_total",
		Help:      "Requests seen by stick_table policies, by table and persistence outcome.",
	}, []string{"table", "outcome"})
	responseSideMissing = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "sticky",
		Name:      "response_side_missing_total",
		Help:      "Requests served by a sticky policy whose reverse_proxy transport no longer passes responses through it (see the error log).",
	}, []string{"policy", "name"})
	cookieUncached = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy",
		Subsystem: "sticky",
		Name:      "cookie_nocache_total",
		Help:      "Cacheable responses made private because they set a persistence cookie (nocache).",
	}, []string{"cookie"})
)

func registerCollectors(reg *prometheus.Registry, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// outcomeCounters holds one counter per outcome so the hot path increments
// without a label lookup.
type outcomeCounters [numOutcomes]prometheus.Counter

func newOutcomeCounters(vec *prometheus.CounterVec, label string) *outcomeCounters {
	var c outcomeCounters
	for o := range numOutcomes {
		c[o] = vec.WithLabelValues(label, o.String())
	}
	return &c
}

func (c *outcomeCounters) inc(o Outcome) {
	if o < numOutcomes {
		c[o].Inc()
	}
}
