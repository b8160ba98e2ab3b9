package selection

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-sticky/sticky/internal/haproxycookie"
)

func TestValueForPrecedence(t *testing.T) {
	t.Setenv("STICKY_UNIT_KEY", "MYKEY")
	s := provisionedCookie(t, `{"dynamic_key": "{env.STICKY_UNIT_KEY}", "servers": {"http://10.0.0.1:80": "web1"}}`)
	if v := s.valueFor("10.0.0.1:80"); v != "web1" {
		t.Errorf("server line: %q", v)
	}
	if v, want := s.valueFor("10.0.0.2:8080"), haproxycookie.DynamicValue([]byte("MYKEY"), netip.MustParseAddr("10.0.0.2"), 8080); v != want {
		t.Errorf("dynamic: %q, want %q", v, want)
	}
	if v, want := s.valueFor("[2001:db8::1]:443"), haproxycookie.DynamicValue([]byte("MYKEY"), netip.MustParseAddr("2001:db8::1"), 443); v != want {
		t.Errorf("dynamic v6: %q, want %q", v, want)
	}
	if v, want := s.valueFor("app.internal:8080"), haproxycookie.DynamicValueHost([]byte("MYKEY"), "app.internal", 8080); v != want {
		t.Errorf("dynamic hostname: %q, want %q", v, want)
	}
	plain := provisionedCookie(t, "")
	v := plain.valueFor("10.0.0.2:8080")
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(v) || v == plain.valueFor("10.0.0.3:8080") {
		t.Errorf("default values must be 16 hex digits and differ per server: %q", v)
	}
	if again := provisionedCookie(t, "").valueFor("10.0.0.2:8080"); again != v {
		t.Error("default values must be the same on every instance")
	}
}

func TestEmptyDynamicKeyRefused(t *testing.T) {
	s := new(StickyCookie)
	_ = json.Unmarshal([]byte(`{"dynamic_key": "{env.STICKY_SURELY_UNSET_VAR}"}`), s)
	if err := s.setup(newTestContext(t)); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("an unset key variable must fail the load: %v", err)
	}
}

func TestJSONValidation(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"mode": "sideways"}`:                       "unknown mode",
		`{"mode": "rewrite", "indirect": true}`:      "rewrite cannot be combined with indirect",
		`{"mode": "prefix", "maxidle": 60000000000}`: "maxidle only works in insert mode",
		`{"mode": "rewrite", "postonly": true}`:      "postonly only works in insert mode",
		`{"mode": "prefix", "preserve": true}`:       "preserve needs insert mode or indirect",
		`{"samesite": "none", "secure": false}`:      "samesite none needs the Secure attribute",
		`{"samesite": "maybe"}`:                      "samesite must be",
		`{"name": "a b"}`:                            "not a valid cookie name",
		`{"servers": {"a:1": "x", "b:1": "x"}}`:      "same cookie value",
		`{"servers": {"a:1": "x;y"}}`:                "not a valid cookie value",
		`{"path": "/a;b"}`:                           "cannot hold",
		`{"max_age": -1}`:                            "must not be negative",
		`{"fallback": {"policy": "no_such_policy"}}`: "loading fallback",
	} {
		s := new(StickyCookie)
		if err := json.Unmarshal([]byte(cfg), s); err != nil {
			t.Fatal(err)
		}
		err := s.setup(newTestContext(t))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", cfg, err, want)
		}
	}
}

// dynamicPool copies pool into new Upstream objects and a new slice, as
// Caddy's dynamic upstream sources do on every request.
func dynamicPool(pool reverseproxy.UpstreamPool, order ...int) reverseproxy.UpstreamPool {
	out := make(reverseproxy.UpstreamPool, len(order))
	for i, j := range order {
		out[i] = &reverseproxy.Upstream{Host: pool[j].Host, Dial: pool[j].Dial}
	}
	return out
}

func TestHitsSurviveDynamicAndReorderedPools(t *testing.T) {
	base := newPool(4)
	s := provisionedCookie(t, "")
	w := httptest.NewRecorder()
	for _, order := range [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {1, 3, 0, 2}} {
		pool := dynamicPool(base, order...)
		for _, up := range base {
			r := newRequest("SERVERID=" + s.valueFor(up.Dial))
			got := s.Select(pool, r, w)
			if got == nil || got.Dial != up.Dial {
				t.Fatalf("order %v: cookie of %s went to %v", order, up.Dial, got)
			}
		}
	}
	// a server leaves and another joins under the same pool size
	changed := reverseproxy.UpstreamPool{base[0], base[1], base[2], {Host: new(reverseproxy.Host), Dial: "10.9.9.9:80"}}
	r := newRequest("SERVERID=" + s.valueFor(base[3].Dial))
	if got := s.Select(changed, r, w); got == nil || got.Dial == base[3].Dial {
		t.Fatalf("cookie of a removed server routed to %v", got)
	}
	if d := decisionOf(r, s); d.outcome != OutcomeInvalid || d.setCookie == "" {
		t.Errorf("removed server: outcome %v, cookie %q", d.outcome, d.setCookie)
	}
	r = newRequest("SERVERID=" + s.valueFor("10.9.9.9:80"))
	if got := s.Select(changed, r, w); got == nil || got.Dial != "10.9.9.9:80" {
		t.Fatalf("cookie of the new server went to %v", got)
	}
}

func decisionOf(r *http.Request, s *StickyCookie) *cookieDecision {
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	d, _ := vars[s.varKey].(*cookieDecision)
	return d
}

func TestRetryRedispatchesAndReplacesTheCookie(t *testing.T) {
	pool := newPool(3)
	s := provisionedCookie(t, `{"fallback": {"policy": "first"}}`)
	w := httptest.NewRecorder()
	r := newRequest("SERVERID=" + s.valueFor(pool[1].Dial))
	if got := s.Select(pool, r, w); got != pool[1] {
		t.Fatalf("first attempt went to %v", got)
	}
	if d := decisionOf(r, s); d.outcome != OutcomeHit || d.setCookie != "" {
		t.Fatalf("hit: %+v", d)
	}
	// Caddy calls Select again after pool[1] failed
	got := s.Select(pool, r, w)
	if got == nil || got == pool[1] {
		t.Fatalf("retry went back to the failed server: %v", got)
	}
	d := decisionOf(r, s)
	if d.outcome != OutcomeRedispatched || !strings.Contains(d.setCookie, s.valueFor(got.Dial)) {
		t.Fatalf("retry decision: %+v", d)
	}
	// a third attempt avoids both failed servers
	third := s.Select(pool, r, w)
	if third == nil || third == pool[1] || third == got {
		t.Fatalf("third attempt went to %v", third)
	}
}

func TestIndirectStripsOnlyOurCookie(t *testing.T) {
	pool := newPool(2)
	s := provisionedCookie(t, `{"indirect": true}`)
	r := newRequest("a=1; SERVERID=" + s.valueFor(pool[0].Dial) + "; b=2")
	r.Header.Add("Cookie", "SERVERID=x")
	s.Select(pool, r, httptest.NewRecorder())
	if got := strings.Join(r.Header["Cookie"], " | "); got != "a=1; b=2" {
		t.Errorf("Cookie headers after indirect: %q", got)
	}
}

func TestOnResponseInsertIsIdempotentAcrossAttempts(t *testing.T) {
	pool := newPool(2)
	s := provisionedCookie(t, `{"nocache": true}`)
	r := newRequest("")
	s.Select(pool, r, httptest.NewRecorder())
	s.Select(pool, r, httptest.NewRecorder()) // a retry
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	res := &http.Response{StatusCode: 200, Header: http.Header{"Set-Cookie": {"SERVERID=app"}}}
	s.onResponse(vars, r, res)
	if n := len(res.Header["Set-Cookie"]); n != 1 || !strings.HasPrefix(res.Header.Get("Set-Cookie"), "SERVERID="+s.valueFor(decisionOf(r, s).server.dial)) {
		t.Errorf("Set-Cookie after a retry: %q", res.Header["Set-Cookie"])
	}
	if res.Header.Get("Cache-Control") != "private" {
		t.Errorf("nocache: %q", res.Header.Get("Cache-Control"))
	}
}

func TestNoVarsMeansNoDecision(t *testing.T) {
	// A request that did not come through a Caddy server (no vars) still
	// gets an upstream, and nothing panics.
	s := provisionedCookie(t, "")
	r := httptest.NewRequest("GET", "/", nil).WithContext(context.Background())
	if s.Select(newPool(2), r, httptest.NewRecorder()) == nil {
		t.Fatal("no upstream")
	}
}

func TestSetCookieAttributes(t *testing.T) {
	pool := newPool(1)
	s := provisionedCookie(t, `{"name": "SRV", "domain": "example.com", "path": "/app", "max_age": 43200000000000,
		"httponly": true, "samesite": "none", "attrs": ["Partitioned"], "servers": {"10.0.0.1:8080": "web1"}}`)
	r := newRequest("")
	s.Select(pool, r, httptest.NewRecorder())
	want := "SRV=web1; Path=/app; Domain=example.com; Max-Age=43200; HttpOnly; Secure; SameSite=None; Partitioned"
	if got := decisionOf(r, s).setCookie; got != want {
		t.Errorf("Set-Cookie\n got %s\nwant %s", got, want)
	}
	// explicit secure off without SameSite=None, over plain HTTP
	s = provisionedCookie(t, `{"secure": false, "servers": {"10.0.0.1:8080": "web1"}}`)
	r = newRequest("")
	s.Select(pool, r, httptest.NewRecorder())
	if got := decisionOf(r, s).setCookie; got != "SERVERID=web1; Path=/" {
		t.Errorf("defaults: %s", got)
	}
	// secure forced on, plain HTTP
	s = provisionedCookie(t, `{"secure": true}`)
	r = newRequest("")
	s.Select(pool, r, httptest.NewRecorder())
	if got := decisionOf(r, s).setCookie; !strings.HasSuffix(got, "; Secure") {
		t.Errorf("secure on: %s", got)
	}
}

func TestPostOnlyAndPreserveOnResponse(t *testing.T) {
	pool := newPool(1)
	s := provisionedCookie(t, `{"postonly": true}`)
	r := newRequest("")
	s.Select(pool, r, httptest.NewRecorder())
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	res := &http.Response{StatusCode: 200, Header: http.Header{}}
	s.onResponse(vars, r, res)
	if len(res.Header["Set-Cookie"]) != 0 {
		t.Errorf("postonly inserted on GET: %v", res.Header["Set-Cookie"])
	}
	r.Method = http.MethodPost
	s.onResponse(vars, r, res)
	if len(res.Header["Set-Cookie"]) != 1 {
		t.Errorf("postonly did not insert on POST: %v", res.Header["Set-Cookie"])
	}
	p := provisionedCookie(t, `{"preserve": true}`)
	r = newRequest("")
	p.Select(pool, r, httptest.NewRecorder())
	vars = r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	res = &http.Response{StatusCode: 200, Header: http.Header{"Set-Cookie": {"SERVERID=; Max-Age=0"}}}
	p.onResponse(vars, r, res)
	if got := res.Header["Set-Cookie"]; len(got) != 1 || got[0] != "SERVERID=; Max-Age=0" {
		t.Errorf("preserve: %v", got)
	}
}

// Found in review: a cookie naming a server that joined a pool of the same
// size routes there at once, before anything else rebuilt the index.
func TestCookieForNewServerInSameSizePool(t *testing.T) {
	base := newPool(4)
	s := provisionedCookie(t, "")
	w := httptest.NewRecorder()
	s.Select(base, newRequest(""), w) // index built on base
	changed := reverseproxy.UpstreamPool{base[0], base[1], base[2], {Host: new(reverseproxy.Host), Dial: "10.9.9.9:80"}}
	r := newRequest("SERVERID=" + s.valueFor("10.9.9.9:80"))
	if got := s.Select(changed, r, w); got == nil || got.Dial != "10.9.9.9:80" {
		t.Fatalf("cookie of the new server went to %v", got)
	}
	if d := decisionOf(r, s); d.outcome != OutcomeHit {
		t.Errorf("outcome %v, want hit", d.outcome)
	}
}
