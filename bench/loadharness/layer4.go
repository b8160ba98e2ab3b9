package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// layer4Scenarios are TCP load balancing through caddy-l4's proxy handler
// and, beside them, HAProxy in mode tcp: no persistence, hashing of the
// client address, and a stick table on the client address. Every client
// connection is a whole exchange (connect, the backend's one-line answer,
// close), so the figure is connections per second.
func layer4Scenarios() []scenario {
	return []scenario{
		{proxy: "caddy", name: "layer4 round_robin", id: byIP, layer4: true, base: true, caddyPolicy: "round_robin"},
		{proxy: "caddy", name: "layer4 ip_hash", id: byIP, sticky: true, layer4: true, caddyPolicy: "ip_hash"},
		{proxy: "caddy", name: "layer4 stick_table {client_ip}", id: byIP, sticky: true, layer4: true,
			caddyTables: "table clients {\n\t\t\ttype ip\n\t\t\tsize 1m\n\t\t\texpire 30m\n\t\t}",
			caddyPolicy: "stick_table clients {\n\t\t\t\t\t\tfallback round_robin\n\t\t\t\t\t}"},
	}
}

// haproxyLayer4Scenarios are the same in HAProxy's mode tcp.
func haproxyLayer4Scenarios() []scenario {
	return []scenario{
		{proxy: "haproxy", name: "layer4 balance roundrobin", id: byIP, layer4: true, base: true, haBackend: "balance roundrobin"},
		{proxy: "haproxy", name: "layer4 balance source", id: byIP, sticky: true, layer4: true, haBackend: "balance source"},
		{proxy: "haproxy", name: "layer4 stick on src", id: byIP, sticky: true, layer4: true,
			haBackend: "balance roundrobin\n\tstick-table type ip size 1m expire 30m\n\tstick on src"},
	}
}

// caddyLayer4Config renders a Caddyfile with one caddy-l4 listener on the
// loopback port, proxying to the TCP backends; no HTTP server at all.
func caddyLayer4Config(s scenario, port int, dir string, bs []*backend) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin off\n\tpersist_config off\n\tstorage file_system %s\n\tlog {\n\t\tlevel ERROR\n\t}\n", filepath.Join(dir, "storage"))
	if s.caddyTables != "" {
		fmt.Fprintf(&b, "\tsticky {\n\t\t%s\n\t}\n", s.caddyTables)
	}
	addrs := make([]string, len(bs))
	for i, be := range bs {
		addrs[i] = be.addr
	}
	fmt.Fprintf(&b, "\tlayer4 {\n\t\t127.0.0.1:%d {\n\t\t\troute {\n\t\t\t\tproxy %s {\n\t\t\t\t\tlb_policy %s\n\t\t\t\t}\n\t\t\t}\n\t\t}\n\t}\n}\n",
		port, strings.Join(addrs, " "), s.caddyPolicy)
	return b.String()
}

// haproxyLayer4Config renders an haproxy.cfg in mode tcp.
func haproxyLayer4Config(s scenario, port int, bs []*backend) string {
	var b strings.Builder
	b.WriteString("global\n\tmaxconn 8192\n\n")
	b.WriteString("defaults\n\tmode tcp\n\ttimeout connect 2s\n\ttimeout client 60s\n\ttimeout server 60s\n\n")
	fmt.Fprintf(&b, "frontend fe\n\tbind 127.0.0.1:%d\n\tdefault_backend be\n\n", port)
	fmt.Fprintf(&b, "backend be\n\t%s\n", s.haBackend)
	for i, be := range bs {
		fmt.Fprintf(&b, "\tserver s%d %s\n", i+1, be.addr)
	}
	return b.String()
}

// tcpExchange makes one connection to addr from d, reads the backend's
// whole answer (its name and a newline, then end of stream) and closes.
// It returns the backend's name.
func tcpExchange(ctx context.Context, d *net.Dialer, addr string) (string, error) {
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var buf [64]byte
	n, err := io.ReadFull(c, buf[:])
	if err != io.ErrUnexpectedEOF && err != io.EOF {
		if err == nil {
			return "", fmt.Errorf("answer longer than %d bytes", len(buf))
		}
		return "", err
	}
	line, ok := strings.CutSuffix(string(buf[:n]), "\n")
	if !ok || line == "" {
		return "", fmt.Errorf("answer %q is not a backend's name", buf[:n])
	}
	return line, nil
}

// layer4ClientsPerWorker is how many client addresses each worker cycles
// through: with the default 32 workers, 256 clients, so client-address
// persistence is checked over more clients than there are connections in
// flight, and each client's connections come at intervals, not back to
// back.
const layer4ClientsPerWorker = 8

// tcpClient is one client host: its own 127.x.y.2 address.
type tcpClient struct {
	dialer net.Dialer
	user   *user
}

// tcpWorker sends one connection after another, each from the next of
// its clients.
type tcpWorker struct {
	clients   []*tcpClient
	next      int
	count     int64
	failed    int64
	latencies []time.Duration
}

// layer4Generator loads a layer-4 proxy with connections. It keeps the
// same measured-period bookkeeping as the HTTP generator, so the harness
// interleaves and rotates it in the same way.
type layer4Generator struct {
	addr     string
	workers  []*tcpWorker
	measured time.Duration
}

func newLayer4Generator(addr string, concurrency int) *layer4Generator {
	g := &layer4Generator{addr: addr}
	for w := range concurrency {
		tw := &tcpWorker{}
		for k := range layer4ClientsPerWorker {
			j := w*layer4ClientsPerWorker + k
			// 127.20.0.0 and up: apart from the HTTP workers' 127.0.x.1
			ip := net.IPv4(127, byte(20+j/240), byte(10+j%240), 2)
			tw.clients = append(tw.clients, &tcpClient{
				dialer: net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 5 * time.Second},
				user:   &user{id: ip.String()},
			})
		}
		g.workers = append(g.workers, tw)
	}
	return g
}

func (g *layer4Generator) close() {}

func (g *layer4Generator) load(ctx context.Context, d time.Duration, measure bool) {
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for _, w := range g.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(end) {
				c := w.clients[w.next%len(w.clients)]
				w.next++
				t0 := time.Now()
				server, err := tcpExchange(ctx, &c.dialer, g.addr)
				t1 := time.Now()
				if err == nil {
					c.user.see(server)
				}
				if !measure || t1.After(end) {
					continue
				}
				if err != nil {
					w.failed++
					continue
				}
				w.count++
				w.latencies = append(w.latencies, t1.Sub(t0))
			}
		}()
	}
	wg.Wait()
	if measure {
		g.measured += d
	}
}

func (g *layer4Generator) stats(string) loadStats {
	var s loadStats
	var lat []time.Duration
	for _, w := range g.workers {
		s.requests += w.count
		s.failed += w.failed
		lat = append(lat, w.latencies...)
	}
	s.setRates(lat, g.measured)
	for _, w := range g.workers {
		for _, c := range w.clients {
			if c.user.first == "" {
				continue
			}
			s.tracked++
			if len(c.user.changes) > 0 {
				s.switched++
			}
		}
	}
	return s
}

// waitReadyTCP waits until a connection through the proxy reaches a
// backend.
func waitReadyTCP(p *proxyProc, limit time.Duration) error {
	d := &net.Dialer{Timeout: time.Second}
	return p.pollReady(limit, func() error {
		_, err := tcpExchange(context.Background(), d, fmt.Sprintf("127.0.0.1:%d", p.port))
		return err
	})
}
