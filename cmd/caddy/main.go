// Command caddy is Caddy with the standard modules, caddy-l4's modules and
// caddy-sticky (including its layer-4 policy), for running the examples and
// tests from a checkout without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-sticky/sticky"
	_ "github.com/caddy-sticky/sticky/layer4"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/mholt/caddy-l4"
)

func main() {
	caddycmd.Main()
}
