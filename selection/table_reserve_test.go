package selection

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-sticky/sticky/sticktable"
)

// tablePolicy is a stick_table policy keyed on the placeholder {user} over
// its own table, set up as Provision would.
func tablePolicy(tb testing.TB, p *StickTable) *StickTable {
	tb.Helper()
	tbl, err := sticktable.New(sticktable.Config{Size: 10000, Expire: time.Hour})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(tbl.Close)
	p.Table = "users"
	p.table = tbl
	p.Rules = []TableRule{{Key: "{user}", Match: true, Store: true}}
	for _, r := range p.Rules {
		p.rules = append(p.rules, compileRule(r))
	}
	p.names, p.dials = map[string]string{}, map[string]string{}
	for addr, name := range p.Servers {
		p.names[addr], p.dials[name] = name, addr
	}
	if err := p.load(newTestContext(tb)); err != nil {
		tb.Fatal(err)
	}
	return p
}

// placeholderUserRequest is a request whose {user} placeholder is user.
func placeholderUserRequest(user string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	repl := caddy.NewReplacer()
	repl.Set("user", user)
	ctx := context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl)
	ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, map[string]any{})
	return r.WithContext(ctx)
}

func respondTable(p *StickTable, r *http.Request) {
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	p.onResponse(vars, r, &http.Response{StatusCode: 200, Header: http.Header{}})
}

// TestConcurrentFirstRequestsReachOneServer: 16 parallel first requests of
// each new user (a browser loading a page and its assets) all reach one
// server, although the fallback (random) would choose a different one for
// most, because the first to choose reserves the key.
func TestConcurrentFirstRequestsReachOneServer(t *testing.T) {
	p := tablePolicy(t, &StickTable{})
	pool := newPool(5)
	const users, parallel = 200, 16
	split := 0
	for u := range users {
		user := fmt.Sprint("user-", u)
		var wg sync.WaitGroup
		start := make(chan struct{})
		got := make([]string, parallel)
		reqs := make([]*http.Request, parallel)
		for i := range parallel {
			reqs[i] = placeholderUserRequest(user)
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if up := p.Select(pool, reqs[i], httptest.NewRecorder()); up != nil {
					got[i] = up.Dial
				}
			}()
		}
		close(start)
		wg.Wait()
		for _, r := range reqs {
			respondTable(p, r)
		}
		seen := map[string]bool{}
		for _, s := range got {
			seen[s] = true
		}
		if len(seen) != 1 || seen[""] {
			split++
			t.Errorf("%s: %d parallel first requests reached %v", user, parallel, seen)
		}
		if e, ok := p.table.Get(user); !ok || e.Server != got[0] {
			t.Errorf("%s: table says %q, requests went to %q", user, e.Server, got[0])
		}
	}
	if split > 0 {
		t.Fatalf("%d of %d users placed on several servers", split, users)
	}
}

// TestResponseKeepsAnEarlierPlacement: a node that had not heard of a user
// places them; before the response arrives, the user's earlier placement
// made elsewhere is replicated in. The response must not overwrite it
// (that would move the user for good); a redispatch after a failure does.
func TestResponseKeepsAnEarlierPlacement(t *testing.T) {
	p := tablePolicy(t, &StickTable{})
	pool := newPool(3)
	r := placeholderUserRequest("late")
	up := p.Select(pool, r, httptest.NewRecorder())
	if up == nil {
		t.Fatal("no upstream")
	}
	other := pool[0].Dial
	if other == up.Dial {
		other = pool[1].Dial
	}
	k, _ := p.table.ParseKey("late")
	earlier := sticktable.Change{Op: sticktable.OpStore, Key: k, Server: other, Node: "peer",
		Version: uint64(time.Now().Add(-time.Minute).UnixMilli()) << sticktable.LogicalBits,
		Origin:  sticktable.OriginFirst, TTL: time.Hour}
	if ok, err := p.table.Apply(earlier); !ok || err != nil {
		t.Fatalf("the earlier placement did not win: %v %v", ok, err)
	}
	respondTable(p, r)
	if e, _ := p.table.Get("late"); e.Server != other {
		t.Fatalf("the response moved the user from %s to %s", other, e.Server)
	}
	// The user's server fails: the retry redispatches and the response
	// re-sticks them.
	pool2 := reverseproxy.UpstreamPool{}
	for _, u := range pool {
		if u.Dial != other {
			pool2 = append(pool2, u)
		}
	}
	r2 := placeholderUserRequest("late")
	up2 := p.Select(pool2, r2, httptest.NewRecorder())
	respondTable(p, r2)
	if e, _ := p.table.Get("late"); up2 == nil || e.Server != up2.Dial || sticktable.IsPlacement(e.Origin) {
		t.Fatalf("redispatch did not re-stick: %+v to %v", e, up2)
	}
}

// TestHashPlacementUsesServerNames: two instances that reach the same
// named servers through different addresses place new keys alike with
// first_choice hash.
func TestHashPlacementUsesServerNames(t *testing.T) {
	names := []string{"web1", "web2", "web3"}
	mk := func(prefix string) (*StickTable, reverseproxy.UpstreamPool) {
		servers := map[string]string{}
		var pool reverseproxy.UpstreamPool
		for i, n := range names {
			addr := fmt.Sprintf("%s.%d:8080", prefix, i+1)
			servers[addr] = n
			pool = append(pool, &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: addr})
		}
		return tablePolicy(t, &StickTable{Servers: servers, FirstChoice: "hash"}), pool
	}
	a, poolA := mk("10.0.0")
	b, poolB := mk("192.168.7")
	// b lists its servers in another order too
	poolB[0], poolB[2] = poolB[2], poolB[0]
	const keys = 300
	for i := range keys {
		u := fmt.Sprint("new-user-", i)
		ua, ub := a.Select(poolA, placeholderUserRequest(u), httptest.NewRecorder()), b.Select(poolB, placeholderUserRequest(u), httptest.NewRecorder())
		if a.identity(ua.Dial) != b.identity(ub.Dial) {
			t.Fatalf("%s: %s on one instance, %s on the other", u, a.identity(ua.Dial), b.identity(ub.Dial))
		}
	}
}
