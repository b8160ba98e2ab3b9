package peers

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// DefaultPort is memberlist's customary port, used when Bind gives none.
const DefaultPort = 7946

// Config configures one peer group (a `peers <name>` block).
type Config struct {
	// Name is this node's name in the group; it must be unique among the
	// members and is stamped into the versions of this node's writes.
	// Default: the host name.
	Name string `json:"name,omitempty"`

	// Bind is the host:port this node listens on, for both TCP and UDP.
	// Default: 0.0.0.0:7946.
	Bind string `json:"bind,omitempty"`

	// Advertise is the host:port other nodes dial to reach this node,
	// when it differs from Bind (NAT, containers, a wildcard Bind).
	// Default: the bind address, or a private address of this host when
	// binding to a wildcard.
	Advertise string `json:"advertise,omitempty"`

	// Join lists host:port addresses (DNS names allowed) of existing
	// members. Any one that answers is enough; until one does, joining is
	// retried in the background, so nodes may start in any order.
	Join []string `json:"join,omitempty"`

	// Secrets are base64-encoded keys of 16, 24 or 32 bytes (AES-128,
	// -192, -256) that encrypt and authenticate all traffic. The first is
	// used to send; all are accepted on receipt, so keys can be rotated
	// by adding the new key everywhere, then moving it first, then
	// removing the old one. Required: a group without a secret is refused,
	// and unencrypted traffic is never accepted. Placeholders such as
	// {env.STICKY_PEERS_SECRET} are replaced when the group starts.
	Secrets []string `json:"secrets"`
}

// UnmarshalCaddyfile parses the body of a `peers <name> { ... }` block.
// The dispenser must be on the last token before the opening brace (the
// group name), as it is after the caller has read `peers <name>`:
//
//	name node1
//	bind 0.0.0.0:7946
//	advertise 10.0.0.1:7946
//	join 10.0.0.2:7946 10.0.0.3:7946
//	secret {env.STICKY_PEERS_SECRET}
//	secret <old key, still accepted>
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if opt != "secret" && opt != "join" && seen[opt] {
			return d.Errf("%s specified twice", opt)
		}
		seen[opt] = true
		args := d.RemainingArgs()
		switch opt {
		case "name", "bind", "advertise":
			if len(args) != 1 {
				return d.Errf("%s takes exactly one argument", opt)
			}
			switch opt {
			case "name":
				c.Name = args[0]
			case "bind":
				if _, _, err := splitHostPort(args[0]); err != nil {
					return d.Errf("bind: %v", err)
				}
				c.Bind = args[0]
			case "advertise":
				if _, _, err := splitHostPort(args[0]); err != nil {
					return d.Errf("advertise: %v", err)
				}
				c.Advertise = args[0]
			}
		case "join":
			if len(args) == 0 {
				return d.Errf("join needs at least one host:port")
			}
			c.Join = append(c.Join, args...)
		case "secret":
			if len(args) != 1 {
				return d.Errf("secret takes exactly one argument")
			}
			// Runtime placeholders are checked when the group starts.
			if !strings.Contains(args[0], "{") {
				if _, err := decodeSecret(args[0]); err != nil {
					return d.Errf("secret: %v", err)
				}
			}
			c.Secrets = append(c.Secrets, args[0])
		default:
			return d.Errf("unrecognized peers option '%s'", opt)
		}
	}
	return nil
}

// decodeSecret decodes one base64 key (standard or URL alphabet, padded
// or not) and checks it is a valid AES key length.
func decodeSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	var (
		key []byte
		err error
	)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil {
		return nil, errors.New("not valid base64")
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("key is %d bytes, want 16, 24 or 32", len(key))
}

// keys decodes the secrets, replacing placeholders first.
func (c *Config) keys() ([][]byte, error) {
	if len(c.Secrets) == 0 {
		return nil, errors.New("peers: a secret is required (replication is never unencrypted)")
	}
	repl := caddy.NewReplacer()
	out := make([][]byte, 0, len(c.Secrets))
	for i, s := range c.Secrets {
		k, err := decodeSecret(repl.ReplaceAll(s, ""))
		if err != nil {
			return nil, fmt.Errorf("peers: secret %d: %v", i+1, err)
		}
		out = append(out, k)
	}
	return out, nil
}

// withDefaults fills in Name and Bind.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return c, fmt.Errorf("peers: no node name and no host name: %v", err)
		}
		c.Name = h
	}
	if len(c.Name) > maxNameLen {
		return c, fmt.Errorf("peers: node name longer than %d bytes", maxNameLen)
	}
	if c.Bind == "" {
		c.Bind = "0.0.0.0:" + strconv.Itoa(DefaultPort)
	}
	return c, nil
}

// splitHostPort splits host:port, defaulting the port to DefaultPort when
// the text has none.
func splitHostPort(s string) (string, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return strings.Trim(s, "[]"), DefaultPort, nil
		}
		return "", 0, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("bad port %q", port)
	}
	return host, int(p), nil
}

// Validate reports what NewGroup or SetSecrets would refuse in c, without
// opening anything: a config reload checks every group before it changes
// any.
func (c Config) Validate() error {
	c, err := c.withDefaults()
	if err != nil {
		return err
	}
	if _, err := c.keys(); err != nil {
		return err
	}
	if _, _, err := splitHostPort(c.Bind); err != nil {
		return fmt.Errorf("peers: bind %q: %v", c.Bind, err)
	}
	if c.Advertise != "" {
		if _, _, err := splitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("peers: advertise %q: %v", c.Advertise, err)
		}
	}
	return nil
}
