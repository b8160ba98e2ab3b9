// Package integration runs a real Caddy, in this process, in front of real
// backends on 127.0.0.1, and checks persistence end to end over sockets.
package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-sticky/sticky"
)

// backend is a real HTTP server on 127.0.0.1 that answers with its name and
// remembers the Cookie headers it was sent.
type backend struct {
	Name string
	Addr string

	ln       net.Listener
	srv      *http.Server
	hits     atomic.Int64
	mu       sync.Mutex
	cookies  []string
	handler  func(w http.ResponseWriter, r *http.Request)
	stopOnce sync.Once
}

func startBackend(t testing.TB, name string, handler func(w http.ResponseWriter, r *http.Request)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{Name: name, Addr: ln.Addr().String(), ln: ln, handler: handler}
	b.srv = &http.Server{Handler: http.HandlerFunc(b.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(b.Stop)
	return b
}

func startBackends(t testing.TB, n int) []*backend {
	bs := make([]*backend, n)
	for i := range bs {
		bs[i] = startBackend(t, fmt.Sprintf("web%d", i+1), nil)
	}
	return bs
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	b.mu.Lock()
	b.cookies = append(b.cookies, strings.Join(r.Header.Values("Cookie"), "; "))
	b.mu.Unlock()
	w.Header().Set("X-Backend", b.Name)
	if b.handler != nil {
		b.handler(w, r)
		return
	}
	_, _ = io.WriteString(w, b.Name)
}

// Stop kills the backend: its port refuses connections from now on.
func (b *backend) Stop() {
	b.stopOnce.Do(func() { _ = b.srv.Close() })
}

func (b *backend) seenCookies() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.cookies...)
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort returns a port free on all interfaces (Caddy binds ":port").
// It picks below the kernel's ephemeral range (32768 and up), where the
// source ports of our own outgoing connections cannot take it between this
// check and Caddy's bind, and never returns a port twice in one process.
// The load harness, whose smoke test may run at the same time, picks from
// 26000 up, so the two never compete.
func freePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 1000; i++ {
		p := 14000 + rand.IntN(12000)
		if portsUsed[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		portsUsed[p] = true
		return p
	}
	t.Fatal("no free port found")
	return 0
}

// adapt turns a Caddyfile into JSON, failing the test on errors.
func adapt(t testing.TB, caddyfile string) []byte {
	t.Helper()
	cfg, err := adaptErr(caddyfile)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfile)
	}
	return cfg
}

func adaptErr(caddyfile string) ([]byte, error) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	cfg, warnings, err := adapter.Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		if strings.Contains(w.Message, "not formatted") {
			continue
		}
		return nil, fmt.Errorf("warning: %s", w.String())
	}
	return cfg, nil
}

// loadCaddy runs the config in this process's Caddy and stops Caddy when the
// test ends. Admin is disabled unless the config enables it.
func loadCaddy(t testing.TB, cfg []byte) {
	t.Helper()
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatalf("loading config: %v\n%s", err, cfg)
	}
	t.Cleanup(func() { _ = caddy.Stop() })
}

// siteConfig builds a Caddyfile with a global block that keeps Caddy off
// the network (no admin, no HTTPS, no storage outside the test).
func siteConfig(t testing.TB, port int, body string) string {
	return fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	storage file_system %s
	log {
		level ERROR
	}
}

http://127.0.0.1:%d {
%s
}
`, t.TempDir(), port, body)
}

// upstreamList renders the backends' addresses for a reverse_proxy line.
func upstreamList(bs []*backend) string {
	addrs := make([]string, len(bs))
	for i, b := range bs {
		addrs[i] = b.Addr
	}
	return strings.Join(addrs, " ")
}

// client is one browser: a cookie jar and a connection pool of its own.
type client struct {
	base string
	http *http.Client
}

func newClient(t testing.TB, port int) *client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &client{
		base: fmt.Sprintf("http://127.0.0.1:%d", port),
		http: &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: false}},
	}
}

// response is what a test needs from one exchange.
type response struct {
	Status     int
	Body       string
	Header     http.Header
	SetCookies []string
}

func (c *client) do(t testing.TB, method, path string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := c.http.Do(req)
	if err != nil && method == http.MethodGet {
		// a keep-alive connection closed by a config reload: retry once,
		// as a browser does for an idempotent request
		res, err = c.http.Do(req)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Body: string(body), Header: res.Header, SetCookies: res.Header.Values("Set-Cookie")}
}

func (c *client) get(t testing.TB, path string) response {
	return c.do(t, http.MethodGet, path, nil)
}

// raw sends one request with exactly the given Cookie header and no jar.
func raw(t testing.TB, port int, method, path, cookie string) response {
	t.Helper()
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Body: string(body), Header: res.Header, SetCookies: res.Header.Values("Set-Cookie")}
}

// cookieValue extracts the value of name from Set-Cookie lines.
func cookieValue(setCookies []string, name string) (string, bool) {
	for _, line := range setCookies {
		c, err := http.ParseSetCookie(line)
		if err == nil && c.Name == name {
			return c.Value, true
		}
	}
	return "", false
}

func countCookie(setCookies []string, name string) int {
	n := 0
	for _, line := range setCookies {
		if c, err := http.ParseSetCookie(line); err == nil && c.Name == name {
			n++
		}
	}
	return n
}

// postJSON sends a JSON body to Caddy's admin API.
func postJSON(t testing.TB, url string, body []byte, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadAgain replaces the running config, as a reload does.
func loadAgain(cfg []byte) error {
	return caddy.Load(cfg, true)
}

// rawRequest writes one HTTP/1.1 request byte for byte, for headers no Go
// client would send (control characters, huge cookies).
func rawRequest(t testing.TB, port int, cookie string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: %s\r\nConnection: close\r\n\r\n", cookie)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Body: string(body), Header: res.Header, SetCookies: res.Header.Values("Set-Cookie")}
}

// stopCaddy stops the running config, as a process exit does.
func stopCaddy() error {
	return caddy.Stop()
}
