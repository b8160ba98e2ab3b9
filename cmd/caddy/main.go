// Command caddy is Caddy with the standard modules and caddy-sticky, for
// running the examples and tests from a checkout without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddy-sticky/sticky"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
