// Package cfargs holds Caddyfile argument helpers shared by the app's and
// the policies' parsers.
package cfargs

import "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

// One reads exactly one argument for the current directive.
func One(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}
