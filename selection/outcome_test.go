package selection

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func tableDecisionOf(r *http.Request, p *StickTable) *tableDecision {
	d, _ := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)[p.varKey].(*tableDecision)
	if d == nil {
		return &tableDecision{outcome: 255}
	}
	return d
}

// Issue 8: a stuck hit on a drained server was `drained` in stick_table and
// `hit` in sticky_cookie. Both say drained, and both still serve the user
// from the drained server.
func TestDrainedStuckHitIsDrainedInBothPolicies(t *testing.T) {
	fakeDrained.Replace(nil)
	t.Cleanup(func() { fakeDrained.Replace(nil) })
	pool := newPool(3)
	s := provisionedCookie(t, "")
	s.drained = fakeDrained // what Provision takes from the sticky app
	p := provisionedTable(t, `{"table": "drained_outcome", "rules": [{"key": "{http.request.header.X-User}", "match": true, "store": true}]}`)
	if _, err := p.table.Store("alice", pool[0].Dial); err != nil {
		t.Fatal(err)
	}
	fakeDrained.Set(pool[0].Dial, true)

	r := newRequest("SERVERID=" + s.valueFor(pool[0].Dial))
	if up := s.Select(pool, r, httptest.NewRecorder()); up != pool[0] {
		t.Fatalf("sticky_cookie sent a user of a drained server to %v", up)
	}
	if d := decisionOf(r, s); d.outcome != OutcomeDrained || d.setCookie != "" {
		t.Errorf("sticky_cookie: outcome %v (cookie %q), want drained and no new cookie", d.outcome, d.setCookie)
	}
	r = userRequest("alice", "")
	if up := p.Select(pool, r, httptest.NewRecorder()); up != pool[0] {
		t.Fatalf("stick_table sent a user of a drained server to %v", up)
	}
	if d := tableDecisionOf(r, p); d.outcome != OutcomeDrained {
		t.Errorf("stick_table: outcome %v, want drained", d.outcome)
	}
	// new users never go to the drained server
	for i := 0; i < 50; i++ {
		if up := s.Select(pool, newRequest(""), httptest.NewRecorder()); up == pool[0] {
			t.Fatal("a new user went to the drained server")
		}
	}
}

// Issue 8: /sticky/tables stats.invalid stayed 0 while the lookup metric
// counted invalid keys. The table's counter and the policy's metric count
// the same lookups.
func TestInvalidTableKeysCountInTableStatsAndMetric(t *testing.T) {
	pool := newPool(2)
	p := provisionedTable(t, `{"table": "ip_invalid_stats", "rules": [{"key": "{http.request.header.X-User}", "match": true, "store": true}]}`)
	metric := tableLookups.WithLabelValues("ip_invalid_stats", "invalid")
	before, statsBefore := counterValue(metric), p.table.Stats().Invalid
	for _, key := range []string{"not-an-ip", "10.0.0.300", "::1::"} {
		if up := p.Select(pool, userRequest(key, ""), httptest.NewRecorder()); up == nil {
			t.Fatalf("key %q: no upstream (an invalid key must never fail the request)", key)
		}
	}
	p.Select(pool, userRequest("10.1.2.3", ""), httptest.NewRecorder()) // valid: not counted
	gotMetric := counterValue(metric) - before
	gotStats := p.table.Stats().Invalid - statsBefore
	if gotMetric != 3 || gotStats != 3 {
		t.Errorf("3 invalid keys: metric counted %v, table stats.invalid %v; want 3 and 3", gotMetric, gotStats)
	}
}

// The rule for quoted, empty, malformed and oversized cookies, one place:
// a quoted valid value is a hit; empty, malformed and oversized values are
// invalid (counted, never failing the request, a new cookie issued).
func TestQuotedOversizedMalformedCookieRule(t *testing.T) {
	pool := newPool(2)
	s := provisionedCookie(t, `{"name": "SRV"}`)
	valid := s.valueFor(pool[1].Dial)
	for cookie, want := range map[string]Outcome{
		`SRV="` + valid + `"`:              OutcomeHit,
		"SRV=" + valid:                     OutcomeHit,
		"SRV=":                             OutcomeInvalid,
		`SRV=""`:                           OutcomeInvalid,
		"SRV=" + strings.Repeat("a", 5000): OutcomeInvalid,
		`SRV="` + valid:                    OutcomeInvalid,
		"SRV=ab\\cd":                       OutcomeInvalid,
		"SRV=nonexistent":                  OutcomeInvalid,
		"other=1":                          OutcomeMiss,
		"SRV=" + strings.Repeat("a", 5000) + "; SRV=" + valid: OutcomeHit,
	} {
		r := newRequest(cookie)
		metric := cookieLookups.WithLabelValues("SRV", want.String())
		before := counterValue(metric)
		up := s.Select(pool, r, httptest.NewRecorder())
		if up == nil {
			t.Fatalf("%.40q: no upstream", cookie)
		}
		d := decisionOf(r, s)
		if d.outcome != want {
			t.Errorf("%.40q: outcome %v, want %v", cookie, d.outcome, want)
		}
		if counterValue(metric)-before != 1 {
			t.Errorf("%.40q: %v not counted", cookie, want)
		}
		if want == OutcomeHit && (up != pool[1] || d.setCookie != "") {
			t.Errorf("%.40q: hit went to %s with cookie %q", cookie, up.Dial, d.setCookie)
		}
		if want != OutcomeHit && d.setCookie == "" {
			t.Errorf("%.40q: no fresh cookie for a %v value", cookie, want)
		}
	}
}

// The {http.sticky.outcome} placeholder: a first hit is published without
// Replacer.Set, and every later decision of the request (a retry, the outer
// policy of a chain) still wins over it.
func TestOutcomePlaceholderFollowsTheLastDecision(t *testing.T) {
	pool := newPool(3)
	s := provisionedCookie(t, `{"fallback": {"policy": "first"}}`)
	r := caddyRequest("SERVERID=" + s.valueFor(pool[1].Dial))
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	s.Select(pool, r, httptest.NewRecorder())
	if v, _ := repl.GetString(OutcomePlaceholder); v != "hit" {
		t.Fatalf("after a hit: %q", v)
	}
	s.Select(pool, r, httptest.NewRecorder()) // Caddy's retry
	if v, _ := repl.GetString(OutcomePlaceholder); v != "redispatched" {
		t.Errorf("after the retry: %q, want redispatched", v)
	}
	// stick_table outer, sticky_cookie its fallback: the cookie hits, the
	// table's miss is the request's outcome, as before
	p := provisionedTable(t, `{"table": "placeholder_chain", "rules": [{"key": "{http.request.header.X-User}", "match": true, "store": true}]}`)
	p.fallback = s
	r = caddyRequest("SERVERID=" + s.valueFor(pool[2].Dial))
	r.Header.Set("X-User", "dave")
	repl = r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if up := p.Select(pool, r, httptest.NewRecorder()); up != pool[2] {
		t.Fatalf("chain went to %v", up)
	}
	if v, _ := repl.GetString(OutcomePlaceholder); v != "miss" {
		t.Errorf("chain: %q, want the outer policy's miss", v)
	}
}
