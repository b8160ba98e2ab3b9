package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// Issue 8: /sticky/tables stats.invalid stayed 0 while the lookup metric
// counted invalid keys; and a cookie user of a drained server was a hit
// while a table user was drained. Through a real Caddy and its admin API.
func TestOutcomesAgreeAcrossPoliciesAndCounters(t *testing.T) {
	bs := startBackends(t, 2)
	adminPort, port := freePort(t), freePort(t)
	loadCaddy(t, adapt(t, fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
	sticky {
		table ipkeys {
			type ip
		}
	}
}

http://127.0.0.1:%d {
	handle /metrics {
		metrics
	}
	header >X-Outcome {http.sticky.outcome}
	handle /cookie/* {
		reverse_proxy %s {
			lb_policy sticky_cookie OUTC {
				server %s web1
				server %s web2
			}
		}
	}
	handle {
		reverse_proxy %s {
			lb_policy stick_table ipkeys {
				on {header.X-Client}
			}
		}
	}
}
`, adminPort, t.TempDir(), port, upstreamList(bs), bs[0].Addr, bs[1].Addr, upstreamList(bs))))

	// three requests whose key is not an IP, one that is
	for _, k := range []string{"not-an-ip", "10.0.0.300", "zz", "10.9.9.9"} {
		if r := asClient(t, port, k); r == "" {
			t.Fatalf("key %q: no answer", k)
		}
	}
	var tables []struct {
		Name  string `json:"name"`
		Stats struct {
			Invalid uint64 `json:"invalid"`
		} `json:"stats"`
	}
	adminJSON(t, adminPort, "GET", "/sticky/tables", "", 200, &tables)
	if len(tables) != 1 || tables[0].Stats.Invalid != 3 {
		b, _ := json.Marshal(tables)
		t.Errorf("stats.invalid after 3 invalid keys: %s", b)
	}
	m := raw(t, port, "GET", "/metrics", "").Body
	for _, want := range []string{
		`caddy_sticky_table_lookups_total{outcome="invalid",table="ipkeys"} 3`,
		`caddy_sticky_table_matches_total{result="invalid",table="ipkeys"} 3`,
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(m, "invalid"))
		}
	}

	// a stuck cookie user of a drained server: served there, outcome drained
	undrainAllAtEnd(t, adminPort)
	setDrained(t, adminPort, bs[0].Addr, true)
	r := raw(t, port, "GET", "/cookie/x", "OUTC=web1")
	if r.Body != "web1" || r.Header.Get("X-Outcome") != "drained" || len(r.SetCookies) != 0 {
		t.Errorf("cookie user of the drained server: %s, outcome %q, cookies %v", r.Body, r.Header.Get("X-Outcome"), r.SetCookies)
	}
	// and a stuck table user of the same server says the same
	for i := 0; i < 20; i++ {
		ip := fmt.Sprintf("10.8.0.%d", i+1)
		setDrained(t, adminPort, bs[0].Addr, false)
		if asClient(t, port, ip) != "web1" {
			continue
		}
		setDrained(t, adminPort, bs[0].Addr, true)
		r := headerReq(t, port, "X-Client", ip)
		if r.Body != "web1" || r.Header.Get("X-Outcome") != "drained" {
			t.Errorf("table user of the drained server: %s, outcome %q", r.Body, r.Header.Get("X-Outcome"))
		}
		return
	}
	t.Error("no table user landed on web1")
}
