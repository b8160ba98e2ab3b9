package sticky

import (
	"fmt"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/caddy-sticky/sticky/internal/cfargs"
	"github.com/caddy-sticky/sticky/peers"
	"github.com/caddy-sticky/sticky/sticktable"
	"github.com/caddy-sticky/sticky/store/valkey"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("sticky", parseGlobalOption)
}

// parseGlobalOption sets up the sticky app from the global option:
//
//	sticky {
//		table <name> {
//			type ip | ipv6 | string [len <n>] | integer | binary [len <n>]
//			size <n>[k|m]
//			expire <duration>
//			nopurge
//			peers <group>           # or: store <name> (exclusive)
//		}
//		store <name> {
//			valkey {
//				address redis://<host:port>...   # rediss:// for TLS; several = a cluster
//				username <user>
//				password <password>
//				prefix <key prefix>
//				timeout <duration>
//				ca_file <pem file>
//			}
//		}
//		peers <group> {
//			name <node name>
//			bind <host:port>
//			advertise <host:port>
//			join <host:port>...
//			secret <base64 key>     # repeatable: extra ones are old keys, still accepted
//		}
//		persist [<file>]
//	}
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	app := new(App)
	if existing != nil {
		if prev, ok := existing.(httpcaddyfile.App); ok {
			if err := jsonUnmarshal(prev.Value, app); err != nil {
				return nil, err
			}
		}
	}
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "sticky", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile parses the sticky global option block.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	// A table naming a store that the block does not define fails with
	// the table's line, once the whole block is read.
	storeRefs := map[string]error{}
	for d.Next() {
		if d.NextArg() {
			return d.ArgErr()
		}
		for d.NextBlock(0) {
			switch d.Val() {
			case "table":
				if err := a.parseTable(d, storeRefs); err != nil {
					return err
				}
			case "store":
				line := d.Line()
				name, cfg, err := valkey.ParseStore(d)
				if err != nil {
					return err
				}
				if a.Stores == nil {
					a.Stores = map[string]*StoreConfig{}
				}
				if _, dup := a.Stores[name]; dup {
					return fmt.Errorf("store %s defined twice, at %s:%d", name, d.File(), line)
				}
				a.Stores[name] = &StoreConfig{Valkey: cfg}
			case "peers":
				if !d.NextArg() {
					return d.Errf("peers needs a group name")
				}
				name := d.Val()
				if a.Peers == nil {
					a.Peers = map[string]*peers.Config{}
				}
				if _, dup := a.Peers[name]; dup {
					return d.Errf("peers %s defined twice", name)
				}
				cfg := new(peers.Config)
				if err := cfg.UnmarshalCaddyfile(d); err != nil {
					return err
				}
				a.Peers[name] = cfg
			case "persist":
				if a.Persist != nil {
					return d.Errf("persist specified twice")
				}
				a.Persist = new(PersistConfig)
				if d.NextArg() {
					a.Persist.Path = d.Val()
				}
				if d.NextArg() {
					return d.ArgErr()
				}
			default:
				return d.Errf("unrecognized sticky option '%s'", d.Val())
			}
		}
	}
	for _, name := range sortedKeys(storeRefs) {
		if _, ok := a.Stores[name]; !ok {
			return storeRefs[name]
		}
	}
	return nil
}

func (a *App) parseTable(d *caddyfile.Dispenser, storeRefs map[string]error) error {
	if !d.NextArg() {
		return d.Errf("table needs a name")
	}
	name := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if a.Tables == nil {
		a.Tables = map[string]*TableConfig{}
	}
	if _, dup := a.Tables[name]; dup {
		return d.Errf("table %s defined twice", name)
	}
	tc := new(TableConfig)
	a.Tables[name] = tc
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if seen[opt] {
			return d.Errf("%s specified twice", opt)
		}
		seen[opt] = true
		switch opt {
		case "type":
			args := d.RemainingArgs()
			if len(args) != 1 && len(args) != 3 {
				return d.Errf("type takes a key type, optionally followed by `len <n>`")
			}
			kt, err := sticktable.ParseKeyType(args[0])
			if err != nil {
				return d.Errf("%v", err)
			}
			tc.Type = args[0]
			if len(args) == 3 {
				if args[1] != "len" || !kt.HasLen() {
					return d.Errf("only string and binary keys take `len <n>`")
				}
				n, err := strconv.Atoi(args[2])
				if err != nil || n <= 0 || n > sticktable.MaxLen {
					return d.Errf("len must be a whole number from 1 to %d, not %q", sticktable.MaxLen, args[2])
				}
				tc.Len = n
			}
		case "size":
			v, err := cfargs.One(d)
			if err != nil {
				return err
			}
			n, err := sticktable.ParseSize(v)
			if err != nil {
				return d.Errf("size: %v", err)
			}
			tc.Size = n
		case "expire":
			v, err := cfargs.One(d)
			if err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("expire: invalid duration %q", v)
			}
			tc.Expire = caddy.Duration(dur)
		case "nopurge":
			if d.NextArg() {
				return d.ArgErr()
			}
			tc.NoPurge = true
		case "peers":
			v, err := cfargs.One(d)
			if err != nil {
				return err
			}
			tc.Peers = v
			if tc.Store != "" {
				return d.Errf("table %s: peers and store are exclusive (the store already shares the table)", name)
			}
		case "store":
			v, err := cfargs.One(d)
			if err != nil {
				return err
			}
			tc.Store = v
			if tc.Peers != "" {
				return d.Errf("table %s: peers and store are exclusive (the store already shares the table)", name)
			}
			if _, seen := storeRefs[v]; !seen {
				storeRefs[v] = d.Errf("table %s: no store named %q in the sticky option", name, v)
			}
		default:
			return d.Errf("unrecognized table option '%s'", opt)
		}
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*App)(nil)
