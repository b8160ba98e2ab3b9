package selection

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

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

func (fakeStickyApp) StickTable(name string) (*sticktable.Table, error) {
	fakeTablesMu.Lock()
	defer fakeTablesMu.Unlock()
	if t, ok := fakeTables[name]; ok {
		return t, nil
	}
	t, err := sticktable.New(sticktable.Config{Size: 1024, Expire: time.Hour})
	if err != nil {
		return nil, err
	}
	fakeTables[name] = t
	return t, nil
}

func init() { caddy.RegisterModule(fakeStickyApp{}) }

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
