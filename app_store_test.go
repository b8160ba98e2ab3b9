package sticky

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-sticky/sticky/internal/redistest"
	"github.com/caddy-sticky/sticky/store/valkey"
)

func TestStoreGlobalOption(t *testing.T) {
	in := `sticky {
		store shared {
			valkey {
				address redis://10.0.0.5:6379
				password {env.VALKEY_PASSWORD}
				timeout 20ms
			}
		}
		table sessions {
			type ip
			store shared
		}
	}`
	app := new(App)
	if err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(app)
	want := `{"tables":{"sessions":{"type":"ip","store":"shared"}},"stores":{"shared":{"valkey":{"addresses":["redis://10.0.0.5:6379"],"password":"{env.VALKEY_PASSWORD}","timeout":20000000}}}}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	for in, line := range map[string]string{
		// an unknown store, reported at the table's store line
		"sticky {\n\ttable t {\n\t\tstore nowhere\n\t}\n}": "Testfile:3",
		// both peers and store
		"sticky {\n\ttable t {\n\t\tpeers c\n\t\tstore s\n\t}\n}":                                                                                         "Testfile:4",
		"sticky {\n\ttable t {\n\t\tstore s\n\t\tpeers c\n\t}\n}":                                                                                         "Testfile:4",
		"sticky {\n\tstore s {\n\t\tvalkey {\n\t\t\taddress ftp://x\n\t\t}\n\t}\n}":                                                                       "Testfile:4",
		"sticky {\n\tstore s {\n\t\tvalkey {\n\t\t\taddress redis://x:1\n\t\t}\n\t}\n\tstore s {\n\t\tvalkey {\n\t\t\taddress redis://x:1\n\t\t}\n\t}\n}": "Testfile:7",
	} {
		app := new(App)
		err := app.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in))
		if err == nil || !strings.Contains(err.Error(), line) {
			t.Errorf("%q: error %v, want one at %s", in, err, line)
		}
	}
}

func TestStoreConfigRefusedAtLoad(t *testing.T) {
	for cfg, want := range map[string]string{
		`{"tables": {"t": {"store": "nowhere"}}}`: "no store named",
		`{"stores": {"s": {"valkey": {"addresses": ["redis://127.0.0.1:1"]}}}, "tables": {"t": {"store": "s", "peers": "c"}}, "peers": {"c": {"secrets": ["MDEyMzQ1Njc4OWFiY2RlZg=="], "bind": "127.0.0.1:0"}}}`: "exclusive",
		`{"stores": {"s": {}}}`:             "needs a valkey block",
		`{"stores": {"s": {"valkey": {}}}}`: "address",
	} {
		app := new(App)
		if err := json.Unmarshal([]byte(cfg), app); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		err := app.Provision(ctx)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", cfg, err, want)
		}
		_ = app.Cleanup()
		cancel()
	}
}

// A reload keeps the store client (same connection, same breaker) and the
// table's binding; a store whose config changes is replaced, and the old
// one is closed when the old config goes.
func TestStorePooledAcrossReloads(t *testing.T) {
	r := redistest.Start(t)
	cfg := func(prefix string) string {
		return `{"stores": {"shared": {"valkey": {"addresses": ["` + r.URL() + `"], "prefix": "` + prefix + `"}}},
			"tables": {"users": {"store": "shared"}}}`
	}
	a, _ := newApp(t, cfg("sticky:"))
	ba := a.TableBacking("users")
	if ba == nil {
		t.Fatal("a store-backed table has no backing")
	}
	b := reload(t, a, cfg("sticky:"))
	if bb := b.TableBacking("users"); bb != ba {
		t.Fatal("a reload that keeps the store must keep its binding")
	}
	if state.tableBacking("users") != ba {
		t.Fatal("the admin API does not see the running binding")
	}
	tb, _ := b.StickTable("users")
	k, _ := tb.ParseKey("alice")
	if w, err := ba.Place(context.Background(), k, "s1"); err != nil || w != "s1" {
		t.Fatalf("place through the kept binding: %q %v", w, err)
	}
	c := reload(t, b, cfg("other:"))
	bc := c.TableBacking("users").(*valkey.Table)
	if bc == ba {
		t.Fatal("a new prefix must give a new store")
	}
	if srv, found, err := bc.Lookup(context.Background(), k); err != nil || found {
		t.Fatalf("the new prefix sees the old one's keys: %q %v %v", srv, found, err)
	}
	if _, err := ba.Place(context.Background(), k, "s2"); err == nil {
		t.Fatal("the replaced store was not closed")
	}
	stop(t, c)
}

// Provisioning a config with a store (as `caddy validate` does) opens no
// connection; Start does.
func TestStoreConnectsAtStart(t *testing.T) {
	r := redistest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			// relay to the real server so the client can finish its handshake
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", r.HostPort())
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(s, c) }()
				_, _ = io.Copy(c, s)
			}()
		}
	}()
	cfg := `{"stores": {"shared": {"valkey": {"addresses": ["redis://` + ln.Addr().String() + `"]}}}, "tables": {"users": {"store": "shared"}}}`
	app, ctx := newProvisioned(t, cfg)
	if n := accepted.Load(); n != 0 {
		t.Fatalf("provisioning opened %d connection(s) to the store", n)
	}
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	if accepted.Load() == 0 {
		t.Fatal("Start did not connect to the store")
	}
	emit(t, ctx, eventStarted)
	stop(t, app)
}
