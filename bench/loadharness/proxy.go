package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// identity says what makes two requests "the same user" for a scenario,
// and so what the load generator has to keep per user.
type identity int

const (
	byCookie identity = iota // a cookie jar per user
	byHeader                 // an X-User header per user
	byIP                     // the client address: one per connection
	byNone                   // not sticky: tracked per user only for information
)

func (i identity) String() string {
	return [...]string{"cookie jar", "X-User header", "client address", "none"}[i]
}

// scenario is one load-balancing configuration of one proxy.
type scenario struct {
	proxy  string // "caddy" or "haproxy"
	name   string // what the report calls it
	id     identity
	sticky bool // whether a user seeing two servers is a violation
	base   bool // round_robin: the ratios of its proxy's other configurations divide by it
	layer4 bool // TCP through caddy-l4 or HAProxy mode tcp: connections, not requests
	store  bool // the table lives in a Valkey/Redis store (-store)

	// Caddy: the lb_policy line (with its block) and the global sticky block.
	caddyPolicy string
	caddyTables string

	// HAProxy: backend lines before the servers, and whether servers get a
	// `cookie sN` value.
	haBackend string
	haCookie  bool
}

// caddyScenarios mirror HAProxy's usual setups: no persistence, Caddy's own
// persistence policies, and this plugin's two policies. Every sticky policy
// falls back to round_robin so the choice for new users costs the same
// everywhere and the ratios compare persistence work only.
func caddyScenarios() []scenario {
	scs := []scenario{
		{proxy: "caddy", name: "round_robin", id: byNone, base: true, caddyPolicy: "round_robin"},
		{proxy: "caddy", name: "cookie (built-in)", id: byCookie, sticky: true,
			caddyPolicy: "cookie lb {\n\t\t\tfallback round_robin\n\t\t}"},
		{proxy: "caddy", name: "ip_hash", id: byIP, sticky: true, caddyPolicy: "ip_hash"},
		{proxy: "caddy", name: "sticky_cookie", id: byCookie, sticky: true,
			caddyPolicy: "sticky_cookie SRV {\n\t\t\tinsert\n\t\t\tindirect\n\t\t\tnocache\n\t\t\tfallback round_robin\n\t\t}"},
		{proxy: "caddy", name: "stick_table {client_ip}", id: byIP, sticky: true,
			caddyTables: "table ips {\n\t\t\ttype ip\n\t\t\tsize 1m\n\t\t\texpire 30m\n\t\t}",
			caddyPolicy: "stick_table ips {\n\t\t\ton {client_ip}\n\t\t\tfallback round_robin\n\t\t}"},
		{proxy: "caddy", name: "stick_table {header.X-User}", id: byHeader, sticky: true,
			caddyTables: "table users {\n\t\t\ttype string len 32\n\t\t\tsize 1m\n\t\t\texpire 30m\n\t\t}",
			caddyPolicy: "stick_table users {\n\t\t\ton {header.X-User}\n\t\t\tfallback round_robin\n\t\t}"},
	}
	if storeURL != "" {
		scs = append(scs, scenario{proxy: "caddy", name: "stick_table {header.X-User} on a store", id: byHeader, sticky: true, store: true,
			caddyTables: "store shared {\n\t\t\tvalkey {\n\t\t\t\taddress " + storeURL + "\n\t\t\t\ttimeout " + storeTimeout + "\n\t\t\t}\n\t\t}\n\t\ttable users {\n\t\t\ttype string len 32\n\t\t\tsize 1m\n\t\t\texpire 30m\n\t\t\tstore shared\n\t\t}",
			caddyPolicy: "stick_table users {\n\t\t\ton {header.X-User}\n\t\t\tfallback round_robin\n\t\t}"})
	}
	return scs
}

// storeURL, when set (-store), adds a scenario with the table kept in the
// Valkey/Redis server there, with storeTimeout per call (-store-timeout).
var storeURL, storeTimeout = "", "50ms"

// haproxyScenarios are the same setups written the way HAProxy users write
// them; `balance source` is HAProxy's ip_hash.
func haproxyScenarios() []scenario {
	return []scenario{
		{proxy: "haproxy", name: "round_robin", id: byNone, base: true, haBackend: "balance roundrobin"},
		{proxy: "haproxy", name: "cookie insert indirect nocache", id: byCookie, sticky: true, haCookie: true,
			haBackend: "balance roundrobin\n\tcookie SRV insert indirect nocache"},
		{proxy: "haproxy", name: "balance source", id: byIP, sticky: true, haBackend: "balance source"},
		{proxy: "haproxy", name: "stick on src", id: byIP, sticky: true,
			haBackend: "balance roundrobin\n\tstick-table type ip size 1m expire 30m\n\tstick on src"},
		{proxy: "haproxy", name: "stick on hdr(X-User)", id: byHeader, sticky: true,
			haBackend: "balance roundrobin\n\tstick-table type string len 32 size 1m expire 30m\n\tstick on hdr(X-User)"},
	}
}

// failover settings: retry a failed attempt on another server and take a
// server out after one failure, so a dead backend costs its users a
// redirect, not an error.
const (
	caddyFailover   = "lb_retries 2\n\t\tfail_duration 30s\n\t\tmax_fails 1"
	haproxyFailover = "check inter 1s fall 1 rise 2 observe layer4 error-limit 1 on-error mark-down"
)

// caddyConfig renders a Caddyfile that keeps Caddy off everything but its
// one loopback port: no admin endpoint, no HTTPS, storage in dir.
func caddyConfig(s scenario, port int, dir string, bs []*backend, failover bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin off\n\tdefault_bind 127.0.0.1\n\tauto_https off\n\tpersist_config off\n\tstorage file_system %s\n\tlog {\n\t\tlevel ERROR\n\t}\n", filepath.Join(dir, "storage"))
	if s.caddyTables != "" {
		fmt.Fprintf(&b, "\tsticky {\n\t\t%s\n\t}\n", s.caddyTables)
	}
	b.WriteString("}\n\n")
	addrs := make([]string, len(bs))
	for i, be := range bs {
		addrs[i] = be.addr
	}
	fmt.Fprintf(&b, "http://127.0.0.1:%d {\n\treverse_proxy %s {\n\t\tlb_policy %s\n", port, strings.Join(addrs, " "), s.caddyPolicy)
	if failover {
		fmt.Fprintf(&b, "\t\t%s\n", caddyFailover)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// haproxyConfig renders an haproxy.cfg for the scenario. Keep-alive on both
// sides, as Caddy does by default.
func haproxyConfig(s scenario, port int, bs []*backend, failover bool) string {
	var b strings.Builder
	b.WriteString("global\n\tmaxconn 4096\n\n")
	b.WriteString("defaults\n\tmode http\n\toption http-keep-alive\n\ttimeout connect 2s\n\ttimeout client 60s\n\ttimeout server 60s\n\ttimeout http-keep-alive 60s\n\tretries 2\n\toption redispatch\n\n")
	fmt.Fprintf(&b, "frontend fe\n\tbind 127.0.0.1:%d\n\tdefault_backend be\n\n", port)
	fmt.Fprintf(&b, "backend be\n\t%s\n", s.haBackend)
	for i, be := range bs {
		fmt.Fprintf(&b, "\tserver s%d %s", i+1, be.addr)
		if s.haCookie {
			fmt.Fprintf(&b, " cookie s%d", i+1)
		}
		if failover {
			fmt.Fprintf(&b, " %s", haproxyFailover)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// proxyProc is a running proxy process.
type proxyProc struct {
	cmd    *exec.Cmd
	port   int
	url    string
	output *bytes.Buffer
	done   chan error
}

// startProxy writes the scenario's config, starts the proxy on a free
// loopback port and waits until a request goes through it. A port taken
// by someone else between the check and the bind (other programs share
// the machine) costs a retry on another port, not the run.
func startProxy(s scenario, caddyBin, haproxyBin, dir string, bs []*backend, failover bool) (*proxyProc, error) {
	var err error
	for range 5 {
		var p *proxyProc
		p, err = startProxyOnce(s, caddyBin, haproxyBin, dir, bs, failover)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "address already in use") {
			return p, err
		}
	}
	return nil, err
}

func startProxyOnce(s scenario, caddyBin, haproxyBin, dir string, bs []*backend, failover bool) (*proxyProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	switch s.proxy {
	case "caddy":
		path := filepath.Join(dir, "Caddyfile")
		cfg := caddyConfig(s, port, dir, bs, failover)
		if s.layer4 {
			cfg = caddyLayer4Config(s, port, dir, bs)
		}
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		cmd = exec.Command(caddyBin, "run", "--config", path, "--adapter", "caddyfile")
		// Caddy writes to its data and config homes even with admin off;
		// point them into the run's directory so nothing leaks out.
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"))
	case "haproxy":
		path := filepath.Join(dir, "haproxy.cfg")
		cfg := haproxyConfig(s, port, bs, failover)
		if s.layer4 {
			cfg = haproxyLayer4Config(s, port, bs)
		}
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		// -db: foreground, no master process, so the pid we hold is the
		// one that serves (and whose memory we read).
		cmd = exec.Command(haproxyBin, "-db", "-f", path)
	default:
		return nil, fmt.Errorf("unknown proxy %q", s.proxy)
	}
	// The proxy must not outlive the harness, even if the harness is
	// killed without a chance to stop it.
	cmd.SysProcAttr = dieWithParent()
	out := &bytes.Buffer{}
	cmd.Stdout = &lockedWriter{w: out}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proxyProc{cmd: cmd, port: port, url: fmt.Sprintf("http://127.0.0.1:%d/", port), output: out, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	ready := p.waitReady
	if s.layer4 {
		ready = func(limit time.Duration) error { return waitReadyTCP(p, limit) }
	}
	if err := ready(15 * time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s %s did not come up: %v\n%s", s.proxy, s.name, err, p.logs())
	}
	return p, nil
}

func (p *proxyProc) logs() string {
	lw := p.cmd.Stdout.(*lockedWriter)
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.(*bytes.Buffer).String()
}

// waitReady polls until one request is answered by a backend, so the
// warm-up starts with a proxy that has loaded its whole config.
func (p *proxyProc) waitReady(limit time.Duration) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return p.pollReady(limit, func() error {
		res, err := c.Get(p.url)
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode == 200 && res.Header.Get("X-Backend") != "" {
			return nil
		}
		return fmt.Errorf("status %d", res.StatusCode)
	})
}

// pollReady runs probe until it succeeds, the proxy exits or limit passes,
// and returns the last failure.
func (p *proxyProc) pollReady(limit time.Duration, probe func() error) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("exited: %v", err)
		default:
		}
		if last = probe(); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return last
}

// stop asks the proxy to exit and kills it if it takes too long, so one
// stuck process cannot stall a whole run.
func (p *proxyProc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// rssKiB reads the process's resident set size from /proc (Linux only).
func rssKiB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) == 0 {
				break
			}
			return strconv.ParseInt(fields[0], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS line")
}

// freePort finds a port the proxy can listen on. It picks below Linux's
// ephemeral range (32768-60999 by default): a port the kernel hands out
// for :0 can be taken again, between our check and the proxy's bind, as
// the source port of one of the many connections the load generator
// opens; a port outside the range cannot.
func freePort() (int, error) {
	for range 100 {
		port := 26000 + rand.IntN(6000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			ln.Close()
			return port, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// buildCaddy builds Caddy with the plugin from the checkout at root.
func buildCaddy(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/caddy")
	cmd.Dir = root
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, b)
	}
	return nil
}

// repoRoot finds the module root by walking up to go.mod, so the harness
// works from the repository root (go run) and from its own folder (go test).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/caddy-sticky/sticky\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod of github.com/caddy-sticky/sticky not found above the working directory")
		}
		dir = parent
	}
}
