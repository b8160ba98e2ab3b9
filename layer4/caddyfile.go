package layer4

import (
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/mholt/caddy-l4/modules/l4proxy"

	"github.com/caddy-sticky/sticky/internal/cfargs"
)

// UnmarshalCaddyfile sets up the policy from caddy-l4 Caddyfile tokens.
// Syntax:
//
//	lb_policy stick_table <table> {
//		fallback <policy> [<args...>] [{ ... }]   # default random
//		first_choice hash
//		server <address> <name>                   # store a name instead of the address
//	}
func (p *StickTable) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	table, err := cfargs.PolicyTable(d)
	if err != nil {
		return err
	}
	p.Table = table
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "server":
			if err := cfargs.ServerName(d, &p.Servers, nil); err != nil {
				return err
			}
		case "first_choice":
			if err := cfargs.FirstChoice(d, &p.FirstChoice); err != nil {
				return err
			}
		case "fallback":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if p.FallbackRaw != nil {
				return d.Errf("fallback specified twice")
			}
			name := d.Val()
			modID := "layer4.proxy.selection_policies." + name
			unm, err := caddyfile.UnmarshalModule(d, modID)
			if err != nil {
				return err
			}
			sel, ok := unm.(l4proxy.Selector)
			if !ok {
				return d.Errf("module %s (%T) is not a layer4 proxy selection policy", modID, unm)
			}
			p.FallbackRaw = caddyconfig.JSONModuleObject(sel, "policy", name, nil)
		default:
			return d.Errf("unrecognized stick_table option '%s'", opt)
		}
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*StickTable)(nil)
