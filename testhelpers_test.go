package sticky

import (
	"net"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"os"
	"strconv"
	"testing"

	"github.com/caddy-sticky/sticky/sticktable"
)

func itoa(i int) string { return strconv.Itoa(i) }

func readFileIfExists(path string) ([]byte, error) { return os.ReadFile(path) }

// freeUDPTCPPort returns a port free for both TCP and UDP on 127.0.0.1,
// as a peer group binds both.
func freeUDPTCPPort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 100; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for TCP and UDP")
	return 0
}

func sticktableConfigString() sticktable.Config { return sticktable.Config{} }

// freshState gives the test a state owner of its own, as a new process
// would have, and puts the previous one back when the test ends.
func freshState(t *testing.T) {
	t.Helper()
	prev := state
	state = newStateOwner()
	t.Cleanup(func() { state = prev })
}

// pooled reports whether the state owner holds a table under key.
func pooled(key string) bool {
	state.mu.Lock()
	defer state.mu.Unlock()
	_, ok := state.tables[key]
	return ok
}

// groupOf returns the peer group a's config uses under name.
func groupOf(t *testing.T, a *App, name string) *groupHandle {
	t.Helper()
	u, ok := a.plan.groups[name]
	if !ok {
		t.Fatalf("config has no group %s", name)
	}
	return u.h
}

// appContexts remembers the context each test app was provisioned in, so
// tests can emit its config's lifecycle events.
var appContexts = map[*App]caddy.Context{}

// testContext returns a context with a config of its own, and so an events
// app of its own, as each config Caddy loads has.
func testContext(t testing.TB) caddy.Context {
	t.Helper()
	base, err := caddy.ProvisionContext(&caddy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(base)
	t.Cleanup(cancel)
	return ctx
}

// emit sends a lifecycle event on ctx's config, as Caddy does.
func emit(t testing.TB, ctx caddy.Context, name string) {
	t.Helper()
	app, err := ctx.App("events")
	if err != nil {
		t.Fatal(err)
	}
	app.(*caddyevents.App).Emit(ctx, name, nil)
}
