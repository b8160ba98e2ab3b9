package selection

import (
	"net/http"
	"testing"
)

// With a store behind the table, a request whose rules give two keys to
// store (`on {user}` and `store {session}`) records both with the server
// that answered, as a local table does: each key is written according to
// its own entry (the policy used to pass the first key's server for every
// key, and the second key never reached the store).
func TestStoreBackedSecondKeyIsStored(t *testing.T) {
	pool := newPool(3)
	b := &fakeBacking{data: map[string]string{}}
	p := storePolicy(t, b,
		TableRule{Key: "{user}", Match: true, Store: true},
		TableRule{Key: "{session}", Store: true})

	r := storePolicyRequest("alice")
	repl(r).Set("session", "s-1")
	up := p.Select(pool, r, nil)
	if up == nil {
		t.Fatal("no upstream")
	}
	p.onResponse(varsOf(r), r, &http.Response{Header: http.Header{}})
	if got := b.get("alice"); got != up.Dial {
		t.Fatalf("store holds %q for alice, want %s", got, up.Dial)
	}
	if got := b.get("s-1"); got != up.Dial {
		t.Errorf("new user: store holds %q for the second stored key, want %s (calls %v)", got, up.Dial, b.take())
	}

	// alice again (a hit through the local cache) with a new session.
	k, _ := p.table.ParseKey("alice")
	_, _ = p.table.StoreKey(k, up.Dial)
	b.take()
	r = storePolicyRequest("alice")
	repl(r).Set("session", "s-2")
	if got := p.Select(pool, r, nil); got != up {
		t.Fatalf("alice moved to %v", got)
	}
	p.onResponse(varsOf(r), r, &http.Response{Header: http.Header{}})
	if got := b.get("s-2"); got != up.Dial {
		t.Errorf("hit: store holds %q for the store-only key, want %s (calls %v)", got, up.Dial, b.take())
	}
}

// The same two rules on a local table store both keys (the behaviour the
// store-backed table should match).
func TestLocalSecondKeyIsStored(t *testing.T) {
	pool := newPool(3)
	p := storePolicy(t, nil,
		TableRule{Key: "{user}", Match: true, Store: true},
		TableRule{Key: "{session}", Store: true})
	p.backing = nil
	r := storePolicyRequest("alice")
	repl(r).Set("session", "s-1")
	up := p.Select(pool, r, nil)
	p.onResponse(varsOf(r), r, &http.Response{Header: http.Header{}})
	k, _ := p.table.ParseKey("s-1")
	if e, ok := p.table.GetKey(k); !ok || e.Server != up.Dial {
		t.Fatalf("local table: s-1 -> %+v %v", e, ok)
	}
}
