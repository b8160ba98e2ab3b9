package selection

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// A strict user whose server failed during the request: the failed
// attempt's error becomes a 503 that still is a dial error for Caddy, and
// every retry is refused (nil), counted once.
func TestStrictCookieFailureIs503AndRetriesAreRefused(t *testing.T) {
	pool := newPool(3)
	s := provisionedCookie(t, `{"name": "STRICTU", "strict": true}`)
	r := newRequest("STRICTU=" + s.valueFor(pool[1].Dial))
	if up := s.Select(pool, r, httptest.NewRecorder()); up != pool[1] {
		t.Fatalf("stuck user went to %v", up)
	}
	refused := cookieLookups.WithLabelValues("STRICTU", "strict_refused")
	before := counterValue(refused)
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	dialErr := reverseproxy.DialError{}
	err := s.onError(vars, r, reverseproxy.NewDialError(errors.New("connection refused")))
	var he caddyhttp.HandlerError
	if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("failed attempt's error %v, want a 503 handler error", err)
	}
	if !errors.As(err, &dialErr) {
		t.Errorf("the 503 hides the dial error from Caddy's retry logic: %v", err)
	}
	for i := 0; i < 3; i++ {
		if up := s.Select(pool, r, httptest.NewRecorder()); up != nil {
			t.Fatalf("retry %d redispatched a strict user to %s", i, up.Dial)
		}
	}
	if n := counterValue(refused) - before; n != 1 {
		t.Errorf("strict_refused counted %v times for one request, want 1", n)
	}
	// without strict the same retry redispatches
	plain := provisionedCookie(t, `{"name": "STRICTU"}`)
	r = newRequest("STRICTU=" + plain.valueFor(pool[1].Dial))
	plain.Select(pool, r, httptest.NewRecorder())
	if up := plain.Select(pool, r, httptest.NewRecorder()); up == nil || up == pool[1] {
		t.Fatalf("non-strict retry went to %v", up)
	}
}

// Users without a valid cookie are served as usual under strict.
func TestStrictServesUsersWithoutPersistence(t *testing.T) {
	pool := newPool(2)
	s := provisionedCookie(t, `{"strict": true}`)
	for _, c := range []string{"", "SERVERID=forged", "SERVERID="} {
		r := newRequest(c)
		if up := s.Select(pool, r, httptest.NewRecorder()); up == nil {
			t.Errorf("cookie %q: refused", c)
		}
		// a retry of a new user's failed attempt redispatches
		if up := s.Select(pool, r, httptest.NewRecorder()); up == nil {
			t.Errorf("cookie %q: retry refused", c)
		}
	}
}

func TestStrictTableRetryRefused(t *testing.T) {
	pool := newPool(3)
	p := provisionedTable(t, `{"table": "strict_unit", "strict": true, "rules": [{"key": "{http.request.header.X-User}", "match": true, "store": true}]}`)
	if _, err := p.table.Store("bob", pool[2].Dial); err != nil {
		t.Fatal(err)
	}
	r := userRequest("bob", "")
	if up := p.Select(pool, r, httptest.NewRecorder()); up != pool[2] {
		t.Fatalf("stuck key went to %v", up)
	}
	if up := p.Select(pool, r, httptest.NewRecorder()); up != nil {
		t.Fatalf("strict retry redispatched to %s", up.Dial)
	}
	if d := tableDecisionOf(r, p); d.outcome != OutcomeStrictRefused {
		t.Errorf("outcome %v", d.outcome)
	}
	// a new key is placed and, when its server fails, moved
	r = userRequest("carol", "")
	first := p.Select(pool, r, httptest.NewRecorder())
	if second := p.Select(pool, r, httptest.NewRecorder()); first == nil || second == nil || second == first {
		t.Errorf("new key: %v then %v", first, second)
	}
}

func TestStrictCaddyfile(t *testing.T) {
	var s StickyCookie
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sticky_cookie SRV insert strict")); err != nil || !s.Strict {
		t.Errorf("flag on the first line: %v %v", err, s.Strict)
	}
	s = StickyCookie{}
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sticky_cookie SRV {\n strict\n}")); err != nil || !s.Strict {
		t.Errorf("block line: %v %v", err, s.Strict)
	}
	s = StickyCookie{}
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sticky_cookie SRV {\n strict\n strict\n}")); err == nil {
		t.Error("strict twice accepted")
	}
	var p StickTable
	if err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser("stick_table t {\n strict\n}")); err != nil || !p.Strict {
		t.Errorf("stick_table strict: %v %v", err, p.Strict)
	}
	p = StickTable{}
	err := p.UnmarshalCaddyfile(caddyfile.NewTestDispenser("stick_table t {\n on {client_ip}\n strict yes\n}"))
	if err == nil || !strings.Contains(err.Error(), "Testfile:3") {
		t.Errorf("strict with an argument: %v (want an error naming line 3)", err)
	}
}
