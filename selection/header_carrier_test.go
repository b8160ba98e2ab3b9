package selection

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func headerRequest(name, value string) *http.Request {
	r := newRequest("")
	if value != "" {
		r.Header.Set(name, value)
	}
	return r
}

func respond(s *StickyCookie, r *http.Request, appHeader http.Header) *http.Response {
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	res := &http.Response{StatusCode: 200, Header: appHeader}
	s.onResponse(vars, r, res)
	return res
}

func TestHeaderCarrierRoutesAndIssues(t *testing.T) {
	pool := newPool(3)
	s := provisionedCookie(t, `{"name": "API", "header": "X-Sticky-Server", "servers": {"10.0.0.2:8080": "api2"}}`)
	// no header: the fallback chooses, the response carries the value
	r := headerRequest("X-Sticky-Server", "")
	up := s.Select(pool, r, httptest.NewRecorder())
	res := respond(s, r, http.Header{"X-Sticky-Server": {"from-app"}, "Set-Cookie": {"API=app"}})
	if got := res.Header.Values("X-Sticky-Server"); len(got) != 1 || got[0] != s.valueFor(up.Dial) {
		t.Fatalf("response header %v, want exactly [%s]", got, s.valueFor(up.Dial))
	}
	if got := res.Header.Values("Set-Cookie"); len(got) != 1 || got[0] != "API=app" {
		t.Errorf("the header carrier touched the application's cookies: %v", got)
	}
	// the value routes, and a client whose value is good gets nothing new
	r = headerRequest("X-Sticky-Server", "api2")
	if up := s.Select(pool, r, httptest.NewRecorder()); up != pool[1] {
		t.Fatalf("server line value went to %v", up)
	}
	if d := decisionOf(r, s); d.outcome != OutcomeHit || d.header != "" || d.setCookie != "" {
		t.Errorf("hit: %+v", d)
	}
	if res := respond(s, r, http.Header{"X-Sticky-Server": {"from-app"}}); len(res.Header.Values("X-Sticky-Server")) != 0 {
		t.Errorf("hit response: %v (the application's own header must go, nothing to add)", res.Header)
	}
	// a cookie of the policy's name is not a carrier any more
	r = newRequest("API=api2")
	s.Select(pool, r, httptest.NewRecorder())
	if d := decisionOf(r, s); d.outcome != OutcomeMiss {
		t.Errorf("cookie with header carrier: outcome %v, want miss", d.outcome)
	}
}

// Forged, malformed and oversized header values are treated as absent (the
// fallback chooses, a fresh value is issued) and counted invalid.
func TestHeaderCarrierRefusesForgedAndOversized(t *testing.T) {
	pool := newPool(2)
	s := provisionedCookie(t, `{"name": "APIBAD", "header": "X-Sticky"}`)
	for _, v := range []string{"forged", strings.Repeat("a", 5000), "a;b", `"q"`, "a,b", "a b"} {
		r := headerRequest("X-Sticky", v)
		if up := s.Select(pool, r, httptest.NewRecorder()); up == nil {
			t.Fatalf("%.20q: no upstream", v)
		}
		d := decisionOf(r, s)
		if d.outcome != OutcomeInvalid || d.header != s.valueFor(d.server.dial) {
			t.Errorf("%.20q: outcome %v, issued %q", v, d.outcome, d.header)
		}
	}
}

func TestHeaderCarrierIndirectAndDates(t *testing.T) {
	pool := newPool(2)
	s := provisionedCookie(t, `{"header": "X-Sticky", "indirect": true, "maxidle": 1800000000000}`)
	r := headerRequest("X-Sticky", "")
	up := s.Select(pool, r, httptest.NewRecorder())
	v := decisionOf(r, s).header
	if !strings.HasPrefix(v, s.valueFor(up.Dial)+"|") {
		t.Fatalf("dated value %q", v)
	}
	// the dated value routes back, and indirect hides it from the app, also
	// across a second Select after a nil selection
	r = headerRequest("X-Sticky", v)
	if got := s.Select(reverseproxy.UpstreamPool{}, r, httptest.NewRecorder()); got != nil {
		t.Fatal("empty pool selected something")
	}
	if got := s.Select(pool, r, httptest.NewRecorder()); got != up {
		t.Fatalf("dated header value went to %v, want %s", got, up.Dial)
	}
	if r.Header.Get("X-Sticky") != "" {
		t.Errorf("indirect left the header for the app: %q", r.Header.Get("X-Sticky"))
	}
	// past maxidle: expired, a fresh value issued
	s.now = func() time.Time { return time.Now().Add(time.Hour) }
	r = headerRequest("X-Sticky", v)
	s.Select(pool, r, httptest.NewRecorder())
	if d := decisionOf(r, s); d.outcome != OutcomeExpired || d.header == "" {
		t.Errorf("idle header value: %v %q", d.outcome, d.header)
	}
}

func TestHeaderCarrierRefusesCookieOnlyOptions(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"header": "X-S", "domain": "example.com"}`:  "domain only apply to a cookie",
		`{"header": "X-S", "samesite": "lax"}`:        "samesite only apply",
		`{"header": "X-S", "httponly": true}`:         "httponly only apply",
		`{"header": "X-S", "max_age": 1000000000}`:    "max_age only apply",
		`{"header": "X-S", "mode": "rewrite"}`:        "insert mode only",
		`{"header": "X Y"}`:                           "not a valid header name",
		`{"header": "Cookie"}`:                        "cannot carry persistence",
		`{"header": "X-S", "secure": true}`:           "secure only apply",
		`{"header": "X-S", "attrs": ["Partitioned"]}`: "attr only apply",
	} {
		s := new(StickyCookie)
		if err := json.Unmarshal([]byte(cfg), s); err != nil {
			t.Fatal(err)
		}
		if err := s.setup(newTestContext(t)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", cfg, err, want)
		}
	}
	for src, want := range map[string]string{
		"sticky_cookie SRV {\n header X-S\n domain example.com\n}": "Testfile:3",
		"sticky_cookie SRV {\n samesite lax\n header X-S\n}":       "Testfile:3",
		"sticky_cookie SRV httponly {\n header X-S\n}":             "Testfile:2",
		"sticky_cookie SRV {\n prefix\n header X-S\n}":             "insert mode only",
		"sticky_cookie SRV {\n header\n}":                          "Testfile:2",
		"sticky_cookie SRV {\n header X(S\n}":                      "not a valid header name",
	} {
		var s StickyCookie
		err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(src))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", src, err, want)
		}
	}
	var s StickyCookie
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("sticky_cookie API {\n header X-Sticky-Server\n indirect\n nocache\n maxidle 30m\n}")); err != nil || s.Header != "X-Sticky-Server" {
		t.Errorf("valid header config: %v, header %q", err, s.Header)
	}
}
