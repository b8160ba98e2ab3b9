package sticky

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-sticky/sticky/internal/snapfile"
	"github.com/caddy-sticky/sticky/peers"
	"github.com/caddy-sticky/sticky/sticktable"
)

// TestRejectedFirstConfigKeepsSnapshot: with no sticky config
// running (a fresh process, or a running config without the sticky app),
// a config that Caddy rejects because another app fails to start must not
// rewrite the snapshot. Here the rejected config lacks table b; a later,
// good config with b must find b's users in the snapshot.
func TestRejectedFirstConfigKeepsSnapshot(t *testing.T) {
	freshState(t)
	path := filepath.Join(t.TempDir(), "snap")
	good := `{"admin": {"disabled": true}, "apps": {"sticky": {"persist": {"path": "` + path + `"},
		"tables": {"a": {}, "b": {}}}}}`
	if err := loadJSON(t, good); err != nil {
		t.Fatal(err)
	}
	_, _ = state.table("a").table.Store("alice", "web1:80")
	_, _ = state.table("b").table.Store("bob", "web2:80")
	if err := caddy.Stop(); err != nil { // full stop: writes the snapshot
		t.Fatal(err)
	}
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	state = newStateOwner() // a new process, nothing running yet
	bad := `{"admin": {"disabled": true}, "apps": {"sticky": {"persist": {"path": "` + path + `"},
		"tables": {"a": {}}}, "sticky_test_failing_app": {}}}`
	for attempt := 0; attempt < 24; attempt++ {
		if err := loadJSON(t, bad); err == nil {
			t.Fatal("a config whose app fails to start was accepted")
		}
		now, _ := os.ReadFile(path)
		if string(now) != string(orig) {
			f, _ := snapfile.Decode(now)
			var names []string
			if f != nil {
				names = sortedKeys(f.Tables)
			}
			t.Fatalf("attempt %d: a rejected config rewrote the snapshot (tables now %v, were [a b])", attempt, names)
		}
	}
	if err := loadJSON(t, good); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	if h := state.table("b"); h == nil || !strings.Contains(tableDump(h.table), "bob=web2:80") {
		t.Fatal("table b lost its users to a rejected config")
	}
}

// TestValidateOpensNoPeerSockets: caddy.Validate (what `caddy
// validate` runs, in a process of its own next to the running Caddy)
// provisions the config. It must not bind the peer group's sockets nor
// join the cluster: with the running node holding the port, validation
// of the very config that runs fails.
func TestValidateOpensNoPeerSockets(t *testing.T) {
	freshState(t) // the `caddy validate` process: nothing running in it
	port := freeUDPTCPPort(t)
	addr := "127.0.0.1:" + itoa(port)
	// the running Caddy's peer group holds the port
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	cfg := fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {"sticky": {"tables": {"s": {"peers": "c"}},
		"peers": {"c": {"name": "n1", "bind": %q, "secrets": ["MDEyMzQ1Njc4OWFiY2RlZg=="]}}}}}`, addr)
	var c caddy.Config
	if err := jsonUnmarshal([]byte(cfg), &c); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&c); err != nil {
		t.Fatalf("validating the running node's config failed: %v", err)
	}
}

// TestRejectedBindMoveKeepsNodeInCluster: a rejected reload that
// moves a group's bind address (same node name) must leave the running
// node in its cluster, replicating both ways.
func TestRejectedBindMoveKeepsNodeInCluster(t *testing.T) {
	freshState(t)
	secret := "MDEyMzQ1Njc4OWFiY2RlZg=="
	p1, p2, p3 := itoa(freeUDPTCPPort(t)), itoa(freeUDPTCPPort(t)), itoa(freeUDPTCPPort(t))
	other, otherTable := otherPeer(t, p2, secret)

	cfg := func(bind string, extra string) string {
		return fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {"sticky": {"tables": {"s": {"peers": "c"}},
		"peers": {"c": {"name": "n1", "bind": "127.0.0.1:%s", "join": ["127.0.0.1:%s"], "secrets": [%q]}}}%s}}`, bind, p2, secret, extra)
	}
	if err := loadJSON(t, cfg(p1, "")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	mine := state.table("s").table
	waitFor(t, 10*time.Second, "n2 sees n1", func() bool { return memberAlive(other, "n1", p1) })
	_, _ = otherTable.Store("before", "web1:80")
	waitFor(t, 10*time.Second, "n2's entry reaches n1", func() bool { _, ok := mine.Get("before"); return ok })

	if err := loadJSON(t, cfg(p3, `, "sticky_test_slow_failing_app": {}`)); err == nil {
		t.Fatal("accepted")
	}
	// right after the rejected reload: changes on either side still reach
	// the other, and n2 still counts n1 as a member
	left := ""
	if !memberAlive(other, "n1", p1) {
		left = fmt.Sprintf("n2's view of n1 (running at :%s; the rejected config had :%s): %+v", p1, p3, other.Members())
	}
	_, _ = otherTable.Store("after", "web2:80")
	_, _ = mine.Store("mine-after", "web3:80")
	waitFor(t, 8*time.Second, "n1's entry reaches n2 after the rejected reload; "+left, func() bool { _, ok := otherTable.Get("mine-after"); return ok })
	waitFor(t, 8*time.Second, "n2's entry reaches n1 after the rejected reload; "+left, func() bool { _, ok := mine.Get("after"); return ok })
	if left != "" {
		t.Error(left)
	}
}

func memberAlive(g *peers.Group, name, port string) bool {
	for _, m := range g.Members() {
		if m.Name == name {
			return m.State == "alive" && strings.HasSuffix(m.Address, ":"+port)
		}
	}
	return false
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBindMoveReloadKeepsReplicating: a successful reload that moves
// a group's bind address keeps the node in its cluster under its name.
func TestBindMoveReloadKeepsReplicating(t *testing.T) {
	freshState(t)
	secret := "MDEyMzQ1Njc4OWFiY2RlZg=="
	p1, p2, p3 := itoa(freeUDPTCPPort(t)), itoa(freeUDPTCPPort(t)), itoa(freeUDPTCPPort(t))
	other, otherTable := otherPeer(t, p2, secret)
	cfg := func(bind string) string {
		return fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {"sticky": {"tables": {"s": {"peers": "c"}},
		"peers": {"c": {"name": "n1", "bind": "127.0.0.1:%s", "join": ["127.0.0.1:%s"], "secrets": [%q]}}}}}`, bind, p2, secret)
	}
	if err := loadJSON(t, cfg(p1)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	mine := state.table("s").table
	waitFor(t, 10*time.Second, "n2 sees n1", func() bool { return memberAlive(other, "n1", p1) })
	if err := loadJSON(t, cfg(p3)); err != nil {
		t.Fatal(err)
	}
	if state.table("s").table != mine {
		t.Fatal("table replaced")
	}
	_, _ = otherTable.Store("after", "web2:80")
	_, _ = mine.Store("mine-after", "web3:80")
	waitFor(t, 8*time.Second, "n1's entry reaches n2 after the reload", func() bool { _, ok := otherTable.Get("mine-after"); return ok })
	waitFor(t, 8*time.Second, "n2's entry reaches n1 after the reload", func() bool { _, ok := mine.Get("after"); return ok })
	waitFor(t, 8*time.Second, "n2 sees n1 at its new address", func() bool { return memberAlive(other, "n1", p3) })
}

// slowFailingApp fails to start after a second, as an app does that waits
// for something before giving up; every app's Provision, ours included,
// has run by then.
type slowFailingApp struct{}

func (slowFailingApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "sticky_test_slow_failing_app", New: func() caddy.Module { return slowFailingApp{} }}
}

func (slowFailingApp) Start() error {
	time.Sleep(time.Second)
	return fmt.Errorf("this app fails to start after a second")
}

func (slowFailingApp) Stop() error { return nil }

func init() { caddy.RegisterModule(slowFailingApp{}) }

// slowStopApp's Stop blocks while armed, as Caddy's HTTP app does for its
// shutdown_delay, or for as long as a client keeps a connection open when
// grace_period is unset.
type slowStopApp struct{}

var (
	slowStopArmed   atomic.Bool
	slowStopEntered = make(chan struct{}, 1)
	slowStopRelease = make(chan struct{})
)

func (slowStopApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "sticky_test_slow_stop_app", New: func() caddy.Module { return slowStopApp{} }}
}

func (slowStopApp) Start() error { return nil }

func (slowStopApp) Stop() error {
	if slowStopArmed.Load() {
		slowStopEntered <- struct{}{}
		<-slowStopRelease
	}
	return nil
}

func init() { caddy.RegisterModule(slowStopApp{}) }

// TestReloadAppliesOnceTheNewConfigRuns: once Caddy runs the new
// config (it swapped it in and is stopping the old one), the admin API and
// the tables must follow it. The commit waits instead for the old sticky
// app's Stop, which Caddy calls in random order after the old config's
// other apps: an HTTP app with shutdown_delay, or with no grace_period and
// a client that keeps a connection open, holds it back for that long.
func TestReloadAppliesOnceTheNewConfigRuns(t *testing.T) {
	freshState(t)
	cfg := func(size int, extra string) string {
		return fmt.Sprintf(`{"admin": {"disabled": true}, "apps": {"sticky": {"tables": {"s": {"size": %d}%s}},
			"sticky_test_slow_stop_app": {}}}`, size, extra)
	}
	if err := loadJSON(t, cfg(100, "")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slowStopArmed.Store(false); _ = caddy.Stop() })
	for attempt := 0; attempt < 16; attempt++ {
		size := 200 + attempt
		slowStopArmed.Store(true)
		done := make(chan error, 1)
		go func() { done <- caddy.Load([]byte(cfg(size, `, "u`+itoa(attempt)+`": {}`)), true) }()
		select {
		case <-slowStopEntered: // the new config runs; the old one is stopping
		case err := <-done:
			t.Fatalf("reload returned before stopping the old config: %v", err)
		}
		slowStopArmed.Store(false)
		h, u := state.table("s"), state.table("u"+itoa(attempt))
		got := 0
		if h != nil {
			got = h.table.Config().Size
		}
		slowStopRelease <- struct{}{}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got != size || u == nil {
			t.Fatalf("attempt %d: the new config runs, yet table s has size %d (want %d) and its new table is visible: %v",
				attempt, got, size, u != nil)
		}
	}
}

// TestLongDrainIsKept: a drain is kept in the drain table (which
// persists and replicates it) with its full identity. The admin API refuses
// an identity longer than the table can hold (it was accepted, then silently
// undone by the replication poll, which replaced the set with the table's
// truncated key); the longest allowed one survives the polls.
func TestLongDrainIsKept(t *testing.T) {
	freshState(t)
	bind := "127.0.0.1:" + itoa(freeUDPTCPPort(t))
	cfg := `{"admin": {"disabled": true}, "apps": {"sticky": {"peers": {"c": {"name": "n1", "bind": "` + bind + `", "secrets": ["MDEyMzQ1Njc4OWFiY2RlZg=="]}}}}}`
	if err := loadJSON(t, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	tooLong := strings.Repeat("a", sticktable.MaxServerLen+10) + ":80"
	adminExpect(t, "POST", "/sticky/servers/"+pathSegment(tooLong)+"/drain", "", 400)
	if state.drained.Is(tooLong) {
		t.Fatal("an over-long identity was drained")
	}
	longest := strings.Repeat("a", sticktable.MaxServerLen-3) + ":80"
	adminExpect(t, "POST", "/sticky/servers/"+pathSegment(longest)+"/drain", "", 200)
	t.Cleanup(func() { state.drained.Set(longest, false) })
	time.Sleep(time.Second) // a few replication polls
	if !state.drained.Is(longest) || len(state.drained.List()) != 1 {
		t.Fatalf("the drain was undone; drained now: %d servers", len(state.drained.List()))
	}
}

// TestFullStopSnapshotHasLastUsers: on a full stop, the snapshot is
// written at the sticky app's Stop, which Caddy may call before the HTTP
// app's (random order). An HTTP app with shutdown_delay or a grace period
// keeps serving, and storing users, after that: they are missing from the
// snapshot and lost on restart.
func TestFullStopSnapshotHasLastUsers(t *testing.T) {
	freshState(t)
	path := filepath.Join(t.TempDir(), "snap")
	cfg := `{"admin": {"disabled": true}, "apps": {"sticky": {"persist": {"path": "` + path + `"}, "tables": {"s": {}}},
		"sticky_test_slow_stop_app": {}}}`
	t.Cleanup(func() { slowStopArmed.Store(false); _ = caddy.Stop() })
	for attempt := 0; attempt < 16; attempt++ {
		state = newStateOwner()
		if err := loadJSON(t, cfg); err != nil {
			t.Fatal(err)
		}
		tbl := state.table("s").table
		slowStopArmed.Store(true)
		done := make(chan error, 1)
		go func() { done <- caddy.Stop() }()
		<-slowStopEntered // the HTTP app is still draining: it serves a user
		slowStopArmed.Store(false)
		user := "late-user-" + itoa(attempt)
		_, _ = tbl.Store(user, "web1:80")
		slowStopRelease <- struct{}{}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// restart
		state = newStateOwner()
		if err := loadJSON(t, cfg); err != nil {
			t.Fatal(err)
		}
		_, ok := state.table("s").table.Get(user)
		if err := caddy.Stop(); err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatalf("attempt %d: a user stored while Caddy was still serving during the stop is not in the snapshot", attempt)
		}
	}
}

// otherPeer starts a peer group "n2" on 127.0.0.1:port with a string table
// "s" attached, both closed when the test ends.
func otherPeer(t *testing.T, port, secret string) (*peers.Group, *sticktable.Table) {
	t.Helper()
	other, err := peers.NewGroup(peers.Config{Name: "n2", Bind: "127.0.0.1:" + port, Secrets: []string{secret}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	otherTable, _ := sticktable.New(sticktable.Config{Type: sticktable.KeyString})
	t.Cleanup(otherTable.Close)
	other.Attach("s", otherTable)
	return other, otherTable
}
