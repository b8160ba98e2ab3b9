package selection

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// The hit path reads the usual cookie (exactly a server's value) without
// checking its bytes or parsing it (plainHit); every other cookie takes
// the full read. Both must decide alike: for each header below, a policy
// on the hit path and the same policy forced onto the full read send the
// request to the same upstream with the same outcome and the same cookie
// to set.
func TestPlainHitAgreesWithFullRead(t *testing.T) {
	for _, cfg := range []string{
		`{"fallback": {"policy": "first"}}`,
		`{"fallback": {"policy": "first"}, "dynamic_key": "s3cret"}`,
		`{"fallback": {"policy": "first"}, "servers": {"10.0.0.1:8080": "web|1", "10.0.0.2:8080": "web2"}}`,
		`{"fallback": {"policy": "first"}, "mode": "rewrite"}`,
	} {
		pool := newPool(3)
		gone := newPool(4)[3] // a server of another pool
		fast, full := provisionedCookie(t, cfg), provisionedCookie(t, cfg)
		full.plainCookies = false
		if !fast.plainCookies {
			t.Fatalf("%s: the hit path is off", cfg)
		}
		v := func(i int) string { return fast.valueFor(pool[i].Dial) }
		for _, h := range [][]string{
			{"SERVERID=" + v(1)},
			{"a=1; SERVERID=" + v(2) + "; b=2"},
			{`SERVERID="` + v(1) + `"`},
			{"SERVERID=\x01bad; SERVERID=" + v(2)},
			{"SERVERID=" + v(0) + "x; SERVERID=" + v(2)},
			{"SERVERID=nobody; SERVERID=" + v(2)},
			{"SERVERID=" + strings.Repeat("x", 5000) + "; SERVERID=" + v(1)},
			{"SERVERID=" + v(1) + "|AAAAB"},
			{"SERVERID = " + v(1)},
			{"SERVERID =" + v(1)},
			{"SERVERIDX=" + v(1) + "; SERVERID=" + v(2)},
			{"serverid=" + v(1)},
			{"SERVERID"},
			{"SERVERID="},
			{`SERVERID="`},
			{"SERVERID=" + fast.valueFor(gone.Dial)},
			{"a=1", "SERVERID=" + v(2)},
			{"SERVERID=web|1"},
			{"SERVERID=web"},
			{"SERVERID=web2"},
			{},
		} {
			name := fmt.Sprintf("%s %q", cfg, h)
			rf, rs := newRequest(""), newRequest("")
			rf.Header["Cookie"], rs.Header["Cookie"] = h, h
			uf, us := fast.Select(pool, rf, httptest.NewRecorder()), full.Select(pool, rs, httptest.NewRecorder())
			df, ds := decisionOf(rf, fast), decisionOf(rs, full)
			if uf != us || df.outcome != ds.outcome || df.setCookie != ds.setCookie {
				t.Errorf("%s: hit path %s %v %q, full read %s %v %q", name, dialOf(uf), df.outcome, df.setCookie, dialOf(us), ds.outcome, ds.setCookie)
			}
		}
	}
}

func dialOf(up *reverseproxy.Upstream) string {
	if up == nil {
		return "<nil>"
	}
	return up.Dial
}

// A sticky_cookie hit allocates nothing on a new request, with values
// looked up directly and through dynamic_key, in rewrite mode, and with
// indirect, which removes our cookie from the request (first, last or
// alone among the cookies; one in the middle costs the new header value).
func TestCookieHitAllocatesNothing(t *testing.T) {
	for _, cfg := range []string{`{}`, `{"dynamic_key": "s3cret"}`, `{"mode": "rewrite"}`, `{"indirect": true}`} {
		s := provisionedCookie(t, cfg)
		pool := newPool(10)
		const runs = 200
		reqs := make([]*http.Request, runs+1)
		for i := range reqs {
			c := "SERVERID=" + s.valueFor(pool[i%len(pool)].Dial)
			switch i % 3 {
			case 1:
				c = "theme=dark; lang=en; " + c
			case 2:
				c += "; theme=dark"
			}
			reqs[i] = caddyRequest(c)
		}
		i, wrong := 0, 0
		allocs := testing.AllocsPerRun(runs, func() {
			if s.Select(pool, reqs[i], nil) != pool[i%len(pool)] {
				wrong++
			}
			i++
		})
		if wrong > 0 {
			t.Fatalf("%s: %d hits went elsewhere", cfg, wrong)
		}
		if allocs != 0 {
			t.Errorf("%s: a hit allocates %.1f times, want 0", cfg, allocs)
		}
		if got, _ := repl(reqs[0]).GetString(OutcomePlaceholder); got != "hit" {
			t.Errorf("%s: outcome %q", cfg, got)
		}
	}
}

// The direct value table finds every value, also values that share their
// first and last eight bytes (they share a hash and probe further), and
// nothing else.
func TestValueTableCollisions(t *testing.T) {
	var recs []*serverRecord
	for i := range 40 {
		recs = append(recs, &serverRecord{value: fmt.Sprintf("prefix00-%03d-suffix00", i)})
	}
	recs = append(recs, &serverRecord{value: "a"}, &serverRecord{value: "web1"}, &serverRecord{value: "0123456789abcdef"})
	tbl := newValueTable(len(recs))
	for _, r := range recs {
		tbl.add(r)
	}
	for _, r := range recs {
		if got := tbl.find(r.value); got != r {
			t.Errorf("find(%q) = %v", r.value, got)
		}
	}
	for _, v := range []string{"", "b", "prefix00-040-suffix00", "prefix00-000-suffix0", "0123456789abcdeF", "web"} {
		if got := tbl.find(v); got != nil {
			t.Errorf("find(%q) = %q, want nothing", v, got.value)
		}
	}
}
