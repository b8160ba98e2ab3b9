package peers

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/sticktable"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func parseBlock(t *testing.T, body string) (Config, error) {
	t.Helper()
	d := caddyfile.NewTestDispenser("peers cluster {\n" + body + "\n}")
	d.Next() // peers
	d.Next() // cluster
	var c Config
	err := c.UnmarshalCaddyfile(d)
	return c, err
}

func TestUnmarshalCaddyfile(t *testing.T) {
	c, err := parseBlock(t, `
		name node1
		bind 0.0.0.0:7946
		advertise 10.0.0.1:7946
		join 10.0.0.2:7946 peers.example.com:7946
		join 10.0.0.4:7946
		secret `+testSecret+`
		secret {env.OLD_SECRET}`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "node1" || c.Bind != "0.0.0.0:7946" || c.Advertise != "10.0.0.1:7946" ||
		strings.Join(c.Join, " ") != "10.0.0.2:7946 peers.example.com:7946 10.0.0.4:7946" ||
		len(c.Secrets) != 2 || c.Secrets[1] != "{env.OLD_SECRET}" {
		t.Fatalf("parsed %+v", c)
	}
	for body, want := range map[string]string{
		"name a\nname b":        "specified twice",
		"name":                  "exactly one",
		"bind a:b:c":            "bind",
		"secret bm90IGEga2V5":   "16, 24 or 32",
		"secret !!!":            "base64",
		"join":                  "at least one",
		"gossip fast":           "unrecognized",
		"max_clock_offset":      "exactly one duration",
		"max_clock_offset -1s":  "positive duration",
		"max_clock_offset soon": "positive duration",
		"max_clock_offset 1m\nmax_clock_offset 2m": "specified twice",
	} {
		_, err := parseBlock(t, body)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", body, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), "Testfile:") {
			t.Errorf("%q: error %q lacks the line", body, err)
		}
	}
}

// TestMaxClockOffsetOption: the Caddyfile and JSON option, its default,
// and a reload changing it in a running group.
func TestMaxClockOffsetOption(t *testing.T) {
	c, err := parseBlock(t, "max_clock_offset 30s\nsecret "+testSecret)
	if err != nil || time.Duration(c.MaxClockOffset) != 30*time.Second {
		t.Fatalf("parsed %v, %v", time.Duration(c.MaxClockOffset), err)
	}
	var j Config
	if err := json.Unmarshal([]byte(`{"max_clock_offset": "2m", "secrets": ["`+testSecret+`"]}`), &j); err != nil || time.Duration(j.MaxClockOffset) != 2*time.Minute {
		t.Fatalf("JSON: %v, %v", time.Duration(j.MaxClockOffset), err)
	}
	d, err := Config{Name: "n"}.withDefaults()
	if err != nil || time.Duration(d.MaxClockOffset) != DefaultMaxClockOffset {
		t.Fatalf("default %v, %v", time.Duration(d.MaxClockOffset), err)
	}
	if _, err := (Config{Name: "n", MaxClockOffset: -1}).withDefaults(); err == nil {
		t.Fatal("negative offset accepted")
	}
	g := startNode(t, "n", nil, testOpts(), testSecret)
	now := time.Now()
	if g.versionLimit(now) != versionAt(now.Add(time.Minute))|(1<<sticktable.LogicalBits-1) {
		t.Fatal("default limit")
	}
	g.SetMaxClockOffset(caddy.Duration(5 * time.Minute))
	if g.versionLimit(now) != versionAt(now.Add(5*time.Minute))|(1<<sticktable.LogicalBits-1) {
		t.Fatal("a reload did not change the limit")
	}
}

func TestNewGroupRefusesBadSecrets(t *testing.T) {
	for _, secrets := range [][]string{nil, {"short"}, {testSecret, "AAAA"}} {
		g, err := NewGroup(Config{Name: "x", Bind: "127.0.0.1:0", Secrets: secrets}, zap.NewNop())
		if err == nil {
			g.Close()
			t.Fatalf("secrets %q accepted", secrets)
		}
	}
	t.Setenv("PEERS_TEST_SECRET", testSecret)
	g, err := NewGroup(Config{Name: "x", Bind: "127.0.0.1:0", Secrets: []string{"{env.PEERS_TEST_SECRET}"}}, zap.NewNop())
	if err != nil {
		t.Fatalf("placeholder secret: %v", err)
	}
	g.Close()
}

// TestKeyRotation: mid-rotation, a node that already sends with the new
// key and one still sending with the old key, each accepting both,
// replicate both ways.
func TestKeyRotation(t *testing.T) {
	oldFirst, err := newGroup(Config{Name: "a", Bind: "127.0.0.1:0", Secrets: []string{testSecret, otherSecret}}, zap.NewNop(), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer oldFirst.Close()
	newFirst, err := newGroup(Config{Name: "b", Bind: "127.0.0.1:0", Join: []string{oldFirst.Addr()},
		Secrets: []string{otherSecret, testSecret}}, zap.NewNop(), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer newFirst.Close()
	ta, tb := newTable(t, sticktable.KeyString, 100), newTable(t, sticktable.KeyString, 100)
	oldFirst.Attach("s", ta)
	newFirst.Attach("s", tb)
	waitFor(t, 20*time.Second, "membership", func() bool { return oldFirst.ml.NumMembers() == 2 && newFirst.ml.NumMembers() == 2 })
	ta.Store("k1", "srv1")
	tb.Store("k2", "srv2")
	waitFor(t, 10*time.Second, "replication both ways", func() bool {
		return serverOf(tb, "k1") == "srv1" && serverOf(ta, "k2") == "srv2"
	})
}

// TestSkewedClockLaterWriteWins: a node whose wall clock is an hour
// behind still orders its write after the remote write it has seen,
// because applying a change feeds its version to the table's clock.
func TestSkewedClockLaterWriteWins(t *testing.T) {
	a := startNode(t, "a", nil, testOpts(), testSecret)
	b := startNode(t, "b", []string{a.Addr()}, testOpts(), testSecret)
	ta := newTable(t, sticktable.KeyString, 100)
	tb, err := sticktable.NewWithOptions(sticktable.Config{Size: 100, Expire: 10 * time.Minute},
		sticktable.Options{Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	a.Attach("s", ta)
	b.Attach("s", tb)
	waitFor(t, 20*time.Second, "membership", func() bool { return a.ml.NumMembers() == 2 && b.ml.NumMembers() == 2 })
	ta.Store("user", "first")
	waitFor(t, 10*time.Second, "replication", func() bool { return serverOf(tb, "user") == "first" })
	tb.Store("user", "second")
	waitFor(t, 10*time.Second, "the later write wins", func() bool {
		return serverOf(ta, "user") == "second" && serverOf(tb, "user") == "second"
	})
}

// TestSetSecretsRotatesInPlace walks the three-reload rotation on running
// groups: add the new key, move it first, drop the old one. Replication
// keeps working at every step, and a node still sending with a key the
// others dropped is cut off.
func TestSetSecretsRotatesInPlace(t *testing.T) {
	a := startNode(t, "a", nil, testOpts(), testSecret)
	b := startNode(t, "b", []string{a.Addr()}, testOpts(), testSecret)
	ta, tb := newTable(t, sticktable.KeyString, 100), newTable(t, sticktable.KeyString, 100)
	a.Attach("s", ta)
	b.Attach("s", tb)
	waitFor(t, 20*time.Second, "membership", func() bool { return a.ml.NumMembers() == 2 && b.ml.NumMembers() == 2 })
	step := func(name string, secretsA, secretsB []string) {
		t.Helper()
		if err := a.SetSecrets(secretsA); err != nil {
			t.Fatal(err)
		}
		if err := b.SetSecrets(secretsB); err != nil {
			t.Fatal(err)
		}
		ka, kb := "a-"+name, "b-"+name
		ta.Store(ka, "srv1")
		tb.Store(kb, "srv2")
		waitFor(t, 10*time.Second, "replication after "+name, func() bool {
			return serverOf(tb, ka) == "srv1" && serverOf(ta, kb) == "srv2"
		})
	}
	step("add", []string{testSecret, otherSecret}, []string{testSecret, otherSecret})
	step("switch", []string{otherSecret, testSecret}, []string{otherSecret, testSecret})
	step("drop", []string{otherSecret}, []string{otherSecret})
	if n := len(a.keyring.GetKeys()); n != 1 {
		t.Fatalf("a keeps %d keys after dropping the old one", n)
	}
	if err := a.SetSecrets(nil); err == nil {
		t.Error("an empty secret list must be refused")
	}
	// b goes back to the old key alone: a no longer accepts it
	if err := b.SetSecrets([]string{testSecret}); err != nil {
		t.Fatal(err)
	}
	tb.Store("b-stale-key", "srv2")
	time.Sleep(2 * time.Second)
	if serverOf(ta, "b-stale-key") != "" {
		t.Error("a accepted a change sent with a key it dropped")
	}
}
