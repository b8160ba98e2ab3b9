package sticky

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// The root package must not pull in caddy-l4: a Caddy built with the plugin
// alone registers no layer-4 module (the layer4 package does, when imported).
func TestRootRegistersNoLayer4Module(t *testing.T) {
	if _, err := caddy.GetModule("layer4.proxy.selection_policies.stick_table"); err == nil {
		t.Fatal("the root package registers the layer-4 stick_table policy; only github.com/caddy-sticky/sticky/layer4 may")
	}
	if _, err := caddy.GetModule("layer4"); err == nil {
		t.Fatal("the root package links caddy-l4's layer4 app")
	}
}
