package valkey

import (
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-sticky/sticky/internal/cfargs"
)

// ParseStore parses one `store` entry of the sticky global option, with d
// on the `store` token:
//
//	store <name> {
//		valkey {
//			address <url>...     # repeatable; several addresses = a cluster
//			username <user>
//			password <password>  # placeholders such as {env.VALKEY_PASSWORD} are kept
//			prefix <prefix>
//			timeout <duration>
//			ca_file <pem file>
//		}
//	}
//
// It returns the store's name and its validated config. Placeholders are
// left for the caller to resolve (Config.Resolved) when the config loads.
func ParseStore(d *caddyfile.Dispenser) (string, *Config, error) {
	if !d.NextArg() {
		return "", nil, d.Errf("store needs a name")
	}
	name := d.Val()
	if d.NextArg() {
		return "", nil, d.ArgErr()
	}
	var cfg *Config
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "valkey", "redis":
			if cfg != nil {
				return "", nil, d.Errf("store %s: only one valkey block", name)
			}
			if d.NextArg() {
				return "", nil, d.ArgErr()
			}
			cfg = new(Config)
			if err := cfg.UnmarshalCaddyfile(d); err != nil {
				return "", nil, err
			}
		default:
			return "", nil, d.Errf("store %s: unrecognized store type '%s' (want valkey)", name, d.Val())
		}
	}
	if cfg == nil {
		return "", nil, d.Errf("store %s needs a valkey block", name)
	}
	return name, cfg, nil
}

// UnmarshalCaddyfile parses the body of a `valkey` block, with d on the
// `valkey` token. Errors name the offending line.
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if opt != "address" && seen[opt] {
			return d.Errf("%s specified twice", opt)
		}
		seen[opt] = true
		switch opt {
		case "address", "addresses":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				one := Config{Addresses: []string{a}}
				if _, err := one.clientOption(); err != nil && !strings.Contains(a, "{") {
					return d.Errf("%v", err)
				}
			}
			c.Addresses = append(c.Addresses, args...)
		case "username", "password", "prefix", "ca_file":
			v, err := cfargs.One(d)
			if err != nil {
				return err
			}
			switch opt {
			case "username":
				c.Username = v
			case "password":
				c.Password = v
			case "prefix":
				c.Prefix = v
			case "ca_file":
				c.CAFile = v
			}
		case "timeout":
			v, err := cfargs.One(d)
			if err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("timeout: invalid duration %q", v)
			}
			c.Timeout = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized valkey option '%s'", opt)
		}
	}
	if len(c.Addresses) == 0 {
		return d.Err("valkey needs an address")
	}
	// Validate what is known now; a file or a placeholder is checked when
	// the config loads (Resolved, then Validate).
	probe := *c
	if strings.Contains(strings.Join(probe.Addresses, " "), "{") {
		return nil
	}
	probe.CAFile = ""
	if err := probe.Validate(); err != nil {
		return d.Errf("%v", err)
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*Config)(nil)
