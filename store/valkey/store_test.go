package valkey

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/caddy-sticky/sticky/sticktable"
)

// Two instances agree at once: what one places, the other reads on its
// first miss, and a later placement by the other loses to it.
func TestTwoInstancesAgree(t *testing.T) {
	r := startRedis(t)
	a := newInstance(t, r, "a", instanceOpts{})
	b := newInstance(t, r, "b", instanceOpts{})
	k := a.key(t, "alice")

	if got, err := a.table.Place(bg(), k, "10.0.0.1:80"); err != nil || got != "10.0.0.1:80" {
		t.Fatalf("a places: %q, %v", got, err)
	}
	if a.localServer(k) != "10.0.0.1:80" {
		t.Fatalf("a's cache: %q", a.localServer(k))
	}
	srv, found, err := b.table.Lookup(bg(), k)
	if err != nil || !found || srv != "10.0.0.1:80" {
		t.Fatalf("b reads through: %q %v %v", srv, found, err)
	}
	eventually(t, 2*time.Second, "b caching the entry", func() bool { return b.localServer(k) == "10.0.0.1:80" })
	if got, err := b.table.Place(bg(), b.key(t, "alice"), "10.0.0.2:80"); err != nil || got != "10.0.0.1:80" {
		t.Fatalf("b's late placement should lose to a's: %q, %v", got, err)
	}
	if _, found, err := b.table.Lookup(bg(), b.key(t, "nobody")); found || err != nil {
		t.Fatalf("absent key found: %v %v", found, err)
	}
}

// Racing first requests on several instances converge on one server with
// no move: every Place returns the same winner and every cache holds it.
func TestRacingFirstPlacementsAgree(t *testing.T) {
	r := startRedis(t)
	var ins []*instance
	for i := range 4 {
		ins = append(ins, newInstance(t, r, fmt.Sprintf("n%d", i), instanceOpts{}))
	}
	for round := range 50 {
		key := fmt.Sprintf("race-%d", round)
		var wg sync.WaitGroup
		start := make(chan struct{})
		winners := make([]string, 16)
		for g := range winners {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in := ins[g%len(ins)]
				k := in.key(t, key)
				<-start
				w, err := in.table.Place(bg(), k, fmt.Sprintf("10.0.0.%d:80", g))
				if err != nil {
					t.Error(err)
				}
				winners[g] = w
			}()
		}
		close(start)
		wg.Wait()
		for g, w := range winners {
			if w != winners[0] {
				t.Fatalf("round %d: placement %d got %q, placement 0 got %q", round, g, w, winners[0])
			}
		}
		// A cache may drop its copy when an invalidation crossed its
		// reply (see installGuarded) and fetch it again: never another
		// server than the winner, and the winner soon.
		for i, in := range ins {
			k := in.key(t, key)
			eventually(t, 2*time.Second, fmt.Sprintf("instance %d caching the winner", i), func() bool {
				got := in.localServer(k)
				if got != "" && got != winners[0] {
					t.Fatalf("round %d: instance %d caches %q, winner %q", round, i, got, winners[0])
				}
				return got == winners[0]
			})
		}
	}
}

// A pin, a re-stick, a delete and a clear made through one instance reach
// the other's cache through invalidation, without the other asking.
func TestChangesReachOtherCaches(t *testing.T) {
	r := startRedis(t)
	a := newInstance(t, r, "a", instanceOpts{})
	b := newInstance(t, r, "b", instanceOpts{})
	ka, kb := a.key(t, "bob"), b.key(t, "bob")
	if _, err := a.table.Place(bg(), ka, "s1"); err != nil {
		t.Fatal(err)
	}
	if srv, _, _ := b.table.Lookup(bg(), kb); srv != "s1" {
		t.Fatalf("b: %q", srv)
	}
	eventually(t, 2*time.Second, "b caching s1", func() bool { return b.localServer(kb) == "s1" })

	start := time.Now()
	if err := a.table.Pin(bg(), ka, "s2"); err != nil {
		t.Fatal(err)
	}
	called := time.Since(start)
	eventually(t, 2*time.Second, "b's copy of the pinned key dropped", func() bool { return b.localServer(kb) != "s1" })
	gone := time.Since(start)
	eventually(t, 2*time.Second, "b's cache refetching the pinned server", func() bool { return b.localServer(kb) == "s2" })
	t.Logf("pin call %v; b's old copy gone %v after the call began, new one cached after %v", called, gone, time.Since(start))

	// Re-stick is conditional: b saw s2 fail and moves the key to s3; a
	// saw s2 fail too but loses the race and adopts s3.
	if w, err := b.table.Restick(bg(), kb, "s2", "s3"); err != nil || w != "s3" {
		t.Fatalf("b re-sticks: %q %v", w, err)
	}
	eventually(t, 2*time.Second, "a's cache following the re-stick", func() bool { return a.localServer(ka) == "s3" })
	if w, err := a.table.Restick(bg(), ka, "s2", "s4"); err != nil || w != "s3" {
		t.Fatalf("a's concurrent re-stick must adopt s3: %q %v", w, err)
	}

	if err := a.table.Delete(bg(), ka); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "b's cache dropping the deleted key", func() bool { return b.localServer(kb) == "" })
	if _, found, _ := b.table.Lookup(bg(), kb); found {
		t.Fatal("deleted key still in the store")
	}

	for i := range 20 {
		k := a.key(t, fmtKey(i))
		srv := "s1"
		if i%2 == 1 {
			srv = "s2"
		}
		if _, err := a.table.Place(bg(), k, srv); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.table.Lookup(bg(), b.key(t, fmtKey(i))); err != nil {
			t.Fatal(err)
		}
	}
	n, err := a.table.Clear(bg(), "s1")
	if err != nil || n != 10 {
		t.Fatalf("clear s1: %d %v", n, err)
	}
	eventually(t, 2*time.Second, "b's cache dropping s1's entries", func() bool {
		for i := 0; i < 20; i += 2 {
			if b.localServer(b.key(t, fmtKey(i))) != "" {
				return false
			}
		}
		return true
	})
	if got := b.localServer(b.key(t, fmtKey(1))); got != "s2" {
		t.Fatalf("clearing s1 dropped an s2 entry on b: %q", got)
	}
	if n, err := b.table.Clear(bg(), ""); err != nil || n != 10 {
		t.Fatalf("clear all: %d %v", n, err)
	}
	eventually(t, 2*time.Second, "a's cache empty after clear", func() bool { return a.local.Len() == 0 })
}

// A pin with an older version does not override a newer one (concurrent
// explicit changes: the later wins everywhere).
func TestPinOlderVersionLoses(t *testing.T) {
	r := startRedis(t)
	a := newInstance(t, r, "a", instanceOpts{})
	adm := r.admin(nil)
	k := a.key(t, "carol")
	key := a.table.redisKey(k)
	future := a.store.clock.Now() + 10_000<<sticktable.LogicalBits
	val := string(encodeValue(nil, future, "z", "s9"))
	if err := r.do(adm, "SET", key, val).Error(); err != nil {
		t.Fatal(err)
	}
	if err := a.table.Pin(bg(), k, "s1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "the newer value cached", func() bool {
		got := a.localServer(k)
		if got == "s1" {
			t.Fatal("an older pin overrode a newer one")
		}
		return got == "s9"
	})
	if s, _ := r.do(adm, "GET", key).ToString(); s != val {
		t.Fatal("an older pin overwrote the store's newer value")
	}
}

// Values the store holds that this package did not write are treated as
// absent, counted, and overwritten by a placement.
func TestMalformedValuesAreAbsent(t *testing.T) {
	r := startRedis(t)
	a := newInstance(t, r, "a", instanceOpts{})
	adm := r.admin(nil)
	before := testutil.ToFloat64(storeMalformed.WithLabelValues("shared"))
	for i, bad := range []string{"", "x", "1zz", "10000000000000001ff", "1000000000000000102ab", "100000000000000010000\x01srv", "2000000000000000100s"} {
		k := a.key(t, fmt.Sprintf("bad-%d", i))
		if err := r.do(adm, "SET", a.table.redisKey(k), bad).Error(); err != nil {
			t.Fatal(err)
		}
		if srv, found, err := a.table.Lookup(bg(), k); found || err != nil {
			t.Fatalf("value %q: found %q %v", bad, srv, err)
		}
		if w, err := a.table.Place(bg(), k, "s1"); err != nil || w != "s1" {
			t.Fatalf("placement over %q: %q %v", bad, w, err)
		}
		if srv, found, _ := a.table.Lookup(bg(), k); !found || srv != "s1" {
			t.Fatalf("placement over %q not stored: %q", bad, srv)
		}
	}
	if got := testutil.ToFloat64(storeMalformed.WithLabelValues("shared")) - before; got < 7 {
		t.Fatalf("malformed values counted %v times, want >= 7", got)
	}
}

// Hits refresh the store's TTL at most once per expire/4 per key, and a
// key that expired in the store is written back by the refresh.
func TestTouchRefreshesRarely(t *testing.T) {
	r := startRedis(t)
	expire := 2 * time.Second
	a := newInstance(t, r, "a", instanceOpts{expire: expire})
	adm := r.admin(nil)
	k := a.key(t, "dave")
	if _, err := a.table.Place(bg(), k, "s1"); err != nil {
		t.Fatal(err)
	}
	calls := a.store.Stats().Calls
	for range 1000 {
		e, o := a.local.MatchKey(k)
		if o != sticktable.OutcomeHit {
			t.Fatalf("outcome %v", o)
		}
		a.table.Touch(k, e)
	}
	if d := a.store.Stats().Calls - calls; d != 0 {
		t.Fatalf("1000 fresh hits made %d store calls", d)
	}
	time.Sleep(expire/4 + 50*time.Millisecond)
	key := a.table.redisKey(k)
	ttlBefore, _ := r.do(adm, "PTTL", key).AsInt64()
	for range 1000 {
		e, _ := a.local.MatchKey(k)
		a.table.Touch(k, e)
	}
	eventually(t, 2*time.Second, "the refresh", func() bool {
		ttl, _ := r.do(adm, "PTTL", key).AsInt64()
		return ttl > ttlBefore+200
	})
	if d := a.store.Stats().Calls - calls; d != 1 {
		t.Fatalf("1000 hits after expire/4 made %d store calls, want 1", d)
	}
	// The key vanished from the store (deleted or expired there): the
	// server's invalidation drops the local copy too.
	r.do(adm, "DEL", key)
	eventually(t, 2*time.Second, "the local copy dropped", func() bool { return a.localServer(k) == "" })
}

// The server frozen with SIGSTOP under traffic: no call waits longer than
// the timeout (plus scheduling slack), the breaker opens, decisions are
// local; after SIGCONT the breaker closes and the local decisions made
// meanwhile reach the store.
func TestPausedServerCostsNoMoreThanTimeout(t *testing.T) {
	r := startRedis(t)
	const timeout = 50 * time.Millisecond
	cfg := Config{Timeout: caddy.Duration(timeout)}
	a := newInstance(t, r, "a", instanceOpts{cfg: cfg})
	b := newInstance(t, r, "b", instanceOpts{cfg: cfg})

	var mu sync.Mutex
	var worst time.Duration
	var n, failed int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := a.key(t, fmt.Sprintf("traffic-%d-%d", g, i))
				t0 := time.Now()
				w, err := a.table.Place(bg(), k, "s1")
				d := time.Since(t0)
				mu.Lock()
				n++
				if err != nil {
					failed++
				}
				worst = max(worst, d)
				mu.Unlock()
				if w != "s1" {
					t.Errorf("placement returned %q", w)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond)
	r.pause()
	pausedAt := time.Now()
	eventually(t, 5*time.Second, "the breaker to open", func() bool { return a.store.Stats().BreakerOpen })
	time.Sleep(time.Second)
	// Decided locally while the store is away.
	kOut := a.key(t, "during-outage")
	if w, err := a.table.Place(bg(), kOut, "s7"); w != "s7" || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("local decision while open: %q %v", w, err)
	}
	r.resume()
	paused := time.Since(pausedAt)
	eventually(t, 5*time.Second, "the breaker to close", func() bool { return !a.store.Stats().BreakerOpen })
	close(stop)
	wg.Wait()
	t.Logf("%d placements, %d decided locally, slowest %v (timeout %v, server frozen %v)", n, failed, worst, timeout, paused)
	// A call that waited for the frozen server would last about as long as
	// the freeze; one bounded by the timeout lasts that plus whatever this
	// shared machine adds. The figure is logged, not asserted: timing
	// assertions belong in benchmarks.
	if worst >= paused*3/4 {
		t.Fatalf("a call took %v: it waited for the frozen server (frozen %v)", worst, paused)
	}
	if failed == 0 {
		t.Fatal("no call failed while the server was frozen")
	}
	eventually(t, 5*time.Second, "the outage decision reconciled into the store", func() bool {
		srv, found, err := b.table.Lookup(bg(), b.key(t, "during-outage"))
		return err == nil && found && srv == "s7"
	})
}

// The server killed and restarted empty: instances that decided the same
// new key differently during the outage converge on one server, and the
// store holds it again.
func TestKilledServerInstancesReconcile(t *testing.T) {
	r := startRedis(t)
	// Short enough that the test is quick, long enough for a loaded
	// machine: a dead server refuses connections at once anyway.
	cfg := Config{Timeout: caddy.Duration(300 * time.Millisecond)}
	a := newInstance(t, r, "a", instanceOpts{cfg: cfg})
	b := newInstance(t, r, "b", instanceOpts{cfg: cfg})
	kept := a.key(t, "kept")
	if _, err := a.table.Place(bg(), kept, "s1"); err != nil {
		t.Fatal(err)
	}
	r.kill()
	ka, kb := a.key(t, "split"), b.key(t, "split")
	// Calls fail fast (connection refused) until the breaker opens.
	for range 5 {
		t0 := time.Now()
		_, _ = a.table.Place(bg(), ka, "sa")
		_, _ = b.table.Place(bg(), kb, "sb")
		// a hang (waiting on the dead server's connection) lasts far
		// longer than any timeout; the exact figure is no unit test's
		// business on a shared machine
		if d := time.Since(t0); d > 10*a.store.Timeout() {
			t.Fatalf("placements against a dead server took %v: they waited for it", d)
		}
	}
	if !a.store.Stats().BreakerOpen || !b.store.Stats().BreakerOpen {
		t.Fatal("breakers did not open against a dead server")
	}
	if a.localServer(ka) != "sa" || b.localServer(kb) != "sb" {
		t.Fatal("local decisions were not kept while the store was down")
	}
	r.restart()
	// Where an instance sends the user: its cached server, else what a
	// request's read-through finds (an invalidation may have dropped the
	// copy while the breaker was still open, so there is none to show).
	route := func(in *instance, k sticktable.Key) string {
		if s := in.localServer(k); s != "" {
			return s
		}
		s, _, _ := in.table.Lookup(bg(), k)
		return s
	}
	eventually(t, 10*time.Second, "both instances to converge on one server", func() bool {
		ra := route(a, ka)
		return !a.store.Resyncing() && !b.store.Resyncing() && ra != "" && ra == route(b, kb)
	})
	srv, found, err := a.table.Lookup(bg(), ka)
	if err != nil || !found || srv != route(b, kb) {
		t.Fatalf("store after reconciliation: %q %v %v", srv, found, err)
	}
	if srv, found, _ := b.table.Lookup(bg(), b.key(t, "kept")); !found || srv != "s1" {
		t.Fatalf("entry from before the outage not written back: %q %v", srv, found)
	}
}

// Listing pages through SCAN and returns every entry with its server,
// version, node and expiry.
func TestListPagesThroughStore(t *testing.T) {
	r := startRedis(t)
	a := newInstance(t, r, "a", instanceOpts{})
	want := map[string]string{}
	for i := range 1500 {
		srv := fmt.Sprintf("s%d", i%3)
		want[fmtKey(i)] = srv
		if _, err := a.table.Place(bg(), a.key(t, fmtKey(i)), srv); err != nil {
			t.Fatal(err)
		}
	}
	// A key of another table under the same prefix is not listed.
	other, _ := a.store.Bind("other", a.local)
	_, _ = other.Place(bg(), a.key(t, "elsewhere"), "sx")
	got := map[string]string{}
	cursor, pages := "", 0
	for {
		entries, next, err := a.table.List(bg(), cursor, 200)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range entries {
			if e.Node != "a" || e.Version == 0 || time.Until(e.ExpiresAt) <= 0 {
				t.Fatalf("entry %+v lacks node, version or expiry", e)
			}
			got[e.Key.String()] = e.Server
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d keys, want %d", len(got), len(want))
	}
	for k, s := range want {
		if got[k] != s {
			t.Fatalf("key %s: listed %q, want %q", k, got[k], s)
		}
	}
	if pages < 2 {
		t.Fatalf("1500 entries came in %d page(s) of 200", pages)
	}
	if _, _, err := a.table.List(bg(), "garbage", 10); err == nil {
		t.Fatal("a bad cursor was accepted")
	}
}

// Drain state is shared: a drain through one instance reaches the others'
// listeners.
func TestDrainShared(t *testing.T) {
	r := startRedis(t)
	a := newInstance(t, r, "a", instanceOpts{})
	b := newInstance(t, r, "b", instanceOpts{})
	var mu sync.Mutex
	var seen []string
	b.store.OnDrainChange(func(list []string) {
		mu.Lock()
		seen = append([]string(nil), list...)
		mu.Unlock()
	})
	current := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
	if err := a.store.Drain(bg(), "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	if err := a.store.Drain(bg(), "10.0.0.2:80"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "b to see both drains", func() bool { return len(current()) == 2 })
	if err := a.store.Undrain(bg(), "10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "b to see the undrain", func() bool {
		l := current()
		return len(l) == 1 && l[0] == "10.0.0.2:80"
	})
	list, err := b.store.Drained(bg())
	sort.Strings(list)
	if err != nil || len(list) != 1 || list[0] != "10.0.0.2:80" {
		t.Fatalf("Drained: %v %v", list, err)
	}
}

// The metrics register into a config's registry (twice is fine) and count
// calls by result.
func TestMetricsRegister(t *testing.T) {
	r := startRedis(t)
	a := newInstance(t, r, "a", instanceOpts{})
	reg := prometheus.NewRegistry()
	if err := RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := RegisterMetrics(reg); err != nil {
		t.Fatalf("second registration: %v", err)
	}
	before := testutil.ToFloat64(storeCalls.WithLabelValues("shared", "place", "ok"))
	_, _ = a.table.Place(bg(), a.key(t, "m"), "s1")
	if got := testutil.ToFloat64(storeCalls.WithLabelValues("shared", "place", "ok")) - before; got != 1 {
		t.Fatalf("place ok counted %v", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"caddy_sticky_store_calls_total", "caddy_sticky_store_call_duration_seconds", "caddy_sticky_store_breaker_open"} {
		if !names[n] {
			t.Fatalf("%s not gathered (have %v)", n, names)
		}
	}
}

// A store that is down when the config loads does not fail New: the
// breaker starts open and the store connects once the server is there.
func TestStartWithServerDown(t *testing.T) {
	bin := redisBinary(t)
	port := freePort(t)
	cfg := Config{Addresses: []string{fmt.Sprintf("redis://127.0.0.1:%d", port)}}
	s, err := New("shared", cfg, Options{ProbeInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Stats().BreakerOpen {
		t.Fatal("breaker closed with no server")
	}
	local, _ := sticktable.New(sticktable.Config{})
	defer local.Close()
	tb, _ := s.Bind("sessions", local)
	k, _ := local.ParseKey("x")
	if w, err := tb.Place(context.Background(), k, "s1"); w != "s1" || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("placement with no server: %q %v", w, err)
	}
	r := launch(t, bin, port, false, []string{"--port", fmt.Sprint(port)})
	_ = r
	eventually(t, 10*time.Second, "the store to connect", func() bool { return !s.Stats().BreakerOpen })
	eventually(t, 5*time.Second, "the local decision to reach the store", func() bool {
		srv, found, err := tb.Lookup(context.Background(), k)
		return err == nil && found && srv == "s1"
	})
}

// A placement whose answer comes too late is decided locally, then asked
// again in the background: the instance adopts the server another
// instance placed first, instead of keeping its own until expiry.
func TestLatePlacementConverges(t *testing.T) {
	r := startRedis(t)
	cfg := Config{Timeout: caddy.Duration(50 * time.Millisecond)}
	a := newInstance(t, r, "a", instanceOpts{cfg: cfg})
	b := newInstance(t, r, "b", instanceOpts{cfg: cfg})
	if _, err := b.table.Place(bg(), b.key(t, "late"), "s1"); err != nil {
		t.Fatal(err)
	}
	k := a.key(t, "late")
	r.pause()
	w, err := a.table.Place(bg(), k, "s2")
	if w != "s2" || err == nil {
		t.Fatalf("a placement against a frozen server: %q %v", w, err)
	}
	time.Sleep(100 * time.Millisecond)
	r.resume()
	eventually(t, 3*time.Second, "a adopting the first placement", func() bool { return a.localServer(k) == "s1" })
	if a.store.Stats().BreakerOpen {
		t.Fatal("one late answer opened the breaker")
	}
}
