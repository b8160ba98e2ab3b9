package selection

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-sticky/sticky/internal/cfargs"
)

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy stick_table <table> {
//		on <key>                           # match, then store (default {client_ip})
//		match <key>                        # match only
//		store_request <key>                # store only
//		store_response cookie|header <name>
//		server <address> <name>            # store a name instead of the address
//		first_choice hash [{
//			balance_factor <percent>       # over 100: bounded loads
//		}]
//		strict
//		fallback <policy> [{ ... }]
//	}
//
// Keys are placeholders, e.g. {client_ip}, {header.X-User},
// {cookie.JSESSIONID}, {query.sid}; rules are tried in the order written.
func (p *StickTable) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	table, err := cfargs.PolicyTable(d)
	if err != nil {
		return err
	}
	p.Table = table
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "on", "match", "store_request":
			key, err := cfargs.One(d)
			if err != nil {
				return err
			}
			p.Rules = append(p.Rules, TableRule{Key: key, Match: opt != "store_request", Store: opt != "match"})
		case "store_response":
			args := d.RemainingArgs()
			if len(args) != 2 || (args[0] != "cookie" && args[0] != "header") {
				return d.Errf("store_response takes cookie <name> or header <name>")
			}
			p.StoreResponse = append(p.StoreResponse, ResponseKey{From: args[0], Name: args[1]})
		case "server":
			if err := cfargs.ServerName(d, &p.Servers, normalizeDial); err != nil {
				return err
			}
		case "first_choice":
			if err := cfargs.FirstChoice(d, &p.FirstChoice); err != nil {
				return err
			}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				switch d.Val() {
				case "balance_factor":
					n, err := cfargs.One(d)
					if err != nil {
						return err
					}
					f, err := strconv.Atoi(n)
					if err != nil || f <= 100 {
						return d.Errf("balance_factor takes a whole percentage over 100, not %q", n)
					}
					if p.BalanceFactor != 0 {
						return d.Errf("balance_factor specified twice")
					}
					p.BalanceFactor = f
				default:
					return d.Errf("unrecognized first_choice option '%s'", d.Val())
				}
			}
		case "strict":
			if d.NextArg() {
				return d.ArgErr()
			}
			if p.Strict {
				return d.Errf("strict specified twice")
			}
			p.Strict = true
		case "fallback":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if p.FallbackRaw != nil {
				return d.Errf("fallback specified twice")
			}
			raw, err := loadFallback(d)
			if err != nil {
				return err
			}
			p.FallbackRaw = raw
		default:
			return d.Errf("unrecognized stick_table option '%s'", opt)
		}
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*StickTable)(nil)
