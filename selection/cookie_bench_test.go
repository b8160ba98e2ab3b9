package selection

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// newPool makes n healthy upstreams with distinct dial addresses.
func newPool(n int) reverseproxy.UpstreamPool {
	pool := make(reverseproxy.UpstreamPool, n)
	for i := range pool {
		pool[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1)}
	}
	return pool
}

// newRequest builds a request as Caddy's server hands it to a handler:
// with the vars map and the replacer in its context.
func newRequest(cookie string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	repl := caddy.NewReplacer()
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	r = r.WithContext(ctx)
	if cookie != "" {
		r.Header.Set("Cookie", cookie)
	}
	return r
}

// resetVars gives the request a fresh vars map, as every new request has.
func resetVars(r *http.Request) {
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	clear(vars)
}

func newTestContext(tb testing.TB) caddy.Context {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	tb.Cleanup(cancel)
	return ctx
}

func provisionedCookie(tb testing.TB, cfg string) *StickyCookie {
	tb.Helper()
	s := new(StickyCookie)
	if cfg != "" {
		if err := json.Unmarshal([]byte(cfg), s); err != nil {
			tb.Fatal(err)
		}
	}
	if err := s.setup(newTestContext(tb)); err != nil {
		tb.Fatal(err)
	}
	return s
}

func provisionedBuiltin(tb testing.TB) *reverseproxy.CookieHashSelection {
	tb.Helper()
	s := &reverseproxy.CookieHashSelection{Name: "lb", Secret: "secret"}
	if err := s.Provision(newTestContext(tb)); err != nil {
		tb.Fatal(err)
	}
	return s
}

// BenchmarkCookieHit measures a request whose cookie names an available
// server: ours against Caddy's built-in cookie policy, which has to HMAC
// upstreams until one matches. Requests cycle through all upstreams.
func BenchmarkCookieHit(b *testing.B) {
	for _, n := range []int{2, 10, 100} {
		pool := newPool(n)
		b.Run(fmt.Sprintf("sticky_cookie/upstreams=%d", n), func(b *testing.B) {
			s := provisionedCookie(b, "")
			cookies := make([]string, n)
			for i, up := range pool {
				cookies[i] = "SERVERID=" + s.valueFor(up.Dial)
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			benchFreshRequests(b, cookies, func(i int, r *http.Request) {
				if s.Select(pool, r, w) != pool[i%n] {
					b.Fatal("wrong upstream")
				}
			})
		})
		b.Run(fmt.Sprintf("caddy_cookie/upstreams=%d", n), func(b *testing.B) {
			s := provisionedBuiltin(b)
			reqs := make([]*http.Request, n)
			for i, up := range pool {
				reqs[i] = newRequest("lb=" + builtinCookieValue("secret", up.Dial))
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if s.Select(pool, reqs[i%n], w) != pool[i%n] {
					b.Fatal("wrong upstream")
				}
			}
		})
	}
}

// caddyRequest builds a request as Caddy's server hands it to a handler: a
// fresh vars map and a fresh replacer with Caddy's HTTP placeholders, as
// every real request has.
func caddyRequest(cookie string) *http.Request {
	r := newRequest(cookie)
	caddyhttp.NewTestReplacer(r)
	return r
}

// benchFreshRequests runs fn b.N times, each time on a request of its own
// (cycling through cookies), built in batches outside the timer.
func benchFreshRequests(b *testing.B, cookies []string, fn func(i int, r *http.Request)) {
	benchFresh(b, func(i int) *http.Request { return caddyRequest(cookies[i%len(cookies)]) }, fn)
}

// benchFresh runs fn b.N times, the i-th time on request(i), built in
// batches outside the timer.
func benchFresh(b *testing.B, request func(i int) *http.Request, fn func(i int, r *http.Request)) {
	const batch = 64
	reqs := make([]*http.Request, batch)
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		b.StopTimer()
		for j := range reqs {
			reqs[j] = request(done + j)
		}
		b.StartTimer()
		for j := 0; j < batch && done+j < b.N; j++ {
			fn(done+j, reqs[j])
		}
	}
}

// benchWarmRequests runs fn b.N times over one request per cookie, reused
// (warm caches, as the earlier figures were taken): the vars are cleared on
// every iteration (timed, as a new request's empty vars), and every 1024
// iterations the requests get fresh replacers outside the timer, so the
// providers a hit adds to a replacer stay few.
func benchWarmRequests(b *testing.B, cookies []string, fn func(i int, r *http.Request)) {
	reqs := make([]*http.Request, len(cookies))
	for i, c := range cookies {
		reqs[i] = caddyRequest(c)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%1024 == 1023 {
			b.StopTimer()
			for j, c := range cookies {
				reqs[j] = caddyRequest(c)
			}
			b.StartTimer()
		}
		r := reqs[i%len(reqs)]
		resetVars(r)
		fn(i, r)
	}
}

// BenchmarkCookieHitPlaceholder compares, in one run, the two routes of the
// {http.sticky.outcome} placeholder on the hit path: Replacer.Set (a lock
// and a map write per request, the previous route) and the lock-free
// provider (the current one).
func BenchmarkCookieHitPlaceholder(b *testing.B) {
	pool := newPool(10)
	for _, tc := range []struct {
		route, requests string
	}{{"set", "fresh"}, {"provider", "fresh"}, {"set", "warm"}, {"provider", "warm"}} {
		route := tc.route
		b.Run("outcome="+route+"/requests="+tc.requests, func(b *testing.B) {
			outcomeBySet = route == "set"
			defer func() { outcomeBySet = false }()
			s := provisionedCookie(b, "")
			cookies := make([]string, len(pool))
			for i, up := range pool {
				cookies[i] = "SERVERID=" + s.valueFor(up.Dial)
			}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			run := benchFreshRequests
			if tc.requests == "warm" {
				run = benchWarmRequests
			}
			run(b, cookies, func(i int, r *http.Request) {
				if s.Select(pool, r, w) != pool[i%len(pool)] {
					b.Fatal("wrong upstream")
				}
			})
		})
	}
}

// BenchmarkCookieMiss measures a new user: the fallback (random) chooses
// and a cookie is prepared.
func BenchmarkCookieMiss(b *testing.B) {
	for _, n := range []int{2, 10, 100} {
		pool := newPool(n)
		b.Run(fmt.Sprintf("sticky_cookie/upstreams=%d", n), func(b *testing.B) {
			s := provisionedCookie(b, "")
			r := newRequest("")
			w := httptest.NewRecorder()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				resetVars(r)
				if s.Select(pool, r, w) == nil {
					b.Fatal("no upstream")
				}
			}
		})
		b.Run(fmt.Sprintf("caddy_cookie/upstreams=%d", n), func(b *testing.B) {
			s := provisionedBuiltin(b)
			r := newRequest("")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				w := discardWriter{h: http.Header{}}
				if s.Select(pool, r, w) == nil {
					b.Fatal("no upstream")
				}
			}
		})
	}
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}
