package integration

import (
	"fmt"
	"strings"
	"testing"
)

// strictSite runs one reverse_proxy with passive health checks and
// lb_retries, so a failed server is retried and then known down.
func strictSite(t *testing.T, bs []*backend, global, policy string) int {
	t.Helper()
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
%s
	}
}

http://127.0.0.1:%d {
	handle /metrics {
		metrics
	}
	header >X-Outcome {http.sticky.outcome}
	reverse_proxy %s {
		lb_policy %s
		lb_retries 2
		fail_duration 30s
		max_fails 1
	}
}
`, t.TempDir(), global, port, upstreamList(bs), policy)))
	return port
}

// Issue 13: strict answers 503 to a user whose server is down, both when
// the server fails during the request (retries must not redispatch) and
// when it is already known down; users without a cookie/entry are served.
func TestStrictRefusesStuckUsersOfADeadServer(t *testing.T) {
	cases := []struct {
		name, policy, metric string
		// send makes one request as the stuck user
		send func(t *testing.T, port int, value string) response
		// stick returns what identifies the user after a first request
		stick func(r response) string
	}{
		{
			name: "sticky_cookie",
			policy: `sticky_cookie STRICTC {
			strict
			fallback round_robin
		}`,
			metric: `caddy_sticky_cookie_lookups_total{cookie="STRICTC",outcome="strict_refused"}`,
			send:   func(t *testing.T, port int, v string) response { return raw(t, port, "GET", "/", "STRICTC="+v) },
			stick: func(r response) string {
				v, _ := cookieValue(r.SetCookies, "STRICTC")
				return v
			},
		},
		{
			name: "stick_table",
			policy: `stick_table strict_users {
			on {header.X-User}
			strict
			fallback round_robin
		}`,
			metric: `caddy_sticky_table_lookups_total{outcome="strict_refused",table="strict_users"}`,
			send:   func(t *testing.T, port int, v string) response { return as(t, port, v, "") },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bs := startBackends(t, 3)
			port := strictSite(t, bs, "\t\ttable strict_users", tc.policy)
			// stick users until one is on web1
			var user string
			for i := 0; i < 12 && user == ""; i++ {
				id := fmt.Sprintf("u%d", i)
				r := tc.send(t, port, id)
				if tc.stick != nil {
					r = raw(t, port, "GET", "/", "")
					id = tc.stick(r)
				}
				if r.Body == "web1" {
					user = id
				}
			}
			if user == "" {
				t.Fatal("no user landed on web1")
			}
			if r := tc.send(t, port, user); r.Body != "web1" || r.Header.Get("X-Outcome") != "hit" {
				t.Fatalf("stuck user: %d %s %q", r.Status, r.Body, r.Header.Get("X-Outcome"))
			}
			others := bs[1].hits.Load() + bs[2].hits.Load()
			bs[0].Stop()
			// fails during the request: 503, the retries go nowhere
			r := tc.send(t, port, user)
			if r.Status != 503 {
				t.Errorf("server failed during the request: status %d %q, want 503", r.Status, r.Body)
			}
			// now known down: refused at selection
			r = tc.send(t, port, user)
			if r.Status != 503 {
				t.Errorf("server known down: status %d %q, want 503", r.Status, r.Body)
			}
			if n := bs[1].hits.Load() + bs[2].hits.Load(); n != others {
				t.Errorf("strict user redispatched: the other servers got %d requests", n-others)
			}
			if len(r.SetCookies) != 0 {
				t.Errorf("a refused request set cookies: %v", r.SetCookies)
			}
			// users without persistence are served as usual
			fresh := tc.send(t, port, "someone-new")
			if tc.stick != nil {
				fresh = raw(t, port, "GET", "/", "")
			}
			if fresh.Status != 200 || fresh.Body == "web1" {
				t.Errorf("a new user: %d %q", fresh.Status, fresh.Body)
			}
			m := raw(t, port, "GET", "/metrics", "").Body
			if !strings.Contains(m, tc.metric+" 2\n") {
				t.Errorf("metrics lack %s 2:\n%s", tc.metric, grepLines(m, "strict_refused"))
			}
		})
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
