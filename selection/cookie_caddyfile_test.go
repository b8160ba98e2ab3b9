package selection

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestCookieCaddyfileGolden parses each testdata/caddyfile/*.caddyfile
// policy and compares the JSON it produces with the .json beside it.
func TestCookieCaddyfileGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile/*.caddyfile")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range files {
		t.Run(filepath.Base(in), func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var s StickyCookie
			if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(string(src))); err != nil {
				t.Fatalf("parse: %v", err)
			}
			got, err := json.MarshalIndent(&s, "", "\t")
			if err != nil {
				t.Fatal(err)
			}
			golden := strings.TrimSuffix(in, ".caddyfile") + ".json"
			if *update {
				if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if strings.TrimSpace(string(got)) != strings.TrimSpace(string(want)) {
				t.Errorf("JSON differs from %s:\n got: %s\nwant: %s", golden, got, want)
			}
		})
	}
}

func TestCookieCaddyfileErrors(t *testing.T) {
	cases := []struct {
		name, src, want string
		line            int
	}{
		{"unknown option", "sticky_cookie SRV {\n\tinsert\n\tbogus\n}", "unrecognized sticky_cookie option 'bogus'", 3},
		{"unknown flag", "sticky_cookie SRV insert wat", "unrecognized sticky_cookie flag 'wat'", 1},
		{"bad duration", "sticky_cookie SRV {\n\tmaxidle forever\n}", "maxidle: invalid duration", 2},
		{"negative duration", "sticky_cookie SRV {\n\tmax_age -1h\n}", "max_age must be positive", 2},
		{"insert+rewrite", "sticky_cookie SRV {\n\tinsert\n\trewrite\n}", "rewrite is incompatible with insert", 3},
		{"prefix+insert", "sticky_cookie SRV prefix insert", "insert is incompatible with prefix", 1},
		{"rewrite+prefix", "sticky_cookie SRV {\n\trewrite\n\n\tprefix\n}", "prefix is incompatible with rewrite", 4},
		{"rewrite+indirect", "sticky_cookie SRV {\n\tindirect\n\trewrite\n}", "rewrite is incompatible with indirect", 3},
		{"indirect+rewrite", "sticky_cookie SRV rewrite {\n\tindirect\n}", "rewrite is incompatible with indirect", 2},
		{"maxidle with prefix", "sticky_cookie SRV prefix {\n\tmaxidle 1h\n}", "maxidle only works in insert mode", 2},
		{"postonly with rewrite", "sticky_cookie SRV {\n\tpostonly\n\trewrite\n}", "postonly only works in insert mode", 3},
		{"twice", "sticky_cookie SRV {\n\tnocache\n\tnocache\n}", "nocache specified twice", 3},
		{"bad name", "sticky_cookie SR;V", "\"SR;V\" is not a valid cookie name", 1},
		{"bad samesite", "sticky_cookie SRV {\n\tsamesite sometimes\n}", "samesite must be strict, lax or none", 2},
		{"bad server value", "sticky_cookie SRV {\n\tserver 10.0.0.1:80 \"a b\"\n}", "\"a b\" is not a valid cookie value", 2},
		{"duplicate server value", "sticky_cookie SRV {\n\tserver 10.0.0.1:80 a\n\tserver 10.0.0.2:80 a\n}", "servers 10.0.0.1:80 and 10.0.0.2:80 have the same cookie value", 3},
		{"server arity", "sticky_cookie SRV {\n\tserver 10.0.0.1:80\n}", "server takes an upstream address and a cookie value", 2},
		{"flag with arg", "sticky_cookie SRV {\n\tindirect yes\n}", "wrong argument count", 2},
		{"secure junk", "sticky_cookie SRV {\n\tsecure maybe\n}", "secure takes on or off", 2},
		{"samesite none secure off", "sticky_cookie SRV {\n\tsecure off\n\tsamesite none\n}", "samesite none needs the Secure attribute", 3},
		{"unknown fallback", "sticky_cookie SRV {\n\tfallback nosuchpolicy\n}", "module not registered: http.reverse_proxy.selection_policies.nosuchpolicy", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var s StickyCookie
			err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.src))
			if err == nil {
				t.Fatalf("accepted %q", tc.src)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
			if at := fmt.Sprintf("at Testfile:%d", tc.line); !strings.Contains(err.Error(), at) {
				t.Errorf("error %q does not point at line %d", err, tc.line)
			}
		})
	}
}
