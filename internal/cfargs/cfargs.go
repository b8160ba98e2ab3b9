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

// PolicyTable reads the line `stick_table <table>` that opens a stick_table
// policy's block and returns the table's name.
func PolicyTable(d *caddyfile.Dispenser) (string, error) {
	d.Next() // policy name
	if !d.NextArg() {
		return "", d.Errf("stick_table needs the name of a table of the sticky app")
	}
	name := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return name, nil
}

// ServerName reads `server <address> <name>` into names (address -> name,
// created if nil), refusing a second line for one address or one name for
// two addresses. normalize, if not nil, canonicalises the address first.
func ServerName(d *caddyfile.Dispenser, names *map[string]string, normalize func(string) string) error {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return d.Errf("server takes an upstream address and a name")
	}
	addr, name := args[0], args[1]
	if normalize != nil {
		addr = normalize(addr)
	}
	if _, dup := (*names)[addr]; dup {
		return d.Errf("server %s specified twice", addr)
	}
	for other, n := range *names {
		if n == name {
			return d.Errf("servers %s and %s have the same name %q", other, addr, name)
		}
	}
	if *names == nil {
		*names = map[string]string{}
	}
	(*names)[addr] = name
	return nil
}

// FirstChoice reads `first_choice hash` into *method, refusing any other
// method and a second line (the stick_table policies of HTTP and layer 4).
func FirstChoice(d *caddyfile.Dispenser, method *string) error {
	v, err := One(d)
	if err != nil {
		return err
	}
	if v != "hash" {
		return d.Errf("first_choice takes hash, not %q", v)
	}
	if *method != "" {
		return d.Errf("first_choice specified twice")
	}
	*method = v
	return nil
}
