package selection

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-sticky/sticky/sticktable"
)

// clientRequest is a request as Caddy's server hands it to a handler: a
// fresh vars map holding the client's address (Caddy sets client_ip on
// every request before any handler runs) and a fresh replacer with Caddy's
// HTTP placeholders.
func clientRequest(ip, cookie string) *http.Request {
	r := caddyRequest(cookie)
	varsOf(r)[caddyhttp.ClientIPVarKey] = ip
	return r
}

// A stick_table hit (the key in the table, its server available, nothing
// to store beyond a refresh) allocates nothing, as the guide requires of
// Select on hits: with the default rule, with a match-only key whose key
// is learned from the response, and with the table kept in a store. Each
// run is a new request, as in Caddy.
func TestTableHitAllocatesNothing(t *testing.T) {
	const clientIP = "{http.vars.client_ip}"
	for _, tc := range []struct {
		name   string
		policy *StickTable
		store  bool
	}{
		{"on client_ip", &StickTable{Rules: []TableRule{{Key: clientIP, Match: true, Store: true}}}, false},
		{"match with store_response", &StickTable{Rules: []TableRule{{Key: clientIP, Match: true}},
			StoreResponse: []ResponseKey{{From: "cookie", Name: "JSESSIONID"}}}, false},
		{"on client_ip through a store", &StickTable{Rules: []TableRule{{Key: clientIP, Match: true, Store: true}}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p *StickTable
			if tc.store {
				p = storePolicy(t, &fakeBacking{data: map[string]string{}}, tc.policy.Rules...)
			} else {
				p = tableWithRules(t, tc.policy)
			}
			pool := newPool(10)
			const runs = 200
			reqs := make([]*http.Request, runs+1) // AllocsPerRun runs once more to warm up
			for i := range reqs {
				ip := fmt.Sprintf("10.9.%d.%d", i/200, i%200+1)
				if _, err := p.table.Store(ip, pool[i%len(pool)].Dial); err != nil {
					t.Fatal(err)
				}
				reqs[i] = clientRequest(ip, "")
			}
			w := httptest.NewRecorder()
			i, wrong := 0, 0
			allocs := testing.AllocsPerRun(runs, func() {
				if p.Select(pool, reqs[i], w) != pool[i%len(pool)] {
					wrong++
				}
				i++
			})
			if wrong > 0 {
				t.Fatalf("%d of %d hits went to another server", wrong, runs+1)
			}
			if allocs != 0 {
				t.Errorf("a hit allocates %.1f times, want 0", allocs)
			}
			for _, r := range reqs[:3] {
				if got, _ := repl(r).GetString(OutcomePlaceholder); got != "hit" {
					t.Errorf("{%s} = %q, want hit", OutcomePlaceholder, got)
				}
				if d := tableDecisionOf(r, p); d.outcome != OutcomeHit || d.server == "" {
					t.Errorf("decision %+v", d)
				}
			}
		})
	}
}

// tableWithRules is tablePolicy with the rules (and store_response keys)
// of p instead of `on {user}`.
func tableWithRules(tb testing.TB, p *StickTable) *StickTable {
	tb.Helper()
	rules := p.Rules
	p = tablePolicy(tb, p)
	p.Rules, p.rules = rules, nil
	for _, r := range rules {
		p.rules = append(p.rules, compileRule(r))
	}
	return p
}

// A hit that allocates nothing still does everything a hit did: when its
// server fails, the retry goes elsewhere (by first_choice hash, over the
// servers not tried) and the response re-sticks the key there; keys the
// response carries are stored with the server that answered; other
// requests' hits are unaffected by the retry.
func TestSharedTableHitRetryAndResponse(t *testing.T) {
	p := tablePolicy(t, &StickTable{FirstChoice: "hash", StoreResponse: []ResponseKey{{From: "header", Name: "X-Session"}}})
	pool := newPool(5)
	stuck := pool[3]
	for _, u := range []string{"ann", "ben"} {
		if _, err := p.table.Store(u, stuck.Dial); err != nil {
			t.Fatal(err)
		}
	}
	r := placeholderUserRequest("ann")
	if up := p.Select(pool, r, nil); up != stuck {
		t.Fatalf("ann's first attempt went to %v", up)
	}
	// stuck fails: Caddy selects again for the same request
	up := p.Select(pool, r, nil)
	if want := rendezvous(nil, pool, "ann", []string{stuck.Dial}, nil); up == nil || up != want {
		t.Fatalf("retry went to %v, want %v (first_choice hash over the others)", up, want)
	}
	d := tableDecisionOf(r, p)
	if d.outcome != OutcomeRedispatched || len(d.tried) != 1 || d.tried[0] != stuck.Dial {
		t.Fatalf("retry decision %+v", d)
	}
	if got, _ := repl(r).GetString(OutcomePlaceholder); got != "redispatched" {
		t.Errorf("{%s} = %q after the retry", OutcomePlaceholder, got)
	}
	p.onResponse(varsOf(r), r, &http.Response{Header: http.Header{"X-Session": {"s-ann"}}})
	if e, _ := p.table.Get("ann"); e.Server != up.Dial || sticktable.IsPlacement(e.Origin) {
		t.Errorf("ann not re-stuck to %s: %+v", up.Dial, e)
	}
	if e, _ := p.table.Get("s-ann"); e.Server != up.Dial {
		t.Errorf("response key stored with %q, want %s", e.Server, up.Dial)
	}

	// ben's hit shares the server's decision with ann's first attempt,
	// which the retry did not change
	r = placeholderUserRequest("ben")
	if got := p.Select(pool, r, nil); got != stuck {
		t.Fatalf("ben went to %v", got)
	}
	if d := tableDecisionOf(r, p); d.outcome != OutcomeHit || len(d.tried) != 0 || d.server != stuck.Dial {
		t.Fatalf("ben's decision %+v", d)
	}
	p.onResponse(varsOf(r), r, &http.Response{Header: http.Header{"X-Session": {"s-ben"}}})
	if e, _ := p.table.Get("s-ben"); e.Server != stuck.Dial {
		t.Errorf("ben's response key stored with %q, want %s", e.Server, stuck.Dial)
	}
	if e, _ := p.table.Get("ben"); e.Server != stuck.Dial {
		t.Errorf("ben moved to %q", e.Server)
	}
}

// A hit that also has a key to store (`store_request`) is not a shared
// hit: the response stores that key with the server that answered.
func TestTableHitWithAStoreOnlyKey(t *testing.T) {
	p := tableWithRules(t, &StickTable{Rules: []TableRule{
		{Key: "{user}", Match: true, Store: true},
		{Key: "{session}", Store: true}}})
	pool := newPool(3)
	if _, err := p.table.Store("ann", pool[1].Dial); err != nil {
		t.Fatal(err)
	}
	r := placeholderUserRequest("ann")
	repl(r).Set("session", "s-1")
	if up := p.Select(pool, r, nil); up != pool[1] {
		t.Fatalf("ann went to %v", up)
	}
	if d := tableDecisionOf(r, p); len(d.store) != 2 {
		t.Fatalf("decision %+v, want the request's own with both keys", d)
	}
	p.onResponse(varsOf(r), r, &http.Response{Header: http.Header{}})
	if e, _ := p.table.Get("s-1"); e.Server != pool[1].Dial {
		t.Errorf("s-1 stored with %q, want %s", e.Server, pool[1].Dial)
	}
}

// A key that is one {http.vars.*} placeholder (the default key) is read
// from the request's vars: the same text as through Caddy's replacer, for
// strings, other types and absent variables.
func TestVarsKeyReadsAsTheReplacer(t *testing.T) {
	direct := compileRule(TableRule{Key: "{http.vars.user}", Match: true})
	if direct.varName != "user" {
		t.Fatalf("varName %q", direct.varName)
	}
	viaReplacer := direct
	viaReplacer.varName = ""
	for _, v := range []any{"10.1.2.3", 42, netip.MustParseAddr("::1"), nil, ""} {
		r := caddyRequest("")
		if v != nil {
			varsOf(r)["user"] = v
		}
		got, want := direct.keyText(repl(r), varsOf(r)), viaReplacer.keyText(repl(r), varsOf(r))
		if got != want || (v != nil && v != "" && got == "") {
			t.Errorf("var %#v: %q from vars, %q through the replacer", v, got, want)
		}
	}
}
