package selection

import (
	"encoding/json"
	"github.com/caddy-sticky/sticky/internal/drain"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/caddy-sticky/sticky/sticktable"
)

// fakeStickyApp stands in for the sticky app in this package's tests (the
// test binary does not link the root package): it hands out tables by name.
type fakeStickyApp struct{}

var (
	fakeTablesMu sync.Mutex
	fakeTables   = map[string]*sticktable.Table{}
)

func (fakeStickyApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "sticky", New: func() caddy.Module { return new(fakeStickyApp) }}
}
func (fakeStickyApp) Start() error { return nil }
func (fakeStickyApp) Stop() error  { return nil }

// fakeDrained is the drained set the fake app lends every policy.
var fakeDrained = drain.New()

func (fakeStickyApp) Drained() *drain.Set { return fakeDrained }

func (fakeStickyApp) AddCookiePolicy(*StickyCookie) {}

func (fakeStickyApp) StickTable(name string) (*sticktable.Table, error) {
	fakeTablesMu.Lock()
	defer fakeTablesMu.Unlock()
	if t, ok := fakeTables[name]; ok {
		return t, nil
	}
	cfg := sticktable.Config{Size: 1024, Expire: time.Hour}
	if strings.HasPrefix(name, "ip_") {
		cfg.Type = sticktable.KeyIP
	}
	t, err := sticktable.New(cfg)
	if err != nil {
		return nil, err
	}
	fakeTables[name] = t
	return t, nil
}

func init() { caddy.RegisterModule(fakeStickyApp{}) }

// provisionedTable sets a stick_table policy up from JSON against the fake
// sticky app (without a handler).
func provisionedTable(t *testing.T, cfg string) *StickTable {
	t.Helper()
	root, err := caddy.ProvisionContext(&caddy.Config{Admin: &caddy.AdminConfig{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(root)
	t.Cleanup(cancel)
	p := new(StickTable)
	if err := json.Unmarshal([]byte(cfg), p); err != nil {
		t.Fatal(err)
	}
	if err := p.setup(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// userRequest is a request as Caddy hands it to a policy, with the
// http.request.* placeholders, from user (the X-User header) and cookie.
func userRequest(user, cookie string) *http.Request {
	r := newRequest(cookie)
	if user != "" {
		r.Header.Set("X-User", user)
	}
	withHTTPPlaceholders(r)
	return r
}

// loadProxy provisions a real reverse_proxy handler from JSON, the way Caddy
// loads one from a config, and returns it with the function that ends its
// config (running every module's Cleanup).
func loadProxy(t *testing.T, cfg string) (*reverseproxy.Handler, func()) {
	t.Helper()
	root, err := caddy.ProvisionContext(&caddy.Config{Admin: &caddy.AdminConfig{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(root)
	mod, err := ctx.LoadModuleByID("http.handlers.reverse_proxy", json.RawMessage(cfg))
	if err != nil {
		cancel()
		t.Fatalf("loading reverse_proxy: %v", err)
	}
	var once sync.Once
	end := func() { once.Do(cancel) }
	t.Cleanup(end)
	return mod.(*reverseproxy.Handler), end
}

// idleConnTracker is an upstream that reports when a connection closes.
type idleConnTracker struct {
	srv    *httptest.Server
	closed chan struct{}
}

func newIdleConnTracker(t *testing.T) *idleConnTracker {
	c := &idleConnTracker{closed: make(chan struct{}, 16)}
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	c.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			c.closed <- struct{}{}
		}
	}
	c.srv.Start()
	t.Cleanup(c.srv.Close)
	return c
}

// openIdle makes one request through rt and leaves its connection idle in
// rt's pool.
func (c *idleConnTracker) openIdle(t *testing.T, rt http.RoundTripper) {
	req, _ := http.NewRequest("GET", c.srv.URL, nil)
	res, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
}

// Issue 8: the transport stick_table creates when it is the fallback of
// sticky_cookie (the first policy to provision finds no transport and
// builds one) was never cleaned up. Ending the config must close its idle
// connections, whichever policy built it.
func TestCreatedTransportCleanedUpWhenTableIsCookieFallback(t *testing.T) {
	for name, policy := range map[string]string{
		"table fallback of cookie": `{"policy": "sticky_cookie", "name": "CLEANUP", "fallback": {"policy": "stick_table", "table": "cleanup"}}`,
		"cookie fallback of table": `{"policy": "stick_table", "table": "cleanup2", "fallback": {"policy": "sticky_cookie", "name": "CLEANUP2"}}`,
		"table alone":              `{"policy": "stick_table", "table": "cleanup3"}`,
	} {
		t.Run(name, func(t *testing.T) {
			h, end := loadProxy(t, `{"upstreams": [{"dial": "127.0.0.1:9"}], "load_balancing": {"selection_policy": `+policy+`}}`)
			u, ok := h.Transport.(interface{ Unwrap() http.RoundTripper })
			if !ok {
				t.Fatalf("transport %T is not our wrapper", h.Transport)
			}
			ht, ok := u.Unwrap().(*reverseproxy.HTTPTransport)
			if !ok || ht.Transport == nil {
				t.Fatalf("wrapped transport %T", u.Unwrap())
			}
			up := newIdleConnTracker(t)
			up.openIdle(t, ht.Transport)
			end()
			select {
			case <-up.closed:
			case <-time.After(3 * time.Second):
				t.Fatal("the transport the policies created still holds its idle connection after the config ended")
			}
		})
	}
}

// plainTransport is a transport installed behind the policies' back, as a
// Caddy that provisioned the transport after the selection policy would.
type plainTransport struct{}

func (plainTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, net.ErrClosed }

// Issue 8: the response-side wrapper relied on Caddy loading the transport
// before the policy. When the wrapper is not in the handler's transport at
// the first Select, the policy must say so (one error log, a metric per
// request) and still set insert cookies and store request keys.
func TestReplacedTransportIsDetectedAndCountedAtFirstSelect(t *testing.T) {
	h, _ := loadProxy(t, `{"upstreams": [{"dial": "127.0.0.1:9"}, {"dial": "127.0.0.1:10"}], "load_balancing": {"selection_policy":
		{"policy": "sticky_cookie", "name": "REPLACED", "fallback": {"policy": "stick_table", "table": "replaced", "rules": [{"key": "{http.request.header.X-User}", "match": true, "store": true}]}}}}`)
	s := h.LoadBalancing.SelectionPolicy.(*StickyCookie)
	pool := reverseproxy.UpstreamPool{{Host: new(reverseproxy.Host), Dial: "127.0.0.1:9"}, {Host: new(reverseproxy.Host), Dial: "127.0.0.1:10"}}

	// with the wrapper in place nothing is counted
	r := newRequest("")
	if s.Select(pool, r, httptest.NewRecorder()) == nil {
		t.Fatal("no upstream")
	}
	cookieMissing := responseSideMissing.WithLabelValues("sticky_cookie", "REPLACED")
	tableMissing := responseSideMissing.WithLabelValues("stick_table", "replaced")
	base, tableBase := counterValue(cookieMissing), counterValue(tableMissing)
	s.Select(pool, newRequest(""), httptest.NewRecorder())
	if n := counterValue(cookieMissing) - base; n != 0 {
		t.Fatalf("counted %v missing with the wrapper installed", n)
	}

	// a policy whose state is fresh, in a handler whose transport was
	// replaced after Provision
	h2, _ := loadProxy(t, `{"upstreams": [{"dial": "127.0.0.1:9"}], "load_balancing": {"selection_policy":
		{"policy": "sticky_cookie", "name": "REPLACED", "fallback": {"policy": "stick_table", "table": "replaced", "rules": [{"key": "{http.request.header.X-User}", "match": true, "store": true}]}}}}`)
	h2.Transport = plainTransport{}
	s = h2.LoadBalancing.SelectionPolicy.(*StickyCookie)
	p := s.fallback.(*StickTable)
	for i := 1; i <= 3; i++ {
		r := newRequest("")
		r.Header.Set("X-User", "alice")
		withHTTPPlaceholders(r)
		w := httptest.NewRecorder()
		up := s.Select(pool, r, w)
		if up == nil {
			t.Fatal("no upstream")
		}
		if v, ok := cookieFrom(w.Header(), "REPLACED"); !ok || v != s.valueFor(up.Dial) {
			t.Fatalf("request %d: no cookie set without the response side: %v", i, w.Header()["Set-Cookie"])
		}
		if got := counterValue(cookieMissing) - base; got != float64(i) {
			t.Errorf("request %d: sticky_cookie counted %v missing", i, got)
		}
	}
	if got := counterValue(tableMissing) - tableBase; got < 1 {
		t.Errorf("stick_table counted %v missing", got)
	}
	if e, ok := p.table.Get("alice"); !ok || e.Server == "" {
		t.Errorf("the request key was not stored without the response side: %+v %v", e, ok)
	}
	// a retry replaces the cookie of the failed attempt: one Set-Cookie
	r = newRequest("")
	w := httptest.NewRecorder()
	s.Select(pool, r, w)
	s.Select(pool, r, w)
	if n := len(w.Header()["Set-Cookie"]); n != 1 {
		t.Errorf("%d Set-Cookie after a retry, want 1: %v", n, w.Header()["Set-Cookie"])
	}
}

func cookieFrom(h http.Header, name string) (string, bool) {
	for _, line := range h["Set-Cookie"] {
		if c, err := http.ParseSetCookie(line); err == nil && c.Name == name {
			return c.Value, true
		}
	}
	return "", false
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// withHTTPPlaceholders gives the request's replacer the http.request.*
// placeholders, keeping its vars.
func withHTTPPlaceholders(r *http.Request) {
	caddyhttp.NewTestReplacer(r)
}
