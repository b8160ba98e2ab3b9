package selection

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-sticky/sticky/sticktable"
)

// fakeBacking is a shared store in memory that records the calls the
// policy makes.
type fakeBacking struct {
	mu    sync.Mutex
	data  map[string]string
	calls []string
}

func (f *fakeBacking) log(format string, a ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, a...))
}

func (f *fakeBacking) Lookup(_ context.Context, k sticktable.Key) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("lookup %s", k)
	s, ok := f.data[k.String()]
	return s, ok, nil
}

func (f *fakeBacking) Place(_ context.Context, k sticktable.Key, server string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("place %s %s", k, server)
	if s, ok := f.data[k.String()]; ok {
		return s, nil
	}
	f.data[k.String()] = server
	return server, nil
}

func (f *fakeBacking) Restick(_ context.Context, k sticktable.Key, from, to string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("restick %s %s->%s", k, from, to)
	if s, ok := f.data[k.String()]; ok && s != from {
		return s, nil
	}
	f.data[k.String()] = to
	return to, nil
}

func (f *fakeBacking) Touch(sticktable.Key, sticktable.Entry)            {}
func (f *fakeBacking) Pin(context.Context, sticktable.Key, string) error { return nil }
func (f *fakeBacking) Delete(context.Context, sticktable.Key) error      { return nil }
func (f *fakeBacking) Clear(context.Context, string) (int, error)        { return 0, nil }
func (f *fakeBacking) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}
func (f *fakeBacking) set(k, s string)     { f.mu.Lock(); f.data[k] = s; f.mu.Unlock() }
func (f *fakeBacking) get(k string) string { f.mu.Lock(); defer f.mu.Unlock(); return f.data[k] }
func storePolicyRequest(user string) *http.Request {
	r := newRequest("")
	repl(r).Set("user", user)
	return r
}
func repl(r *http.Request) *caddy.Replacer {
	return r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
}
func varsOf(r *http.Request) map[string]any {
	return r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
}
func storePolicy(t *testing.T, b sticktable.Backing, rules ...TableRule) *StickTable {
	t.Helper()
	table, err := sticktable.New(sticktable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(table.Close)
	p := &StickTable{Table: "t", table: table, backing: b, names: map[string]string{}, dials: map[string]string{},
		FallbackRaw: caddyconfig.JSONModuleObject(reverseproxy.RoundRobinSelection{}, "policy", "round_robin", nil)}
	for _, r := range rules {
		p.rules = append(p.rules, compileRule(r))
	}
	if err := p.load(newTestContext(t)); err != nil {
		t.Fatal(err)
	}
	return p
}

// With a store behind the table: a new user is placed with one call and
// sent to the winner of the placement; hits make no call; a match-only key
// reads through; a redispatch re-sticks from the failed server.
func TestStickTableThroughStore(t *testing.T) {
	pool := newPool(3)
	b := &fakeBacking{data: map[string]string{}}
	p := storePolicy(t, b, TableRule{Key: "{user}", Match: true, Store: true})

	// Another instance placed bob on pool[2]: bob goes there, whatever
	// the fallback chose.
	b.set("bob", pool[2].Dial)
	r := storePolicyRequest("bob")
	if up := p.Select(pool, r, nil); up != pool[2] {
		t.Fatalf("bob sent to %v, the store says %s", up, pool[2].Dial)
	}
	p.onResponse(varsOf(r), r, &http.Response{Header: http.Header{}})
	if calls := b.take(); len(calls) != 1 || calls[0][:5] != "place" {
		t.Fatalf("a new user's request made %v, want one placement", calls)
	}
	// The local table cached nothing itself (the Backing installs); a
	// real store's Place installs the winner. Emulate it, then hits are
	// free.
	k, _ := p.table.ParseKey("bob")
	_, _ = p.table.StoreKey(k, pool[2].Dial)
	for range 10 {
		r := storePolicyRequest("bob")
		if up := p.Select(pool, r, nil); up != pool[2] {
			t.Fatalf("bob moved to %v", up)
		}
		p.onResponse(varsOf(r), r, &http.Response{Header: http.Header{}})
	}
	if calls := b.take(); len(calls) != 0 {
		t.Fatalf("hits made store calls: %v", calls)
	}

	// bob's server fails during a request: Caddy's retry goes elsewhere
	// and the response re-sticks him from the failed server.
	r = storePolicyRequest("bob")
	if up := p.Select(pool, r, nil); up != pool[2] {
		t.Fatalf("bob's first attempt went to %v", up)
	}
	up := p.Select(pool, r, nil) // the retry
	if up == nil || up == pool[2] {
		t.Fatalf("bob not redispatched: %v", up)
	}
	p.onResponse(varsOf(r), r, &http.Response{Header: http.Header{}})
	calls := b.take()
	if want := fmt.Sprintf("restick bob %s->%s", pool[2].Dial, up.Dial); len(calls) != 1 || calls[0] != want {
		t.Fatalf("redispatch made %v, want [%s]", calls, want)
	}
	if got := b.get("bob"); got != up.Dial {
		t.Fatalf("store holds %s for bob", got)
	}

	// A match-only rule reads through on a local miss.
	m := storePolicy(t, b, TableRule{Key: "{user}", Match: true})
	b.set("carol", pool[1].Dial)
	r = storePolicyRequest("carol")
	if up := m.Select(pool, r, nil); up != pool[1] {
		t.Fatalf("carol sent to %v, the store says %s", up, pool[1].Dial)
	}
	m.onResponse(varsOf(r), r, &http.Response{Header: http.Header{}})
	if calls := b.take(); len(calls) != 1 || calls[0] != "lookup carol" {
		t.Fatalf("match-only miss made %v, want one lookup", calls)
	}
}
