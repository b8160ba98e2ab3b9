package valkey

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vk "github.com/valkey-io/valkey-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/caddy-sticky/sticky/sticktable"
)

// redisServer is a redis-server process a test started on a free
// loopback port; it is killed when the test ends.
type redisServer struct {
	t    testing.TB
	bin  string
	args []string
	port int
	tls  bool
	log  *os.File
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// redisBinary finds redis-server: a missing one fails the test under
// CI=true and skips it elsewhere.
func redisBinary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not found in PATH (CI=true): install it with: apt-get install -y redis-server")
		}
		t.Skip("redis-server not found in PATH; install it with: apt-get install -y redis-server")
	}
	return bin
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRedis starts a plain redis-server; extra arguments are appended.
func startRedis(t testing.TB, extra ...string) *redisServer {
	t.Helper()
	bin := redisBinary(t)
	port := freePort(t)
	args := []string{"--port", strconv.Itoa(port)}
	return launch(t, bin, port, false, append(args, extra...))
}

func launch(t testing.TB, bin string, port int, tlsOn bool, args []string) *redisServer {
	t.Helper()
	base := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning", "--protected-mode", "no"}
	r := &redisServer{t: t, bin: bin, args: append(base, args...), port: port, tls: tlsOn}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *redisServer) start() {
	r.t.Helper()
	cmd := exec.Command(r.bin, r.args...)
	if r.log == nil {
		f, err := os.CreateTemp(r.t.TempDir(), "redis-*.log")
		if err != nil {
			r.t.Fatal(err)
		}
		r.log = f
		r.t.Cleanup(func() {
			if r.t.Failed() {
				if b, err := os.ReadFile(f.Name()); err == nil {
					r.t.Logf("redis-server output:\n%s", b)
				}
			}
			f.Close()
		})
	}
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	r.mu.Lock()
	r.cmd = cmd
	r.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.hostPort(), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server did not listen on %s: %v", r.hostPort(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *redisServer) hostPort() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

func (r *redisServer) url() string {
	if r.tls {
		return "rediss://" + r.hostPort()
	}
	return "redis://" + r.hostPort()
}

func (r *redisServer) signal(sig syscall.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(sig)
	}
}

// pause and resume freeze the process (SIGSTOP/SIGCONT): its sockets stay
// open and the kernel keeps accepting, but nothing answers.
func (r *redisServer) pause()  { r.signal(syscall.SIGSTOP) }
func (r *redisServer) resume() { r.signal(syscall.SIGCONT) }

func (r *redisServer) kill() {
	r.mu.Lock()
	cmd := r.cmd
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Kill()
	_, _ = cmd.Process.Wait()
}

// restart starts the server again on the same port, empty.
func (r *redisServer) restart() {
	r.kill()
	r.start()
}

// admin is a plain client for test setup (raw SET, ACL, FLUSHALL).
func (r *redisServer) admin(tlsCfg *tls.Config) vk.Client {
	r.t.Helper()
	c, err := vk.NewClient(vk.ClientOption{InitAddress: []string{r.hostPort()}, TLSConfig: tlsCfg,
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

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
