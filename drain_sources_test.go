package sticky

// Review tests: drain state shared by the local set, the peers' drain
// table and a store's drained set.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-sticky/sticky/internal/redistest"
	"github.com/caddy-sticky/sticky/store/valkey"
)

func reviewWait(t *testing.T, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// otherInstance is another Caddy instance's client of the same store.
func otherInstance(t *testing.T, r *redistest.Server) *valkey.Store {
	t.Helper()
	cfg := valkey.Config{Addresses: []string{r.URL()}}
	st, err := valkey.New("shared", cfg.Resolved(nil), valkey.Options{Node: "other"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// A config with a store and a peer group (each for its own table): a drain
// another instance records in the store reaches this instance's set through
// the store's OnDrainChange (drained.Replace), which bypasses the drain
// table; the drain table's poll then finds the table and the set differ
// and replaces the set with the table: the drain is undone within 250 ms.
func TestStoreDrainSurvivesPeersDrainPoll(t *testing.T) {
	freshState(t)
	r := redistest.Start(t)
	port := freeUDPTCPPort(t)
	cfg := `{"stores": {"shared": {"valkey": {"addresses": ["` + r.URL() + `"]}}},
		"peers": {"c": {"secrets": ["MDEyMzQ1Njc4OWFiY2RlZg=="], "bind": "127.0.0.1:` + itoa(port) + `"}},
		"tables": {"users": {"store": "shared"}, "local": {"peers": "c"}}}`
	a, _ := newApp(t, cfg)
	defer stop(t, a)

	other := otherInstance(t, r)
	const server = "10.0.0.9:80"
	if !reviewWait(t, 5*time.Second, func() bool { return other.Drain(context.Background(), server) == nil }) {
		t.Fatal("the other instance could not drain through the store")
	}
	if !reviewWait(t, 5*time.Second, func() bool { return state.drained.Is(server) }) {
		t.Fatal("a drain recorded in the store never reached this instance")
	}
	time.Sleep(time.Second) // several ticks of the drain table's poll
	if !state.drained.Is(server) {
		t.Fatalf("the drain another instance made through the store was undone here by the peers' drain-table poll (drained now %v)", state.drained.List())
	}
}

// The status page's drain button changes the local set only; the admin
// API's drain also records it in the store. So with a store, a drain made
// on the status page does not reach the other instances, and the next
// reload of the store's drained set (any other drain, or the store coming
// back after an outage) undoes it on this instance too.
func TestStatusPageDrainReachesStore(t *testing.T) {
	freshState(t)
	r := redistest.Start(t)
	cfg := `{"stores": {"shared": {"valkey": {"addresses": ["` + r.URL() + `"]}}},
		"tables": {"users": {"store": "shared"}}}`
	a, _ := newApp(t, cfg)
	defer stop(t, a)
	tb, _ := a.StickTable("users")
	const server = "10.0.0.9:80"
	if _, err := tb.Store("alice", server); err != nil { // so the page knows the server
		t.Fatal(err)
	}

	page := &StatusPage{Actions: true, logger: zap.NewNop()}
	form := url.Values{"token": {actionToken()}, "server": {server}, "action": {"drain"}}
	req := httptest.NewRequest(http.MethodPost, "http://caddy.test/status", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	rec := httptest.NewRecorder()
	if err := page.ServeHTTP(rec, req, nil); err != nil {
		t.Fatal(err)
	}
	if !state.drained.Is(server) {
		t.Fatal("the status page did not drain the server locally")
	}

	other := otherInstance(t, r)
	var inStore []string
	reviewWait(t, 3*time.Second, func() bool {
		inStore, _ = other.Drained(context.Background())
		return len(inStore) > 0
	})
	if len(inStore) != 1 || inStore[0] != server {
		t.Errorf("a drain made on the status page is not in the shared store (store has %v): other instances never see it", inStore)
	}

	// Another instance drains a second server: this instance reloads the
	// store's set, and loses the status page's drain.
	if err := other.Drain(context.Background(), "10.0.0.10:80"); err != nil {
		t.Fatal(err)
	}
	reviewWait(t, 3*time.Second, func() bool { return state.drained.Is("10.0.0.10:80") })
	if !state.drained.Is(server) {
		t.Errorf("the status page's drain was undone on this instance by a store reload (drained now %v)", state.drained.List())
	}
}
