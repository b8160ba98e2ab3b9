package selection

import (
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Strict persistence (both policies): a user stuck to a server that is down
// or fails gets 503 instead of moving. Caddy answers a nil selection with
// 503 "no upstreams available" and, with lb_retries or try_duration, calls
// Select again; the policies refuse again on every such call, so nothing
// redispatches the user. When the stuck server fails during the request,
// Caddy would answer the dial error with 502: the response side turns that
// error into a 503 (keeping the error inside, so Caddy still treats it as
// a dial error for retries and passive health), and the retry is refused.
// Each refused request counts strict_refused once.

// stuck reports whether an outcome sent the request to the server its user
// is stuck to.
func stuck(o Outcome) bool { return o == OutcomeHit || o == OutcomeDrained }

// errStrict is the error that makes Caddy answer 503 for a strict user whose
// server failed during the request.
func errStrict(err error) error {
	return caddyhttp.Error(http.StatusServiceUnavailable, err)
}

// refuseDown refuses a request whose cookie names a server that is down.
// The marker in vars lets a later Select of the same request (try_duration)
// decide again without counting the refusal twice.
func (s *StickyCookie) refuseDown(vars map[string]any, r *http.Request, counted bool) *reverseproxy.Upstream {
	if vars != nil {
		vars[s.varKey] = s.refused
	}
	if !counted {
		s.counts.inc(OutcomeStrictRefused)
	}
	setOutcomePlaceholder(r, OutcomeStrictRefused)
	return nil
}

// refuseFailed refuses the retry of a request whose stuck server failed.
func (s *StickyCookie) refuseFailed(vars map[string]any, r *http.Request, prev *cookieDecision) *reverseproxy.Upstream {
	if prev.outcome != OutcomeStrictRefused {
		vars[s.varKey] = &cookieDecision{policy: s, server: prev.server, outcome: OutcomeStrictRefused, tried: prev.tried}
		s.counts.inc(OutcomeStrictRefused)
	}
	setOutcomePlaceholder(r, OutcomeStrictRefused)
	return nil
}

// onError makes the failure of a strict user's server a 503, counted once.
func (s *StickyCookie) onError(vars map[string]any, req *http.Request, err error) error {
	if !s.Strict {
		return err
	}
	d, ok := vars[s.varKey].(*cookieDecision)
	if !ok || d.policy != s || d.server == nil || !stuck(d.outcome) {
		return err
	}
	vars[s.varKey] = &cookieDecision{policy: s, server: d.server, outcome: OutcomeStrictRefused, tried: d.tried}
	s.counts.inc(OutcomeStrictRefused)
	setOutcomePlaceholder(req, OutcomeStrictRefused)
	return errStrict(err)
}

// refuseDown refuses a request whose key is stuck to a server that is down.
func (p *StickTable) refuseDown(vars map[string]any, r *http.Request, counted bool) *reverseproxy.Upstream {
	if vars != nil {
		vars[p.varKey] = p.refused
	}
	if !counted {
		p.count(OutcomeStrictRefused)
	}
	setOutcomePlaceholder(r, OutcomeStrictRefused)
	return nil
}

// refuseFailed refuses the retry of a request whose stuck server failed.
func (p *StickTable) refuseFailed(vars map[string]any, r *http.Request, prev *tableDecision) *reverseproxy.Upstream {
	if prev.outcome != OutcomeStrictRefused {
		vars[p.varKey] = &tableDecision{policy: p, server: prev.server, outcome: OutcomeStrictRefused, tried: prev.tried}
		p.count(OutcomeStrictRefused)
	}
	setOutcomePlaceholder(r, OutcomeStrictRefused)
	return nil
}

// onError makes the failure of a strict user's server a 503, counted once.
func (p *StickTable) onError(vars map[string]any, req *http.Request, err error) error {
	if !p.Strict {
		return err
	}
	d, ok := vars[p.varKey].(*tableDecision)
	if !ok || d.policy != p || d.server == "" || !stuck(d.outcome) {
		return err
	}
	vars[p.varKey] = &tableDecision{policy: p, server: d.server, outcome: OutcomeStrictRefused, tried: d.tried}
	p.count(OutcomeStrictRefused)
	setOutcomePlaceholder(req, OutcomeStrictRefused)
	return errStrict(err)
}
