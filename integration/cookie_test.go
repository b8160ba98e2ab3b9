package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/internal/haproxycookie"
)

// stickySite starts Caddy with one reverse_proxy over bs using the given
// sticky_cookie block, plus a /metrics route, and returns its port.
func stickySite(t *testing.T, bs []*backend, policy string, extra string) int {
	t.Helper()
	port := freePort(t)
	body := fmt.Sprintf(`	handle /metrics {
		metrics
	}
	header >X-Outcome {http.sticky.outcome}
	reverse_proxy %s {
		lb_policy %s
%s
	}`, upstreamList(bs), policy, extra)
	loadCaddy(t, adapt(t, siteConfig(t, port, body)))
	return port
}

func TestInsertSticksAndSetsCookieOnlyWhenNeeded(t *testing.T) {
	bs := startBackends(t, 3)
	port := stickySite(t, bs, `sticky_cookie SERVERID {
			server `+bs[0].Addr+` web1
			server `+bs[1].Addr+` web2
			server `+bs[2].Addr+` web3
			fallback round_robin
		}`, "")

	seen := map[string]bool{}
	for u := 0; u < 6; u++ {
		c := newClient(t, port)
		first := c.get(t, "/")
		if first.Status != 200 {
			t.Fatalf("status %d", first.Status)
		}
		value, ok := cookieValue(first.SetCookies, "SERVERID")
		if !ok {
			t.Fatalf("first response set no SERVERID cookie: %v", first.SetCookies)
		}
		if want := "web" + strings.TrimPrefix(first.Body, "web"); value != want {
			t.Fatalf("cookie %q names another server than the one that answered (%s)", value, first.Body)
		}
		if got := first.Header.Get("X-Outcome"); got != "miss" {
			t.Errorf("first request outcome %q, want miss", got)
		}
		seen[first.Body] = true
		for i := 0; i < 10; i++ {
			r := c.get(t, "/")
			if r.Body != first.Body {
				t.Fatalf("user moved from %s to %s without any failure", first.Body, r.Body)
			}
			if len(r.SetCookies) != 0 {
				t.Fatalf("cookie re-sent although the client's is valid: %v", r.SetCookies)
			}
			if got := r.Header.Get("X-Outcome"); got != "hit" {
				t.Fatalf("outcome %q, want hit", got)
			}
		}
	}
	if len(seen) != 3 {
		t.Errorf("round_robin fallback spread new users over %d backends, want 3", len(seen))
	}
}

func TestIndirectHidesCookieFromApp(t *testing.T) {
	bs := startBackends(t, 2)
	port := stickySite(t, bs, `sticky_cookie SRV insert indirect`, "")

	first := raw(t, port, "GET", "/", "")
	value, ok := cookieValue(first.SetCookies, "SRV")
	if !ok {
		t.Fatal("no cookie inserted")
	}
	r := raw(t, port, "GET", "/", "a=1; SRV="+value+"; b=2")
	if r.Body != first.Body {
		t.Fatalf("went to %s, cookie names %s", r.Body, first.Body)
	}
	raw(t, port, "GET", "/", "SRV="+value)
	var b *backend
	for _, x := range bs {
		if x.Name == first.Body {
			b = x
		}
	}
	got := b.seenCookies()
	if got[len(got)-2] != "a=1; b=2" {
		t.Errorf("app saw Cookie %q, want the other cookies only", got[len(got)-2])
	}
	if got[len(got)-1] != "" {
		t.Errorf("app saw Cookie %q, want no Cookie header at all", got[len(got)-1])
	}
}

func TestWithoutIndirectAppSeesCookie(t *testing.T) {
	bs := startBackends(t, 1)
	port := stickySite(t, bs, `sticky_cookie SRV`, "")
	first := raw(t, port, "GET", "/", "")
	value, _ := cookieValue(first.SetCookies, "SRV")
	raw(t, port, "GET", "/", "SRV="+value)
	got := bs[0].seenCookies()
	if got[len(got)-1] != "SRV="+value {
		t.Errorf("app saw %q, want our cookie passed through", got[len(got)-1])
	}
}

func appSetsCookie(line string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", line)
		w.Header().Add("Set-Cookie", "other=1; Path=/")
		_, _ = io.WriteString(w, "app")
	}
}

func TestInsertReplacesAppCookieUnlessPreserve(t *testing.T) {
	b := startBackend(t, "web1", appSetsCookie("SRV=from-app; Path=/"))
	port := stickySite(t, []*backend{b}, `sticky_cookie SRV {
			server `+b.Addr+` s1
		}`, "")
	r := raw(t, port, "GET", "/", "")
	if n := countCookie(r.SetCookies, "SRV"); n != 1 {
		t.Fatalf("%d SRV cookies, want exactly ours: %v", n, r.SetCookies)
	}
	if v, _ := cookieValue(r.SetCookies, "SRV"); v != "s1" {
		t.Errorf("SRV=%q, want s1 (the app's own value removed)", v)
	}
	if _, ok := cookieValue(r.SetCookies, "other"); !ok {
		t.Error("the app's other cookies must stay")
	}
	// A client that already holds a valid cookie gets nothing new, and the
	// app's cookie of our name is still removed.
	r = raw(t, port, "GET", "/", "SRV=s1")
	if n := countCookie(r.SetCookies, "SRV"); n != 0 {
		t.Errorf("valid cookie: %d SRV cookies sent, want 0: %v", n, r.SetCookies)
	}
}

func TestPreserveLeavesAppCookie(t *testing.T) {
	b := startBackend(t, "web1", appSetsCookie("SRV=; Max-Age=0; Path=/"))
	port := stickySite(t, []*backend{b}, `sticky_cookie SRV {
			preserve
			server `+b.Addr+` s1
		}`, "")
	r := raw(t, port, "GET", "/", "")
	if n := countCookie(r.SetCookies, "SRV"); n != 1 {
		t.Fatalf("%d SRV cookies: %v", n, r.SetCookies)
	}
	if !strings.Contains(strings.Join(r.SetCookies, "\n"), "SRV=; Max-Age=0") {
		t.Errorf("the app's logout cookie must reach the client untouched: %v", r.SetCookies)
	}
}

func TestNoCacheOnlyWhenCacheable(t *testing.T) {
	mk := func(cc string) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			if cc != "" {
				w.Header().Set("Cache-Control", cc)
			}
			_, _ = io.WriteString(w, "ok")
		}
	}
	cases := []struct {
		appCC, method, cookie, want string
	}{
		{"public, max-age=600", "GET", "", "private"},
		{"", "GET", "", "private"},
		{"no-store", "GET", "", "no-store"},
		{"private, max-age=10", "GET", "", "private, max-age=10"},
		{"public, max-age=600", "POST", "", "public, max-age=600"},
		// no cookie inserted: the response stays as the app made it
		{"public, max-age=600", "GET", "SRV=s1", "public, max-age=600"},
	}
	for _, tc := range cases {
		t.Run(tc.appCC+"/"+tc.method+"/"+tc.cookie, func(t *testing.T) {
			b := startBackend(t, "web1", mk(tc.appCC))
			port := stickySite(t, []*backend{b}, `sticky_cookie SRV {
			nocache
			server `+b.Addr+` s1
		}`, "")
			r := raw(t, port, tc.method, "/", tc.cookie)
			if got := strings.Join(r.Header.Values("Cache-Control"), ", "); got != tc.want {
				t.Errorf("Cache-Control %q, want %q (Set-Cookie %v)", got, tc.want, r.SetCookies)
			}
		})
	}
}

func TestPostOnly(t *testing.T) {
	bs := startBackends(t, 2)
	port := stickySite(t, bs, `sticky_cookie SRV insert postonly`, "")
	if r := raw(t, port, "GET", "/", ""); len(r.SetCookies) != 0 {
		t.Errorf("GET got a cookie with postonly: %v", r.SetCookies)
	}
	if r := raw(t, port, "POST", "/", ""); countCookie(r.SetCookies, "SRV") != 1 {
		t.Errorf("POST got no cookie: %v", r.SetCookies)
	}
}

func TestRewriteMode(t *testing.T) {
	b1 := startBackend(t, "web1", appSetsCookie("SRV=app-value; Path=/app; HttpOnly"))
	b2 := startBackend(t, "web2", appSetsCookie("SRV=app-value; Path=/app; HttpOnly"))
	port := stickySite(t, []*backend{b1, b2}, `sticky_cookie SRV {
			rewrite
			server `+b1.Addr+` s1
			server `+b2.Addr+` s2
		}`, "")
	for _, srv := range []string{"s1", "s2"} {
		r := raw(t, port, "GET", "/", "SRV="+srv)
		want := map[string]string{"s1": "web1", "s2": "web2"}[srv]
		if r.Header.Get("X-Backend") != want {
			t.Errorf("SRV=%s went to %s", srv, r.Header.Get("X-Backend"))
		}
		if !containsLine(r.SetCookies, "SRV="+srv+"; Path=/app; HttpOnly") {
			t.Errorf("app cookie not rewritten to the server value with its attributes kept: %v", r.SetCookies)
		}
	}
}

func TestPrefixMode(t *testing.T) {
	b1 := startBackend(t, "web1", appSetsCookie("JSESSIONID=abc123; Path=/"))
	b2 := startBackend(t, "web2", appSetsCookie("JSESSIONID=abc123; Path=/"))
	port := stickySite(t, []*backend{b1, b2}, `sticky_cookie JSESSIONID {
			prefix
			server `+b1.Addr+` s1
			server `+b2.Addr+` s2
		}`, "")
	first := raw(t, port, "GET", "/", "")
	v, _ := cookieValue(first.SetCookies, "JSESSIONID")
	srv, app, ok := strings.Cut(v, "~")
	if !ok || app != "abc123" {
		t.Fatalf("JSESSIONID=%q, want <server>~abc123", v)
	}
	for i := 0; i < 5; i++ {
		r := raw(t, port, "GET", "/", "JSESSIONID="+v+"; x=y")
		if r.Header.Get("X-Backend") != first.Header.Get("X-Backend") {
			t.Fatalf("prefixed cookie %q went to %s, first answer came from %s", v, r.Header.Get("X-Backend"), first.Header.Get("X-Backend"))
		}
	}
	var b *backend
	if srv == "s1" {
		b = b1
	} else {
		b = b2
	}
	seen := b.seenCookies()
	if got := seen[len(seen)-1]; got != "JSESSIONID=abc123; x=y" {
		t.Errorf("app saw %q, want its own value without our prefix", got)
	}
}

func TestBadCookiesNeverFail(t *testing.T) {
	bs := startBackends(t, 2)
	port := stickySite(t, bs, `sticky_cookie SRV insert indirect`, "")
	// One rule (README, "Bad cookies"): a value that is there but empty,
	// malformed, oversized or naming no server is invalid; a request
	// without our cookie is a miss.
	bad := map[string]string{
		"SRV=":                             "invalid",
		`SRV=""`:                           "invalid",
		`SRV="quoted"`:                     "invalid",
		"SRV=nonexistent":                  "invalid",
		"SRV=" + strings.Repeat("A", 8192): "invalid",
		"SRV=web1|AAAAA|":                  "invalid",
		"SRV=\xc3\xa9\x80\xff":             "invalid",
		"SRV=a;SRV=b;SRV=c":                "invalid",
		"garbage without equals":           "miss",
		"SRV=%00%ff":                       "invalid",
	}
	for c, want := range bad {
		r := rawRequest(t, port, c)
		if r.Status != 200 {
			t.Errorf("cookie %.40q: status %d", c, r.Status)
		}
		if n := countCookie(r.SetCookies, "SRV"); n != 1 {
			t.Errorf("cookie %.40q: %d SRV cookies, want a fresh one", c, n)
		}
		if o := r.Header.Get("X-Outcome"); o != want {
			t.Errorf("cookie %.40q: outcome %q, want %q", c, o, want)
		}
	}
	// a quoted valid value is a hit
	first := raw(t, port, "GET", "/", "")
	v, _ := cookieValue(first.SetCookies, "SRV")
	if r := rawRequest(t, port, `SRV="`+v+`"`); r.Header.Get("X-Outcome") != "hit" || r.Body != first.Body || len(r.SetCookies) != 0 {
		t.Errorf("quoted valid cookie: outcome %q, %s (want %s), cookies %v", r.Header.Get("X-Outcome"), r.Body, first.Body, r.SetCookies)
	}
	// Control characters are refused by Go's HTTP server itself, before
	// any handler runs: a client error, never a server error.
	if r := rawRequest(t, port, "SRV=\x7f\x01"); r.Status >= 500 {
		t.Errorf("control characters in the cookie: status %d", r.Status)
	}
}

func TestDeadServerRedispatchesOnlyItsUsers(t *testing.T) {
	bs := startBackends(t, 3)
	port := stickySite(t, bs, `sticky_cookie SRV {
			fallback round_robin
		}`, `		lb_retries 2
		fail_duration 30s
		max_fails 1`)

	type user struct {
		c      *client
		server string
	}
	var users []user
	for i := 0; i < 30; i++ {
		c := newClient(t, port)
		users = append(users, user{c, c.get(t, "/").Body})
	}
	bs[1].Stop() // web2 dies

	moved := 0
	for _, u := range users {
		r := u.c.get(t, "/")
		if r.Status != 200 {
			t.Fatalf("request failed with %d after web2 died", r.Status)
		}
		if u.server != "web2" {
			if r.Body != u.server {
				t.Errorf("user of %s moved to %s", u.server, r.Body)
			}
			continue
		}
		moved++
		if r.Body == "web2" {
			t.Fatal("dead server answered")
		}
		if n := countCookie(r.SetCookies, "SRV"); n != 1 {
			t.Errorf("redispatched user got %d SRV cookies, want exactly 1: %v", n, r.SetCookies)
		}
		if o := r.Header.Get("X-Outcome"); o != "redispatched" && o != "down" {
			t.Errorf("redispatched user outcome %q", o)
		}
		// re-stuck to the new server
		for i := 0; i < 3; i++ {
			if again := u.c.get(t, "/"); again.Body != r.Body {
				t.Errorf("redispatched user not re-stuck: %s then %s", r.Body, again.Body)
			}
		}
	}
	if moved != 10 {
		t.Errorf("%d users were on web2, want 10 with round_robin", moved)
	}
}

func TestRetriesYieldOneCookie(t *testing.T) {
	bs := startBackends(t, 4)
	port := stickySite(t, bs, `sticky_cookie SRV {
			fallback first
		}`, `		lb_retries 3`)
	// `first` would pick web1 forever; kill it and web2 so the request needs
	// retries, and the policy must not pile up cookies from failed attempts.
	bs[0].Stop()
	bs[1].Stop()
	r := raw(t, port, "GET", "/", "")
	if r.Status != 200 || r.Body != "web3" {
		t.Fatalf("got %d %q, want web3 after two failed attempts", r.Status, r.Body)
	}
	if n := countCookie(r.SetCookies, "SRV"); n != 1 {
		t.Fatalf("%d SRV cookies after retries, want 1: %v", n, r.SetCookies)
	}
}

func TestMaxIdleMaxLifeDates(t *testing.T) {
	b := startBackend(t, "web1", nil)
	port := stickySite(t, []*backend{b}, `sticky_cookie SRV {
			maxidle 30m
			maxlife 8h
			server `+b.Addr+` s1
		}`, "")
	r := raw(t, port, "GET", "/", "")
	v, _ := cookieValue(r.SetCookies, "SRV")
	if !regexp.MustCompile(`^s1\|[A-Za-z0-9+/]{5}\|[A-Za-z0-9+/]{5}$`).MatchString(v) {
		t.Fatalf("cookie %q is not HAProxy's value|last|first", v)
	}
	// the same cookie right away: valid, no refresh needed
	if r := raw(t, port, "GET", "/", "SRV="+v); r.Header.Get("X-Outcome") != "hit" || len(r.SetCookies) != 0 {
		t.Errorf("fresh dated cookie: outcome %q, cookies %v", r.Header.Get("X-Outcome"), r.SetCookies)
	}
	now := time.Now()
	enc := func(t time.Time) string { return string(haproxycookie.AppendValue(nil, "s1", t, t, true, true)) }
	idle := string(haproxycookie.AppendValue(nil, "s1", now.Add(-31*time.Minute), now.Add(-time.Hour), true, true))
	old := string(haproxycookie.AppendValue(nil, "s1", now.Add(-time.Minute), now.Add(-9*time.Hour), true, true))
	future := enc(now.Add(25 * time.Hour))
	for cookie, want := range map[string]string{idle: "expired", old: "too_old", future: "invalid"} {
		r := raw(t, port, "GET", "/", "SRV="+cookie)
		if got := r.Header.Get("X-Outcome"); got != want {
			t.Errorf("cookie %s: outcome %q, want %q", cookie, got, want)
		}
		if countCookie(r.SetCookies, "SRV") != 1 {
			t.Errorf("cookie %s: a fresh cookie must replace it: %v", cookie, r.SetCookies)
		}
	}
	// an idle-but-valid cookie gets its last-seen date refreshed, keeping
	// its first-seen date
	first := now.Add(-2 * time.Hour)
	stale := string(haproxycookie.AppendValue(nil, "s1", now.Add(-20*time.Minute), first, true, true))
	r = raw(t, port, "GET", "/", "SRV="+stale)
	nv, ok := cookieValue(r.SetCookies, "SRV")
	if !ok || r.Header.Get("X-Outcome") != "hit" {
		t.Fatalf("stale-but-valid cookie: outcome %q, cookies %v", r.Header.Get("X-Outcome"), r.SetCookies)
	}
	if strings.Split(nv, "|")[2] != strings.Split(stale, "|")[2] {
		t.Errorf("refresh changed the first-seen date: %s -> %s", stale, nv)
	}
	if strings.Split(nv, "|")[1] == strings.Split(stale, "|")[1] {
		t.Errorf("refresh kept the old last-seen date: %s -> %s", stale, nv)
	}
}

func TestDynamicKeyMatchesHAProxy(t *testing.T) {
	bs := startBackends(t, 2)
	t.Setenv("STICKY_TEST_KEY", "MYKEY")
	port := stickySite(t, bs, `sticky_cookie SRV {
			dynamic_key {env.STICKY_TEST_KEY}
		}`, "")
	for _, b := range bs {
		ap := netip.MustParseAddrPort(b.Addr)
		want := haproxycookie.DynamicValue([]byte("MYKEY"), ap.Addr(), ap.Port())
		r := raw(t, port, "GET", "/", "SRV="+want)
		if r.Body != b.Name || r.Header.Get("X-Outcome") != "hit" {
			t.Errorf("dynamic value %s for %s routed to %s (%s)", want, b.Name, r.Body, r.Header.Get("X-Outcome"))
		}
	}
}

func TestSecureBehindTrustedProxy(t *testing.T) {
	bs := startBackends(t, 1)
	port := freePort(t)
	cf := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	servers {
		trusted_proxies static 127.0.0.1/32
	}
}

http://127.0.0.1:%d {
	reverse_proxy %s {
		lb_policy sticky_cookie SRV {
			samesite lax
			httponly
		}
	}
}
`, port, bs[0].Addr)
	loadCaddy(t, adapt(t, cf))
	plain := raw(t, port, "GET", "/", "")
	if strings.Contains(strings.Join(plain.SetCookies, ""), "Secure") {
		t.Errorf("plain HTTP got a Secure cookie: %v", plain.SetCookies)
	}
	c := newClient(t, port)
	r := c.do(t, "GET", "/", map[string]string{"X-Forwarded-Proto": "https"})
	line := strings.Join(r.SetCookies, "")
	for _, attr := range []string{"Secure", "HttpOnly", "SameSite=Lax", "Path=/"} {
		if !strings.Contains(line, attr) {
			t.Errorf("cookie %q lacks %s", line, attr)
		}
	}
}

func TestMetricsCountOutcomes(t *testing.T) {
	bs := startBackends(t, 2)
	port := stickySite(t, bs, `sticky_cookie METRICSCOOKIE`, "")
	first := raw(t, port, "GET", "/", "")
	v, _ := cookieValue(first.SetCookies, "METRICSCOOKIE")
	for i := 0; i < 3; i++ {
		raw(t, port, "GET", "/", "METRICSCOOKIE="+v)
	}
	raw(t, port, "GET", "/", "METRICSCOOKIE=forged")
	m := raw(t, port, "GET", "/metrics", "").Body
	for _, want := range []string{
		`caddy_sticky_cookie_lookups_total{cookie="METRICSCOOKIE",outcome="hit"} 3`,
		`caddy_sticky_cookie_lookups_total{cookie="METRICSCOOKIE",outcome="miss"} 1`,
		`caddy_sticky_cookie_lookups_total{cookie="METRICSCOOKIE",outcome="invalid"} 1`,
		`caddy_sticky_cookie_inserts_total{cookie="METRICSCOOKIE"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestReloadKeepsUsersStuck(t *testing.T) {
	bs := startBackends(t, 3)
	port := freePort(t)
	cf := func(upstreams string) []byte {
		return adapt(t, siteConfig(t, port, `	reverse_proxy `+upstreams+` {
		lb_policy sticky_cookie SRV {
			fallback round_robin
		}
	}`))
	}
	loadCaddy(t, cf(upstreamList(bs)))
	var clients []*client
	var servers []string
	for i := 0; i < 9; i++ {
		c := newClient(t, port)
		clients = append(clients, c)
		servers = append(servers, c.get(t, "/").Body)
	}
	// reload with the upstreams in another order plus one more server:
	// values follow the dial address, so nobody moves
	extra := startBackend(t, "web4", nil)
	reordered := strings.Join([]string{bs[2].Addr, extra.Addr, bs[0].Addr, bs[1].Addr}, " ")
	if err := loadAgain(cf(reordered)); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		if got := c.get(t, "/").Body; got != servers[i] {
			t.Errorf("user %d moved from %s to %s across a reload", i, servers[i], got)
		}
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}
