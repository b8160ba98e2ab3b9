package valkey

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	vk "github.com/valkey-io/valkey-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/caddy-sticky/sticky/internal/redistest"
	"github.com/caddy-sticky/sticky/sticktable"
)

// redisServer is a redis-server process the test started.
type redisServer struct {
	*redistest.Server
	t testing.TB
}

func redisBinary(t testing.TB) string { return redistest.Binary(t) }

func freePort(t testing.TB) int { return redistest.FreePort(t) }

func startRedis(t testing.TB, extra ...string) *redisServer {
	t.Helper()
	return &redisServer{Server: redistest.Start(t, extra...), t: t}
}

func launch(t testing.TB, _ string, port int, tlsOn bool, args []string) *redisServer {
	t.Helper()
	return &redisServer{Server: redistest.Launch(t, port, tlsOn, args), t: t}
}

func (r *redisServer) url() string      { return r.URL() }
func (r *redisServer) hostPort() string { return r.HostPort() }
func (r *redisServer) pause()           { r.Pause() }
func (r *redisServer) resume()          { r.Resume() }
func (r *redisServer) kill()            { r.Kill() }
func (r *redisServer) restart()         { r.Restart() }

// admin is a plain client for test setup (raw SET, ACL, FLUSHALL).
func (r *redisServer) admin(tlsCfg *tls.Config) vk.Client {
	r.t.Helper()
	c, err := vk.NewClient(vk.ClientOption{InitAddress: []string{r.HostPort()}, TLSConfig: tlsCfg,
		DisableCache: true, ForceSingleClient: true})
	if err != nil {
		r.t.Fatalf("admin client: %v", err)
	}
	r.t.Cleanup(c.Close)
	return c
}

func (r *redisServer) do(c vk.Client, args ...string) vk.ValkeyResult {
	return c.Do(context.Background(), c.B().Arbitrary(args[0]).Args(args[1:]...).Build())
}

// instance is one Caddy instance as the store sees it: a store client and
// a local table bound to it.
type instance struct {
	store *Store
	table *Table
	local *sticktable.Table
}

type instanceOpts struct {
	cfg    Config
	expire time.Duration
	typ    sticktable.KeyType
	logger *zap.Logger
}

func newInstance(t testing.TB, r *redisServer, node string, o instanceOpts) *instance {
	t.Helper()
	cfg := o.cfg
	if len(cfg.Addresses) == 0 {
		cfg.Addresses = []string{r.url()}
	}
	if cfg.Timeout == 0 {
		// Generous, so a loaded machine (-race, parallel packages) does
		// not turn functional tests into degraded-mode ones; the outage
		// tests set 50ms themselves.
		cfg.Timeout = caddy.Duration(time.Second)
	}
	if o.expire == 0 {
		o.expire = time.Minute
	}
	logger := o.logger
	if logger == nil {
		logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(node)
	}
	s, err := New("shared", cfg, Options{Logger: logger, Node: node, ProbeInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	local, err := sticktable.NewWithOptions(sticktable.Config{Type: o.typ, Size: 1 << 16, Expire: o.expire}, sticktable.Options{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(local.Close)
	tb, err := s.Bind("sessions", local)
	if err != nil {
		t.Fatal(err)
	}
	return &instance{store: s, table: tb, local: local}
}

func (in *instance) key(t testing.TB, text string) sticktable.Key {
	t.Helper()
	k, err := in.local.ParseKey(text)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// localServer is what the local table answers for key ("" when absent).
func (in *instance) localServer(k sticktable.Key) string {
	e, ok := in.local.GetKey(k)
	if !ok {
		return ""
	}
	return e.Server
}

// eventually polls cond every millisecond for up to d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return time.Since(start)
}

func bg() context.Context { return context.Background() }

func fmtKey(i int) string { return fmt.Sprintf("user-%06d", i) }
