package valkey

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	vk "github.com/valkey-io/valkey-go"
)

// Defaults of the Config fields.
const (
	// DefaultPrefix starts every key the store writes.
	DefaultPrefix = "sticky:"
	// DefaultTimeout bounds every call to the server.
	DefaultTimeout = 50 * time.Millisecond
)

// Config is a `valkey` block of a sticky `store`: where the server is and
// how to talk to it. The same JSON object is `"valkey": {...}` under the
// sticky app's `stores`.
type Config struct {
	// Addresses of the server: one for a standalone server, several for
	// the nodes of a cluster (any live ones; the others are discovered).
	// Each is host:port, redis://[user[:password]@]host[:port][/db] or
	// rediss://... for TLS. Default port 6379.
	Addresses []string `json:"addresses,omitempty"`

	// The ACL user to authenticate as. Default: the user of the address
	// URL, else the server's default user.
	Username string `json:"username,omitempty"`

	// The password of the user; placeholders such as
	// {env.VALKEY_PASSWORD} are resolved when the config loads. Default:
	// the password of the address URL, else none.
	Password string `json:"password,omitempty"`

	// Starts every key the store writes, so several fleets or
	// applications can share one server and an ACL user can be limited to
	// it (`~sticky:*`). Default: sticky:
	Prefix string `json:"prefix,omitempty"`

	// The longest any call may take; past it the instance decides locally
	// (its cache, then the fallback policy). Default: 50ms.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// A PEM file of certificate authorities to trust for rediss://
	// addresses instead of the system's (a private CA).
	CAFile string `json:"ca_file,omitempty"`
}

// Resolved returns a copy with placeholders in the addresses, the user,
// the password, the prefix and the CA file replaced by repl (for example
// caddy.NewReplacer(), which knows {env.*}). Unknown placeholders are
// left as they are.
func (c Config) Resolved(repl *caddy.Replacer) Config {
	if repl == nil {
		return c
	}
	out := c
	out.Addresses = make([]string, len(c.Addresses))
	for i, a := range c.Addresses {
		out.Addresses[i] = repl.ReplaceKnown(a, "")
	}
	out.Username = repl.ReplaceKnown(c.Username, "")
	out.Password = repl.ReplaceKnown(c.Password, "")
	out.Prefix = repl.ReplaceKnown(c.Prefix, "")
	out.CAFile = repl.ReplaceKnown(c.CAFile, "")
	return out
}

// Validate checks the config and fills in defaults.
func (c *Config) Validate() error {
	if len(c.Addresses) == 0 {
		return errors.New("valkey: at least one address is required")
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(c.Prefix, " \t\r\n") {
		return fmt.Errorf("valkey: prefix %q contains white space", c.Prefix)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("valkey: negative timeout %v", time.Duration(c.Timeout))
	}
	if c.Timeout == 0 {
		c.Timeout = caddy.Duration(DefaultTimeout)
	}
	_, err := c.clientOption()
	return err
}

func (c *Config) timeout() time.Duration {
	if c.Timeout <= 0 {
		return DefaultTimeout
	}
	return time.Duration(c.Timeout)
}

// clientOption turns the addresses into valkey-go options; tracking and
// the invalidation hook are added by the Store.
func (c *Config) clientOption() (vk.ClientOption, error) {
	var opt vk.ClientOption
	tlsSeen, plainSeen := false, false
	for _, raw := range c.Addresses {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			return opt, errors.New("valkey: empty address")
		}
		if !strings.Contains(raw, "://") {
			if _, _, err := net.SplitHostPort(raw); err != nil {
				raw = net.JoinHostPort(strings.Trim(raw, "[]"), "6379")
			}
			raw = "redis://" + raw
		}
		scheme, _, _ := strings.Cut(raw, "://")
		switch scheme {
		case "redis", "valkey":
			plainSeen = true
		case "rediss", "valkeys":
			tlsSeen = true
		default:
			return opt, fmt.Errorf("valkey: address %q: scheme must be redis:// or rediss://", raw)
		}
		u, err := vk.ParseURL(raw)
		if err != nil {
			return opt, fmt.Errorf("valkey: address %q: %v", raw, err)
		}
		opt.InitAddress = append(opt.InitAddress, u.InitAddress...)
		if u.TLSConfig != nil && opt.TLSConfig == nil {
			opt.TLSConfig = u.TLSConfig
		}
		if opt.Username == "" {
			opt.Username = u.Username
		}
		if opt.Password == "" {
			opt.Password = u.Password
		}
		if u.SelectDB != 0 {
			if len(c.Addresses) > 1 {
				return opt, fmt.Errorf("valkey: address %q: a cluster has no database numbers", raw)
			}
			opt.SelectDB = u.SelectDB
		}
	}
	if tlsSeen && plainSeen {
		return opt, errors.New("valkey: addresses mix redis:// and rediss://; use one scheme for every node")
	}
	if c.Username != "" {
		opt.Username = c.Username
	}
	if c.Password != "" {
		opt.Password = c.Password
	}
	if c.CAFile != "" {
		if opt.TLSConfig == nil {
			return opt, errors.New("valkey: ca_file needs rediss:// addresses")
		}
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return opt, fmt.Errorf("valkey: ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return opt, fmt.Errorf("valkey: ca_file %s holds no PEM certificate", c.CAFile)
		}
		opt.TLSConfig.RootCAs = pool
	}
	if opt.TLSConfig != nil && opt.TLSConfig.MinVersion == 0 {
		opt.TLSConfig.MinVersion = tls.VersionTLS12
	}
	return opt, nil
}
