package valkey

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestParseStoreCaddyfile(t *testing.T) {
	input := `store shared {
		valkey {
			address redis://10.0.0.5:6379 rediss://ignored
		}
	}`
	d := caddyfile.NewTestDispenser(input)
	d.Next()
	if _, _, err := ParseStore(d); err == nil || !strings.Contains(err.Error(), "mix") {
		t.Fatalf("mixed schemes: %v", err)
	}

	d = caddyfile.NewTestDispenser(`store shared {
		valkey {
			address redis://10.0.0.5:6379
			address 10.0.0.6:6379 10.0.0.7
			username caddy
			password {env.VALKEY_PASSWORD}
			prefix app1:
			timeout 20ms
		}
	}`)
	d.Next()
	name, cfg, err := ParseStore(d)
	if err != nil {
		t.Fatal(err)
	}
	if name != "shared" || len(cfg.Addresses) != 3 || cfg.Username != "caddy" || cfg.Password != "{env.VALKEY_PASSWORD}" ||
		cfg.Prefix != "app1:" || time.Duration(cfg.Timeout) != 20*time.Millisecond {
		t.Fatalf("parsed %q %+v", name, cfg)
	}
	opt, err := cfg.clientOption()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(opt.InitAddress, " ") != "10.0.0.5:6379 10.0.0.6:6379 10.0.0.7:6379" || opt.TLSConfig != nil {
		t.Fatalf("client addresses %v tls %v", opt.InitAddress, opt.TLSConfig)
	}
	t.Setenv("VALKEY_PASSWORD", "from-env")
	if r := cfg.Resolved(caddy.NewReplacer()); r.Password != "from-env" || cfg.Password != "{env.VALKEY_PASSWORD}" {
		t.Fatalf("resolved password %q (original %q)", r.Password, cfg.Password)
	}

	d = caddyfile.NewTestDispenser("store s {\n valkey {\n address rediss://cache.internal:6380\n }\n}")
	d.Next()
	_, cfg, err = ParseStore(d)
	if err != nil {
		t.Fatal(err)
	}
	opt, _ = cfg.clientOption()
	if opt.TLSConfig == nil || opt.TLSConfig.ServerName != "cache.internal" || opt.InitAddress[0] != "cache.internal:6380" {
		t.Fatalf("rediss: %+v %v", opt.TLSConfig, opt.InitAddress)
	}

	for _, tc := range []struct{ in, want string }{
		{"store {\n}", "needs a name"},
		{"store s {\n}", "needs a valkey block"},
		{"store s {\nmemcached {\n}\n}", "unrecognized store type"},
		{"store s {\nvalkey {\n}\n}", "needs an address"},
		{"store s {\nvalkey {\naddress redis://a:1\ntimeout soon\n}\n}", "Testfile:4"},
		{"store s {\nvalkey {\naddress http://a:1\n}\n}", "scheme"},
		{"store s {\nvalkey {\naddress redis://a:1\nprefix a b\n}\n}", "Testfile:4"},
		{"store s {\nvalkey {\naddress redis://a:1\nprefix x:\nprefix y:\n}\n}", "specified twice"},
		{"store s {\nvalkey {\naddress redis://a:1\nbogus 1\n}\n}", "unrecognized valkey option"},
		{"store s {\nvalkey {\naddress redis://a:1/2 redis://b:1\n}\n}", "database"},
	} {
		d := caddyfile.NewTestDispenser(tc.in)
		d.Next()
		_, _, err := ParseStore(d)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to mention %q", tc.in, err, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{Addresses: []string{"127.0.0.1:6379"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Prefix != DefaultPrefix || time.Duration(c.Timeout) != DefaultTimeout {
		t.Fatalf("defaults: %+v", c)
	}
	for _, bad := range []Config{
		{},
		{Addresses: []string{"redis://a:1"}, Timeout: -1},
		{Addresses: []string{"redis://a:1"}, Prefix: "a b"},
		{Addresses: []string{"redis://a:1"}, CAFile: "/nonexistent.pem"},
		{Addresses: []string{"rediss://a:1"}, CAFile: "/nonexistent.pem"},
		{Addresses: []string{""}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestValueEncoding(t *testing.T) {
	for _, tc := range []struct {
		ver          uint64
		node, server string
	}{
		{1, "", "s"},
		{0xffffffffffffffff, "node-1", "10.0.0.1:8080"},
		{12345 << 16, strings.Repeat("n", 300), "[::1]:443"},
	} {
		raw := string(encodeValue(nil, tc.ver, tc.node, tc.server))
		v, ok := decodeValue(raw)
		node := tc.node
		if len(node) > maxNodeLen {
			node = node[:maxNodeLen]
		}
		if !ok || v.version != tc.ver || v.node != node || v.server != tc.server {
			t.Fatalf("round trip of %+v: %+v %v", tc, v, ok)
		}
	}
	a := string(encodeValue(nil, 5<<16, "a", "s"))
	b := string(encodeValue(nil, 6<<16, "a", "s"))
	if !(a[1:17] < b[1:17]) {
		t.Fatal("version hex does not sort like the versions")
	}
	for _, bad := range []string{"", "1", "1000000000000000100", "1000000000000000100" + "\n", "X000000000000000100s",
		"10000000000000000100s", "1000000000000000A00s", "1000000000000000105abcde", "1000000000000000102ab"} {
		if v, ok := decodeValue(bad); ok {
			t.Errorf("%q decoded as %+v", bad, v)
		}
	}
}

func FuzzDecodeValue(f *testing.F) {
	f.Add(string(encodeValue(nil, 77<<16, "n", "10.0.0.1:80")))
	f.Add("1zzzz")
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := decodeValue(s)
		if !ok {
			return
		}
		again, ok := decodeValue(string(encodeValue(nil, v.version, v.node, v.server)))
		if !ok || again != v {
			t.Fatalf("%q: %+v re-encodes to %+v", s, v, again)
		}
	})
}
