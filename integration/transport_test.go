package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/fcgi"
	"strings"
	"testing"
)

// startFastCGIBackend is a real FastCGI responder on 127.0.0.1 (Go's
// net/http/fcgi), answering with its name like the HTTP backends.
func startFastCGIBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{Name: name, Addr: ln.Addr().String(), ln: ln}
	go func() {
		_ = fcgi.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			w.Header().Set("X-Backend", name)
			_, _ = io.WriteString(w, name)
		}))
	}()
	t.Cleanup(func() { ln.Close() })
	return b
}

// Issue 8: the response side must work whatever transport the handler has:
// none (the policies build Caddy's default), `transport http`, `transport
// fastcgi`, and with sticky_cookie nested as the fallback of Caddy's own
// cookie policy. In each case the cookie is set from the response, the
// request key is stored once the server answered, and no request is
// counted as bypassing the policies.
func TestTransportMatrix(t *testing.T) {
	chain := func(cookie, table string) string {
		return `sticky_cookie ` + cookie + ` {
			fallback stick_table ` + table + ` {
				on {header.X-User}
				fallback round_robin
			}
		}`
	}
	cases := []struct {
		name      string
		fastcgi   bool
		policy    string
		transport string
	}{
		{"no transport", false, chain("TMNONE", "tm_none"), ""},
		{"transport http", false, chain("TMHTTP", "tm_http"), "transport http {\n\t\t\tkeepalive 30s\n\t\t}"},
		{"transport fastcgi", true, chain("TMFCGI", "tm_fcgi"), "transport fastcgi"},
		{"fallback of caddy's cookie", false, "cookie lb {\n\t\t\tfallback " + chain("TMNEST", "tm_nest") + "\n\t\t}", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var bs []*backend
			for i := 1; i <= 3; i++ {
				if tc.fastcgi {
					bs = append(bs, startFastCGIBackend(t, fmt.Sprintf("web%d", i)))
				} else {
					bs = append(bs, startBackend(t, fmt.Sprintf("web%d", i), nil))
				}
			}
			cookie := strings.Fields(tc.policy)[1]
			if cookie == "lb" {
				cookie = "TMNEST"
			}
			table := "tm_" + strings.ToLower(strings.TrimPrefix(cookie, "TM"))
			port := freePort(t)
			loadCaddy(t, adapt(t, fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
	sticky {
		table %s
	}
}

http://127.0.0.1:%d {
	handle /metrics {
		metrics
	}
	header >X-Outcome {http.sticky.outcome}
	reverse_proxy %s {
		lb_policy %s
		%s
	}
}
`, t.TempDir(), table, port, upstreamList(bs), tc.policy, tc.transport)))

			for u := 0; u < 3; u++ {
				user := fmt.Sprintf("user%d", u)
				first := as(t, port, user, "")
				if first.Status != 200 {
					t.Fatalf("status %d %q", first.Status, first.Body)
				}
				value, ok := cookieValue(first.SetCookies, cookie)
				if !ok {
					t.Fatalf("no %s cookie set from the response: %v", cookie, first.SetCookies)
				}
				// the cookie alone routes back
				if r := raw(t, port, "GET", "/", cookie+"="+value); r.Body != first.Body || r.Header.Get("X-Outcome") != "hit" {
					t.Errorf("cookie %s=%s: %s (%s), first answer from %s", cookie, value, r.Body, r.Header.Get("X-Outcome"), first.Body)
				}
				// the table stored the key with the server that answered
				if r := as(t, port, user, ""); r.Body != first.Body {
					t.Errorf("%s: key not stored from the response: %s then %s", user, first.Body, r.Body)
				}
			}
			m := raw(t, port, "GET", "/metrics", "").Body
			for _, want := range []string{
				`caddy_sticky_response_side_missing_total{name="` + cookie + `",policy="sticky_cookie"} 0`,
				`caddy_sticky_response_side_missing_total{name="` + table + `",policy="stick_table"} 0`,
			} {
				if !strings.Contains(m, want+"\n") {
					t.Errorf("metrics lack %s", want)
				}
			}
		})
	}
}
