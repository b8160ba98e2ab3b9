package cfargs

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestFirstChoice(t *testing.T) {
	for _, c := range []struct{ input, set, err string }{
		{"first_choice hash", "", ""},
		{"first_choice round_robin", "", `takes hash, not "round_robin"`},
		{"first_choice", "", "wrong argument count"},
		{"first_choice hash extra", "", "wrong argument count"},
		{"first_choice hash", "hash", "specified twice"},
	} {
		d := caddyfile.NewTestDispenser(c.input)
		d.Next()
		method := c.set
		err := FirstChoice(d, &method)
		switch {
		case c.err == "" && (err != nil || method != "hash"):
			t.Errorf("%q: %v, method %q", c.input, err, method)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: error %v, want one saying %q", c.input, err, c.err)
		}
	}
}
