package selection

import (
	"encoding/json"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-sticky/sticky/internal/cfargs"
)

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy sticky_cookie [<name>] [<flag>...] {
//		insert | rewrite | prefix
//		indirect
//		nocache
//		postonly
//		preserve
//		httponly
//		secure [on|off]
//		samesite strict|lax|none
//		domain <domain>
//		path <path>
//		max_age <duration>
//		maxidle <duration>
//		maxlife <duration>
//		dynamic_key <key>
//		server <address> <value>
//		attr <attribute>
//		header <name>
//		strict
//		fallback <policy> [{ ... }]
//	}
//
// Flags (the options without arguments) may also follow the name on the
// first line, as in HAProxy: `lb_policy sticky_cookie SRV insert indirect nocache`.
func (s *StickyCookie) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // policy name
	p := cookieParser{s: s, seen: map[string]bool{}}
	if d.NextArg() {
		s.Name = d.Val()
		if !validCookieName(s.Name) {
			return d.Errf("%q is not a valid cookie name", s.Name)
		}
		for d.NextArg() {
			if err := p.flag(d, d.Val()); err != nil {
				return err
			}
		}
	}
	for d.NextBlock(0) {
		if err := p.option(d); err != nil {
			return err
		}
	}
	return nil
}

// cookieParser checks HAProxy's incompatibilities as options arrive, so an
// error points at the line of the option that conflicts.
type cookieParser struct {
	s    *StickyCookie
	seen map[string]bool
}

var cookieFlags = map[string]bool{
	"insert": true, "rewrite": true, "prefix": true, "indirect": true, "nocache": true,
	"postonly": true, "preserve": true, "httponly": true, "secure": true, "strict": true,
}

func (p *cookieParser) flag(d *caddyfile.Dispenser, name string) error {
	if !cookieFlags[name] {
		return d.Errf("unrecognized sticky_cookie flag '%s'", name)
	}
	if p.seen[name] {
		return d.Errf("%s specified twice", name)
	}
	s := p.s
	switch name {
	case ModeInsert, ModeRewrite, ModePrefix:
		if s.Mode != "" {
			return d.Errf("%s is incompatible with %s: a cookie has one mode", name, s.Mode)
		}
		s.Mode = name
	case "indirect":
		s.Indirect = true
	case "nocache":
		s.NoCache = true
	case "postonly":
		s.PostOnly = true
	case "preserve":
		s.Preserve = true
	case "httponly":
		s.HTTPOnly = true
	case "strict":
		s.Strict = true
	case "secure":
		t := true
		s.Secure = &t
	}
	p.seen[name] = true
	return p.conflicts(d)
}

// conflicts reports HAProxy's forbidden combinations among what was seen.
func (p *cookieParser) conflicts(d *caddyfile.Dispenser) error {
	s := p.s
	if s.Mode == ModeRewrite && s.Indirect {
		return d.Errf("%s", "rewrite is incompatible with indirect")
	}
	if s.SameSite == "none" && s.Secure != nil && !*s.Secure {
		return d.Errf("%s", "samesite none needs the Secure attribute; remove `secure off`")
	}
	if p.seen["header"] {
		if s.Mode == ModeRewrite || s.Mode == ModePrefix {
			return d.Errf("header works in insert mode only, not %s", s.Mode)
		}
		for _, opt := range []string{"domain", "path", "samesite", "secure", "httponly", "max_age", "attr", "preserve"} {
			if p.seen[opt] {
				return d.Errf("%s only applies to a cookie, not with header %s", opt, s.Header)
			}
		}
	}
	if s.Mode == ModeRewrite || s.Mode == ModePrefix {
		for _, opt := range []string{"postonly", "maxidle", "maxlife"} {
			if p.seen[opt] {
				return d.Errf("%s only works in insert mode, not %s", opt, s.Mode)
			}
		}
	}
	return nil
}

func (p *cookieParser) option(d *caddyfile.Dispenser) error {
	s := p.s
	name := d.Val()
	if cookieFlags[name] && name != "secure" {
		if d.NextArg() {
			return d.ArgErr()
		}
		return p.flag(d, name)
	}
	if p.seen[name] && name != "server" && name != "attr" {
		return d.Errf("%s specified twice", name)
	}
	switch name {
	case "secure":
		if !d.NextArg() {
			return p.flag(d, name)
		}
		switch d.Val() {
		case "on", "true":
			t := true
			s.Secure = &t
		case "off", "false":
			f := false
			s.Secure = &f
		default:
			return d.Errf("secure takes on or off, not %q", d.Val())
		}
	case "samesite":
		v, err := cfargs.One(d)
		if err != nil {
			return err
		}
		switch strings.ToLower(v) {
		case "strict", "lax", "none":
			s.SameSite = strings.ToLower(v)
		default:
			return d.Errf("samesite must be strict, lax or none, not %q", v)
		}
	case "domain", "path":
		v, err := cfargs.One(d)
		if err != nil {
			return err
		}
		if !validAttrValue(v) {
			return d.Errf("%s %q contains characters a cookie attribute cannot hold", name, v)
		}
		if name == "domain" {
			s.Domain = v
		} else {
			s.Path = v
		}
	case "max_age", "maxidle", "maxlife":
		v, err := cfargs.One(d)
		if err != nil {
			return err
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil {
			return d.Errf("%s: invalid duration %q: %v", name, v, err)
		}
		if dur <= 0 {
			return d.Errf("%s must be positive, not %s", name, v)
		}
		switch name {
		case "max_age":
			s.MaxAge = caddy.Duration(dur)
		case "maxidle":
			s.MaxIdle = caddy.Duration(dur)
		default:
			s.MaxLife = caddy.Duration(dur)
		}
	case "header":
		v, err := cfargs.One(d)
		if err != nil {
			return err
		}
		if !validHeaderName(v) {
			return d.Errf("header %q is not a valid header name", v)
		}
		s.Header = v
	case "dynamic_key":
		v, err := cfargs.One(d)
		if err != nil {
			return err
		}
		s.DynamicKey = v
	case "server":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.Errf("%s", "server takes an upstream address and a cookie value")
		}
		if !validCookieValue(args[1]) {
			return d.Errf("%q is not a valid cookie value", args[1])
		}
		if s.Servers == nil {
			s.Servers = map[string]string{}
		}
		addr := normalizeDial(args[0])
		if _, dup := s.Servers[addr]; dup {
			return d.Errf("server %s specified twice", addr)
		}
		for other, v := range s.Servers {
			if v == args[1] {
				return d.Errf("servers %s and %s have the same cookie value %q", other, addr, v)
			}
		}
		s.Servers[addr] = args[1]
	case "attr":
		v, err := cfargs.One(d)
		if err != nil {
			return err
		}
		if !validAttrValue(v) {
			return d.Errf("attr %q contains characters a cookie attribute cannot hold", v)
		}
		s.Attrs = append(s.Attrs, v)
	case "fallback":
		if !d.NextArg() {
			return d.ArgErr()
		}
		raw, err := loadFallback(d)
		if err != nil {
			return err
		}
		s.FallbackRaw = raw
	default:
		return d.Errf("unrecognized sticky_cookie option '%s'", name)
	}
	p.seen[name] = true
	return p.conflicts(d)
}

// loadFallback parses `fallback <policy> [args] [{...}]` into the policy's
// JSON, the way reverse_proxy parses lb_policy.
func loadFallback(d *caddyfile.Dispenser) (json.RawMessage, error) {
	name := d.Val()
	modID := "http.reverse_proxy.selection_policies." + name
	unm, err := caddyfile.UnmarshalModule(d, modID)
	if err != nil {
		return nil, err
	}
	sel, ok := unm.(reverseproxy.Selector)
	if !ok {
		return nil, d.Errf("module %s (%T) is not a reverse_proxy selection policy", modID, unm)
	}
	return caddyconfig.JSONModuleObject(sel, "policy", name, nil), nil
}

var _ caddyfile.Unmarshaler = (*StickyCookie)(nil)
