package sticky

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-sticky/sticky/internal/snapfile"
	"github.com/caddy-sticky/sticky/selection"
	"github.com/caddy-sticky/sticky/sticktable"
)

// failingApp is an app whose Start fails, as an HTTP app does when its
// listener's port is taken. It records whether the sticky app of the same
// config had already started, so a test can see that Caddy's random app
// order covered both cases.
type failingApp struct{}

var (
	failedAfterSticky  atomic.Int64 // our Start ran first, then Caddy stopped it
	failedBeforeSticky atomic.Int64 // our Start never ran
)

func (failingApp) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "sticky_test_failing_app", New: func() caddy.Module { return failingApp{} }}
}

func (failingApp) Start() error {
	if state.hasStartedPlan() {
		failedAfterSticky.Add(1)
	} else {
		failedBeforeSticky.Add(1)
	}
	return errors.New("this app always fails to start")
}

func (failingApp) Stop() error { return nil }

func init() { caddy.RegisterModule(failingApp{}) }

// hasStartedPlan reports whether a started plan waits to be committed.
func (s *stateOwner) hasStartedPlan() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.plans {
		if p.phase == planStarted {
			return true
		}
	}
	return false
}

// tableDump lists every entry of a table as key=server, sorted.
func tableDump(t *sticktable.Table) string {
	var b strings.Builder
	entries, _, err := t.Entries(sticktable.Query{})
	if err != nil {
		return err.Error()
	}
	for _, e := range entries {
		fmt.Fprintf(&b, "%s=%s\n", e.Key, e.Server)
	}
	return b.String()
}

func loadJSON(t *testing.T, cfg string) error {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(cfg), &v); err != nil {
		t.Fatalf("bad test config: %v\n%s", err, cfg)
	}
	return caddy.Load([]byte(cfg), true)
}

// TestRejectedStartLeavesNoTrace loads a config, then configs that change
// the table (size 50, nopurge) and the peer secret but carry an app that
// fails to start. Caddy keeps the running config; so must the state owner:
// same size, same nopurge, same entries, same secret, new users stored.
// Caddy starts apps in random order, so the failing app starts before ours
// in some attempts and after it in others: both must be covered.
func TestRejectedStartLeavesNoTrace(t *testing.T) {
	freshState(t)
	secret1 := "MDEyMzQ1Njc4OWFiY2RlZg=="
	secret2 := "ZmVkY2JhOTg3NjU0MzIxMA=="
	bind := "127.0.0.1:" + itoa(freeUDPTCPPort(t))
	sticky := func(size int, nopurge bool, secret string) string {
		return fmt.Sprintf(`"sticky": {"tables": {"s": {"type": "ip", "size": %d, "nopurge": %v, "peers": "c"}},
			"peers": {"c": {"name": "n1", "bind": %q, "secrets": [%q]}}}`, size, nopurge, bind, secret)
	}
	running := `{"admin": {"disabled": true}, "apps": {` + sticky(1000, false, secret1) + `}}`
	if err := loadJSON(t, running); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	h := state.table("s")
	for i := 0; i < 200; i++ {
		if _, err := h.table.Store(fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), "web1:80"); err != nil {
			t.Fatal(err)
		}
	}
	before := tableDump(h.table)
	group := state.groupList()[0]

	failedAfterSticky.Store(0)
	failedBeforeSticky.Store(0)
	for attempt := 0; attempt < 40; attempt++ {
		bad := `{"admin": {"disabled": true}, "apps": {` + sticky(50, true, secret2) + `, "sticky_test_failing_app": {}}}`
		if err := loadJSON(t, bad); err == nil {
			t.Fatal("a config whose app fails to start was accepted")
		}
		if state.table("s") != h {
			t.Fatal("the running config's table was replaced")
		}
		cfg := h.table.Config()
		if cfg.Size != 1000 || cfg.NoPurge {
			t.Fatalf("attempt %d: the rejected config changed the running table: %+v", attempt, cfg)
		}
		if got := tableDump(h.table); got != before {
			t.Fatalf("attempt %d: entries changed", attempt)
		}
		if got := group.group.Secrets(); len(got) != 1 || got[0] != secret1 {
			t.Fatalf("attempt %d: the rejected config changed the group's secrets: %v", attempt, got)
		}
		if !h.table.Config().NoPurge {
			if _, err := h.table.Store("10.9.9.9", "web2:80"); err != nil {
				t.Fatalf("a new user is not stored after a rejected reload: %v", err)
			}
			_, _ = h.table.Delete("10.9.9.9")
		}
		if failedAfterSticky.Load() > 0 && failedBeforeSticky.Load() > 0 && attempt >= 8 {
			break
		}
	}
	t.Logf("the failing app started after ours %d times, before ours %d times", failedAfterSticky.Load(), failedBeforeSticky.Load())
	if failedAfterSticky.Load() == 0 || failedBeforeSticky.Load() == 0 {
		t.Fatalf("app order not covered: failed after ours %d times, before ours %d times",
			failedAfterSticky.Load(), failedBeforeSticky.Load())
	}
	// and a good reload still applies everything
	if err := loadJSON(t, `{"admin": {"disabled": true}, "apps": {`+sticky(50, true, secret2)+`}}`); err != nil {
		t.Fatal(err)
	}
	if cfg := h.table.Config(); cfg.Size != 50 || !cfg.NoPurge || h.table.Len() != 50 {
		t.Fatalf("the accepted reload was not applied: %+v, %d entries", cfg, h.table.Len())
	}
	if got := group.group.Secrets(); len(got) != 1 || got[0] != secret2 {
		t.Fatalf("the accepted reload did not rotate the secret: %v", got)
	}
}

// TestRejectedProvisionLeavesNoTrace covers configs that fail while being
// provisioned, after the sticky app planned its changes: a bad later
// table, a short peer secret, and a module after ours that cannot load.
func TestRejectedProvisionLeavesNoTrace(t *testing.T) {
	freshState(t)
	running := `{"admin": {"disabled": true}, "apps": {"sticky": {"tables": {"s": {"type": "ip", "size": 1000}}}}}`
	if err := loadJSON(t, running); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
	h := state.table("s")
	for i := 0; i < 200; i++ {
		_, _ = h.table.Store(fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), "web1:80")
	}
	before := tableDump(h.table)
	bind := "127.0.0.1:" + itoa(freeUDPTCPPort(t))
	cases := map[string]string{
		"bad later table": `{"sticky": {"tables": {"s": {"type": "ip", "size": 50, "nopurge": true}, "z": {"type": "bogus"}}}}`,
		"short secret": `{"sticky": {"tables": {"s": {"type": "ip", "size": 50, "nopurge": true, "peers": "c"}},
			"peers": {"c": {"name": "n1", "bind": "` + bind + `", "secrets": ["c2hvcnQ="]}}}}`,
		"unknown app after ours":       `{"sticky": {"tables": {"s": {"type": "ip", "size": 50, "nopurge": true}}}, "zz_no_such_app": {}}`,
		"a later table names no group": `{"sticky": {"tables": {"s": {"type": "ip", "size": 50, "nopurge": true}, "t": {"peers": "nope"}}}}`,
	}
	for name, apps := range cases {
		t.Run(name, func(t *testing.T) {
			if err := loadJSON(t, `{"admin": {"disabled": true}, "apps": `+apps+`}`); err == nil {
				t.Fatal("the bad config was accepted")
			}
			if state.table("s") != h {
				t.Fatal("the running table was replaced")
			}
			if cfg := h.table.Config(); cfg.Size != 1000 || cfg.NoPurge {
				t.Fatalf("the rejected config changed the running table: %+v", cfg)
			}
			if got := tableDump(h.table); got != before {
				t.Fatal("entries changed")
			}
			if len(state.groupList()) != 0 || pooled(poolKey("z", sticktable.Config{})) {
				t.Fatal("the rejected config left a group or table behind")
			}
		})
	}
}

// TestDrainRestoreKeepsVersions: a node down while another undrained a
// server must not re-drain it from its old snapshot. Restoring keeps the
// drain's original version, so the newer undrain (a tombstone elsewhere)
// wins when the tables meet.
func TestDrainRestoreKeepsVersions(t *testing.T) {
	freshState(t)
	path := filepath.Join(t.TempDir(), "snap")
	cfg := `{"persist": {"path": "` + path + `"}}`
	a, _ := newApp(t, cfg)
	state.drained.Set("web1:80", true)
	orig, ok := state.drainTable.Get("web1:80")
	if !ok {
		t.Fatal("drain not recorded")
	}
	stop(t, a)

	time.Sleep(5 * time.Millisecond) // a restored copy with a fresh version would differ
	state = newStateOwner()
	b, _ := newApp(t, cfg)
	defer stop(t, b)
	got, ok := state.drainTable.Get("web1:80")
	if !ok || !state.drained.Is("web1:80") {
		t.Fatal("drain not restored")
	}
	if got.Version != orig.Version || got.Node != orig.Node {
		t.Fatalf("restored drain has version %d/%q, the original %d/%q", got.Version, got.Node, orig.Version, orig.Node)
	}
	// the other node's undrain, newer than the drain, wins here
	undrain := sticktable.Change{Op: sticktable.OpDelete, Key: got.Key, Version: orig.Version + 1, Node: "n2", TTL: time.Hour}
	if ok, err := state.drainTable.Apply(undrain); !ok || err != nil {
		t.Fatalf("a newer undrain was refused: %v %v", ok, err)
	}
}

// TestSnapshotTooLargeIsNotRead: the size limit is checked before a byte
// is read, so a huge file cannot exhaust memory.
func TestSnapshotTooLargeIsNotRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(snapfile.Max + 1); err != nil {
		t.Skipf("cannot make a sparse file here: %v", err)
	}
	f.Close()
	_, err = fileStore{path: path}.load()
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("error %v, want a size error", err)
	}
}

// TestSnapshotWriteLeavesNoTemporaryFile: the snapshot is written to a
// temporary file, flushed and renamed; a successful save leaves only the
// snapshot, and a failed one leaves the previous snapshot intact.
func TestSnapshotWriteLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "snap")
	tbl, err := sticktable.New(sticktable.Config{Type: sticktable.KeyString})
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Close()
	_, _ = tbl.Store("alice", "web1:80")
	tables := map[string]*tableUse{"t": {h: &tableHandle{name: "t", table: tbl}}}
	if err := (fileStore{path: path}).save(tables, nil); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "snap" {
		t.Fatalf("directory after save: %v", entries)
	}
	good, _ := os.ReadFile(path)
	// a save into a place that cannot be written fails and keeps the old file
	if err := os.Mkdir(path+".tmp", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := (fileStore{path: path}).save(tables, nil); err == nil {
		t.Fatal("a save that cannot write its temporary file reported success")
	}
	if now, _ := os.ReadFile(path); string(now) != string(good) {
		t.Fatal("a failed save damaged the previous snapshot")
	}
}

// TestTableRecreatedByReloadIsNotRefilled: a table that a reload removes
// and a later reload brings back starts empty, never with the entries of
// the snapshot read when the process started.
func TestTableRecreatedByReloadIsNotRefilled(t *testing.T) {
	freshState(t)
	path := filepath.Join(t.TempDir(), "snap")
	with := `{"persist": {"path": "` + path + `"}, "tables": {"a": {}, "b": {}}}`
	without := `{"persist": {"path": "` + path + `"}, "tables": {"a": {}}}`
	a, _ := newApp(t, with)
	tb, _ := a.StickTable("b")
	_, _ = tb.Store("old-user", "web1:80")
	stop(t, a) // writes the snapshot with old-user

	state = newStateOwner() // a restart
	b, _ := newApp(t, with)
	if tb, _ := b.StickTable("b"); tb.Len() != 1 {
		t.Fatalf("restart did not restore b: %d entries", tb.Len())
	}
	c := reload(t, b, without)
	d := reload(t, c, with)
	defer stop(t, d)
	if tb, _ := d.StickTable("b"); tb.Len() != 0 {
		t.Fatalf("a table re-created by a reload was refilled from the old snapshot: %s", tableDump(tb))
	}
}

// TestCookieRegistryFollowsTheRunningConfig: the admin API's cookie
// lookup lists the policies of the running config only, not those of a
// config being provisioned or one that was rejected.
func TestCookieRegistryFollowsTheRunningConfig(t *testing.T) {
	freshState(t)
	a, _ := newApp(t, `{}`)
	next, _ := newProvisioned(t, `{}`)
	policy := &selection.StickyCookie{Name: "SRV"}
	next.AddCookiePolicy(policy)
	if n := len(state.cookiePolicies()); n != 0 {
		t.Fatalf("a config not yet running shows %d cookie policies", n)
	}
	_ = next.Cleanup()
	if n := len(state.cookiePolicies()); n != 0 {
		t.Fatalf("a rejected config left %d cookie policies", n)
	}
	good, _ := newProvisioned(t, `{}`)
	good.AddCookiePolicy(policy)
	if err := good.Start(); err != nil {
		t.Fatal(err)
	}
	stop(t, a) // the reload succeeded: the old config stops
	if got := state.cookiePolicies(); len(got) != 1 || got[0] != policy {
		t.Fatalf("the running config's cookie policies: %v", got)
	}
	stop(t, good)
	if n := len(state.cookiePolicies()); n != 0 {
		t.Fatalf("%d cookie policies listed after the last config stopped", n)
	}
}

// newProvisioned provisions cfg in a config context of its own.
func newProvisioned(t *testing.T, cfg string) (*App, caddy.Context) {
	t.Helper()
	app := new(App)
	if err := json.Unmarshal([]byte(cfg), app); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	appContexts[app] = ctx
	return app, ctx
}
