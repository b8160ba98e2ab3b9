package sticky

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// newApp provisions and starts cfg as Caddy does: Provision, Start, then
// the config's "started" event.
func newApp(t *testing.T, cfg string) (*App, func()) {
	t.Helper()
	app, ctx := newProvisioned(t, cfg)
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	emit(t, ctx, eventStarted)
	return app, func() {}
}

// reload runs the order Caddy uses: the new config is provisioned and
// started; then Caddy begins stopping the old one ("stopping"), stops its
// apps and cleans it up.
func reload(t *testing.T, old *App, cfg string) *App {
	t.Helper()
	next, _ := newApp(t, cfg)
	stop(t, old)
	return next
}

// stop stops a running config as Caddy does.
func stop(t *testing.T, a *App) {
	t.Helper()
	emit(t, appContexts[a], eventStopping)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

func TestZeroConfigAppDoesNothing(t *testing.T) {
	app, cancel := newApp(t, `{}`)
	defer cancel()
	if _, err := app.StickTable("x"); err == nil || !strings.Contains(err.Error(), "no stick table named") {
		t.Errorf("missing table error: %v", err)
	}
	stop(t, app)
}

func TestReloadKeepsEntriesAndAppliesSizeInPlace(t *testing.T) {
	a, _ := newApp(t, `{"tables": {"s": {"type": "ip", "size": 100, "expire": 60000000000}}}`)
	ta, _ := a.StickTable("s")
	for i := 0; i < 50; i++ {
		if _, err := ta.Store("10.0.0."+itoa(i), "web1:80"); err != nil {
			t.Fatal(err)
		}
	}
	b := reload(t, a, `{"tables": {"s": {"type": "ip", "size": 20, "expire": 120000000000}}}`)
	tb, _ := b.StickTable("s")
	if tb != ta {
		t.Fatal("a reload that keeps the key type must keep the same table")
	}
	if got := tb.Config(); got.Size != 20 || got.Expire != 2*time.Minute {
		t.Errorf("size/expire not applied in place: %+v", got)
	}
	if tb.Len() != 20 {
		t.Errorf("shrinking to 20 left %d entries", tb.Len())
	}
	stop(t, b)
}

func TestReloadWithNewTypeStartsEmptyAndRemovalDrops(t *testing.T) {
	a, _ := newApp(t, `{"tables": {"s": {"type": "ip"}, "gone": {}}}`)
	ta, _ := a.StickTable("s")
	if _, err := ta.Store("10.0.0.1", "web1:80"); err != nil {
		t.Fatal(err)
	}
	b := reload(t, a, `{"tables": {"s": {"type": "string"}}}`)
	tb, _ := b.StickTable("s")
	if tb == ta || tb.Len() != 0 {
		t.Fatalf("type change must give a new empty table (same=%v, len=%d)", tb == ta, tb.Len())
	}
	if _, err := b.StickTable("gone"); err == nil {
		t.Error("removed table still served")
	}
	if pooled(poolKey("gone", ta.Config())) {
		t.Error("removed table still pooled")
	}
	if state.table("s") == nil || state.table("s").table != tb {
		t.Error("admin registry does not show the new config's table")
	}
	stop(t, b)
	if state.table("s") != nil {
		t.Error("registry still lists tables after the last config stopped")
	}
}

func TestPersistRoundTripWithDrain(t *testing.T) {
	freshState(t)
	path := filepath.Join(t.TempDir(), "snap")
	cfg := `{"persist": {"path": "` + path + `"}, "tables": {"a": {"type": "string"}, "b": {"type": "integer"}}}`
	app, _ := newApp(t, cfg)
	ta, _ := app.StickTable("a")
	tb, _ := app.StickTable("b")
	_, _ = ta.Store("alice", "web1:80")
	_, _ = tb.Store("42", "web2:80")
	state.drained.Set("web3:80", true)
	stop(t, app)

	state = newStateOwner() // a new process
	app2, _ := newApp(t, cfg)
	ta2, _ := app2.StickTable("a")
	tb2, _ := app2.StickTable("b")
	if e, ok := ta2.Get("alice"); !ok || e.Server != "web1:80" {
		t.Errorf("alice not restored: %+v %v", e, ok)
	}
	if e, ok := tb2.Get("42"); !ok || e.Server != "web2:80" {
		t.Errorf("42 not restored: %+v %v", e, ok)
	}
	if !state.drained.Is("web3:80") {
		t.Error("drain state not restored")
	}
	stop(t, app2)
}

func TestReloadDoesNotWriteSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	cfg := `{"persist": {"path": "` + path + `"}, "tables": {"a": {}}}`
	a, _ := newApp(t, cfg)
	b := reload(t, a, cfg)
	if _, err := readFileIfExists(path); err == nil {
		t.Error("a reload wrote a snapshot; only a full stop should")
	}
	stop(t, b)
	if _, err := readFileIfExists(path); err != nil {
		t.Errorf("a full stop wrote no snapshot: %v", err)
	}
}

func TestGlobalOptionCaddyfile(t *testing.T) {
	in := `sticky {
		table sessions {
			type ip
			size 1m
			expire 30m
			nopurge
			peers cluster
		}
		table users {
			type string len 64
		}
		table plain
		persist /var/lib/caddy/sticky.snap
	}`
	app := new(App)
	if err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(app)
	want := `{"tables":{"plain":{},"sessions":{"type":"ip","size":1048576,"expire":1800000000000,"nopurge":true,"peers":"cluster"},"users":{"type":"string","len":64}},"persist":{"path":"/var/lib/caddy/sticky.snap"}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestGlobalOptionErrors(t *testing.T) {
	cases := map[string]string{
		"sticky {\n\ttable t {\n\t\ttype ip len 4\n\t}\n}":     "Testfile:3",
		"sticky {\n\ttable t {\n\t\ttype blob\n\t}\n}":         "Testfile:3",
		"sticky {\n\ttable t {\n\t\tsize lots\n\t}\n}":         "Testfile:3",
		"sticky {\n\ttable t {\n\t\texpire soon\n\t}\n}":       "Testfile:3",
		"sticky {\n\ttable t {\n\t\tcolour red\n\t}\n}":        "Testfile:3",
		"sticky {\n\ttable t\n\ttable t\n}":                    "Testfile:3",
		"sticky {\n\tbogus\n}":                                 "Testfile:2",
		"sticky {\n\ttable t {\n\t\ttype string len 0\n\t}\n}": "Testfile:3",
	}
	for in, line := range cases {
		app := new(App)
		err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), line) {
			t.Errorf("%q: error %v, want one at %s", in, err, line)
		}
	}
}

func TestPeerGroupReloadSemantics(t *testing.T) {
	s1 := "MDEyMzQ1Njc4OWFiY2RlZg==" // 16 bytes
	s2 := "ZmVkY2JhOTg3NjU0MzIxMA=="
	port := freeUDPTCPPort(t)
	cfg := func(bind string, secrets ...string) string {
		b, _ := json.Marshal(secrets)
		return `{"peers": {"c": {"name": "n1", "bind": "` + bind + `", "secrets": ` + string(b) + `}},
			"tables": {"t": {"peers": "c"}}}`
	}
	bind := "127.0.0.1:" + itoa(port)
	a, _ := newApp(t, cfg(bind, s1))
	ga := groupOf(t, a, "c").group
	if got := ga.Tables(); !reflect.DeepEqual(got, []string{drainTableName, "t"}) {
		t.Fatalf("attached tables: %v", got)
	}
	b := reload(t, a, cfg(bind, s2, s1))
	if groupOf(t, b, "c").group != ga {
		t.Fatal("a secret change must keep the running group (same sockets, same members)")
	}
	if got := groupOf(t, b, "c").cfg.Secrets; len(got) != 2 || got[0] != s2 {
		t.Errorf("secrets not updated in place: %v", got)
	}
	other := "127.0.0.1:" + itoa(freeUDPTCPPort(t))
	c := reload(t, b, cfg(other, s2))
	if groupOf(t, c, "c").group == ga {
		t.Error("a bind change must start a new group")
	}
	if got := peerGroupsStatus().([]peerGroupStatus); len(got) != 1 || got[0].Address == "" {
		t.Errorf("after the old config stopped, /sticky/peers shows %+v", got)
	}
	stop(t, c)
	if got := peerGroupsStatus().([]peerGroupStatus); len(got) != 0 {
		t.Errorf("groups still listed after the last config stopped: %+v", got)
	}
}

func TestTableNamingUnknownGroupFails(t *testing.T) {
	app := new(App)
	_ = json.Unmarshal([]byte(`{"tables": {"t": {"peers": "nope"}}}`), app)
	ctx := testContext(t)
	err := app.Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), `no peer group named "nope"`) {
		t.Errorf("error %v", err)
	}
	if pooled(poolKey("t", sticktableConfigString())) {
		t.Error("a failed provision must release its tables")
	}
}

func TestPeerGroupWithoutSecretFails(t *testing.T) {
	app := new(App)
	_ = json.Unmarshal([]byte(`{"peers": {"c": {"bind": "127.0.0.1:0"}}}`), app)
	ctx := testContext(t)
	if err := app.Provision(ctx); err == nil || !strings.Contains(err.Error(), "secret is required") {
		t.Errorf("error %v", err)
	}
}

func TestDrainTableMirrorsBothWays(t *testing.T) {
	freshState(t)
	state.drained.Set("pre:1", true)
	bind := "127.0.0.1:" + itoa(freeUDPTCPPort(t))
	a, _ := newApp(t, `{"peers": {"c": {"name": "n1", "bind": "`+bind+`", "secrets": ["MDEyMzQ1Njc4OWFiY2RlZg=="]}}}`)
	defer stop(t, a)
	tbl := state.drainTable
	if _, ok := tbl.Get("pre:1"); !ok {
		t.Error("a drain made before replication started is not in the table")
	}
	state.drained.Set("local:1", true)
	if _, ok := tbl.Get("local:1"); !ok {
		t.Error("a local drain did not reach the table")
	}
	state.drained.Set("pre:1", false)
	if _, ok := tbl.Get("pre:1"); ok {
		t.Error("a local undrain did not reach the table")
	}
	// a peer's drain arrives in the table: the drain set follows
	if _, err := tbl.Pin("remote:1", "drained"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !state.drained.Is("remote:1") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !state.drained.Is("remote:1") || !state.drained.Is("local:1") || state.drained.Is("pre:1") {
		t.Errorf("drain set after a remote change: %v", state.drained.List())
	}
}

// Found in review: a reload that fails after Provision (another app failing
// to start) must leave the running config's peer groups as they were.
func TestFailedReloadLeavesRunningGroupAlone(t *testing.T) {
	s1 := "MDEyMzQ1Njc4OWFiY2RlZg=="
	s2 := "ZmVkY2JhOTg3NjU0MzIxMA=="
	bind := "127.0.0.1:" + itoa(freeUDPTCPPort(t))
	a, _ := newApp(t, `{"peers": {"c": {"name": "n1", "bind": "`+bind+`", "secrets": ["`+s1+`"]}},
		"tables": {"t": {"peers": "c"}}}`)
	defer stop(t, a)
	ga := groupOf(t, a, "c").group
	next := new(App)
	_ = json.Unmarshal([]byte(`{"peers": {"c": {"name": "n1", "bind": "`+bind+`", "secrets": ["`+s2+`"]}},
		"tables": {"t": {}}}`), next)
	ctx := testContext(t)
	if err := next.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	_ = next.Cleanup()
	if got := ga.Tables(); !slices.Contains(got, "t") {
		t.Errorf("the running config's table t stopped replicating after a failed reload: %v", got)
	}
	if got := groupOf(t, a, "c").cfg.Secrets; got[0] != s1 {
		t.Errorf("the running group took the failed reload's secrets: %v", got)
	}
}

// Found in review: when a new config is aborted after its Start (another
// app failed), the admin API must keep showing the running config's tables.
func TestAbortedStartKeepsRegistry(t *testing.T) {
	a, _ := newApp(t, `{"tables": {"rt": {}}}`)
	b, _ := newApp(t, `{"tables": {"rt": {}}}`)
	_ = b.Stop()
	_ = b.Cleanup()
	if state.table("rt") == nil {
		t.Error("the running config's table disappeared from the admin API")
	}
	stop(t, a)
	if state.table("rt") != nil {
		t.Error("tables still listed after the last config stopped")
	}
}

// Found in review: a reload that removes a table must not write a snapshot.
func TestReloadRemovingTableWritesNoSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snap")
	a, _ := newApp(t, `{"persist": {"path": "`+path+`"}, "tables": {"a": {}, "gone": {}}}`)
	b := reload(t, a, `{"persist": {"path": "`+path+`"}, "tables": {"a": {}}}`)
	if _, err := readFileIfExists(path); err == nil {
		t.Error("a reload that removed a table wrote a snapshot")
	}
	stop(t, b)
	if _, err := readFileIfExists(path); err != nil {
		t.Errorf("the full stop wrote no snapshot: %v", err)
	}
}

// Found in review: renaming the node on the same bind address cannot be
// done by a reload; it must say so instead of failing to bind.
func TestRenameNodeOnSameBindNeedsRestart(t *testing.T) {
	s1 := "MDEyMzQ1Njc4OWFiY2RlZg=="
	bind := "127.0.0.1:" + itoa(freeUDPTCPPort(t))
	cfg := func(node string) string {
		return `{"peers": {"c": {"name": "` + node + `", "bind": "` + bind + `", "secrets": ["` + s1 + `"]}},
			"tables": {"t": {"peers": "c"}}}`
	}
	a, _ := newApp(t, cfg("n1"))
	defer stop(t, a)
	next := new(App)
	_ = json.Unmarshal([]byte(cfg("n2")), next)
	ctx := testContext(t)
	err := next.Provision(ctx)
	if err == nil || !strings.Contains(err.Error(), "restart Caddy") {
		t.Errorf("error %v, want one that says a restart is needed", err)
	}
	_ = next.Cleanup()
	if groupOf(t, a, "c").group.Tables() == nil {
		t.Error("the running group lost its tables")
	}
}

func TestReservedTableNames(t *testing.T) {
	app := new(App)
	_ = json.Unmarshal([]byte(`{"tables": {"_sticky_drain": {}}}`), app)
	ctx := testContext(t)
	if err := app.Provision(ctx); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("error %v", err)
	}
}
